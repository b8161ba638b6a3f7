"""Writing reconstructions: meshes (PLY, OBJ, STL, GLB), point clouds, TSDF volumes (NIfTI).

Trajectories are written with :func:`colondepth.datasets.tum.write_tum` (TUM format).

Every writer is atomic (complete or absent) through :mod:`colondepth.io`.

Frames and axes
    PLY, OBJ and STL keep our world frame as is (millimetres, whatever the trajectory's world is:
    for synthetic data the generator's world, for predicted poses the first camera's frame).
    GLB (binary glTF) is the one format whose readers assume axes: glTF is right-handed with
    +Y up and a default camera looking down -Z, in metres by convention.  The conversion lives in
    exactly one function, :func:`gltf_from_world`: vertices are re-expressed in a reference camera
    (default: the first frame of the trajectory) and then flipped from OpenCV (+Y down, +Z forward)
    to glTF (+Y up, -Z forward), ``x_gltf = (x, -y, -z)_cam``.  A glTF viewer's default camera then
    looks along the reference camera's viewing direction with the image's "up" pointing up.
    Lengths stay in millimetres (scale the scene by 0.001 in a viewer that wants metres).

NIfTI
    :func:`write_tsdf_nifti` stores the truncated signed distance in mm (positive in free space /
    the lumen, negative in tissue, ``+trunc_mm`` where unobserved) as float32, with an affine
    (sform and qform, code 2 "aligned") mapping voxel indices ``(i, j, k)`` to our world frame in mm:
    ``[x, y, z, 1]^T = A [i, j, k, 1]^T``.  NIfTI declares that frame RAS+, so 3D Slicer shows our
    world +X as Right, +Y as Anterior, +Z as Superior: a geometric, not an anatomical, labelling.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np

from colondepth.errors import UserError
from colondepth.io import atomic_write_bytes

#: ``gltf_from_cam``: OpenCV camera (+X right, +Y down, +Z forward) to glTF (+X right, +Y up,
#: camera looks down -Z).  Flips Y and Z; it is its own inverse.
GLTF_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])

MESH_FORMATS = (".ply", ".obj", ".stl", ".glb")


def gltf_from_world(world_from_ref_cam: Optional[np.ndarray] = None) -> np.ndarray:
    """The one axis conversion for viewers: ``(4, 4)`` matrix mapping world points (mm) to glTF axes.

    ``gltf_from_world = GLTF_FROM_CV @ invert(world_from_ref_cam)``: first express points in the
    reference camera (OpenCV), then flip Y (down -> up) and Z (forward -> backward).  With
    ``world_from_ref_cam=None`` the world frame itself is treated as an OpenCV camera frame.

    >>> T = gltf_from_world()
    >>> (T @ [0.0, 1.0, 10.0, 1.0]).tolist()  # below and in front of the camera -> down and at -Z
    [0.0, -1.0, -10.0, 1.0]
    """
    if world_from_ref_cam is None:
        return GLTF_FROM_CV.copy()
    import torch

    from colondepth.geometry.pose import invert_pose
    from colondepth.recon.pointcloud import check_pose

    T = check_pose(world_from_ref_cam, "reference camera pose")
    cam_from_world = invert_pose(torch.from_numpy(T)).numpy()
    return GLTF_FROM_CV @ cam_from_world


def _check_suffix(path: Path, allowed) -> str:
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise UserError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(allowed)}")
    return suffix


def export_mesh(mesh, path, world_from_ref_cam: Optional[np.ndarray] = None) -> Path:
    """Write a :class:`trimesh.Trimesh` (world frame, mm) to PLY, OBJ, STL or GLB, atomically.

    The format comes from the suffix.  GLB output goes through :func:`gltf_from_world` (with
    ``world_from_ref_cam`` as reference camera); the other formats keep the world frame.  An empty
    mesh is written as a valid file with no faces.
    """
    import trimesh

    path = Path(path)
    suffix = _check_suffix(path, MESH_FORMATS)
    if suffix == ".glb":
        m = mesh.copy()
        m.apply_transform(gltf_from_world(world_from_ref_cam))
        data = trimesh.Scene(m).export(file_type="glb") if len(m.faces) else trimesh.Scene().export(file_type="glb")
    else:
        data = mesh.export(file_type=suffix[1:])
    if isinstance(data, str):
        data = data.encode()
    return atomic_write_bytes(path, data)


def export_point_cloud(cloud, path) -> Path:
    """Write a :class:`colondepth.recon.pointcloud.PointCloud` as a binary PLY with RGB colours, atomically."""
    path = Path(path)
    _check_suffix(path, (".ply",))
    data = cloud.to_trimesh().export(file_type="ply")
    return atomic_write_bytes(path, data)


def tsdf_nifti_image(dense):
    """A :class:`nibabel.Nifti1Image` of a :class:`colondepth.recon.fusion.DenseTSDF` (see module doc)."""
    import nibabel as nib

    data = dense.tsdf_mm
    return nib.Nifti1Image(data, dense.affine, header=tsdf_nifti_header(data.shape, dense.affine))


def tsdf_nifti_header(shape, affine: np.ndarray):
    """The one NIfTI-1 header of our TSDF volumes: float32 ``shape``, sform and qform ``affine`` (code 2), mm."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(tuple(int(x) for x in shape))
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(affine, code=2)
    hdr.set_qform(affine, code=2)
    hdr.set_xyzt_units(xyz="mm")
    hdr["descrip"] = b"colondepth TSDF, mm, +free -tissue"
    return hdr


def write_tsdf_nifti_volume(volume, path, max_voxels: Optional[int] = None) -> Path:
    """Write a :class:`colondepth.recon.fusion.TSDFVolume` to ``.nii`` / ``.nii.gz`` without a dense copy.

    The file equals :func:`write_tsdf_nifti` of ``volume.to_dense()`` (same header and voxels); the data are
    streamed one block layer at a time (:meth:`TSDFVolume.tsdf_mm_slabs`), so memory does not grow with the
    size of the box.  ``max_voxels``: raise :class:`UserError` when the box has more voxels (a file-size
    guard).  Atomic: complete or absent.
    """
    from colondepth.io import atomic_path

    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise UserError(f"{path}: a NIfTI file must end in .nii or .nii.gz")
    _, shape = volume.dense_shape()
    if max_voxels is not None and int(np.prod(shape)) > max_voxels:
        raise UserError(f"dense TSDF of {shape.tolist()} voxels exceeds the cap of {max_voxels}; "
                        "use a larger --voxel-mm or fewer frames")
    hdr = tsdf_nifti_header(shape, volume.dense_affine())
    hdr.set_data_offset(352)  # single-file NIfTI: 348-byte header + 4-byte extension flag
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw:
            f = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if name.endswith(".gz") else raw
            try:
                f.write(hdr.binaryblock)
                f.write(b"\0\0\0\0")  # no extensions
                for slab in volume.tsdf_mm_slabs():  # (X, Y, b): NIfTI stores i fastest, then j, then k
                    f.write(np.ascontiguousarray(slab.transpose(2, 1, 0)).astype("<f4", copy=False).tobytes())
            finally:
                if f is not raw:
                    f.close()
    return path


def write_tsdf_nifti(dense, path) -> Path:
    """Write the TSDF volume to ``.nii`` or ``.nii.gz`` atomically; returns the path."""
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        raise UserError(f"{path}: a NIfTI file must end in .nii or .nii.gz")
    data = tsdf_nifti_image(dense).to_bytes()
    if name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, data)


def world_from_index(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Voxel indices ``(N, 3)`` to world mm ``(N, 3)`` with a NIfTI affine ``(4, 4)``."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def index_from_world(affine: np.ndarray, xyz_mm: np.ndarray) -> np.ndarray:
    """World mm ``(N, 3)`` to (fractional) voxel indices ``(N, 3)`` with a NIfTI affine ``(4, 4)``."""
    xyz = np.asarray(xyz_mm, dtype=np.float64)
    A = np.asarray(affine, dtype=np.float64)
    return np.linalg.solve(A[:3, :3], (xyz - A[:3, 3]).T).T
