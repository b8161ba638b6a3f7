"""Depth maps to coloured point clouds, in the camera or the world frame.

Convention: ``depth_mm`` is z-depth along +Z of an OpenCV camera (+X right, +Y down, +Z forward)
in millimetres, 0 = no surface.  Back-projection goes through
:func:`colondepth.geometry.projection.backproject_depth` (``M = Z(m) K^-1 m``), the one owner of
that convention; poses go through :func:`colondepth.geometry.pose.transform_points`.

>>> import numpy as np
>>> from colondepth.conventions import ImageSize
>>> from colondepth.geometry.camera import PinholeIntrinsics
>>> K = PinholeIntrinsics(fx=10.0, fy=10.0, cx=1.0, cy=1.0, size=ImageSize(3, 3))
>>> cloud = depth_to_pointcloud(np.full((3, 3), 20.0, np.float32), K)
>>> cloud.points_mm[0].tolist()  # pixel (u, v) = (0, 0): x = (0 - 1) * 20 / 10
[-2.0, -2.0, 20.0]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import numpy as np

from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics


@dataclass
class PointCloud:
    """Points with optional colours.

    Attributes
    ----------
    points_mm : (N, 3) float64
        Positions in millimetres, in the frame named by ``frame``.
    colors : (N, 3) uint8 or None
        RGB colour per point.
    frame : str
        ``"cam"`` (OpenCV camera of the frame) or ``"world"``.
    """

    points_mm: np.ndarray
    colors: Optional[np.ndarray] = None
    frame: str = "cam"

    def __len__(self) -> int:
        return int(self.points_mm.shape[0])

    def subsample(self, max_points: int, seed: int = 0) -> "PointCloud":
        """A random subset of at most ``max_points`` points (deterministic for a given ``seed``)."""
        if len(self) <= max_points:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=max_points, replace=False))
        colors = None if self.colors is None else self.colors[idx]
        return PointCloud(self.points_mm[idx], colors, self.frame)

    @staticmethod
    def concatenate(clouds: list["PointCloud"]) -> "PointCloud":
        """Join clouds that share a frame; colours are kept only if every cloud has them."""
        if not clouds:
            return PointCloud(np.zeros((0, 3)), None, "world")
        frames = {c.frame for c in clouds}
        if len(frames) != 1:
            raise ValueError(f"cannot concatenate point clouds in different frames {sorted(frames)}")
        pts = np.concatenate([c.points_mm for c in clouds], axis=0)
        colors = None
        if all(c.colors is not None for c in clouds):
            colors = np.concatenate([c.colors for c in clouds], axis=0)
        return PointCloud(pts, colors, frames.pop())

    def to_trimesh(self):
        """A :class:`trimesh.PointCloud` (colours as RGBA when present)."""
        import trimesh

        return trimesh.PointCloud(self.points_mm, colors=self.colors)


def check_depth(depth_mm, intrinsics: PinholeIntrinsics, what: str = "depth map") -> np.ndarray:
    """Validate a depth map against ``intrinsics`` and return it as ``(H, W) float32`` mm.

    Raises :class:`UserError` for a wrong shape, NaN/inf or negative values.  An all-zero map is
    allowed here (callers decide whether an empty frame is an error).
    """
    depth = np.asarray(depth_mm)
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    h, w = intrinsics.size.as_hw()
    if depth.shape != (h, w):
        raise UserError(
            f"{what}: shape {tuple(depth.shape)} does not match the intrinsics' {intrinsics.size}; "
            f"resize the depth or pass intrinsics for {depth.shape[:2]}"
        )
    depth = depth.astype(np.float32, copy=False)
    if not np.all(np.isfinite(depth)):
        n = int(np.size(depth) - np.isfinite(depth).sum())
        raise UserError(f"{what}: {n} NaN/inf depth values; mark invalid pixels with 0 instead")
    if np.any(depth < 0):
        raise UserError(f"{what}: negative depth values; depth is z-depth in mm with 0 = invalid")
    return depth


@functools.lru_cache(maxsize=8)
def camera_rays(intrinsics: PinholeIntrinsics) -> np.ndarray:
    """``(H, W, 3) float64`` ray ``K^-1 [u, v, 1]`` of every pixel (unit z-component), read-only.

    Computed once per intrinsics by :func:`colondepth.geometry.projection.backproject_depth` of a
    depth of 1 mm, so the pixel convention stays in one place.
    """
    import torch

    from colondepth.geometry.projection import backproject_depth

    h, w = intrinsics.size.as_hw()
    ones = torch.ones((1, 1, h, w), dtype=torch.float64)
    rays = backproject_depth(ones, torch.from_numpy(intrinsics.K)[None])[0].permute(1, 2, 0).numpy().copy()
    rays.setflags(write=False)
    return rays


def backproject_to_camera(depth_mm: np.ndarray, intrinsics: PinholeIntrinsics) -> np.ndarray:
    """Camera-frame 3D point of every pixel, ``(H, W, 3) float64`` mm (0 depth gives the origin).

    ``M = Z(m) K^-1 m`` with the rays of :func:`camera_rays` (i.e. of
    :func:`colondepth.geometry.projection.backproject_depth`).
    """
    depth = np.asarray(depth_mm, dtype=np.float64)
    return camera_rays(intrinsics) * depth[..., None]


def transform_points_np(b_from_a: np.ndarray, points_a: np.ndarray) -> np.ndarray:
    """Map ``(N, 3)`` points from frame ``a`` to frame ``b`` with a ``(4, 4)`` pose (numpy wrapper
    over :func:`colondepth.geometry.pose.transform_points`)."""
    import torch

    from colondepth.geometry.pose import transform_points

    T = torch.from_numpy(np.asarray(b_from_a, dtype=np.float64))[None]
    p = torch.from_numpy(np.ascontiguousarray(points_a, dtype=np.float64))[None]
    return transform_points(T, p)[0].cpu().numpy()


def depth_to_pointcloud(
    depth_mm: np.ndarray,
    intrinsics: PinholeIntrinsics,
    rgb: Optional[np.ndarray] = None,
    world_from_cam: Optional[np.ndarray] = None,
    valid: Optional[np.ndarray] = None,
    stride: int = 1,
    min_depth_mm: float = 0.0,
    max_depth_mm: float = float("inf"),
) -> PointCloud:
    """Back-project one depth map to a (coloured) point cloud.

    Parameters
    ----------
    depth_mm : (H, W) float
        z-depth in mm, 0 = invalid; must match ``intrinsics.size``.
    intrinsics : PinholeIntrinsics
    rgb : (H, W, 3) uint8, optional
        Colours of the same frame.
    world_from_cam : (4, 4) float, optional
        When given the points are returned in the world frame, else in the camera frame.
    valid : (H, W) bool, optional
        Extra mask ANDed with ``depth > 0`` and the depth range.
    stride : int
        Keep every ``stride``-th pixel in each direction.
    min_depth_mm, max_depth_mm : float
        Working depth range; pixels outside are dropped.

    Returns
    -------
    PointCloud with points ``(N, 3)`` in row-major pixel order of the kept pixels.
    """
    depth = check_depth(depth_mm, intrinsics)
    mask = (depth > 0) & (depth >= min_depth_mm) & (depth <= max_depth_mm)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != depth.shape:
            raise UserError(f"valid mask shape {valid.shape} does not match depth shape {depth.shape}")
        mask &= valid
    if stride < 1:
        raise UserError(f"stride must be >= 1, got {stride}")
    if stride > 1:
        sub = np.zeros_like(mask)
        sub[::stride, ::stride] = True
        mask &= sub
    if not mask.any():
        raise UserError("depth map has no valid pixel (all 0 or outside the depth range); check the depth source")
    pts = backproject_to_camera(depth, intrinsics)[mask]
    colors = None
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape[:2] != depth.shape or rgb.ndim != 3 or rgb.shape[2] < 3:
            raise UserError(f"rgb shape {rgb.shape} does not match depth shape {depth.shape} (need H x W x 3)")
        colors = np.ascontiguousarray(rgb[..., :3][mask], dtype=np.uint8)
    frame = "cam"
    if world_from_cam is not None:
        pts = transform_points_np(check_pose(world_from_cam), pts)
        frame = "world"
    return PointCloud(pts, colors, frame)


def check_pose(pose, what: str = "pose") -> np.ndarray:
    """Validate a rigid ``(4, 4)`` pose and return it as float64; raise :class:`UserError` if not rigid."""
    T = np.asarray(pose, dtype=np.float64)
    if T.shape != (4, 4):
        raise UserError(f"{what}: expected a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise UserError(f"{what}: contains NaN/inf; check the trajectory file")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0 \
            or not np.allclose(T[3], [0, 0, 0, 1]):
        raise UserError(f"{what}: not a rigid transform (rotation must be orthonormal, last row 0 0 0 1)")
    return T
