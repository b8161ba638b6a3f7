"""Image sampling at pixel coordinates and depth-based view synthesis.

This is the only module that calls :func:`torch.nn.functional.grid_sample`.  It always passes
``align_corners=False`` (:data:`colondepth.conventions.GRID_SAMPLE_ALIGN_CORNERS`) and normalises
pixel coordinates to match: with pixel centres at integers, the image spans ``[-0.5, W - 0.5]``, so

    x_norm = (2 u + 1) / W - 1,    y_norm = (2 v + 1) / H - 1.

View synthesis (Zhou et al., "Unsupervised Learning of Depth and Ego-Motion from Video", CVPR 2017):
every target pixel is back-projected with its depth, moved into the source camera with
``src_from_tgt`` and projected; the source image is sampled there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colondepth.conventions import GRID_SAMPLE_ALIGN_CORNERS
from colondepth.geometry.pose import transform_points
from colondepth.geometry.projection import backproject_depth, project_points

__all__ = ["sample_image", "warp_source_to_target", "pixel_to_grid_sample_coords", "INSIDE_TOLERANCE_PX"]

if GRID_SAMPLE_ALIGN_CORNERS is not False:  # pragma: no cover - guards the normalisation formula below
    raise ImportError("colondepth.geometry.warp normalises pixel coordinates for align_corners=False only")

#: Interpolation footprint per mode: a sample is "inside" when every tap it reads is a real pixel.
_MODES = ("bilinear", "nearest")

#: Slack (px) on the bilinear footprint, so that float32 round-off at the border pixels of an exact
#: reprojection (u = -1e-6 instead of 0) does not flip them to "outside"; it blends at most 0.1 % padding.
INSIDE_TOLERANCE_PX = 1e-3


def pixel_to_grid_sample_coords(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates ``(..., 2)`` to grid_sample's ``[-1, 1]`` coordinates for ``align_corners=False``."""
    scale = torch.tensor([2.0 / width, 2.0 / height], dtype=uv.dtype, device=uv.device)
    return (uv + 0.5) * scale - 1.0


def sample_image(image: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``image`` at pixel coordinates, with zero padding outside.

    Parameters
    ----------
    image : (B, C, H, W)
    uv : (B, H', W', 2) pixel coordinates ``(u, v)`` in ``image``, pixel centres at integers.
        Non-finite coordinates are treated as outside.
    mode : ``"bilinear"`` or ``"nearest"``.

    Returns
    -------
    sampled : (B, C, H', W') same dtype as ``image``.
    inside : (B, 1, H', W') bool, True where the sample reads only real pixels: ``0 <= u <= W - 1``
        and ``0 <= v <= H - 1`` for bilinear (no zero padding blended in; with a slack of
        :data:`INSIDE_TOLERANCE_PX` for round-off), ``-0.5 <= u < W - 0.5`` and ``-0.5 <= v < H - 0.5``
        for nearest.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
    if uv.dim() != 4 or uv.shape[-1] != 2 or uv.shape[0] != image.shape[0]:
        raise ValueError(f"uv must have shape (B={image.shape[0]}, H', W', 2), got {tuple(uv.shape)}")
    H, W = image.shape[-2:]
    uv = uv.to(dtype=image.dtype, device=image.device)
    u, v = uv[..., 0], uv[..., 1]
    if mode == "bilinear":
        tol = INSIDE_TOLERANCE_PX
        inside = (u >= -tol) & (u <= W - 1 + tol) & (v >= -tol) & (v <= H - 1 + tol)
    else:
        inside = (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)
    # Keep the grid finite and bounded: far-away or NaN coordinates read only padding anyway, and a
    # bounded grid keeps grid_sample's integer index arithmetic safe.  Clamping at two pixels outside
    # changes no sampled value.
    finite = torch.isfinite(uv).all(dim=-1, keepdim=True)
    lo = torch.tensor([-2.0, -2.0], dtype=uv.dtype, device=uv.device)
    hi = torch.tensor([W + 1.0, H + 1.0], dtype=uv.dtype, device=uv.device)
    uv_safe = torch.where(finite, uv, lo.expand_as(uv))
    uv_safe = torch.maximum(torch.minimum(uv_safe, hi), lo)
    grid = pixel_to_grid_sample_coords(uv_safe, H, W)
    sampled = F.grid_sample(
        image, grid, mode=mode, padding_mode="zeros", align_corners=GRID_SAMPLE_ALIGN_CORNERS
    )
    return sampled, inside.unsqueeze(1)


def warp_source_to_target(
    source: torch.Tensor,
    target_depth_mm: torch.Tensor,
    src_from_tgt: torch.Tensor,
    K: torch.Tensor,
    K_source: torch.Tensor | None = None,
    mode: str = "bilinear",
    min_depth_mm: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthesise the target view from a source image, the target depth and the relative pose.

    Parameters
    ----------
    source : (B, C, Hs, Ws) source image.
    target_depth_mm : (B, 1, H, W) z-depth of the target view in mm; ``<= 0`` or non-finite = invalid.
    src_from_tgt : (B, 4, 4) pose mapping target-camera points to source-camera points (mm).
    K : (B, 3, 3) or (3, 3) target intrinsics (px) for ``H x W``.
    K_source : intrinsics of the source image for ``Hs x Ws``; defaults to ``K``.
    mode : ``"bilinear"`` or ``"nearest"`` (see :func:`sample_image`).
    min_depth_mm : projected points need ``z > min_depth_mm`` in the source camera.

    Returns
    -------
    warped : (B, C, H, W) source colours seen from the target camera; 0 where not ``valid``.
    valid : (B, 1, H, W) bool: target depth > 0, the point lies in front of the source camera, and
        it projects inside the source image.
    """
    if source.dim() != 4:
        raise ValueError(f"source must have shape (B, C, H, W), got {tuple(source.shape)}")
    if target_depth_mm.dim() != 4 or target_depth_mm.shape[1] != 1:
        raise ValueError(f"target_depth_mm must have shape (B, 1, H, W), got {tuple(target_depth_mm.shape)}")
    B, _, H, W = target_depth_mm.shape
    if source.shape[0] != B:
        raise ValueError(f"source batch {source.shape[0]} != target_depth_mm batch {B}")
    if src_from_tgt.shape[-2:] != (4, 4) or src_from_tgt.dim() != 3 or src_from_tgt.shape[0] != B:
        raise ValueError(f"src_from_tgt must have shape (B={B}, 4, 4), got {tuple(src_from_tgt.shape)}")
    dtype, device = source.dtype, source.device
    depth = target_depth_mm.to(dtype=dtype, device=device)
    pose = src_from_tgt.to(dtype=dtype, device=device)
    K_src = K if K_source is None else K_source

    depth_ok = torch.isfinite(depth) & (depth > 0)
    depth_safe = torch.where(depth_ok, depth, torch.zeros_like(depth))
    points_tgt = backproject_depth(depth_safe, K).flatten(2).transpose(1, 2)  # (B, HW, 3)
    points_src = transform_points(pose, points_tgt)  # (B, HW, 3)
    uv, z = project_points(points_src, K_src, eps=min_depth_mm)
    uv = uv.reshape(B, H, W, 2)
    sampled, inside = sample_image(source, uv, mode=mode)
    valid = depth_ok & (z > min_depth_mm).reshape(B, 1, H, W) & inside
    warped = sampled * valid.to(dtype)
    return warped, valid
