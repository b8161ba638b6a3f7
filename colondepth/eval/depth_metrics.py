"""Depth error metrics with monodepth2's definitions, on valid pixels only.

For the valid pixels of one frame (ground truth ``g > 0``, finite, inside the optional
``[min_mm, max_mm]`` range and inside the field-of-view mask) and the aligned prediction ``p``:

=============  ==================================================  ==========
name           definition                                          unit
=============  ==================================================  ==========
``abs_rel``    ``mean(|g - p| / g)``                               --
``sq_rel``     ``mean((g - p)^2 / g)``                             mm
``rmse``       ``sqrt(mean((g - p)^2))``                           mm
``rmse_log``   ``sqrt(mean((ln g - ln p)^2))``                     --
``delta1``     ``mean(max(g/p, p/g) < 1.25)``                      fraction
``delta2``     ``mean(max(g/p, p/g) < 1.25^2)``                    fraction
``delta3``     ``mean(max(g/p, p/g) < 1.25^3)``                    fraction
=============  ==================================================  ==========

The one implementation of these formulas is :func:`depth_errors` (keyword-only ``gt_mm=``, ``pred_mm=`` so
the two cannot be swapped); training validation (:func:`colondepth.train.steps.batch_depth_errors`,
:meth:`colondepth.train.selfsup.SelfSupervisedKind.validate`) calls it too, with :func:`silog` for the
scale-invariant log error training also logs.

Order of operations (as monodepth2): select valid pixels by the ground truth, align the
prediction (:mod:`colondepth.eval.alignment`), clamp the aligned prediction to
``[min_mm, max_mm]`` (to ``[PRED_FLOOR_MM, inf)`` when no range is given, so logs and ratios stay
finite), then compute the errors.  Dataset numbers are the mean of the per-frame numbers
(:func:`mean_metrics`), again as monodepth2 reports them.  :func:`depth_error_map` gives the per-pixel
errors of the same pixels after the same steps (for pictures, e.g. the review app's error map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import numpy as np

from colondepth.eval.alignment import align_depth

#: Metric names in table order.
DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")

#: Column headers for printed tables.
METRIC_LABELS = {
    "abs_rel": "abs_rel",
    "sq_rel": "sq_rel (mm)",
    "rmse": "rmse (mm)",
    "rmse_log": "rmse_log",
    "delta1": "δ<1.25",
    "delta2": "δ<1.25²",
    "delta3": "δ<1.25³",
}

#: True where a smaller value is better (errors); False for the δ accuracies.
LOWER_IS_BETTER = {name: not name.startswith("delta") for name in DEPTH_METRICS}

#: Smallest predicted depth used when no ``min_mm`` is given (mm); keeps ``ln p`` finite.
PRED_FLOOR_MM = 1e-3


def valid_depth_mask(
    gt_mm: np.ndarray,
    *,
    min_mm: Optional[float] = None,
    max_mm: Optional[float] = None,
    fov_mask: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Pixels where the ground truth can be scored.

    Parameters
    ----------
    gt_mm : (H, W) float
        Ground-truth z-depth, mm, 0 = no surface.
    min_mm, max_mm : float, optional
        Keep only ``min_mm <= gt <= max_mm`` (each bound optional).
    fov_mask : (H, W) bool, optional
        True inside the endoscope's field of view.

    Returns
    -------
    (H, W) bool
        ``gt > 0`` and finite, within the range, inside the field of view.

    >>> valid_depth_mask(np.array([[0.0, 5.0], [np.nan, 50.0]]), max_mm=20.0).tolist()
    [[False, True], [False, False]]
    """
    gt = np.asarray(gt_mm)
    valid = np.isfinite(gt) & (gt > 0)
    if min_mm is not None:
        valid &= gt >= float(min_mm)
    if max_mm is not None:
        valid &= gt <= float(max_mm)
    if fov_mask is not None:
        fov = np.asarray(fov_mask, dtype=bool)
        if fov.shape != gt.shape:
            raise ValueError(f"fov_mask shape {fov.shape} differs from depth shape {gt.shape}")
        valid &= fov
    return valid


def _as_float64(x) -> np.ndarray:
    """Flat float64 numpy copy of an array or a torch tensor (any device)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def _checked_pair(gt_mm, pred_mm, what: str) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = _as_float64(gt_mm), _as_float64(pred_mm)
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same number of pixels, got {gt.size} and {pred.size}")
    if gt.size == 0:
        raise ValueError(f"{what} needs at least one valid pixel")
    if not (np.all(gt > 0) and np.all(pred > 0) and np.all(np.isfinite(gt)) and np.all(np.isfinite(pred))):
        raise ValueError(f"{what} needs finite, positive gt and pred; mask and clamp first")
    return gt, pred


def depth_errors(*, gt_mm, pred_mm) -> dict[str, float]:
    """The seven metrics of :data:`DEPTH_METRICS` between matching valid pixels.

    Parameters
    ----------
    gt_mm, pred_mm : (n,) float array or torch tensor (any shape, flattened); keyword-only
        Ground truth and (aligned, clamped) prediction at the valid pixels, mm, all > 0 and finite.
        Keyword-only so the two cannot be swapped.

    >>> e = depth_errors(gt_mm=np.array([1.0, 2.0, 4.0]), pred_mm=np.array([2.0, 2.0, 2.0]))
    >>> round(e["abs_rel"], 6), round(e["sq_rel"], 6), round(e["delta1"], 6)
    (0.5, 0.666667, 0.333333)
    """
    gt, pred = _checked_pair(gt_mm, pred_mm, "depth_errors")
    diff = gt - pred
    thresh = np.maximum(gt / pred, pred / gt)
    log_diff = np.log(gt) - np.log(pred)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "delta1": float(np.mean(thresh < 1.25)),
        "delta2": float(np.mean(thresh < 1.25**2)),
        "delta3": float(np.mean(thresh < 1.25**3)),
    }


def silog(*, gt_mm, pred_mm) -> float:
    """Scale-invariant log error (Eigen et al., lambda = 1): ``100 sqrt(var(ln p - ln g))``.

    Zero for any prediction that is a constant multiple of the ground truth.  Same inputs as
    :func:`depth_errors`.

    >>> round(silog(gt_mm=np.array([1.0, 2.0, 4.0]), pred_mm=np.array([3.0, 6.0, 12.0])), 9)
    0.0
    >>> round(silog(gt_mm=np.array([1.0, 1.0]), pred_mm=np.array([1.0, np.e])), 6)
    50.0
    """
    gt, pred = _checked_pair(gt_mm, pred_mm, "silog")
    d = np.log(pred) - np.log(gt)
    return float(np.sqrt(np.var(d)) * 100.0)  # two-pass variance: no cancellation for a scaled prediction


@dataclass(frozen=True)
class FrameDepthMetrics:
    """Metrics of one frame.

    Attributes
    ----------
    metrics : dict
        ``name -> value`` for every name in :data:`DEPTH_METRICS`.
    scale : float
        Alignment scale applied to the prediction (1.0 for ``align="none"``).
    num_valid : int
        Number of scored pixels.
    """

    metrics: dict
    scale: float
    num_valid: int


def frame_depth_metrics(
    pred_mm: np.ndarray,
    gt_mm: np.ndarray,
    *,
    align: str = "median",
    min_mm: Optional[float] = None,
    max_mm: Optional[float] = None,
    fov_mask: Optional[np.ndarray] = None,
) -> Optional[FrameDepthMetrics]:
    """Align and score one predicted depth map against its ground truth.

    Parameters
    ----------
    pred_mm : (H, W) float
        Predicted z-depth at the ground-truth resolution (mm for ``align="none"``; any
        positive unit for ``align="median"``).
    gt_mm : (H, W) float
        Ground-truth z-depth, mm, 0 = invalid.
    align : {"median", "none"}
        See :mod:`colondepth.eval.alignment`.
    min_mm, max_mm : float, optional
        Depth range to score; the aligned prediction is clamped to it.
    fov_mask : (H, W) bool, optional
        True inside the field of view.

    Returns
    -------
    FrameDepthMetrics or None
        ``None`` when the frame has no valid pixel (it is then left out of the averages).

    Raises
    ------
    ValueError
        Shapes differ, the prediction is not finite at a valid pixel, or (median alignment)
        its median there is not positive.

    >>> gt = np.array([[10.0, 20.0], [0.0, 40.0]])
    >>> frame_depth_metrics(2 * gt, gt, align="none").metrics["abs_rel"]
    1.0
    >>> frame_depth_metrics(2 * gt, gt, align="median").metrics["abs_rel"]
    0.0
    """
    scored = _aligned_valid_pixels(pred_mm, gt_mm, align=align, min_mm=min_mm, max_mm=max_mm, fov_mask=fov_mask)
    if scored is None:
        return None
    valid, gt_v, aligned, scale = scored
    return FrameDepthMetrics(metrics=depth_errors(gt_mm=gt_v, pred_mm=aligned), scale=scale,
                             num_valid=int(valid.sum()))


def depth_error_map(
    pred_mm: np.ndarray,
    gt_mm: np.ndarray,
    *,
    align: str = "median",
    min_mm: Optional[float] = None,
    max_mm: Optional[float] = None,
    fov_mask: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-pixel absolute error of the aligned prediction: the pixels and values :func:`frame_depth_metrics` scores.

    Same parameters, selection, alignment and clamping as :func:`frame_depth_metrics`, so a picture of
    this map shows exactly what its metrics average (e.g. ``rmse == sqrt(nanmean(error_mm ** 2))``).

    Returns
    -------
    error_mm : (H, W) float32
        ``|clamp(s * pred) - gt|`` in mm at the valid pixels, NaN elsewhere.
    valid : (H, W) bool
        The scored pixels (:func:`valid_depth_mask`).
    scale : float
        The alignment scale ``s`` (1.0 for ``align="none"`` or a frame without valid pixels).

    Raises
    ------
    ValueError
        As :func:`frame_depth_metrics`.

    >>> gt = np.array([[10.0, 20.0], [0.0, 40.0]])
    >>> err, valid, s = depth_error_map(np.array([[20.0, 40.0], [5.0, 100.0]]), gt)
    >>> s, valid.tolist(), err[1].tolist()
    (0.5, [[True, True], [False, True]], [nan, 10.0])
    """
    gt = np.asarray(gt_mm)
    err = np.full(gt.shape, np.nan, np.float32)
    scored = _aligned_valid_pixels(pred_mm, gt_mm, align=align, min_mm=min_mm, max_mm=max_mm, fov_mask=fov_mask)
    if scored is None:
        return err, np.zeros(gt.shape, bool), 1.0
    valid, gt_v, aligned, scale = scored
    err[valid] = np.abs(aligned - gt_v).astype(np.float32)
    return err, valid, scale


def _aligned_valid_pixels(pred_mm, gt_mm, *, align, min_mm, max_mm, fov_mask):
    """``(valid (H, W) bool, gt (n,), clamped aligned prediction (n,), scale)`` or None without valid pixels.

    The one place that selects, aligns and clamps (see the module docstring for the order).
    """
    pred = np.asarray(pred_mm)
    gt = np.asarray(gt_mm)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}; resize first")
    if min_mm is not None and max_mm is not None and float(min_mm) >= float(max_mm):
        raise ValueError(f"depth range must have min < max, got [{min_mm}, {max_mm}] mm")
    valid = valid_depth_mask(gt, min_mm=min_mm, max_mm=max_mm, fov_mask=fov_mask)
    if not valid.any():
        return None
    gt_v = gt[valid].astype(np.float64)
    pred_v = pred[valid].astype(np.float64)
    if not np.all(np.isfinite(pred_v)):
        raise ValueError(f"prediction has {int((~np.isfinite(pred_v)).sum())} non-finite values at valid pixels")
    aligned, scale = align_depth(pred_v, gt_v, align)
    lo = float(min_mm) if min_mm is not None else PRED_FLOOR_MM
    hi = float(max_mm) if max_mm is not None else np.inf
    return valid, gt_v, np.clip(aligned, lo, hi), float(scale)


def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Frame-averaged metrics: the mean of each name in :data:`DEPTH_METRICS` over ``rows``.

    >>> mean_metrics([{k: 1.0 for k in DEPTH_METRICS}, {k: 3.0 for k in DEPTH_METRICS}])["rmse"]
    2.0
    """
    rows = list(rows)
    if not rows:
        raise ValueError("mean_metrics needs at least one frame")
    return {name: float(np.mean([r[name] for r in rows])) for name in DEPTH_METRICS}
