"""Supervised depth losses with valid masks (pure functions of tensors).

All functions take predicted and ground-truth z-depth in millimetres, ``(B, 1, H, W)`` (or
``(B, H, W)``), and an optional boolean ``valid`` mask of the same shape.  The ground-truth mask
:func:`valid_mask` (``gt > 0`` and finite) is always applied on top, so invalid pixels never
contribute.  Each loss is averaged per image over its valid pixels, then over the images that have
at least one valid pixel; a batch without any valid pixel gives ``0`` (with a gradient path).

Conventions: ``depth_mm`` is z-depth in mm (see :mod:`colondepth.conventions`); "log" is the natural
logarithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Smallest depth (mm) a prediction is clamped to before taking a logarithm or an inverse.
EPS_MM = 1e-6


def valid_mask(gt_depth_mm: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of usable ground truth: ``gt > 0``, finite, and ``valid`` when given.

    >>> import torch
    >>> valid_mask(torch.tensor([0.0, 1.0, float("nan"), float("inf"), 2.0])).tolist()
    [False, True, False, False, True]
    """
    mask = torch.isfinite(gt_depth_mm) & (gt_depth_mm > 0)
    if valid is not None:
        mask = mask & valid.to(torch.bool)
    return mask


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(B, N)``."""
    return x.reshape(x.shape[0], -1)


def _masked_image_mean(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean of ``values`` over ``mask`` (both ``(B, N)``); returns (means (B,), has_pixels (B,))."""
    m = mask.to(values.dtype)
    count = m.sum(dim=1)
    total = (torch.where(mask, values, torch.zeros_like(values))).sum(dim=1)
    return total / count.clamp(min=1.0), count > 0


def _batch_mean(per_image: torch.Tensor, has_pixels: torch.Tensor) -> torch.Tensor:
    if not bool(has_pixels.any()):
        return per_image.sum() * 0.0
    return per_image[has_pixels].mean()


def _safe_log(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # Replace masked-out entries before the log so neither the value nor its gradient is NaN.
    return torch.log(torch.where(mask, x, torch.ones_like(x)).clamp(min=EPS_MM))


def silog_loss(pred_depth_mm: torch.Tensor, gt_depth_mm: torch.Tensor, valid: torch.Tensor | None = None,
               lam: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al. 2014), averaged over images.

    With ``d = log(pred) - log(gt)`` over the ``n`` valid pixels of an image::

        L = mean(d ** 2) - lam * mean(d) ** 2

    ``lam = 0`` is the plain mean squared log error, ``lam = 1`` the variance of ``d`` (fully scale
    invariant: ``pred`` and ``k * pred`` give the same loss).  Returns a scalar tensor.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"silog lambda must be in [0, 1], got {lam}")
    mask = _flat(valid_mask(gt_depth_mm, valid))
    d = _safe_log(_flat(pred_depth_mm), mask) - _safe_log(_flat(gt_depth_mm), mask)
    mean_d2, has = _masked_image_mean(d * d, mask)
    mean_d, _ = _masked_image_mean(d, mask)
    per_image = (mean_d2 - lam * mean_d * mean_d).clamp(min=0.0)
    return _batch_mean(per_image, has)


def l1_loss(pred_depth_mm: torch.Tensor, gt_depth_mm: torch.Tensor, valid: torch.Tensor | None = None,
            space: str = "depth", ref_mm: float = 1.0) -> torch.Tensor:
    """Mean absolute error on depth or inverse depth, made unitless by ``ref_mm``.

    ``space="depth"`` compares ``depth / ref_mm``; ``space="inverse_depth"`` compares ``ref_mm / depth``
    (so with ``ref_mm = max_depth`` resp. ``min_depth`` both lie in ``(0, 1]``).
    """
    if space not in ("depth", "inverse_depth"):
        raise ValueError(f"l1 space must be 'depth' or 'inverse_depth', got {space!r}")
    mask = _flat(valid_mask(gt_depth_mm, valid))
    pred = _flat(pred_depth_mm)
    gt = torch.where(mask, _flat(gt_depth_mm), torch.ones_like(pred))
    if space == "depth":
        err = (pred - gt).abs() / ref_mm
    else:
        err = (ref_mm / pred.clamp(min=EPS_MM) - ref_mm / gt).abs()
    per_image, has = _masked_image_mean(err, mask)
    return _batch_mean(per_image, has)


def gradient_matching_loss(pred_depth_mm: torch.Tensor, gt_depth_mm: torch.Tensor,
                           valid: torch.Tensor | None = None, scales: int = 4) -> torch.Tensor:
    """Multi-scale gradient matching in log depth (Li & Snavely 2018, MegaDepth).

    With ``R = log(pred) - log(gt)``, at each scale ``k = 0 .. scales-1`` (every ``2**k``-th pixel)::

        L_k = mean over valid neighbour pairs of |R(x+1, y) - R(x, y)| + |R(x, y+1) - R(x, y)|

    and ``L = mean_k L_k``.  Zero whenever ``pred = c * gt`` for a constant ``c > 0`` (a constant
    offset in log space); a pair counts only when both pixels are valid.
    """
    if scales < 1:
        raise ValueError(f"gradient scales must be >= 1, got {scales}")
    if pred_depth_mm.ndim == 3:
        pred_depth_mm, gt_depth_mm = pred_depth_mm[:, None], gt_depth_mm[:, None]
        valid = None if valid is None else valid[:, None]
    mask = valid_mask(gt_depth_mm, valid)
    residual = _safe_log(pred_depth_mm, mask) - _safe_log(gt_depth_mm, mask)
    losses = []
    for k in range(scales):
        step = 2 ** k
        r = residual[..., ::step, ::step]
        m = mask[..., ::step, ::step]
        if r.shape[-1] < 2 and r.shape[-2] < 2:
            break
        gx = (r[..., :, 1:] - r[..., :, :-1]).abs()
        mx = m[..., :, 1:] & m[..., :, :-1]
        gy = (r[..., 1:, :] - r[..., :-1, :]).abs()
        my = m[..., 1:, :] & m[..., :-1, :]
        gx_f, mx_f, gy_f, my_f = _flat(gx), _flat(mx), _flat(gy), _flat(my)
        total = torch.where(mx_f, gx_f, 0.0).sum(1) + torch.where(my_f, gy_f, 0.0).sum(1)
        count = mx_f.sum(1) + my_f.sum(1)
        has = count > 0
        per_image = total / count.clamp(min=1).to(total.dtype)
        losses.append(_batch_mean(per_image, has))
    return torch.stack(losses).mean()


@dataclass(frozen=True)
class SupervisedLossWeights:
    """Weights of :func:`supervised_loss` (mirrors the curriculum's ``loss`` section)."""

    silog_weight: float = 1.0
    silog_lambda: float = 0.85
    l1_weight: float = 0.1
    l1_space: str = "inverse_depth"
    grad_weight: float = 0.5
    grad_scales: int = 4


def supervised_loss(pred_depths_mm: list[torch.Tensor], gt_depth_mm: torch.Tensor,
                    weights: SupervisedLossWeights, min_depth_mm: float, max_depth_mm: float,
                    valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of SILog, L1 and gradient matching over multi-scale predictions.

    Each prediction ``(B, 1, h, w)`` (finest first) is upsampled bilinearly to the ground truth's
    ``(B, 1, H, W)`` and scored there; the per-scale losses are averaged.  The L1 term is made unitless
    with ``ref_mm = max_depth_mm`` (depth space) or ``min_depth_mm`` (inverse depth space).

    Returns ``(total, parts)`` where ``parts`` maps ``silog``, ``l1``, ``grad`` to floats (finest scale).
    """
    h, w = gt_depth_mm.shape[-2:]
    ref = max_depth_mm if weights.l1_space == "depth" else min_depth_mm
    totals = []
    parts: dict[str, float] = {}
    for i, pred in enumerate(pred_depths_mm):
        if tuple(pred.shape[-2:]) != (h, w):
            pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
        terms = {}
        if weights.silog_weight:
            terms["silog"] = (weights.silog_weight, silog_loss(pred, gt_depth_mm, valid, weights.silog_lambda))
        if weights.l1_weight:
            terms["l1"] = (weights.l1_weight, l1_loss(pred, gt_depth_mm, valid, weights.l1_space, ref))
        if weights.grad_weight:
            terms["grad"] = (weights.grad_weight,
                             gradient_matching_loss(pred, gt_depth_mm, valid, weights.grad_scales))
        totals.append(sum(wt * v for wt, v in terms.values()))
        if i == 0:
            parts = {k: float(v.detach()) for k, (_, v) in terms.items()}
    total = torch.stack(totals).mean()
    return total, parts
