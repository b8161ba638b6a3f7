"""Point correspondences between two images: the one place that tracks or matches image features.

:func:`feature_matches` gives the pixel positions of the same points in two frames, by Shi-Tomasi corners tracked
with pyramidal Lucas-Kanade optical flow and checked forward and backward (``"flow"``), or by cross-checked ORB
descriptors (``"orb"``).  Used by classical two-view odometry (:mod:`colondepth.eval.classical_vo`), by the
tracked-corner poses of reconstruction (:mod:`colondepth.recon.feature_pose`) and by the motion measurement of
``frame_skip: auto`` (:func:`colondepth.datasets.video.tracked_motion_px`).  Pixel centres at integers (OpenCV).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["feature_matches"]


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
