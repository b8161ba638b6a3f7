"""Score dense predicted depth at sparse ground-truth points (e.g. structure-from-motion points of real video).

Protocol (the one used by ``benchmarks/bench_transfer.py`` on the sinus SfM sample):

1. sample the predicted depth map at each point's pixel ``(u, v)`` (:func:`sample_depth`; bilinear by
   default, pixel centres at integer coordinates);
2. align per frame with :func:`colondepth.eval.alignment.align_depth` (``median``: ``s = median(gt) /
   median(pred)`` over the frame's points), then clamp to ``[PRED_FLOOR_MM, inf)`` as
   :func:`colondepth.eval.depth_metrics.frame_depth_metrics` does;
3. compute :func:`colondepth.eval.depth_metrics.depth_errors` pooled over all points of all frames, and
   per frame (averaged over frames with :func:`colondepth.eval.depth_metrics.mean_metrics`).

With the camera's intrinsics, the summary also breaks the errors down by each point's angle from the optical
axis (:data:`VIEW_ANGLE_BINS_DEG`): the mean signed log error per band (positive: predicted too far) shows a
positional prior, e.g. a network that learned "the centre is the far lumen" from colon renders.

Units: ``rmse`` and ``sq_rel`` are in the ground truth's unit (SfM units for scale-free reconstructions);
``abs_rel``, ``rmse_log`` and the δ accuracies are unit-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from colondepth.eval.alignment import align_depth
from colondepth.eval.depth_metrics import PRED_FLOOR_MM, depth_errors, mean_metrics

#: Sampling modes of :func:`sample_depth`.
SAMPLING_MODES = ("bilinear", "nearest")
#: Edges (degrees from the optical axis) of the view-angle bands of :meth:`SparseScores.summary`.
VIEW_ANGLE_BINS_DEG = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)


def view_angle_deg(u: np.ndarray, v: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the optical axis and the ray of pixels ``(u, v)`` of a pinhole camera ``K``
    (3, 3), pixel centres at integers.

    >>> K = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    >>> np.round(view_angle_deg(np.array([50.0, 150.0]), np.array([40.0, 40.0]), K), 3).tolist()
    [0.0, 45.0]
    """
    from colondepth.geometry.projection import rays_at_np

    r = rays_at_np(K, u, v)
    return np.degrees(np.arctan(np.hypot(r[..., 0], r[..., 1])))


def sample_depth(depth: np.ndarray, u: np.ndarray, v: np.ndarray, mode: str = "bilinear") -> np.ndarray:
    """Values of a depth map at sub-pixel positions.

    Parameters
    ----------
    depth : (H, W) float
        Depth map; pixel ``(u, v) = (column, row)`` has its centre at integer coordinates.
    u, v : (n,) float
        Positions; values outside ``[0, W - 1] x [0, H - 1]`` are clamped to the border.
    mode : {"bilinear", "nearest"}

    Returns
    -------
    (n,) float64

    >>> d = np.array([[0.0, 10.0], [20.0, 30.0]])
    >>> sample_depth(d, np.array([0.5, 1.0]), np.array([0.5, 0.0])).tolist()
    [15.0, 10.0]
    >>> sample_depth(d, np.array([0.6]), np.array([0.4]), mode="nearest").tolist()
    [10.0]
    """
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling {mode!r}; choose one of {', '.join(SAMPLING_MODES)}")
    h, w = d.shape
    x = np.clip(np.asarray(u, dtype=np.float64).ravel(), 0.0, w - 1.0)
    y = np.clip(np.asarray(v, dtype=np.float64).ravel(), 0.0, h - 1.0)
    if x.shape != y.shape:
        raise ValueError(f"u and v must have the same length, got {x.size} and {y.size}")
    if mode == "nearest":
        return d[np.rint(y).astype(int), np.rint(x).astype(int)]
    x0 = np.minimum(np.floor(x).astype(int), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(int), max(h - 2, 0))
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = x - x0
    fy = y - y0
    top = d[y0, x0] * (1 - fx) + d[y0, x1] * fx
    bottom = d[y1, x0] * (1 - fx) + d[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@dataclass
class SparseScores:
    """Aligned predictions at sparse points, accumulated frame by frame.

    Use :meth:`add` once per frame, then :meth:`summary`.
    """

    align: str = "median"
    gt: list = field(default_factory=list)
    aligned: list = field(default_factory=list)
    frame_metrics: list = field(default_factory=list)
    scales: list = field(default_factory=list)
    angles: list = field(default_factory=list)  # per frame: the points' view angles (deg), or None

    def add(self, pred_at_points: np.ndarray, gt_at_points: np.ndarray,
            view_angle_deg: Optional[np.ndarray] = None) -> Optional[float]:
        """Align one frame's predictions to its points and keep them; returns the scale (None: no point).
        ``view_angle_deg``: the points' angles from the optical axis, for the breakdown by view angle."""
        gt = np.asarray(gt_at_points, dtype=np.float64).ravel()
        pred = np.asarray(pred_at_points, dtype=np.float64).ravel()
        if gt.shape != pred.shape:
            raise ValueError(f"{pred.size} predictions for {gt.size} points")
        keep = np.isfinite(gt) & (gt > 0)
        if not keep.any():
            return None
        if view_angle_deg is not None:
            ang = np.asarray(view_angle_deg, dtype=np.float64).ravel()
            if ang.shape != gt.shape:
                raise ValueError(f"{ang.size} view angles for {gt.size} points")
            self.angles.append(ang[keep])
        else:
            self.angles.append(None)
        gt, pred = gt[keep], pred[keep]
        if not np.all(np.isfinite(pred)):
            raise ValueError(f"prediction has {int((~np.isfinite(pred)).sum())} non-finite values at the points")
        aligned, scale = align_depth(pred, gt, self.align)
        aligned = np.maximum(aligned, PRED_FLOOR_MM)
        self.gt.append(gt)
        self.aligned.append(aligned)
        self.frame_metrics.append(depth_errors(gt_mm=gt, pred_mm=aligned))
        self.scales.append(float(scale))
        return float(scale)

    @property
    def num_frames(self) -> int:
        return len(self.frame_metrics)

    @property
    def num_points(self) -> int:
        return int(sum(g.size for g in self.gt))

    def summary(self) -> dict:
        """``{"num_frames", "num_points", "pooled": metrics over all points, "per_frame_mean": mean of
        per-frame metrics, "scale": {"median", "cv"}}`` (``cv``: std / mean of the per-frame scales, how
        much the prediction's scale drifts from frame to frame)."""
        if not self.frame_metrics:
            raise ValueError("no frame with sparse points was scored")
        scales = np.asarray(self.scales)
        gt, aligned = np.concatenate(self.gt), np.concatenate(self.aligned)
        out = {
            "num_frames": self.num_frames,
            "num_points": self.num_points,
            "pooled": depth_errors(gt_mm=gt, pred_mm=aligned),
            "per_frame_mean": mean_metrics(self.frame_metrics),
            "scale": {"median": float(np.median(scales)), "cv": float(np.std(scales) / np.mean(scales))},
        }
        if self.angles and all(a is not None for a in self.angles):
            ang = np.concatenate(self.angles)
            log_err = np.log(aligned / gt)
            bands = []
            for lo, hi in zip(VIEW_ANGLE_BINS_DEG[:-1], VIEW_ANGLE_BINS_DEG[1:]):
                m = (ang >= lo) & (ang < hi)
                if m.any():
                    bands.append({"deg": [lo, hi], "points": int(m.sum()), "mean_log_error": float(log_err[m].mean()),
                                  "abs_rel": float(np.mean(np.abs(aligned[m] - gt[m]) / gt[m]))})
            out["by_view_angle"] = bands
        return out


def score_sparse_frames(frames, rgb_of: Callable[[int], np.ndarray], points_of: Callable, methods: dict,
                        batch_size: int = 8, sampling: str = "bilinear", align: str = "median",
                        K: Optional[np.ndarray] = None) -> dict:
    """Score depth methods at the sparse points of ``frames`` of one video.

    ``rgb_of(i)`` -> ``(H, W, 3)`` uint8 frame ``i``; ``points_of(i)`` -> points with arrays ``u``, ``v`` (px)
    and ``z`` (ground-truth depth); ``methods``: name -> ``(B, H, W, 3) uint8 -> (B, H, W)`` depth.  Frames
    are predicted ``batch_size`` at a time; frames without points are skipped.  Returns name ->
    :class:`SparseScores` (``summary()`` for the metrics; with the pinhole intrinsics ``K`` (3, 3) of the
    frames, also by view angle).
    """
    frames = list(frames)
    scores = {name: SparseScores(align=align) for name in methods}
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        rgbs = np.stack([rgb_of(f) for f in chunk])
        preds = {name: np.asarray(fn(rgbs)) for name, fn in methods.items()}
        for j, f in enumerate(chunk):
            pts = points_of(f)
            if len(pts.z) == 0:
                continue
            ang = None if K is None else view_angle_deg(pts.u, pts.v, np.asarray(K, dtype=np.float64))
            for name, sc in scores.items():
                sc.add(sample_depth(preds[name][j], pts.u, pts.v, sampling), pts.z, ang)
    return scores
