"""Pose accuracy on short snippets: ATE (scale-aligned per snippet, as in SfMLearner) and RPE.

Definitions (all poses ``world_from_cam``, mm; a snippet is ``n`` consecutive frames)

- Both trajectories are first expressed in the frame of their first camera
  (``cam0_from_cam_i = invert(T_0) T_i``), so the first positions coincide (SfMLearner's offset).
- ATE: the predicted positions ``p_i`` are scaled by ``s = sum(g_i . p_i) / sum(p_i . p_i)`` (least
  squares against the ground-truth positions ``g_i``), then ``ATE = sqrt(mean_i |s p_i - g_i|^2)`` (mm).
  (SfMLearner's code divides ``sqrt(sum)`` by ``n`` instead; we report the root-mean-square.)
- RPE between consecutive frames: ``E = invert(G_rel) (P_rel with translation scaled by s)`` where
  ``*_rel = invert(T_i) T_{i+1}``; translation error ``|t(E)|`` mm, rotation error ``angle(R(E))`` degrees,
  averaged over the ``n - 1`` pairs.

Pose networks predict ``src_from_tgt``; :func:`trajectory_from_src_from_tgt` turns them into a snippet
trajectory.  Trajectories are written as TUM files (:func:`colondepth.datasets.tum.write_tum`) for ``evo``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SnippetPoseErrors",
    "relative_to_first",
    "ate",
    "rpe",
    "snippet_pose_errors",
    "summarize",
    "trajectory_from_src_from_tgt",
    "chain_relative_poses",
    "umeyama_alignment",
    "trajectory_ate_aligned",
    "path_length",
    "constant_speed_line",
]


def _inv(T: np.ndarray) -> np.ndarray:
    """Closed-form inverse of rigid poses ``(..., 4, 4)``."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ t[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def _check(T: np.ndarray, name: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or len(T) < 2:
        raise ValueError(f"{name} must be (n >= 2, 4, 4) poses, got {T.shape}")
    return T


def relative_to_first(world_from_cam: np.ndarray) -> np.ndarray:
    """``cam0_from_cam_i`` ``(n, 4, 4)``: the trajectory re-expressed in its first camera's frame."""
    T = _check(world_from_cam, "world_from_cam")
    return _inv(T[0])[None] @ T


def _scale(gt_xyz: np.ndarray, pred_xyz: np.ndarray) -> float:
    den = float((pred_xyz * pred_xyz).sum())
    return float((gt_xyz * pred_xyz).sum()) / den if den > 1e-12 else 1.0


def ate(pred_world_from_cam: np.ndarray, gt_world_from_cam: np.ndarray, align_scale: bool = True) -> tuple[float, float]:
    """``(ate_mm, scale)`` of one snippet (see module doc); ``align_scale=False`` uses ``scale = 1``."""
    P = relative_to_first(pred_world_from_cam)
    G = relative_to_first(gt_world_from_cam)
    if len(P) != len(G):
        raise ValueError(f"prediction has {len(P)} poses, ground truth {len(G)}")
    p, g = P[:, :3, 3], G[:, :3, 3]
    s = _scale(g, p) if align_scale else 1.0
    return float(np.sqrt(np.mean(np.sum((s * p - g) ** 2, axis=1)))), s


def _angle_deg(R: np.ndarray) -> np.ndarray:
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def rpe(pred_world_from_cam: np.ndarray, gt_world_from_cam: np.ndarray, scale: float = 1.0) -> tuple[float, float]:
    """``(translation_mm, rotation_deg)`` mean relative pose error over consecutive pairs."""
    P = _check(pred_world_from_cam, "pred")
    G = _check(gt_world_from_cam, "gt")
    Prel = _inv(P[:-1]) @ P[1:]
    Grel = _inv(G[:-1]) @ G[1:]
    Prel = Prel.copy()
    Prel[:, :3, 3] *= scale
    E = _inv(Grel) @ Prel
    return float(np.linalg.norm(E[:, :3, 3], axis=1).mean()), float(_angle_deg(E[:, :3, :3]).mean())


@dataclass
class SnippetPoseErrors:
    """Errors of one snippet: ``ate_mm``, ``scale`` (applied to the prediction), ``rpe_trans_mm``, ``rpe_rot_deg``."""

    ate_mm: float
    scale: float
    rpe_trans_mm: float
    rpe_rot_deg: float


def snippet_pose_errors(pred_world_from_cam: np.ndarray, gt_world_from_cam: np.ndarray) -> SnippetPoseErrors:
    """ATE with its per-snippet scale, then RPE with the same scale applied to the prediction."""
    a, s = ate(pred_world_from_cam, gt_world_from_cam)
    t, r = rpe(pred_world_from_cam, gt_world_from_cam, scale=s)
    return SnippetPoseErrors(a, s, t, r)


def summarize(errors: list[SnippetPoseErrors]) -> dict[str, float]:
    """Mean and standard deviation over snippets: ``ate_mm``, ``ate_mm_std``, ``rpe_trans_mm``, ``rpe_rot_deg``."""
    if not errors:
        return {"snippets": 0}
    a = np.array([e.ate_mm for e in errors])
    return {
        "snippets": len(errors),
        "ate_mm": float(a.mean()),
        "ate_mm_std": float(a.std()),
        "rpe_trans_mm": float(np.mean([e.rpe_trans_mm for e in errors])),
        "rpe_rot_deg": float(np.mean([e.rpe_rot_deg for e in errors])),
    }


def trajectory_from_src_from_tgt(src_from_tgt: np.ndarray, target_index: int) -> np.ndarray:
    """Snippet trajectory ``(N + 1, 4, 4)`` in the target camera's frame from ``(N, 4, 4)`` ``src_from_tgt``.

    The sources are the snippet's other frames in time order; the target sits at ``target_index``.
    ``world_from_cam_src = invert(src_from_tgt)`` with the target camera as the world.
    """
    S = np.asarray(src_from_tgt, dtype=np.float64)
    poses = list(_inv(S))
    poses.insert(target_index, np.eye(4))
    return np.stack(poses)


def chain_relative_poses(next_from_prev: np.ndarray) -> np.ndarray:
    """Trajectory ``(n + 1, 4, 4)`` (frame 0 = world) from ``(n, 4, 4)`` poses ``cam_{k+1}_from_cam_k``."""
    out = [np.eye(4)]
    for T in np.asarray(next_from_prev, dtype=np.float64):
        out.append(out[-1] @ _inv(T))
    return np.stack(out)


def umeyama_alignment(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """``(s, R, t)`` minimising ``sum |s R src_i + t - dst_i|^2`` (Umeyama 1991) for ``(N, 3)`` points.

    ``with_scale=False`` fixes ``s = 1`` (a rigid alignment).  Needs ``N >= 3`` points not all on one line
    for a unique rotation (fewer give a valid but arbitrary rotation about the line).
    """
    X = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    Y = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    if len(X) != len(Y) or len(X) < 2:
        raise ValueError(f"need two matching point sets of at least 2 points, got {len(X)} and {len(Y)}")
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    cov = Yc.T @ Xc / len(X)
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    var = (Xc ** 2).sum() / len(X)
    s = float(np.trace(np.diag(D) @ S) / var) if (with_scale and var > 1e-18) else 1.0
    t = my - s * R @ mx
    return s, R, t


def trajectory_ate_aligned(pred_world_from_cam: np.ndarray, gt_world_from_cam: np.ndarray,
                           with_scale: bool = True) -> tuple[float, tuple[float, np.ndarray, np.ndarray]]:
    """``(ate, (s, R, t))``: RMS position error after aligning the predicted camera centres to the truth.

    A similarity (``with_scale``, for scale-free trajectories such as SfM's) or rigid alignment of the
    whole trajectory (Umeyama), as ``evo_ape --align [--correct_scale]`` does; units of the ground truth.
    """
    P = np.asarray(pred_world_from_cam, dtype=np.float64)[:, :3, 3]
    G = np.asarray(gt_world_from_cam, dtype=np.float64)[:, :3, 3]
    s, R, t = umeyama_alignment(P, G, with_scale)
    err = (s * (R @ P.T).T + t) - G
    return float(np.sqrt((err ** 2).sum(1).mean())), (s, R, t)


def path_length(world_from_cam: np.ndarray) -> float:
    """Summed distance between consecutive camera centres (units of the poses)."""
    c = np.asarray(world_from_cam, dtype=np.float64)[:, :3, 3]
    return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum())


def constant_speed_line(world_from_cam: np.ndarray) -> np.ndarray:
    """The naive baseline trajectory: identity rotations on a straight line at constant speed.

    ``(N, 4, 4)`` from the first to the last camera centre of ``world_from_cam``; its similarity-aligned
    ATE says how much a trajectory estimate explains beyond "the camera went straight".
    """
    T = np.asarray(world_from_cam, dtype=np.float64)
    a = np.linspace(0.0, 1.0, len(T))[:, None]
    out = np.tile(np.eye(4), (len(T), 1, 1))
    out[:, :3, 3] = T[0, :3, 3] + a * (T[-1, :3, 3] - T[0, :3, 3])
    return out
