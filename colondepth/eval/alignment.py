"""Scale alignment of predicted depth to ground truth before computing errors.

Two modes, named by :data:`ALIGN_MODES`:

``median``
    Per-frame median scaling, as monodepth2 evaluates monocular models: the prediction is
    multiplied by ``s = median(gt) / median(pred)`` over the valid pixels of that frame.  This
    removes the unknown global scale of a monocular estimate (or of a baseline whose scale is
    free, such as the inverse-square-light baseline) and keeps only the *shape* of the depth.
``none``
    Metric evaluation: the prediction is used as is, in millimetres (``s = 1``).

Both functions take the already-masked valid pixels as 1-D arrays, so the mask that defines
"valid" lives in one place (:func:`colondepth.eval.depth_metrics.valid_depth_mask`).
"""

from __future__ import annotations

import numpy as np

#: Alignment modes understood by :func:`align_depth` (and ``colondepth evaluate --align``).
ALIGN_MODES = ("median", "none")


def median_scale(pred_mm: np.ndarray, gt_mm: np.ndarray) -> float:
    """Scale ``s`` with ``median(s * pred) == median(gt)``.

    Parameters
    ----------
    pred_mm : (n,) float
        Predicted depth at the valid pixels (any positive unit).
    gt_mm : (n,) float
        Ground-truth z-depth at the same pixels, mm, all > 0.

    Returns
    -------
    float
        ``median(gt_mm) / median(pred_mm)``.

    >>> median_scale(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]))
    10.0
    """
    pred = np.asarray(pred_mm, dtype=np.float64).ravel()
    gt = np.asarray(gt_mm, dtype=np.float64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same number of pixels, got {pred.size} and {gt.size}")
    if pred.size == 0:
        raise ValueError("median alignment needs at least one valid pixel")
    med_pred = float(np.median(pred))
    if not np.isfinite(med_pred) or med_pred <= 0.0:
        raise ValueError(f"median alignment needs a positive median prediction, got {med_pred}")
    return float(np.median(gt)) / med_pred


def align_depth(pred_mm: np.ndarray, gt_mm: np.ndarray, mode: str = "median") -> tuple[np.ndarray, float]:
    """Return ``(s * pred_mm, s)`` for alignment ``mode`` (see :data:`ALIGN_MODES`).

    Parameters
    ----------
    pred_mm, gt_mm : (n,) float
        Prediction and ground truth at the valid pixels.
    mode : {"median", "none"}

    >>> aligned, s = align_depth(np.array([2.0, 4.0]), np.array([1.0, 2.0]), "median")
    >>> aligned.tolist(), s
    ([1.0, 2.0], 0.5)
    >>> align_depth(np.array([2.0, 4.0]), np.array([1.0, 2.0]), "none")[1]
    1.0
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown alignment {mode!r}; choose one of {', '.join(ALIGN_MODES)}")
    pred = np.asarray(pred_mm, dtype=np.float64)
    scale = median_scale(pred, gt_mm) if mode == "median" else 1.0
    return pred * scale, scale
