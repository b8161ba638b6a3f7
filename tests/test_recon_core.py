"""Point clouds, per-frame meshes, TSDF fusion and exports on analytic tube scenes."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import trimesh

from colondepth.conventions import ImageSize
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.recon.export import (
    GLTF_FROM_CV,
    export_mesh,
    export_point_cloud,
    gltf_from_world,
    index_from_world,
    world_from_index,
    write_tsdf_nifti,
)
from colondepth.recon.fusion import TSDFVolume
from colondepth.recon.mesh import depth_to_mesh, grid_triangles
from colondepth.recon.pointcloud import depth_to_pointcloud
from test_recon_analytic import look_pose, small_intrinsics, tube_depth, tube_poses

RADIUS = 10.0


@pytest.fixture(scope="module")
def fused():
    intr = small_intrinsics(48)
    poses = tube_poses(8, RADIUS, 30.0)
    vol = TSDFVolume(voxel_mm=0.5, max_depth_mm=20.0)  # pixel footprint <= 2 voxels
    rng = np.random.default_rng(0)
    for T in poses:
        rgb = np.zeros((48, 48, 3), np.uint8)
        rgb[..., 0] = 200
        rgb[..., 1] = rng.integers(90, 110)
        vol.integrate(tube_depth(intr, T, RADIUS), intr, T, rgb=rgb)
    return vol, poses


# -- point clouds ------------------------------------------------------------------------------
def test_backprojected_tube_lies_on_the_tube():
    intr = small_intrinsics(40)
    T = look_pose([3.0, -2.0, 1.0], [0.4, 0.3, 1.0], up_hint=(0.2, 1.0, 0.0))  # off-axis and tilted
    depth = tube_depth(intr, T, RADIUS)
    rgb = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    cloud = depth_to_pointcloud(depth, intr, rgb=rgb, world_from_cam=T)
    assert cloud.frame == "world" and len(cloud) == int((depth > 0).sum()) > 1000
    np.testing.assert_allclose(np.hypot(cloud.points_mm[:, 0], cloud.points_mm[:, 1]), RADIUS, atol=1e-4)
    np.testing.assert_array_equal(cloud.colors, rgb[depth > 0])
    cam = depth_to_pointcloud(depth, intr)
    assert cam.frame == "cam"
    np.testing.assert_allclose(cam.points_mm[:, 2], depth[depth > 0], rtol=1e-6)


def test_pointcloud_range_stride_and_subsample():
    intr = small_intrinsics(32)
    depth = np.linspace(1.0, 50.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    cloud = depth_to_pointcloud(depth, intr, min_depth_mm=10.0, max_depth_mm=20.0)
    assert cloud.points_mm[:, 2].min() >= 10.0 and cloud.points_mm[:, 2].max() <= 20.0
    assert len(depth_to_pointcloud(depth, intr, stride=2)) == 16 * 16
    assert len(depth_to_pointcloud(depth, intr).subsample(100)) == 100


@pytest.mark.parametrize(
    "depth, match",
    [
        (np.full((32, 32), np.nan, np.float32), "NaN"),
        (np.zeros((32, 32), np.float32), "no valid pixel"),
        (np.full((16, 32), 5.0, np.float32), "does not match"),
        (np.full((32, 32), -1.0, np.float32), "negative"),
    ],
)
def test_bad_depth_is_a_user_error(depth, match):
    with pytest.raises(UserError, match=match):
        depth_to_pointcloud(depth, small_intrinsics(32))


# -- per-frame mesh ----------------------------------------------------------------------------
def test_grid_triangles_cut_depth_jumps_and_face_the_camera():
    intr = PinholeIntrinsics(fx=20.0, fy=20.0, cx=4.6, cy=3.2, size=ImageSize(8, 10))
    depth = np.full((8, 10), 20.0, np.float32)
    depth[:, 5:] = 30.0  # a step: no triangle may bridge columns 4 and 5
    mesh = depth_to_mesh(depth, intr, max_rel_jump=0.1)
    assert len(mesh.faces) == 2 * (7 * 4 + 7 * 4)
    z = mesh.vertices[mesh.faces][..., 2]
    assert np.all(z.max(axis=1) - z.min(axis=1) < 1e-9)
    np.testing.assert_array_less(mesh.face_normals[:, 2], -0.99)  # towards the camera (-Z)
    # without the cut, the 7 quads across the step come back
    assert len(depth_to_mesh(depth, intr, max_rel_jump=1.0).faces) == 2 * 7 * 9
    # an invalid pixel removes the (up to) 6 triangles around it
    valid = np.ones((8, 10), bool)
    valid[3, 2] = False
    assert len(grid_triangles(depth, valid, 0.1)) == 2 * 7 * 8 - 6


def test_depth_mesh_of_tube_lies_on_tube_in_world():
    intr = small_intrinsics(32)
    T = tube_poses(3, RADIUS)[2]
    depth = tube_depth(intr, T, RADIUS)
    mesh = depth_to_mesh(depth, intr, world_from_cam=T, rgb=np.full((32, 32, 3), 7, np.uint8))
    np.testing.assert_allclose(np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1]), RADIUS, atol=1e-4)
    assert np.all(mesh.visual.vertex_colors[:, :3] == 7)
    with pytest.raises(UserError, match="no triangle"):
        depth_to_mesh(np.zeros((32, 32), np.float32), intr)


# -- TSDF fusion -------------------------------------------------------------------------------
def test_fusion_recovers_tube_radius_within_one_voxel(fused):
    vol, _ = fused
    mesh = vol.extract_mesh()
    assert len(mesh.faces) > 5000
    r = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    assert np.abs(r - RADIUS).max() < vol.voxel_mm
    assert abs(np.median(r) - RADIUS) < 0.2 * vol.voxel_mm
    # normals point into the lumen (towards the axis: free space, where the cameras are)
    radial = mesh.triangles_center.copy()
    radial[:, 2] = 0
    inward = (mesh.face_normals * radial).sum(axis=1) < 0
    assert inward.mean() > 0.99
    # fused colour
    c = mesh.visual.vertex_colors[:, :3].astype(int)
    assert np.all(c[:, 0] == 200) and np.all((c[:, 1] >= 90) & (c[:, 1] <= 110))


def test_fusion_volume_values_and_sparsity(fused):
    vol, _ = fused
    dense = vol.to_dense()
    ijk = np.argwhere(dense.weight > 0)
    xyz = world_from_index(dense.affine, ijk)
    r = np.hypot(xyz[:, 0], xyz[:, 1])
    sdf = dense.tsdf_mm[dense.weight > 0]
    near = np.abs(sdf) < 0.9 * dense.trunc_mm
    # positive in front (lumen, r < R), negative behind (tissue): sdf ~ R - r
    assert np.abs((RADIUS - r[near]) - sdf[near]).mean() < 0.25
    assert np.all(sdf >= -dense.trunc_mm - 1e-5)
    # sparse: far fewer voxels than the bounding box
    assert vol.num_blocks * vol.block_voxels ** 3 < 0.5 * dense.weight.size


def test_fusion_errors_and_empty_frames():
    intr = small_intrinsics(24)
    vol = TSDFVolume(voxel_mm=1.0)
    assert vol.integrate(np.zeros((24, 24), np.float32), intr, np.eye(4)) == 0
    assert vol.frames_empty == 1
    with pytest.raises(UserError, match="empty"):
        vol.extract_mesh()
    with pytest.raises(UserError, match="NaN"):
        vol.integrate(np.full((24, 24), np.nan, np.float32), intr, np.eye(4))
    with pytest.raises(UserError, match="rigid"):
        vol.integrate(np.full((24, 24), 5.0, np.float32), intr, np.diag([2.0, 1, 1, 1]))
    tiny = TSDFVolume(voxel_mm=0.25, max_blocks=3)
    with pytest.raises(UserError, match="--voxel-mm"):
        tiny.integrate(tube_depth(intr, tube_poses(2, RADIUS)[0], RADIUS), intr, tube_poses(2, RADIUS)[0])
    with pytest.raises(UserError, match="truncation"):
        TSDFVolume(voxel_mm=1.0, trunc_mm=0.5)


def _failing_marching_cubes(monkeypatch, fail_calls):
    """Make skimage's marching cubes raise on the given (0-based) calls; return the list of calls made."""
    import skimage.measure

    real = skimage.measure.marching_cubes
    calls = []

    def flaky(*args, **kwargs):
        calls.append(len(calls))
        if calls[-1] in fail_calls:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(skimage.measure, "marching_cubes", flaky)
    return calls


def test_failed_marching_cubes_chunk_is_recorded_and_warned(fused, monkeypatch):
    from colondepth.recon.fusion import IncompleteMeshWarning

    vol, _ = fused
    whole = vol.extract_mesh(chunk_voxels=8)
    assert vol.failed_chunks == [] and vol.incomplete_message() == ""
    n_chunks = vol.surface_chunks
    assert n_chunks > 4
    calls = _failing_marching_cubes(monkeypatch, {1})
    with pytest.warns(IncompleteMeshWarning, match=f"marching cubes failed on 1 of {n_chunks} surface chunks"):
        partial = vol.extract_mesh(chunk_voxels=8)
    assert len(calls) == n_chunks
    assert len(vol.failed_chunks) == 1
    failed = vol.failed_chunks[0]
    assert failed["error"] == "RuntimeError: simulated failure"
    # the chunk's box: 8 voxels of 0.5 mm per chunk edge plus the one-voxel overlap, half a voxel either side
    size = np.subtract(failed["world_max_mm"], failed["world_min_mm"])
    np.testing.assert_allclose(size, [(8 + 1) * 0.5] * 3)
    lo = np.array(failed["chunk"]) * 8 * 0.5 - 0.25
    np.testing.assert_allclose(failed["world_min_mm"], lo)
    # the mesh lacks exactly that chunk's surface
    assert 0 < len(partial.faces) < len(whole.faces)
    inside = np.all((whole.triangles_center > lo + 0.25) & (whole.triangles_center < lo + 0.25 + 4.0), axis=1)
    assert inside.sum() > 0
    p_inside = np.all((partial.triangles_center > lo + 0.25) & (partial.triangles_center < lo + 0.25 + 4.0), axis=1)
    assert p_inside.sum() == 0
    # a clean extraction afterwards resets the record
    monkeypatch.undo()
    vol.extract_mesh(chunk_voxels=8)
    assert vol.failed_chunks == []


def test_every_marching_cubes_chunk_failing_is_a_user_error(fused, monkeypatch):
    from colondepth.recon.fusion import IncompleteMeshWarning

    vol, _ = fused
    _failing_marching_cubes(monkeypatch, set(range(10_000)))
    with pytest.warns(IncompleteMeshWarning), pytest.raises(UserError, match="no mesh: marching cubes failed on"):
        vol.extract_mesh()


# -- exports -----------------------------------------------------------------------------------
def test_nifti_affine_round_trips(tmp_path, fused):
    import nibabel as nib

    vol, _ = fused
    dense = vol.to_dense()
    path = write_tsdf_nifti(dense, tmp_path / "tsdf.nii.gz")
    with gzip.open(path) as f:
        assert f.read(4)  # a real gzip stream
    img = nib.load(str(path))
    np.testing.assert_allclose(img.affine, dense.affine)
    assert img.shape == dense.tsdf.shape
    assert img.header.get_xyzt_units()[0] == "mm"
    ijk = np.array([[0, 0, 0], [3, 5, 7], [dense.tsdf.shape[0] - 1, 2, 1]])
    xyz = world_from_index(img.affine, ijk)
    np.testing.assert_allclose(xyz[0], dense.index_origin * vol.voxel_mm)
    np.testing.assert_allclose(xyz[1] - xyz[0], np.array([3, 5, 7]) * vol.voxel_mm)
    np.testing.assert_allclose(index_from_world(img.affine, xyz), ijk, atol=1e-9)
    data = np.asarray(img.dataobj)
    np.testing.assert_allclose(data[tuple(ijk[1])], dense.tsdf_mm[tuple(ijk[1])])


@pytest.mark.parametrize("name", ["tsdf.nii.gz", "tsdf.nii"])
def test_streamed_nifti_equals_the_dense_file(tmp_path, fused, name):
    """The volume written one block layer at a time is the dense volume's file, byte for byte (decompressed)."""
    from colondepth.recon.export import write_tsdf_nifti_volume

    vol, _ = fused
    a = write_tsdf_nifti(vol.to_dense(with_color=False), tmp_path / ("dense_" + name)).read_bytes()
    b = write_tsdf_nifti_volume(vol, tmp_path / ("slabs_" + name)).read_bytes()
    if name.endswith(".gz"):
        a, b = gzip.decompress(a), gzip.decompress(b)
    assert len(b) == 352 + 4 * int(np.prod(vol.dense_shape()[1]))
    assert a == b
    slabs = list(vol.tsdf_mm_slabs())
    assert len(slabs) == vol.dense_shape()[1][2] // vol.block_voxels
    np.testing.assert_array_equal(np.concatenate(slabs, axis=2), vol.to_dense(with_color=False).tsdf_mm)
    with pytest.raises(UserError, match="exceeds the cap of 10"):
        write_tsdf_nifti_volume(vol, tmp_path / "capped.nii.gz", max_voxels=10)
    assert not (tmp_path / "capped.nii.gz").exists()


def test_volume_used_bytes(fused):
    vol, _ = fused
    per_block = 4 * vol.block_voxels ** 3 * (2 + (3 if vol.with_color else 0))
    assert vol.used_bytes == vol.num_blocks * per_block <= vol.memory_bytes


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".stl"])
def test_mesh_exports_load_back(tmp_path, suffix):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=5.0)
    mesh.apply_translation([1.0, 2.0, 30.0])
    path = export_mesh(mesh, tmp_path / f"m{suffix}")
    back = trimesh.load(path, force="mesh", process=True)
    assert len(back.vertices) == len(mesh.vertices)
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.bounds, mesh.bounds, atol=1e-4)


def test_glb_export_converts_axes_once(tmp_path):
    mesh = trimesh.creation.box(extents=[1.0, 2.0, 3.0])
    mesh.apply_translation([4.0, 5.0, 60.0])  # right, below and in front of the camera (OpenCV)
    path = export_mesh(mesh, tmp_path / "m.glb")
    scene = trimesh.load(path)
    back = scene.to_geometry()
    assert len(back.vertices) == len(mesh.vertices)
    c = back.bounds.mean(axis=0)
    np.testing.assert_allclose(c, [4.0, -5.0, -60.0], atol=1e-5)  # +Y up, looking down -Z
    # with a reference camera: points are first expressed in that camera
    ref = look_pose([0.0, 0.0, 50.0], [1.0, 0.0, 0.0], up_hint=(0.0, 0.0, 1.0))
    T = gltf_from_world(ref)
    p_cam = np.linalg.inv(ref) @ [4.0, 5.0, 60.0, 1.0]
    np.testing.assert_allclose(T @ [4.0, 5.0, 60.0, 1.0], GLTF_FROM_CV @ p_cam, atol=1e-12)
    assert (T @ [10.0, 0.0, 50.0, 1.0])[2] == pytest.approx(-10.0)  # 10 mm ahead of ref -> z = -10


def test_point_cloud_and_empty_mesh_export(tmp_path):
    intr = small_intrinsics(16)
    cloud = depth_to_pointcloud(np.full((16, 16), 9.0, np.float32), intr,
                                rgb=np.full((16, 16, 3), 50, np.uint8))
    back = trimesh.load(export_point_cloud(cloud, tmp_path / "p.ply"))
    assert len(back.vertices) == 256
    assert np.all(back.colors[:, :3] == 50)
    path = export_mesh(trimesh.Trimesh(), tmp_path / "empty.ply")
    assert path.stat().st_size > 0
    with pytest.raises(UserError, match="unsupported"):
        export_mesh(trimesh.Trimesh(), tmp_path / "x.vtk")


def test_fuse_frames_helper():
    from colondepth.recon.fusion import fuse_frames

    intr = small_intrinsics(24)
    poses = tube_poses(3, RADIUS, 10.0)
    vol = fuse_frames(((tube_depth(intr, T, RADIUS), T, None) for T in poses), intr, voxel_mm=1.0,
                      progress=False, max_depth_mm=20.0)
    assert vol.frames_integrated == 3 and vol.num_blocks > 0
    with pytest.raises(UserError, match="nothing to fuse"):
        fuse_frames([(np.zeros((24, 24), np.float32), np.eye(4), None)], intr, progress=False)


def _plane_frames(depths_mm, size=32):
    intr = PinholeIntrinsics.from_fov(ImageSize(size, size), 60.0)
    return intr, [np.full((size, size), d, dtype=np.float32) for d in depths_mm]


def _fused_plane_z(sigma_rel, depths_mm, trunc_mm):
    intr, frames = _plane_frames(depths_mm)
    vol = TSDFVolume(voxel_mm=0.5, trunc_mm=trunc_mm, depth_sigma_rel=sigma_rel, with_color=False)
    for d in frames:
        vol.integrate(d, intr, np.eye(4))
    m = vol.extract_mesh()
    centre = np.hypot(m.vertices[:, 0], m.vertices[:, 1]) < 2.0
    return float(np.median(m.vertices[centre, 2]))


def test_depth_uncertainty_weights_near_depth_more():
    """Two frames disagree on a plane (20 vs 30 mm). Equal weights put it half way; with sigma = 0.2 z the
    inverse-variance weights (30/20)^2 = 2.25 : 1 put it at 20 + 10 / 3.25 = 23.08 mm."""
    assert _fused_plane_z(0.0, [20.0, 30.0], trunc_mm=12.0) == pytest.approx(25.0, abs=0.15)
    assert _fused_plane_z(0.2, [20.0, 30.0], trunc_mm=12.0) == pytest.approx(23.08, abs=0.15)


def test_depth_uncertainty_widens_the_truncation_band():
    intr, (d,) = _plane_frames([50.0])
    for sigma, band in ((0.0, 2.0), (0.2, 20.0)):  # max(trunc, 2 sigma z) = 2 mm, then 2 * 0.2 * 50 = 20 mm
        vol = TSDFVolume(voxel_mm=0.5, trunc_mm=2.0, depth_sigma_rel=sigma, with_color=False)
        vol.integrate(d, intr, np.eye(4))
        dense = vol.to_dense(with_color=False)
        idx = np.argwhere(dense.weight > 0)
        world = idx @ dense.affine[:3, :3].T + dense.affine[:3, 3]
        near_axis = np.hypot(world[:, 0], world[:, 1]) < 2.0
        behind = world[near_axis, 2].max() - 50.0
        assert behind == pytest.approx(band, abs=0.6), sigma
    with pytest.raises(UserError, match="depth_sigma_rel"):
        TSDFVolume(depth_sigma_rel=-0.1)
