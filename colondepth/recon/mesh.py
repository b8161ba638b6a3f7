"""One depth map to a surface mesh: triangulate the pixel grid, cut edges across depth jumps.

Every 2x2 block of neighbouring pixels ``(u, v), (u+1, v), (u, v+1), (u+1, v+1)`` gives two
triangles.  A triangle is kept when its three pixels are valid and its depths agree:
``max(z) / min(z) - 1 <= max_rel_jump`` (a *relative* jump, so the threshold means the same at
5 mm and at 80 mm).  Triangles are wound so that their normals point back towards the camera
(towards the lumen, for a colon seen from inside).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.recon.pointcloud import backproject_to_camera, check_depth, check_pose, transform_points_np


def grid_triangles(depth_mm: np.ndarray, valid: np.ndarray, max_rel_jump: float) -> np.ndarray:
    """Triangles over the pixel grid, ``(F, 3) int64`` indices into the row-major ``H * W`` pixels.

    Parameters
    ----------
    depth_mm : (H, W) float, z-depth in mm.
    valid : (H, W) bool, pixels that may be used.
    max_rel_jump : float, largest allowed ``max(z) / min(z) - 1`` inside one triangle.

    The winding ``(u, v) -> (u, v+1) -> (u+1, v)`` gives normals towards the camera (-Z side) in
    the OpenCV frame (+X right, +Y down).
    """
    h, w = depth_mm.shape
    idx = np.arange(h * w).reshape(h, w)
    i00, i10 = idx[:-1, :-1], idx[:-1, 1:]  # (v, u), (v, u+1)
    i01, i11 = idx[1:, :-1], idx[1:, 1:]  # (v+1, u), (v+1, u+1)
    tris = np.concatenate(
        [
            np.stack([i00, i01, i10], axis=-1).reshape(-1, 3),
            np.stack([i10, i01, i11], axis=-1).reshape(-1, 3),
        ],
        axis=0,
    )
    z = depth_mm.reshape(-1)[tris]
    ok = valid.reshape(-1)[tris].all(axis=1)
    zmin = np.where(ok, z.min(axis=1), 1.0)
    ok &= z.max(axis=1) <= zmin * (1.0 + max_rel_jump)
    return tris[ok]


def depth_to_mesh(
    depth_mm: np.ndarray,
    intrinsics: PinholeIntrinsics,
    rgb: Optional[np.ndarray] = None,
    world_from_cam: Optional[np.ndarray] = None,
    max_rel_jump: float = 0.05,
    valid: Optional[np.ndarray] = None,
    min_depth_mm: float = 0.0,
    max_depth_mm: float = float("inf"),
):
    """Surface mesh of one depth map.

    Parameters
    ----------
    depth_mm : (H, W) float, z-depth in mm, 0 = invalid.
    intrinsics : PinholeIntrinsics for that size.
    rgb : (H, W, 3) uint8, optional vertex colours.
    world_from_cam : (4, 4), optional; vertices are in the world frame when given, else camera.
    max_rel_jump : float, edges across a relative depth jump larger than this are cut (default 5 %).
    valid : (H, W) bool, optional extra mask (e.g. the endoscope's field of view).
    min_depth_mm, max_depth_mm : working depth range.

    Returns
    -------
    trimesh.Trimesh with only the vertices used by a face (mm).  Raises :class:`UserError` when no
    triangle survives.
    """
    import trimesh

    depth = check_depth(depth_mm, intrinsics)
    if max_rel_jump < 0:
        raise UserError(f"max_rel_jump must be >= 0, got {max_rel_jump}")
    mask = (depth > 0) & (depth >= min_depth_mm) & (depth <= max_depth_mm)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    faces = grid_triangles(depth, mask, max_rel_jump)
    if len(faces) == 0:
        raise UserError("depth map gives no triangle (no valid 2x2 pixel block); check the depth source")
    used = np.unique(faces)
    remap = np.full(depth.size, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    verts = backproject_to_camera(depth, intrinsics).reshape(-1, 3)[used]
    if world_from_cam is not None:
        verts = transform_points_np(check_pose(world_from_cam), verts)
    colors = None
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape[:2] != depth.shape:
            raise UserError(f"rgb shape {rgb.shape} does not match depth shape {depth.shape}")
        colors = rgb[..., :3].reshape(-1, 3)[used].astype(np.uint8)
    return trimesh.Trimesh(vertices=verts, faces=remap[faces], vertex_colors=colors, process=False)
