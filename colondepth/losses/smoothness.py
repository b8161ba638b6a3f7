"""Edge-aware smoothness of disparity (Godard et al. 2017/2019), masked.

``disp`` is ``1 / depth_mm`` ``(B, 1, H, W)``; it is divided by its per-image mean first (monodepth2), so the
penalty does not shrink by simply scaling depth up.  Image gradients ``(B, C, H, W)`` down-weight the
penalty at edges: ``|d_x disp*| exp(-mean_c |d_x I|) + |d_y disp*| exp(-mean_c |d_y I|)``.
"""

from __future__ import annotations

import torch

__all__ = ["edge_aware_smoothness", "mean_normalized_disparity"]


def mean_normalized_disparity(disp: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-7) -> torch.Tensor:
    """``disp / mean(disp)`` per image (the mean over ``mask`` when given): ``(B, 1, H, W)``."""
    if mask is None:
        mean = disp.mean(dim=(2, 3), keepdim=True)
    else:
        m = mask.to(disp.dtype)
        mean = (disp * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp(min=1.0)
    return disp / (mean + eps)


def edge_aware_smoothness(disp: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None,
                          normalize: bool = True) -> torch.Tensor:
    """Scalar edge-aware smoothness of mean-normalised disparity.

    Parameters
    ----------
    disp : (B, C', H, W) disparity (1/mm) or any inverse-depth-like map (C' = 1), or with ``normalize=False``
        any map whose gradients should be small, e.g. a flow (C' = 2, gradients summed over channels).
    image : (B, C, H, W) image at the same resolution, [0, 1].
    mask : (B, 1, H, W) bool; a gradient counts only where both of its pixels are in the mask.
    normalize : divide ``disp`` by its per-image mean first (disparity); ``False`` for signed maps.

    Returns the mean over counted gradients (0 for a constant map).
    """
    if disp.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"disp {tuple(disp.shape)} and image {tuple(image.shape)} need the same H x W")
    d = mean_normalized_disparity(disp, mask) if normalize else disp
    gdx = (d[..., :, 1:] - d[..., :, :-1]).abs().sum(1, keepdim=True)
    gdy = (d[..., 1:, :] - d[..., :-1, :]).abs().sum(1, keepdim=True)
    gix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    giy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    tx = gdx * torch.exp(-gix)
    ty = gdy * torch.exp(-giy)
    if mask is None:
        return tx.mean() + ty.mean()
    m = mask.to(disp.dtype)
    mx = m[..., :, 1:] * m[..., :, :-1]
    my = m[..., 1:, :] * m[..., :-1, :]
    return (tx * mx).sum() / mx.sum().clamp(min=1.0) + (ty * my).sum() / my.sum().clamp(min=1.0)
