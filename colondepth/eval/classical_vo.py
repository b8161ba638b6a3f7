"""Classical two-view visual odometry baseline (OpenCV): features, essential matrix, pose recovery.

For each consecutive frame pair ``(k, k+1)``:

1. corners (Shi-Tomasi ``goodFeaturesToTrack``, inside the field-of-view mask) in frame ``k`` tracked
   into ``k+1`` with pyramidal Lucas-Kanade optical flow (forward-backward checked), or ORB matches
   (``method="orb"``);
2. ``cv2.findEssentialMat`` (RANSAC) with the camera matrix;
3. ``cv2.recoverPose`` -> ``R, t`` with ``x_{k+1} = R x_k + t``, i.e. ``cam_{k+1}_from_cam_k``.

Monocular two-view geometry has no scale: each ``t`` has unit norm.  Evaluation aligns the scale per
snippet against ground truth (as ATE does for the pose network).  A pair with too few inliers yields
the identity and is counted in ``failures``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from colondepth.geometry.matching import feature_matches

__all__ = ["TwoViewResult", "essential_pose", "two_view_pose", "classical_vo"]


@dataclass
class TwoViewResult:
    """``next_from_prev`` (4, 4) with unit-norm translation (or identity when ``ok`` is False); ``inliers``."""

    next_from_prev: np.ndarray
    inliers: int
    ok: bool


@dataclass
class VOResult:
    """``next_from_prev`` (n - 1, 4, 4) per consecutive pair; ``failures`` pair indices without a pose."""

    next_from_prev: np.ndarray
    inliers: list = field(default_factory=list)
    failures: list = field(default_factory=list)


def essential_pose(p0: np.ndarray, p1: np.ndarray, K: np.ndarray, min_inliers: int = 8,
                   ransac_threshold_px: float = 1.0) -> TwoViewResult:
    """``cam1_from_cam0`` with a unit translation from matched pixels ``p0``, ``p1`` ``(M, 2)``: the essential
    matrix (RANSAC) and ``cv2.recoverPose``; the identity with ``ok`` False when there are too few matches or
    inliers, or no parallax (median motion under 0.05 px)."""
    import cv2

    ident = TwoViewResult(np.eye(4), 0, False)
    if len(p0) < max(min_inliers, 5):
        return ident
    if np.median(np.linalg.norm(p1 - p0, axis=1)) < 0.05:
        return ident  # no parallax: the essential matrix is undefined
    K = np.asarray(K, dtype=np.float64)
    E, inl = cv2.findEssentialMat(p0, p1, K, method=cv2.RANSAC, prob=0.999, threshold=ransac_threshold_px)
    if E is None or E.shape != (3, 3):
        return ident
    n, R, t, inl2 = cv2.recoverPose(E, p0, p1, K, mask=inl)
    if n < min_inliers:
        return TwoViewResult(np.eye(4), int(n), False)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t[:, 0] / max(np.linalg.norm(t), 1e-12)
    return TwoViewResult(T, int(n), True)


def two_view_pose(img0: np.ndarray, img1: np.ndarray, K: np.ndarray, mask: Optional[np.ndarray] = None,
                  method: str = "flow", max_corners: int = 500, min_inliers: int = 8,
                  ransac_threshold_px: float = 1.0) -> TwoViewResult:
    """``cam1_from_cam0`` (unit translation) from two ``(H, W, 3) uint8`` RGB (or grey) frames:
    :func:`colondepth.geometry.matching.feature_matches` then :func:`essential_pose`.

    ``K`` (3, 3) px; ``mask`` (H, W) bool restricts features to the field of view.
    """
    p0, p1 = feature_matches(img0, img1, mask, method, max_corners)
    return essential_pose(p0, p1, K, min_inliers, ransac_threshold_px)


def classical_vo(frames: list[np.ndarray], K: np.ndarray, mask: Optional[np.ndarray] = None, **kwargs) -> VOResult:
    """Two-view poses for every consecutive pair of ``frames`` (see :func:`two_view_pose`)."""
    rel, inliers, failures = [], [], []
    for k in range(len(frames) - 1):
        r = two_view_pose(frames[k], frames[k + 1], K, mask, **kwargs)
        rel.append(r.next_from_prev)
        inliers.append(r.inliers)
        if not r.ok:
            failures.append(k)
    return VOResult(np.stack(rel) if rel else np.zeros((0, 4, 4)), inliers, failures)
