"""Relative camera pose from tracked image features and the previous frame's depth.

A depth-aware two-view estimate for reconstruction (``reconstruct --pose-guess features``), built from OpenCV
pieces, for consecutive frames ``prev`` and ``cur``:

1. matches: Shi-Tomasi corners of ``prev`` inside the field of view tracked into ``cur`` by pyramidal
   Lucas-Kanade, forward-backward checked (:func:`colondepth.geometry.matching.feature_matches`);
2. rotation and translation *direction* from the essential matrix (RANSAC, ``cv2.recoverPose``;
   :func:`colondepth.eval.classical_vo.essential_pose`): they do not depend on the predicted depth;
3. translation *length* from PnP: the matched corners of ``prev`` back-projected with its depth
   (``M = Z(m) K^-1 m``, :func:`colondepth.geometry.projection.rays_at_np`) and
   ``cv2.solvePnPRansac`` against their positions in ``cur``: the metric scale of the depth network;
4. the pose: the rotation and direction of 2 with the length of 3; PnP's own pose when 2 fails; ``None``
   when 3 fails (fewer than ``min_inliers`` PnP inliers: a texture-free frame), so the caller keeps its
   other guess (the pose network's).

Measured on the real sinus video (docs/reconstruction.md): the essential-matrix directions with the true
per-frame speed give a far better path than the pose network, and the speed is what monocular two-view
geometry lacks; PnP on the predicted depth supplies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: PnP inliers (and tracked corners) a frame pair needs before its pose is used.
MIN_INLIERS = 12
#: PnP RANSAC reprojection threshold (px of the frame).
PNP_THRESHOLD_PX = 1.0


@dataclass(frozen=True)
class FeaturePose:
    """``prev_from_cur`` (4, 4) mm, OpenCV frames; ``method``: ``"essential+pnp"`` or ``"pnp"``; ``inliers``:
    PnP inliers; ``matches``: tracked corners."""

    prev_from_cur: np.ndarray
    method: str
    inliers: int
    matches: int


def feature_relative_pose(prev_rgb: np.ndarray, prev_depth_mm: np.ndarray, rgb: np.ndarray, K: np.ndarray,
                          mask: Optional[np.ndarray] = None, min_inliers: int = MIN_INLIERS,
                          max_corners: int = 500) -> Optional[FeaturePose]:
    """The relative pose of ``rgb`` to ``prev_rgb`` (see the module docstring), or ``None``.

    ``prev_rgb``, ``rgb``: ``(H, W, 3) uint8`` frames of one camera ``K`` (3, 3) px; ``prev_depth_mm``
    ``(H, W)`` z-depth of ``prev_rgb`` in mm (0 or non-finite: invalid); ``mask`` ``(H, W)`` bool field of view.
    """
    import cv2

    from colondepth.eval.classical_vo import essential_pose
    from colondepth.geometry.matching import feature_matches

    depth = np.asarray(prev_depth_mm, dtype=np.float64)
    if depth.shape != prev_rgb.shape[:2] or rgb.shape != prev_rgb.shape:
        raise ValueError(f"feature_relative_pose: frames {prev_rgb.shape}, {rgb.shape} and depth {depth.shape} "
                         "must share one size")
    p0, p1 = feature_matches(prev_rgb, rgb, mask, "flow", max_corners)
    if len(p0) < min_inliers:
        return None
    from colondepth.geometry.projection import pixel_index, rays_at_np

    h, w = depth.shape
    col = np.clip(pixel_index(p0[:, 0]), 0, w - 1)
    row = np.clip(pixel_index(p0[:, 1]), 0, h - 1)
    z = depth[row, col]
    ok = np.isfinite(z) & (z > 0)
    if ok.sum() < min_inliers:
        return None
    K = np.asarray(K, dtype=np.float64)
    X = rays_at_np(K, p0[ok, 0], p0[ok, 1]) * z[ok, None]
    found, rvec, tvec, inl = cv2.solvePnPRansac(X, p1[ok], K, None, reprojectionError=PNP_THRESHOLD_PX,
                                                 iterationsCount=200, flags=cv2.SOLVEPNP_ITERATIVE)
    if not found or inl is None or len(inl) < min_inliers or not np.isfinite(tvec).all():
        return None
    cur_from_prev = np.eye(4)
    cur_from_prev[:3, :3] = cv2.Rodrigues(rvec)[0]
    cur_from_prev[:3, 3] = tvec[:, 0]
    method = "pnp"
    ess = essential_pose(p0, p1, K)
    if ess.ok:
        length = float(np.linalg.norm(cur_from_prev[:3, 3]))
        cur_from_prev = ess.next_from_prev.copy()
        cur_from_prev[:3, 3] *= length  # a unit direction
        method = "essential+pnp"
    return FeaturePose(np.linalg.inv(cur_from_prev), method, int(len(inl)), int(len(p0)))
