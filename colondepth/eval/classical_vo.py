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

__all__ = ["TwoViewResult", "feature_matches", "essential_pose", "two_view_pose", "classical_vo"]


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


def _grey(img: np.ndarray) -> np.ndarray:
    import cv2

    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _flow_matches(g0, g1, mask, max_corners):
    import cv2

    m = None if mask is None else mask.astype(np.uint8) * 255
    p0 = cv2.goodFeaturesToTrack(g0, maxCorners=max_corners, qualityLevel=0.005, minDistance=3, mask=m, blockSize=5)
    if p0 is None or len(p0) < 8:
        return np.zeros((0, 2)), np.zeros((0, 2))
    lk = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    p1, st, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, None, **lk)
    p0b, st_b, _ = cv2.calcOpticalFlowPyrLK(g1, g0, p1, None, **lk)
    good = (st[:, 0] == 1) & (st_b[:, 0] == 1) & (np.linalg.norm(p0 - p0b, axis=2)[:, 0] < 1.0)
    return p0[good, 0].astype(np.float64), p1[good, 0].astype(np.float64)


def _orb_matches(g0, g1, mask, max_corners):
    import cv2

    orb = cv2.ORB_create(nfeatures=max_corners, edgeThreshold=8, patchSize=15, fastThreshold=5)
    m = None if mask is None else mask.astype(np.uint8) * 255
    k0, d0 = orb.detectAndCompute(g0, m)
    k1, d1 = orb.detectAndCompute(g1, m)
    if d0 is None or d1 is None or len(k0) < 8 or len(k1) < 8:
        return np.zeros((0, 2)), np.zeros((0, 2))
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(d0, d1)
    p0 = np.array([k0[mt.queryIdx].pt for mt in matches], dtype=np.float64).reshape(-1, 2)
    p1 = np.array([k1[mt.trainIdx].pt for mt in matches], dtype=np.float64).reshape(-1, 2)
    return p0, p1


def feature_matches(img0: np.ndarray, img1: np.ndarray, mask: Optional[np.ndarray] = None, method: str = "flow",
                    max_corners: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """``(p0, p1)`` ``(M, 2)`` float64 pixel positions of the same points in two ``(H, W, 3) uint8`` RGB (or grey)
    frames: Shi-Tomasi corners tracked by pyramidal Lucas-Kanade, forward-backward checked (``"flow"``), or
    cross-checked ORB matches (``"orb"``); ``mask`` (H, W) bool restricts the corners to the field of view."""
    if method not in ("flow", "orb"):
        raise ValueError(f"method must be 'flow' or 'orb', got {method!r}")
    return (_flow_matches if method == "flow" else _orb_matches)(_grey(img0), _grey(img1), mask, max_corners)


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
    :func:`feature_matches` then :func:`essential_pose`.

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
