"""Which parts of a colon surface the camera saw, and which mucosa it never saw.

Definition
    A point ``X`` of the surface (world frame, mm) is *observed* by frame ``i`` (pose
    ``world_from_cam_i``, depth map ``D_i``) when all of these hold:

    1. it projects inside the image: ``(u, v)`` within ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``, and
       inside the frame's valid mask (e.g. the endoscope's field of view) when one is given;
    2. it is in front of the camera within the working depth range:
       ``min_depth_mm <= z <= max_depth_mm`` (default 2-100 mm) with ``z`` its camera z-depth;
    3. it is visible, not occluded: the depth map at its projection (bilinear between four valid
       pixels, else the nearest pixel) agrees,
       ``D_i(u, v) > 0`` and ``|D_i(u, v) - z| <= max(depth_tol_mm, depth_tol_rel * z)``.

    A *face* is observed when its centroid is observed by at least one frame; a vertex likewise.
    The observed area fraction is the summed area of observed faces over the total area.  Faces
    much larger than a pixel's footprint are judged by their centroid only: subdivide such meshes
    first (:func:`subdivide_to`) for a finer map.

Which depth to use
    For a synthetic sequence the ground-truth mesh with ground-truth depth and poses gives the true
    coverage of what the camera could see.  With predicted depth and poses, the fused surface is the
    one to test (its own frame and scale), so the occlusion test is consistent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.recon.pointcloud import check_depth, check_pose


@dataclass
class CoverageResult:
    """Per-face and per-vertex observation of a surface mesh.

    Attributes
    ----------
    face_observed : (F,) bool
    vertex_observed : (V,) bool
    face_view_count : (F,) int32, number of frames that observed each face
    face_area_mm2 : (F,) float64
    num_frames : int, frames tested
    params : dict, the thresholds used
    """

    face_observed: np.ndarray
    vertex_observed: np.ndarray
    face_view_count: np.ndarray
    face_area_mm2: np.ndarray
    num_frames: int
    params: dict

    @property
    def total_area_mm2(self) -> float:
        return float(self.face_area_mm2.sum())

    @property
    def observed_area_mm2(self) -> float:
        return float(self.face_area_mm2[self.face_observed].sum())

    @property
    def observed_fraction(self) -> float:
        """Observed area / total area in [0, 1] (0 for an empty mesh)."""
        total = self.total_area_mm2
        return self.observed_area_mm2 / total if total > 0 else 0.0

    def unobserved_mesh(self, mesh):
        """The faces never observed, as a new :class:`trimesh.Trimesh` (same frame, mm)."""
        return _face_subset(mesh, ~self.face_observed)

    def observed_mesh(self, mesh):
        """The faces observed at least once, as a new :class:`trimesh.Trimesh`."""
        return _face_subset(mesh, self.face_observed)

    def to_dict(self) -> dict:
        """JSON-ready summary (areas in mm^2)."""
        return {
            "observed_fraction": round(self.observed_fraction, 6),
            "observed_area_mm2": round(self.observed_area_mm2, 3),
            "unobserved_area_mm2": round(self.total_area_mm2 - self.observed_area_mm2, 3),
            "total_area_mm2": round(self.total_area_mm2, 3),
            "num_faces": int(len(self.face_observed)),
            "num_faces_observed": int(self.face_observed.sum()),
            "num_vertices_observed": int(self.vertex_observed.sum()),
            "num_frames": int(self.num_frames),
            "definition": (
                "a face is observed when its centroid projects inside a frame (and its valid mask), lies "
                "in front of the camera within [min_depth_mm, max_depth_mm], and agrees with that frame's "
                "depth map within max(depth_tol_mm, depth_tol_rel * z) (occlusion test)"
            ),
            **self.params,
        }


def _face_subset(mesh, keep: np.ndarray):
    import trimesh

    faces = np.asarray(mesh.faces)[keep]
    if len(faces) == 0:
        return trimesh.Trimesh()
    used = np.unique(faces)
    remap = np.full(len(mesh.vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    colors = None
    if mesh.visual.kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors)[used]
    return trimesh.Trimesh(np.asarray(mesh.vertices)[used], remap[faces], vertex_colors=colors, process=False)


def subdivide_to(mesh, max_edge_mm: float):
    """Split faces until no edge is longer than ``max_edge_mm`` (trimesh ``subdivide_to_size``)."""
    import trimesh

    v, f = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=max_edge_mm, max_iter=20)
    return trimesh.Trimesh(v, f, process=False)


def points_observed_in_frame(
    points_world: np.ndarray,
    depth_mm: np.ndarray,
    world_from_cam: np.ndarray,
    intrinsics: PinholeIntrinsics,
    min_depth_mm: float = 2.0,
    max_depth_mm: float = 100.0,
    depth_tol_mm: float = 1.0,
    depth_tol_rel: float = 0.03,
    valid: Optional[np.ndarray] = None,
    occlusion_only: bool = False,
) -> np.ndarray:
    """``(N,) bool``: which world points (mm) frame ``(depth_mm, world_from_cam)`` observes (see module doc).

    ``occlusion_only``: keep only the near side of test 3, ``D_i(u, v) >= z - tol`` (nothing in front of
    the point); for points of a fitted surface that the true wall may lie behind (:mod:`colondepth.recon.lumen`).
    """
    depth = check_depth(depth_mm, intrinsics)
    T = check_pose(world_from_cam, "world_from_cam")
    H, W = depth.shape
    from colondepth.geometry.projection import pixel_index, project_points_np

    # cam_from_world applied in numpy (rigid: R^T (p - t)); projection and pixel rounding as fusion does
    pc = (np.asarray(points_world, dtype=np.float64) - T[:3, 3]) @ T[:3, :3]
    uv, z = project_points_np(pc, intrinsics.K)
    u, v = pixel_index(uv[:, 0]), pixel_index(uv[:, 1])
    ok = (z > 1e-6) & (z >= min_depth_mm) & (z <= max_depth_mm) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    uu, vv = np.clip(u, 0, W - 1), np.clip(v, 0, H - 1)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)[vv, uu]
    d = _sample_depth(depth, uv)
    tol = np.maximum(depth_tol_mm, depth_tol_rel * z)
    ok &= (d > 0) & ((d >= z - tol) if occlusion_only else (np.abs(d - z) <= tol))
    return ok


def _sample_depth(depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Depth at sub-pixel ``uv`` ``(N, 2)``: bilinear where the four neighbours are valid, else nearest.

    Bilinear sampling keeps the occlusion test tight on surfaces seen at grazing angles, where the
    depth changes by millimetres from one pixel to the next.
    """
    H, W = depth.shape
    u = np.clip(uv[:, 0], 0, W - 1)
    v = np.clip(uv[:, 1], 0, H - 1)
    u0 = np.clip(np.floor(u).astype(np.int64), 0, max(W - 2, 0))
    v0 = np.clip(np.floor(v).astype(np.int64), 0, max(H - 2, 0))
    u1, v1 = np.minimum(u0 + 1, W - 1), np.minimum(v0 + 1, H - 1)
    a, b = u - u0, v - v0
    d00, d10, d01, d11 = depth[v0, u0], depth[v0, u1], depth[v1, u0], depth[v1, u1]
    bil = (1 - a) * (1 - b) * d00 + a * (1 - b) * d10 + (1 - a) * b * d01 + a * b * d11
    from colondepth.geometry.projection import pixel_index

    nearest = depth[np.clip(pixel_index(v), 0, H - 1), np.clip(pixel_index(u), 0, W - 1)]
    all_valid = (d00 > 0) & (d10 > 0) & (d01 > 0) & (d11 > 0)
    return np.where(all_valid, bil, nearest)


def compute_coverage(
    mesh,
    frames: Iterable,
    intrinsics: PinholeIntrinsics,
    min_depth_mm: float = 2.0,
    max_depth_mm: float = 100.0,
    depth_tol_mm: float = 1.0,
    depth_tol_rel: float = 0.03,
    progress: bool = False,
) -> CoverageResult:
    """Mark the faces and vertices of ``mesh`` (world frame, mm) observed by ``frames``.

    Parameters
    ----------
    mesh : trimesh.Trimesh, the surface (ground-truth colon or fused surface).
    frames : iterable of ``(depth_mm (H, W), world_from_cam (4, 4))`` or
        ``(depth_mm, world_from_cam, valid (H, W) bool)``.
    intrinsics : PinholeIntrinsics of the depth maps.
    min_depth_mm, max_depth_mm : working depth range (mm).
    depth_tol_mm, depth_tol_rel : occlusion tolerance ``max(depth_tol_mm, depth_tol_rel * z)``.

    Raises :class:`UserError` for an empty mesh, bad thresholds or no frames.
    """
    from tqdm import tqdm

    if mesh is None or len(mesh.faces) == 0:
        raise UserError("coverage needs a surface mesh with faces; the mesh is empty")
    if not 0 <= min_depth_mm < max_depth_mm:
        raise UserError(f"coverage depth range [{min_depth_mm}, {max_depth_mm}] mm is empty; need 0 <= min < max")
    if depth_tol_mm < 0 or depth_tol_rel < 0:
        raise UserError("coverage depth tolerances must be >= 0")
    centroids = np.asarray(mesh.triangles_center, dtype=np.float64)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    pts = np.concatenate([centroids, verts], axis=0)
    nf = len(centroids)
    count = np.zeros(len(pts), dtype=np.int32)
    n = 0
    for item in tqdm(frames, desc="coverage", unit="frame", disable=not progress):
        depth, pose = item[0], item[1]
        valid = item[2] if len(item) > 2 else None
        count += points_observed_in_frame(
            pts, depth, pose, intrinsics, min_depth_mm, max_depth_mm, depth_tol_mm, depth_tol_rel, valid
        )
        n += 1
    if n == 0:
        raise UserError("coverage needs at least one frame with depth and pose")
    params = {
        "min_depth_mm": float(min_depth_mm),
        "max_depth_mm": float(max_depth_mm),
        "depth_tol_mm": float(depth_tol_mm),
        "depth_tol_rel": float(depth_tol_rel),
    }
    return CoverageResult(
        face_observed=count[:nf] > 0,
        vertex_observed=count[nf:] > 0,
        face_view_count=count[:nf],
        face_area_mm2=np.asarray(mesh.area_faces, dtype=np.float64),
        num_frames=n,
        params=params,
    )
