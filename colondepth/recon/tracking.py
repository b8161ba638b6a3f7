"""Tracking against the model: pose-network poses refined by depth-to-model ICP, with a per-frame depth scale.

Chaining the pose network's frame-to-frame motions drifts, and a single-frame depth network gets the scale
of each frame a little wrong.  :class:`ModelTracker` keeps a local model of the surface seen so far (the
back-projected points and normals of the last ``model_keyframes`` keyframes, world frame, mm) and, for
every new frame:

1. starts from the pose-network guess ``world_from_cam`` (the previous tracked pose times the predicted
   relative motion);
2. refines it by point-to-plane ICP of the frame's back-projected depth against the model, as a similarity:
   rotation, translation and a depth scale ``s`` about the camera centre (``X_world = R (s X_cam) + t``);
   Gauss-Newton with Huber weights on nearest-neighbour correspondences (KD-tree) closer than
   ``max(max_distance_mm, max_distance_rel * z)``; ``log s`` is held near 0 by a prior of weight
   ``scale_prior`` (relative to the data's own weight on the scale) and limited to ``+- max_log_scale``;
   further starting points (``other_guesses``, e.g. the constant-velocity extrapolation) are refined too and
   replace the first guess's refinement only when they match clearly more points (``alternative_margin``)
   or, matching as many, leave a residual 20 % lower: along a direction the surface does not constrain (the
   axis of a straight tube) every start matches alike, and the pose network's motion must survive there;
   for the same reason each Gauss-Newton step is degeneracy-aware (``degeneracy_ratio``, see
   :func:`similarity_point_to_plane`): directions the surface barely constrains keep the starting guess
   (chosen on the validation sequences, seed 5000, two each of L1/L3/L5, predicted depth: mean ATE 18.2 mm
   with plain steps, 18.2 / 16.5 / 15.5 / 15.7 mm at 0.01 / 0.03 / 0.05 / 0.1; L1 from 33.4 and 26.3 to
   24.0 and 17.0 mm, the pose network's own chained path);
3. declares the frame **lost** when fewer than ``min_inlier_fraction`` of its points find a model point at
   the end, or the refinement moved the camera more than ``max_correction_mm`` from the guess: the guess is
   kept, and the model restarts from this frame (a new *segment*; the caller records it);
4. with the frame's image (``track(..., rgb=)``) and ``photometric_search_mm > 0``, moves the refined pose
   along the translation the surface barely constrains (the weakest eigen-direction of ``sum n n^T`` over the
   frame's normals in the world frame, when its eigenvalue is below ``weak_translation_ratio`` times the largest: the axis of a
   straight tube, where depth-to-model ICP cannot see forward motion and the pose network's guess is all
   there is) to where the previous frame's texture, warped into this frame with the frame's depth, matches
   best (:func:`texture_image`, :func:`photometric_line_search`): the direct alignment of Endo-Depth-and-Motion
   reduced to the one direction geometry leaves open.  Only where the frame has texture (median
   ``|texture_image|`` at its points at least ``min_texture``): in a smooth, texture-free tube every axial
   position renders the same image, "no motion" always matches best, and the guess is kept.  Chosen on the
   validation sequences (seed 5000, two each of L1/L3/L5, predicted depth and poses): mean ATE 12.5 mm
   without the search, 11.3 / 11.2 / 12.0 / 12.8 mm with ``weak_translation_ratio`` 0.2 / 0.3 / 0.4 / 0.5
   (L3 9.4 -> 5.4 mm at 0.3, L5 12.1 -> 12.0, L1 unchanged: its tube has no texture);
5. adds the frame to the model as a keyframe when the camera moved ``keyframe_translation_mm`` or turned
   ``keyframe_rotation_deg`` since the last keyframe (or the inlier fraction fell below
   ``keyframe_inlier_fraction``).

Memory is bounded: the model holds at most ``model_keyframes * points_per_frame`` points.  Shapes: depth
``(H, W)`` mm, intrinsics :class:`colondepth.geometry.camera.PinholeIntrinsics`, poses ``(4, 4)``
``world_from_cam`` (OpenCV camera, mm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

__all__ = ["TrackingConfig", "TrackResult", "ModelTracker", "similarity_point_to_plane", "texture_image",
           "weak_translation", "photometric_line_search"]


@dataclass
class TrackingConfig:
    """Settings of :class:`ModelTracker` (see the module docstring)."""

    points_per_frame: int = 1500
    model_keyframes: int = 6
    keyframe_translation_mm: float = 2.0
    keyframe_rotation_deg: float = 5.0
    keyframe_inlier_fraction: float = 0.6
    iterations: int = 12
    max_distance_mm: float = 2.0
    max_distance_rel: float = 0.08
    huber_mm: float = 0.5
    estimate_scale: bool = True
    scale_prior: float = 1.0
    max_log_scale: float = 0.3
    min_inlier_fraction: float = 0.25
    alternative_margin: float = 0.05
    degeneracy_ratio: float = 0.05
    photometric_search_mm: float = 2.0
    photometric_steps: int = 41
    weak_translation_ratio: float = 0.3
    min_texture: float = 0.004
    max_correction_mm: float = 10.0
    min_depth_mm: float = 2.0
    max_depth_mm: float = 150.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrackResult:
    """``world_from_cam`` (4, 4) tracked pose; ``scale`` the depth correction (multiply the frame's depth by it);
    ``status``: ``"first"`` (a segment's first frame), ``"tracked"`` or ``"lost"`` (guess kept, new segment);
    ``inlier_fraction`` of the frame's points matched by the model; ``rmse_mm`` point-to-plane residual of the
    inliers; ``keyframe`` whether the frame joined the model."""

    world_from_cam: np.ndarray
    scale: float
    status: str
    inlier_fraction: float
    rmse_mm: float
    keyframe: bool


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _rodrigues(w: np.ndarray) -> np.ndarray:
    th = float(np.linalg.norm(w))
    if th < 1e-12:
        return np.eye(3) + _skew(w)
    k = _skew(w / th)
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * (k @ k)


def similarity_point_to_plane(p: np.ndarray, q: np.ndarray, n: np.ndarray, centre: np.ndarray,
                              weights: Optional[np.ndarray] = None, estimate_scale: bool = True,
                              scale_prior: float = 0.0, log_scale: float = 0.0,
                              degeneracy_ratio: float = 0.0) -> tuple[np.ndarray, float]:
    """One Gauss-Newton step of point-to-plane alignment of points ``p`` (M, 3) to planes ``(q, n)`` (M, 3).

    The update acts on the left: ``p' = exp(sigma) (R(w) (p - c)) + c + v`` with ``c = centre`` (the camera
    centre, so the scale is a depth scale).  Minimises ``sum w_i (n_i . (p'_i - q_i))^2`` (+ ``scale_prior *
    (log_scale + sigma)^2``).  Returns ``(T, sigma)``: ``T`` (4, 4) rigid part ``x -> R (x - c) + c + v`` and
    the log-scale increment (0 without ``estimate_scale``).

    ``degeneracy_ratio > 0`` makes the step degeneracy-aware (Zhang et al. 2016): the rigid block of the normal
    matrix (the scale held fixed) is expressed in common units (rotation multiplied by the points' median
    distance from ``c``, so that every parameter moves the points by millimetres), and along its
    eigen-directions whose eigenvalue is below ``degeneracy_ratio`` times the largest the step is 0 (the step
    is solved in the span of the others and the scale): what the surface does not constrain (the axis of a
    straight tube) stays at the starting guess instead of following noise in the depth.
    """
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=np.float64)
    d = p - centre
    r = np.einsum("ij,ij->i", n, p - q)
    J = np.concatenate([np.cross(d, n), n, np.einsum("ij,ij->i", n, d)[:, None]], axis=1)  # (M, 7)
    if not estimate_scale:
        J = J[:, :6]
    A = (J * w[:, None]).T @ J
    b = -(J * w[:, None]).T @ r
    if estimate_scale and scale_prior > 0:  # relative to the data's own weight on the scale
        lam = scale_prior * A[6, 6]
        A[6, 6] += lam
        b[6] -= lam * log_scale
    if degeneracy_ratio > 0:
        # rigid directions in common units (rotation times the points' median distance from c: mm of motion);
        # weak directions of the rigid block, given the scale, are left out of the step
        dist = max(float(np.median(np.linalg.norm(d, axis=1))) if len(d) else 1.0, 1e-6)
        u = np.array([1.0 / dist] * 3 + [1.0] * 3)
        evals, evecs = np.linalg.eigh(A[:6, :6] * u[:, None] * u[None, :])
        strong = u[:, None] * evecs[:, evals > degeneracy_ratio * max(float(evals[-1]), 1e-300)]
        P = np.zeros((len(A), strong.shape[1] + len(A) - 6))  # the step lives in span(strong, scale)
        P[:6, :strong.shape[1]] = strong
        P[6:, strong.shape[1]:] = np.eye(len(A) - 6)
        Ar = P.T @ A @ P
        Ar += 1e-9 * np.trace(Ar) / len(Ar) * np.eye(len(Ar))
        x = P @ np.linalg.solve(Ar, P.T @ b)
    else:
        A += 1e-9 * np.trace(A) / len(A) * np.eye(len(A))
        x = np.linalg.solve(A, b)
    R = _rodrigues(x[:3])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = centre - R @ centre + x[3:6]
    return T, (float(x[6]) if estimate_scale else 0.0)


def texture_image(rgb: np.ndarray) -> np.ndarray:
    """The mucosa's texture, free of the lighting: ``(H, W, 3) uint8`` RGB -> ``(H, W) float32`` luminance
    divided by its Gaussian blur, minus 1 (sigma ``max(1, W / 64)`` px).  The light that moves with the
    endoscope changes the brightness smoothly and multiplicatively; the ratio keeps the vessels and folds."""
    import cv2

    g = np.asarray(rgb, dtype=np.float32)[..., :3].mean(axis=-1) / 255.0 + 1e-3
    sigma = max(1.0, g.shape[1] / 64.0)
    return (g / cv2.GaussianBlur(g, (0, 0), sigma) - 1.0).astype(np.float32)


def weak_translation(normals: np.ndarray, weights: Optional[np.ndarray] = None,
                     ratio: float = 0.05) -> Optional[np.ndarray]:
    """The unit translation (3,) that point-to-plane alignment to planes with ``normals`` (M, 3) barely
    constrains: the eigenvector of ``sum w n n^T`` with the smallest eigenvalue, when that eigenvalue is below
    ``ratio`` times the largest; else None.  (A straight tube: its axis.)"""
    n = np.asarray(normals, dtype=np.float64)
    if len(n) < 3:
        return None
    w = np.ones(len(n)) if weights is None else np.asarray(weights, dtype=np.float64)
    evals, evecs = np.linalg.eigh((n * w[:, None]).T @ n)
    return evecs[:, 0].copy() if evals[0] < ratio * max(float(evals[-1]), 1e-300) else None


def photometric_line_search(tex: np.ndarray, points_cam: np.ndarray, pixels: np.ndarray, world_from_cam: np.ndarray,
                            ref_tex: np.ndarray, ref_world_from_cam: np.ndarray, K: np.ndarray,
                            direction: np.ndarray, half_range_mm: float, steps: int) -> float:
    """The offset ``a`` (mm) along the world ``direction`` (3,) that best explains this frame's texture from a
    reference frame's: the camera at ``world_from_cam`` moved by ``a * direction`` sees its points
    ``points_cam`` (M, 3, camera frame, mm) at ``pixels`` (M, 2) ``(u, v)`` with texture ``tex`` (H, W); the
    same points projected into the reference camera sample ``ref_tex`` (bilinear).  The mean absolute
    texture difference is evaluated on ``steps`` offsets in ``[-half_range_mm, half_range_mm]`` and the
    minimum refined by a parabola; 0 when fewer than half of the points land in the reference image, or
    the error curve is flat (no texture to tell the offsets apart)."""
    import cv2

    from colondepth.geometry.projection import project_points_np

    H, W = ref_tex.shape
    observed = tex[pixels[:, 1], pixels[:, 0]].astype(np.float64)
    ref_from_world = np.linalg.inv(ref_world_from_cam)
    world = points_cam @ world_from_cam[:3, :3].T + world_from_cam[:3, 3]
    offsets = np.linspace(-half_range_mm, half_range_mm, int(steps))
    errors = np.full(len(offsets), np.inf)
    for k, a in enumerate(offsets):
        q = (world + a * direction) @ ref_from_world[:3, :3].T + ref_from_world[:3, 3]
        uv, z = project_points_np(q, K)
        ok = (z > 1e-3) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
        if ok.mean() < 0.5:
            continue
        m = uv[ok].astype(np.float32)
        warped = cv2.remap(ref_tex, m[:, 0:1], m[:, 1:2], cv2.INTER_LINEAR)[:, 0]
        errors[k] = float(np.mean(np.abs(observed[ok] - warped)))
    finite = np.isfinite(errors)
    if finite.sum() < 3:
        return 0.0
    best = int(np.argmin(np.where(finite, errors, np.inf)))
    spread = float(np.max(errors[finite]) - errors[best])
    if spread < 0.02 * errors[best]:  # flat: nothing tells the offsets apart
        return 0.0
    a = float(offsets[best])
    if 0 < best < len(offsets) - 1 and np.isfinite(errors[best - 1]) and np.isfinite(errors[best + 1]):
        e0, e1, e2 = errors[best - 1], errors[best], errors[best + 1]
        curv = e0 - 2 * e1 + e2
        if curv > 0:
            a += 0.5 * (e0 - e2) / curv * float(offsets[1] - offsets[0])
    return a


def _normals_from_depth(pts: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) of a back-projected depth map ``pts`` (H, W, 3) by central differences (zeros
    where a neighbour is missing), oriented towards the camera."""
    dx = np.zeros_like(pts)
    dy = np.zeros_like(pts)
    dx[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dy[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(dx, dy)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(norm > 1e-12, n / np.maximum(norm, 1e-12), 0.0)
    flip = np.einsum("hwj,hwj->hw", n, pts) > 0
    n[flip] *= -1
    return n


@dataclass
class _Keyframe:
    points: np.ndarray  # (M, 3) world
    normals: np.ndarray  # (M, 3) world


class ModelTracker:
    """Frame-to-model tracking of one video (see the module docstring)."""

    def __init__(self, intrinsics, config: Optional[TrackingConfig] = None, valid: Optional[np.ndarray] = None,
                 seed: int = 0):
        self.K = intrinsics
        self.cfg = config or TrackingConfig()
        self.valid = valid
        self.rng = np.random.default_rng(seed)
        self.keyframes: list[_Keyframe] = []
        self._tree = None
        self._model = None
        self._last_key_pose: Optional[np.ndarray] = None
        self._reference: Optional[tuple[np.ndarray, np.ndarray]] = None  # previous frame: (texture, pose)
        self.segments: list[dict] = []
        self._frame = -1

    # -- the frame's points ----------------------------------------------------------------------------------
    def _frame_points(self, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled camera-frame points (M, 3), normals (M, 3) and pixels (M, 2) ``(u, v)`` of a depth map."""
        from colondepth.geometry.projection import backproject_depth_np

        c = self.cfg
        pts = backproject_depth_np(np.asarray(depth, np.float64), self.K.K)
        nrm = _normals_from_depth(pts)
        ok = (depth >= c.min_depth_mm) & (depth <= c.max_depth_mm) & (np.linalg.norm(nrm, axis=-1) > 0)
        if self.valid is not None:
            ok &= self.valid
        idx = np.flatnonzero(ok.ravel())
        if len(idx) > c.points_per_frame:
            idx = self.rng.choice(idx, c.points_per_frame, replace=False)
        pixels = np.stack([idx % depth.shape[1], idx // depth.shape[1]], axis=1)
        return pts.reshape(-1, 3)[idx], nrm.reshape(-1, 3)[idx], pixels

    def _rebuild(self) -> None:
        from scipy.spatial import cKDTree

        pts = np.concatenate([k.points for k in self.keyframes])
        self._model = (pts, np.concatenate([k.normals for k in self.keyframes]))
        self._tree = cKDTree(pts)

    def _add_keyframe(self, pts_cam, nrm_cam, pose, scale) -> None:
        R, t = pose[:3, :3], pose[:3, 3]
        self.keyframes.append(_Keyframe(scale * pts_cam @ R.T + t, nrm_cam @ R.T))
        self.keyframes = self.keyframes[-self.cfg.model_keyframes:]
        self._last_key_pose = pose.copy()
        self._rebuild()

    def _start_segment(self, reason: str) -> None:
        """Close the current segment before this frame and open one at it, with an empty model."""
        if self.segments:
            self.segments[-1]["last"] = self._frame - 1
        self.segments.append({"first": self._frame, "last": self._frame, "reason": reason})
        self.keyframes = []

    def _refine(self, pts_cam: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """ICP of the frame's points from ``start``: ``(world_from_cam, log scale, inlier fraction, rmse)``."""
        c = self.cfg
        pose, log_s = start.copy(), 0.0
        model_pts, model_nrm = self._model
        inl_frac, rmse = 0.0, float("inf")
        for it in range(c.iterations):
            s = float(np.exp(log_s))
            p = s * pts_cam @ pose[:3, :3].T + pose[:3, 3]
            dist, j = self._tree.query(p, distance_upper_bound=np.inf)
            z = s * pts_cam[:, 2]
            limit = np.maximum(c.max_distance_mm, c.max_distance_rel * z)
            shrink = 1.0 - 0.5 * it / max(c.iterations - 1, 1)  # tighter gates as the alignment settles
            inl = dist < limit * shrink
            inl_frac = float(inl.mean()) if len(inl) else 0.0
            if inl.sum() < 10:
                break
            q, n = model_pts[j[inl]], model_nrm[j[inl]]
            res = np.einsum("ij,ij->i", n, p[inl] - q)
            rmse = float(np.sqrt(np.mean(res ** 2)))
            w = np.minimum(1.0, c.huber_mm / np.maximum(np.abs(res), 1e-9))
            T, dsig = similarity_point_to_plane(p[inl], q, n, pose[:3, 3], w, c.estimate_scale, c.scale_prior,
                                                log_s, c.degeneracy_ratio)
            pose = T @ pose
            log_s = float(np.clip(log_s + dsig, -c.max_log_scale, c.max_log_scale))
        return pose, log_s, inl_frac, rmse

    # -- tracking --------------------------------------------------------------------------------------------
    def track(self, depth: np.ndarray, guess_world_from_cam: np.ndarray,
              other_guesses: tuple = (), rgb: Optional[np.ndarray] = None) -> TrackResult:
        """Track one frame (in video order) from the pose guess; see :class:`TrackResult`.

        ``other_guesses``: further ``world_from_cam`` starting points (e.g. the constant-velocity
        extrapolation of the tracked path); the refinement that matches most of the frame's points to the
        model wins (then the lower residual).  The loss test measures the winner against its own start.
        ``rgb``: the frame ``(H, W, 3) uint8``, for the photometric search along a weakly constrained
        translation (step 4 of the module docstring; skipped without it).
        """
        c = self.cfg
        self._frame += 1
        tex = texture_image(rgb) if rgb is not None and c.photometric_search_mm > 0 else None
        result = self._track(depth, guess_world_from_cam, other_guesses, tex)
        self._reference = None if tex is None else (tex, result.world_from_cam)
        return result

    def _track(self, depth, guess_world_from_cam, other_guesses, tex) -> TrackResult:
        c = self.cfg
        pts_cam, nrm_cam, pixels = self._frame_points(depth)
        guess = np.asarray(guess_world_from_cam, dtype=np.float64)
        if not self.keyframes:  # the video's first frame, or every frame until one has enough valid depth
            if not self.segments:
                self._start_segment("start")
            self.segments[-1]["last"] = self._frame
            if len(pts_cam) >= 10:
                self._add_keyframe(pts_cam, nrm_cam, guess, 1.0)
            return TrackResult(guess, 1.0, "first", 1.0, 0.0, bool(self.keyframes))
        best = self._refine(pts_cam, guess) + (guess,)
        for start in [np.asarray(g, dtype=np.float64) for g in other_guesses]:
            out = self._refine(pts_cam, start)
            # another start wins only when it clearly matches better: along a direction the surface does not
            # constrain (the axis of a straight tube) every start matches alike, and the first guess must keep
            # its motion there
            if out[2] >= best[2] + c.alternative_margin or (out[2] >= best[2] - c.alternative_margin
                                                             and out[3] < 0.8 * best[3]):
                best = out + (start,)
        pose, log_s, inl_frac, rmse, start = best
        moved = float(np.linalg.norm(pose[:3, 3] - start[:3, 3]))
        if inl_frac < c.min_inlier_fraction or moved > c.max_correction_mm or not np.isfinite(pose).all():
            reason = (f"lost: {inl_frac:.0%} of the points matched the model" if inl_frac < c.min_inlier_fraction
                      else f"lost: the refinement moved the camera {moved:.1f} mm from its starting guess")
            self._start_segment(reason)
            self._add_keyframe(pts_cam, nrm_cam, guess, 1.0)
            return TrackResult(guess, 1.0, "lost", inl_frac, rmse, True)
        s = float(np.exp(log_s))
        if (tex is not None and self._reference is not None and tex.shape == self._reference[0].shape
                and float(np.median(np.abs(tex[pixels[:, 1], pixels[:, 0]]))) >= c.min_texture):
            axis = weak_translation(nrm_cam @ pose[:3, :3].T, ratio=c.weak_translation_ratio)
            if axis is not None:
                a = photometric_line_search(tex, s * pts_cam, pixels, pose, self._reference[0], self._reference[1],
                                            self.K.K, axis, c.photometric_search_mm, c.photometric_steps)
                pose = pose.copy()
                pose[:3, 3] += a * axis
        dR = self._last_key_pose[:3, :3].T @ pose[:3, :3]
        turned = float(np.degrees(np.arccos(np.clip((np.trace(dR) - 1) / 2, -1.0, 1.0))))
        travelled = float(np.linalg.norm(pose[:3, 3] - self._last_key_pose[:3, 3]))
        key = (travelled >= c.keyframe_translation_mm or turned >= c.keyframe_rotation_deg
               or inl_frac < c.keyframe_inlier_fraction)
        if key:
            self._add_keyframe(pts_cam, nrm_cam, pose, s)
        self.segments[-1]["last"] = self._frame
        return TrackResult(pose, s, "tracked", inl_frac, rmse, key)
