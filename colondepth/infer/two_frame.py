"""Depth of ordered frames by shape from shading, by two frames (DepthNet) or both fused.

``method``:

- ``sfs``: the single-frame network (:class:`colondepth.infer.predictor.DepthPredictor`);
- ``two-frame``: the two-frame network (:class:`colondepth.models.two_frame_net.TwoFrameDepthNet`) on the frame
  and a partner chosen by an **adaptive baseline** (Pinard et al. 2017b): among the frames at most
  :data:`MAX_GAP` away, the one whose camera displacement ``|t|`` relative to the frame's median depth (from
  the shape-from-shading depth) is closest to :data:`TARGET_PARALLAX_RATIO`, the ratio of the training pairs
  (so the parallax suits what the network learnt); the output is scaled by ``|t| / D0``.  Camera motion comes
  from supplied poses (``world_from_cam``) or from the model's pose network chained over the frames;
- ``fused``: per pixel, the log-depths of both, weighted by their confidence (:func:`fuse_depths`): the
  two-frame depth counts where the parallax is informative (far from the focus of expansion, where motion
  says nothing: :func:`foe_confidence`) and where it explains the partner (photometric consistency of the
  partner warped with it: :func:`photometric_confidence`); the shape-from-shading depth counts everywhere
  with weight 1.  The fused map keeps the shape-from-shading scale (the two-frame depth is aligned to it by
  the median over confident pixels), since the network's metric calibration is more reliable than a pose
  network's translation.

Frames are processed as a stream (:func:`iter_depths`): a frame is predicted once the :data:`MAX_GAP` frames
after it have arrived (or the stream ended), so memory holds ``2 * MAX_GAP + 1`` frames whatever the length.
Shapes: frames ``(H, W, 3)`` uint8 RGB; depths ``(H, W)`` float32 z-depth in mm on the frame's pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import torch

__all__ = ["METHODS", "MAX_GAP", "TARGET_PARALLAX_RATIO", "FrameDepth", "choose_partner", "foe_confidence",
           "photometric_confidence", "fuse_depths", "iter_depths"]

METHODS = ("sfs", "two-frame", "fused")
#: Farthest partner (frames) the adaptive baseline considers.
MAX_GAP = 6
#: |t| / median depth of the chosen pair: about the median of the training pairs (docs/depthnet.md).
TARGET_PARALLAX_RATIO = 0.2
#: Width of the focus-of-expansion confidence dip, as a fraction of the image diagonal.
FOE_SIGMA_FRACTION = 0.12
#: Photometric error (mean absolute RGB difference in [0, 1]) at which the two-frame confidence is 1/e.
PHOTO_SIGMA = 0.08


@dataclass
class FrameDepth:
    """One frame's result: ``index`` in the stream, ``depth`` of the method, the ``partner`` index and
    ``displacement_mm`` used (None for ``sfs``), the two-frame ``confidence`` map (None for ``sfs``)."""

    index: int
    depth: np.ndarray
    partner: Optional[int] = None
    displacement_mm: Optional[float] = None
    confidence: Optional[np.ndarray] = None


def choose_partner(i: int, world_from_cam: dict, median_depth_mm: float, max_gap: int = MAX_GAP,
                   ratio: float = TARGET_PARALLAX_RATIO) -> tuple[Optional[int], float]:
    """The partner of frame ``i`` among the frames of ``world_from_cam`` (index -> (4, 4) pose) at most
    ``max_gap`` away: the one whose displacement over ``median_depth_mm`` is closest to ``ratio`` in log
    (ties: the nearer frame).  ``(None, 0)`` when no other frame moved the camera."""
    Ti = world_from_cam[i]
    best, best_t, best_cost = None, 0.0, np.inf
    for j in sorted(world_from_cam, key=lambda j: (abs(j - i), j)):
        if j == i or abs(j - i) > max_gap:
            continue
        t = float(np.linalg.norm(world_from_cam[j][:3, 3] - Ti[:3, 3]))
        if t <= 1e-9:
            continue
        cost = abs(np.log(t / max(median_depth_mm, 1e-6) / ratio))
        if cost < best_cost - 1e-12:
            best, best_t, best_cost = j, t, cost
    return best, best_t


def foe_confidence(K: np.ndarray, partner_from_target: np.ndarray, hw: tuple[int, int],
                   sigma_fraction: float = FOE_SIGMA_FRACTION) -> np.ndarray:
    """``(H, W)`` in [0, 1]: ``1 - exp(-(d / s)^2)`` with ``d`` the pixel's distance to the focus of expansion
    (the image of the direction the camera moved, for forward or backward motion) and ``s`` a fraction of the
    image diagonal; 1 everywhere for motion parallel to the image plane (no focus in view)."""
    h, w = hw
    c = -partner_from_target[:3, :3].T @ partner_from_target[:3, 3]  # partner centre in the target camera
    n = np.linalg.norm(c)
    if n < 1e-12 or abs(c[2]) < 1e-3 * n:
        return np.ones((h, w), np.float32)
    foe = K @ (c / c[2])
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    d2 = (u - foe[0]) ** 2 + (v - foe[1]) ** 2
    s = sigma_fraction * np.hypot(h, w)
    return (1.0 - np.exp(-d2 / s ** 2)).astype(np.float32)


def photometric_confidence(target: np.ndarray, partner: np.ndarray, depth_mm: np.ndarray,
                           partner_from_target: np.ndarray, K: np.ndarray, sigma: float = PHOTO_SIGMA) -> np.ndarray:
    """``(H, W)`` in [0, 1]: ``exp(-e / sigma)`` with ``e`` the mean absolute RGB difference between the target
    and the partner warped into it with ``depth_mm`` and the pose (:func:`colondepth.geometry.warp.
    warp_source_to_target`); 0 where the warp leaves the partner."""
    from colondepth.geometry.warp import warp_source_to_target

    tgt = torch.from_numpy(np.ascontiguousarray(target)).permute(2, 0, 1)[None].float() / 255.0
    src = torch.from_numpy(np.ascontiguousarray(partner)).permute(2, 0, 1)[None].float() / 255.0
    d = torch.from_numpy(np.ascontiguousarray(depth_mm, dtype=np.float32))[None, None]
    pose = torch.from_numpy(np.asarray(partner_from_target, np.float32))[None]
    warped, valid = warp_source_to_target(src, d, pose, torch.from_numpy(np.asarray(K, np.float32)))
    err = (warped - tgt).abs().mean(1)[0]
    conf = torch.exp(-err / float(sigma)) * valid[0, 0]
    return conf.numpy().astype(np.float32)


def fuse_depths(sfs_mm: np.ndarray, two_mm: np.ndarray, two_weight: np.ndarray, min_weight: float = 0.5) -> np.ndarray:
    """Per-pixel confidence-weighted mean of log-depths (weights ``two_weight`` for the two-frame depth, 1 for
    the shape-from-shading depth), after scaling the two-frame depth to the shape-from-shading median over the
    pixels where ``two_weight >= min_weight`` (all valid pixels when there are fewer than 1 %)."""
    ok = np.isfinite(two_mm) & (two_mm > 0) & np.isfinite(sfs_mm) & (sfs_mm > 0)
    conf = ok & (two_weight >= min_weight)
    sel = conf if conf.mean() >= 0.01 else ok
    if not sel.any():
        return sfs_mm.astype(np.float32)
    scale = float(np.median(sfs_mm[sel]) / np.median(two_mm[sel]))
    w = np.where(ok, np.clip(two_weight, 0.0, 1.0), 0.0)
    log_f = (np.log(np.where(ok, sfs_mm, 1.0)) + w * np.log(np.where(ok, two_mm * scale, 1.0))) / (1.0 + w)
    return np.where(ok, np.exp(log_f), sfs_mm).astype(np.float32)


def iter_depths(frames: Iterable[np.ndarray], method: str, sfs_predict: Callable[[np.ndarray], np.ndarray],
                two_frame_net=None, intrinsics=None, world_from_cam: Optional[np.ndarray] = None,
                pose_estimator=None, max_gap: int = MAX_GAP, ratio: float = TARGET_PARALLAX_RATIO,
                batch_size: int = 8) -> Iterator[FrameDepth]:
    """Depth of every frame of an ordered stream by ``method`` (module docstring), in order.

    ``sfs_predict(rgbs (B, H, W, 3)) -> (B, H, W)`` mm, called on up to ``batch_size`` frames at a time (for
    ``sfs`` the stream is read ahead by that many frames, otherwise by ``max_gap``); ``two_frame_net`` a ``TwoFrameDepthNet`` (needed unless ``sfs``);
    ``intrinsics`` a ``PinholeIntrinsics`` of the frames (needed unless ``sfs``); camera motion from
    ``world_from_cam`` (N, 4, 4), else from ``pose_estimator(prev, cur, next) -> prev_from_cur``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "sfs" and (two_frame_net is None or intrinsics is None):
        raise ValueError(f"method {method!r} needs a two-frame network and the frames' intrinsics")
    if method != "sfs" and world_from_cam is None and pose_estimator is None:
        raise ValueError(f"method {method!r} needs poses or a pose estimator")
    buf: dict = {}  # index -> rgb
    sfs: dict = {}  # index -> sfs depth
    pending: list = []  # frames waiting for their shape-from-shading depth (predicted in batches)

    def flush_sfs() -> None:
        if pending:
            depths = np.asarray(sfs_predict(np.stack([buf[k] for k in pending])), np.float32)
            for k, d in zip(pending, depths):
                sfs[k] = d
            pending.clear()
    poses: dict = {}  # index -> world_from_cam (chained from the pose network when not supplied)
    n = 0
    done = 0

    def pose_of(k: int) -> np.ndarray:
        if world_from_cam is not None:
            return np.asarray(world_from_cam[k], np.float64)
        return poses[k]

    def emit(i: int) -> FrameDepth:
        if method == "sfs":
            return FrameDepth(i, sfs[i])
        avail = {k: pose_of(k) for k in buf if world_from_cam is not None or k in poses}
        j, t = choose_partner(i, avail, float(np.median(sfs[i][sfs[i] > 0])) if (sfs[i] > 0).any() else 1.0,
                              max_gap, ratio)
        if j is None:  # the camera did not move within reach: nothing to triangulate from
            return FrameDepth(i, sfs[i], None, 0.0, np.zeros_like(sfs[i]))
        dev = two_frame_net.mean.device
        to_t = lambda rgb: torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().to(dev) / 255.0  # noqa: E731
        with torch.inference_mode():
            two = two_frame_net.predict_depth(to_t(buf[i]), to_t(buf[j]), torch.tensor([t]), intrinsics)
        two = two[0, 0].cpu().numpy().astype(np.float32)
        rel = np.linalg.solve(avail[j], avail[i])  # partner_from_target
        conf = foe_confidence(intrinsics.K, rel, two.shape) * photometric_confidence(buf[i], buf[j], two, rel,
                                                                                   intrinsics.K)
        if method == "two-frame":
            return FrameDepth(i, two, j, t, conf)
        return FrameDepth(i, fuse_depths(sfs[i], two, conf), j, t, conf)

    def add_pose(k: int) -> None:
        """Chain the pose-network motion into frame ``k`` (needs frames k-1, k and, when there, k+1)."""
        if world_from_cam is not None or k in poses:
            return
        if k == 0:
            poses[0] = np.eye(4)
            return
        nxt = buf.get(k + 1)
        poses[k] = poses[k - 1] @ pose_estimator(buf[k - 1], buf[k], nxt)

    for rgb in frames:
        buf[n] = np.asarray(rgb)
        pending.append(n)
        lag = min(batch_size, max_gap) if method != "sfs" else batch_size
        if len(pending) >= max(1, lag):
            flush_sfs()
        if method != "sfs" and n >= 1:
            add_pose(n - 1)  # its next frame has arrived
        n += 1
        while done < n - (max_gap if method != "sfs" else batch_size):  # frame `done` can be emitted
            if done in pending:
                flush_sfs()
            yield emit(done)
            for k in [k for k in buf if k < done + 1 - max_gap]:
                buf.pop(k)
                sfs.pop(k)
                poses.pop(k, None)
            done += 1
    if method != "sfs" and n >= 1:
        add_pose(n - 1)
    flush_sfs()
    while done < n:
        yield emit(done)
        done += 1
