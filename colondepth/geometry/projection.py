"""Pinhole back-projection and projection (torch, differentiable, batch-size and device agnostic).

Convention
    OpenCV camera frame (+X right, +Y down, +Z forward), millimetres.  Pixels ``(u, v) =
    (column, row)`` with pixel centres at integers, so pixel ``(u, v)`` of a ``(B, C, H, W)`` tensor
    is ``x[..., v, u]``.  ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels.
    ``depth_mm`` is z-depth (the Z coordinate of the surface point), ``range_mm`` the Euclidean
    distance from the optical centre, ``disp = 1 / depth_mm`` (1/mm); 0 marks invalid in all three.

    Back-projection of pixel ``m = (u, v, 1)`` with depth ``Z``: ``M = Z K^-1 m``.
    Projection of ``M = (X, Y, Z)``: ``(u, v) = (fx X / Z + s Y / Z + cx, fy Y / Z + cy)``.

Every ``K`` argument may be ``(B, 3, 3)`` or a single ``(3, 3)`` shared by the batch; it is moved to
the device and dtype of the main input.

Numpy twins serve the numpy code (fusion, coverage, point clouds) so that it projects and rounds exactly
as here: :func:`project_points_np`, :func:`pixel_rays_np`, :func:`backproject_depth_np`,
:func:`depth_to_range_np` / :func:`range_to_depth_np` (one ``(3, 3)`` camera, ``(H, W)`` maps), and
:func:`pixel_index`, the one rule that turns a continuous pixel coordinate into the index of the pixel
containing it (round half up: ``floor(x + 0.5)``; pixel ``i`` covers ``[i - 0.5, i + 0.5)``).  Resizing
and letterboxing images with their intrinsics is :mod:`colondepth.geometry.letterbox`.

>>> import torch
>>> from colondepth.conventions import ImageSize
>>> K = torch.tensor([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
>>> uv, z = project_points(torch.tensor([[[10.0, 0.0, 100.0]]]), K)
>>> uv.tolist(), z.tolist()
([[[42.0, 24.0]]], [[100.0]])
"""

from __future__ import annotations

import numpy as np
import torch

from colondepth.conventions import ImageSize

__all__ = [
    "pixel_grid",
    "pixel_rays",
    "backproject_depth",
    "project_points",
    "depth_to_range",
    "range_to_depth",
    "depth_to_disp",
    "disp_to_depth",
    "pixel_index",
    "project_points_np",
    "pixel_rays_np",
    "rays_at_np",
    "backproject_depth_np",
    "depth_to_range_np",
    "range_to_depth_np",
]


def _batched_K(K: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``K`` as ``(B, 3, 3)`` on ``like``'s device and dtype."""
    if not isinstance(K, torch.Tensor):
        raise TypeError(f"K must be a torch.Tensor, got {type(K).__name__}")
    if K.shape[-2:] != (3, 3) or K.dim() not in (2, 3):
        raise ValueError(f"K must have shape (B, 3, 3) or (3, 3), got {tuple(K.shape)}")
    K = K.to(device=like.device, dtype=like.dtype)
    if K.dim() == 2:
        return K.expand(batch, 3, 3)
    if K.shape[0] not in (1, batch):
        raise ValueError(f"K has batch size {K.shape[0]} but the input has {batch}")
    return K.expand(batch, 3, 3)


def _check_depth(depth: torch.Tensor, name: str) -> None:
    if not isinstance(depth, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(depth).__name__}")
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(depth.shape)}")


def pixel_grid(size: ImageSize, device=None, dtype=None) -> torch.Tensor:
    """Pixel-centre coordinates ``(H, W, 2)``: ``grid[v, u] = (u, v)`` with integer centres.

    ``dtype`` defaults to ``torch.get_default_dtype()``; ``device`` to the default device.
    """
    if not isinstance(size, ImageSize):
        raise TypeError(f"size must be an ImageSize(height, width), got {type(size).__name__}")
    dtype = dtype or torch.get_default_dtype()
    u = torch.arange(size.width, device=device, dtype=dtype)
    v = torch.arange(size.height, device=device, dtype=dtype)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def pixel_rays(K: torch.Tensor, size: ImageSize, device=None, dtype=None) -> torch.Tensor:
    """Rays ``K^-1 (u, v, 1)`` with unit z-component, ``(B, 3, H, W)`` (or ``(1, 3, H, W)`` for a (3, 3) K).

    The ray of a pixel scaled by its z-depth is the 3D point; its norm is ``range / depth``.
    """
    device = device if device is not None else K.device
    dtype = dtype or (K.dtype if K.is_floating_point() else torch.get_default_dtype())
    like = torch.empty(0, device=device, dtype=dtype)
    Kb = _batched_K(K, K.shape[0] if K.dim() == 3 else 1, like)
    grid = pixel_grid(size, device=device, dtype=dtype)  # (H, W, 2)
    u, v = grid[..., 0], grid[..., 1]  # (H, W)
    fx, s, cx = (Kb[:, 0, i].reshape(-1, 1, 1) for i in range(3))
    fy, cy = Kb[:, 1, 1].reshape(-1, 1, 1), Kb[:, 1, 2].reshape(-1, 1, 1)
    # K^-1 (u, v, 1) for an upper-triangular K with K[2] = (0, 0, 1), written out so that it works in
    # every dtype (including float16) and keeps simple gradients.
    y = (v - cy) / fy  # (B, H, W)
    x = (u - cx - s * y) / fx
    return torch.stack([x, y, torch.ones_like(x)], dim=1)  # (B, 3, H, W)


def backproject_depth(depth_mm: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """3D points in the camera frame from z-depth: ``M = Z K^-1 m``.

    Parameters
    ----------
    depth_mm : (B, 1, H, W) z-depth in mm (0 = invalid gives the point (0, 0, 0)).
    K : (B, 3, 3) or (3, 3) intrinsics in pixels for this image size.

    Returns
    -------
    points_cam : (B, 3, H, W), mm, OpenCV camera frame; ``points_cam[:, 2] == depth_mm[:, 0]``.
    """
    _check_depth(depth_mm, "depth_mm")
    B, _, H, W = depth_mm.shape
    Kb = _batched_K(K, B, depth_mm)
    rays = pixel_rays(Kb, ImageSize(H, W), device=depth_mm.device, dtype=depth_mm.dtype)
    return rays * depth_mm


def project_points(points_cam: torch.Tensor, K: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points to pixels.

    Parameters
    ----------
    points_cam : (B, N, 3) points in the OpenCV camera frame, mm.
    K : (B, 3, 3) or (3, 3) intrinsics in pixels.
    eps : points with ``z <= eps`` (mm) are divided by ``eps`` instead of ``z``: their ``uv`` is finite
        but meaningless; callers mark them invalid with ``z > eps``.

    Returns
    -------
    uv : (B, N, 2) pixel coordinates ``(u, v)``, pixel centres at integers.
    z : (B, N) z-depth of each point in mm (negative behind the camera).
    """
    if not isinstance(points_cam, torch.Tensor):
        raise TypeError(f"points_cam must be a torch.Tensor, got {type(points_cam).__name__}")
    if points_cam.dim() != 3 or points_cam.shape[-1] != 3:
        raise ValueError(f"points_cam must have shape (B, N, 3), got {tuple(points_cam.shape)}")
    Kb = _batched_K(K, points_cam.shape[0], points_cam)
    z = points_cam[..., 2]
    safe_z = torch.where(z > eps, z, torch.full_like(z, eps))
    pix = points_cam @ Kb.transpose(-1, -2)  # (B, N, 3): (fx X + s Y + cx Z, fy Y + cy Z, Z)
    uv = pix[..., :2] / safe_z.unsqueeze(-1)
    return uv, z


def depth_to_range(depth_mm: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Ray length ``range = depth * |K^-1 m|`` ``(B, 1, H, W)`` mm from z-depth ``(B, 1, H, W)`` mm; 0 stays 0."""
    _check_depth(depth_mm, "depth_mm")
    return torch.linalg.vector_norm(backproject_depth(depth_mm, K), dim=1, keepdim=True)


def range_to_depth(range_mm: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Z-depth ``depth = range / |K^-1 m|`` ``(B, 1, H, W)`` mm from ray length ``(B, 1, H, W)`` mm; 0 stays 0."""
    _check_depth(range_mm, "range_mm")
    B, _, H, W = range_mm.shape
    Kb = _batched_K(K, B, range_mm)
    rays = pixel_rays(Kb, ImageSize(H, W), device=range_mm.device, dtype=range_mm.dtype)
    return range_mm / torch.linalg.vector_norm(rays, dim=1, keepdim=True)


def depth_to_disp(depth_mm: torch.Tensor) -> torch.Tensor:
    """Disparity ``1 / depth_mm`` (1/mm), 0 where depth is not positive (invalid); any shape."""
    valid = depth_mm > 0
    return torch.where(valid, 1.0 / torch.where(valid, depth_mm, torch.ones_like(depth_mm)), torch.zeros_like(depth_mm))


def disp_to_depth(disp: torch.Tensor) -> torch.Tensor:
    """Z-depth in mm ``1 / disp``, 0 where disparity is not positive (invalid); any shape."""
    return depth_to_disp(disp)


# ------------------------------------------------------------------------------------------------
# numpy helpers (same conventions)
# ------------------------------------------------------------------------------------------------

def pixel_index(coord: np.ndarray) -> np.ndarray:
    """Integer index of the pixel containing continuous pixel coordinate(s) ``coord`` (any shape).

    Pixel centres are at integers, so pixel ``i`` covers ``[i - 0.5, i + 0.5)``: the index is
    ``floor(coord + 0.5)`` (round half up, the same for every coordinate, unlike ``np.round``'s half to
    even).  Returns ``int64``; callers check the bounds.

    >>> pixel_index(np.array([-0.5, 0.49, 0.5, 1.5, 2.5])).tolist()
    [0, 0, 1, 2, 3]
    """
    return np.floor(np.asarray(coord) + 0.5).astype(np.int64)


def project_points_np(points_cam: np.ndarray, K: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Numpy twin of :func:`project_points` for one camera: ``(N, 3)`` points -> ``uv (N, 2)``, ``z (N,)``.

    ``K`` is a ``(3, 3)`` matrix in pixels (``PinholeIntrinsics.K``).  The result keeps the floating
    dtype of ``points_cam`` (float32 stays float32).  Points with ``z <= eps`` get a finite but meaningless
    ``uv``; callers mark them invalid with ``z > eps``.

    >>> uv, z = project_points_np(np.array([[10.0, 0.0, 100.0]]), np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]]))
    >>> uv.tolist(), z.tolist()
    ([[42.0, 24.0]], [100.0])
    """
    pts = np.asarray(points_cam)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points_cam must have shape (N, 3), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.floating):
        pts = pts.astype(np.float64)
    K = np.asarray(K, dtype=pts.dtype)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {K.shape}")
    z = pts[:, 2]
    safe_z = np.where(z > eps, z, pts.dtype.type(eps))
    x, y = pts[:, 0] / safe_z, pts[:, 1] / safe_z
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1)
    return uv, z


def _check_K_np(K) -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {K.shape}")
    return K


def _check_map_np(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W), got {a.shape}")
    return a.astype(np.float64)


def pixel_rays_np(K: np.ndarray, size: ImageSize) -> np.ndarray:
    """Numpy twin of :func:`pixel_rays` for one camera: ``(H, W, 3) float64`` rays ``K^-1 (u, v, 1)`` with
    unit z-component, ``rays[v, u]`` for pixel ``(u, v)`` (centres at integers).

    >>> pixel_rays_np(np.array([[2.0, 0, 1], [0, 2.0, 0], [0, 0, 1]]), ImageSize(1, 3))[0].tolist()
    [[-0.5, 0.0, 1.0], [0.0, 0.0, 1.0], [0.5, 0.0, 1.0]]
    """
    if not isinstance(size, ImageSize):
        raise TypeError(f"size must be an ImageSize(height, width), got {type(size).__name__}")
    vv, uu = np.mgrid[0:size.height, 0:size.width].astype(np.float64)
    return rays_at_np(K, uu, vv)


def rays_at_np(K: np.ndarray, u, v) -> np.ndarray:
    """Rays ``K^-1 (u, v, 1)`` (unit z-component, float64) of pixel positions ``u``, ``v`` (any matching
    shape ``S``, centres at integers, sub-pixel allowed) -> ``S + (3,)``; the rule :func:`pixel_rays_np` uses.

    >>> rays_at_np(np.array([[2.0, 0, 1], [0, 2.0, 0], [0, 0, 1]]), np.array([2.0]), np.array([1.0])).tolist()
    [[0.5, 0.5, 1.0]]
    """
    K = _check_K_np(K)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def backproject_depth_np(depth_mm: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`backproject_depth`: ``(H, W)`` z-depth in mm -> ``(H, W, 3) float64`` camera-frame
    points in mm (``M = Z K^-1 m``; depth 0 gives the origin)."""
    d = _check_map_np(depth_mm, "depth_mm")
    return pixel_rays_np(K, ImageSize(*d.shape)) * d[..., None]


def depth_to_range_np(depth_mm: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`depth_to_range`: ``(H, W)`` z-depth -> ``(H, W) float64`` ray length (same unit)."""
    d = _check_map_np(depth_mm, "depth_mm")
    return d * np.linalg.norm(pixel_rays_np(K, ImageSize(*d.shape)), axis=-1)


def range_to_depth_np(range_mm: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`range_to_depth`: ``(H, W)`` ray length -> ``(H, W) float64`` z-depth (same unit).

    For fisheye cameras use :func:`colondepth.geometry.camera.range_to_z_depth`.
    """
    r = _check_map_np(range_mm, "range_mm")
    return r / np.linalg.norm(pixel_rays_np(K, ImageSize(*r.shape)), axis=-1)
