"""ATE / RPE definitions (closed-form cases), snippet trajectories, TUM export, and the classical
essential-matrix baseline on an analytic textured tube (non-planar, camera off-axis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from colondepth.eval.classical_vo import classical_vo, two_view_pose
from colondepth.eval.pose_metrics import (
    ate,
    chain_relative_poses,
    rpe,
    snippet_pose_errors,
    summarize,
    trajectory_from_src_from_tgt,
)


def pose(rotvec, t):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def line_trajectory(n=5, step=(1.0, 0.0, 0.0), start=None):
    start = pose([0.1, -0.2, 0.3], [5.0, 2.0, -1.0]) if start is None else start
    return np.stack([start @ pose([0, 0, 0], np.array(step) * i) for i in range(n)])


def test_ate_zero_for_a_perfectly_scaled_trajectory():
    gt = line_trajectory()
    pred = line_trajectory(step=(0.25, 0.0, 0.0), start=pose([0.5, 0.1, 0.0], [-3.0, 0.0, 7.0]))
    a, s = ate(pred, gt)
    assert a == pytest.approx(0.0, abs=1e-9) and s == pytest.approx(4.0)
    t, r = rpe(pred, gt, scale=s)
    assert t == pytest.approx(0.0, abs=1e-9) and r == pytest.approx(0.0, abs=1e-6)


def test_ate_of_known_offsets():
    gt = line_trajectory(n=4)
    # every frame after the first displaced by d perpendicular to the motion, no scale alignment
    d = 0.3
    pred = gt.copy()
    pred[1:] = pred[1:] @ pose([0, 0, 0], [0.0, d, 0.0])
    a, _ = ate(pred, gt, align_scale=False)
    assert a == pytest.approx(d * math.sqrt(3 / 4))
    # with scale alignment: gt positions (i, 0, 0), pred (2i, 0, 0) except the last at (6, e, 0)
    e = 1.5
    gt5 = line_trajectory(n=5, start=np.eye(4))
    pred5 = line_trajectory(n=5, step=(2.0, 0, 0), start=np.eye(4))
    pred5[4, :3, 3] = [8.0, e, 0.0]
    s = (2 * (1 + 4 + 9 + 16)) / (4 * (1 + 4 + 9 + 16) + e * e)
    expected = math.sqrt(sum((s * 2 * i - i) ** 2 for i in range(4)) / 5
                         + ((s * 8 - 4) ** 2 + (s * e) ** 2) / 5)
    a5, s5 = ate(pred5, gt5)
    assert s5 == pytest.approx(s) and a5 == pytest.approx(expected)


def test_rpe_rotation_and_translation():
    gt = line_trajectory(n=3)
    pred = gt.copy()
    pred[2] = pred[1] @ pose([0, 0, math.radians(2.0)], [1.0, 0.0, 0.0])  # extra 2 deg yaw on the 2nd step
    t, r = rpe(pred, gt)
    assert r == pytest.approx(1.0, abs=1e-6)  # mean of (0, 2) degrees
    assert t == pytest.approx(0.0, abs=1e-9)
    pred2 = gt.copy()
    pred2[2] = pred2[1] @ pose([0, 0, 0], [1.0, 0.4, 0.0])
    assert rpe(pred2, gt)[0] == pytest.approx(0.2)
    summary = summarize([snippet_pose_errors(gt, gt), snippet_pose_errors(pred, gt)])
    assert summary["snippets"] == 2 and summary["rpe_rot_deg"] == pytest.approx(0.5, abs=1e-5)


def test_snippet_trajectories():
    gt = line_trajectory(n=3)
    tgt = 1
    src_from_tgt = np.stack([np.linalg.solve(gt[i], gt[tgt]) for i in (0, 2)])
    traj = trajectory_from_src_from_tgt(src_from_tgt, tgt)
    np.testing.assert_allclose(traj[tgt], np.eye(4))
    assert ate(traj, gt)[0] == pytest.approx(0.0, abs=1e-9)
    rel = np.stack([np.linalg.solve(gt[k + 1], gt[k]) for k in range(2)])  # cam_{k+1}_from_cam_k
    np.testing.assert_allclose(chain_relative_poses(rel), np.linalg.solve(gt[0], gt), atol=1e-12)


def test_tum_export_round_trip(tmp_path):
    from colondepth.datasets.tum import read_tum, write_tum

    gt = line_trajectory(n=4)
    write_tum(tmp_path / "traj.txt", np.arange(4) / 6.0, gt)
    t, T = read_tum(tmp_path / "traj.txt")
    np.testing.assert_allclose(T, gt, atol=1e-5)


# -- classical baseline on an analytic tube ------------------------------------------------------------
S = 96
K = np.array([[60.0, 0.0, 47.5], [0.0, 60.0, 47.5], [0.0, 0.0, 1.0]])
RADIUS = 20.0


def render_tube(world_from_cam):
    """(S, S, 3) uint8 view of a textured cylinder x^2 + y^2 = R^2 (axis = world Z) from inside."""
    v, u = np.mgrid[:S, :S].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = rays @ world_from_cam[:3, :3].T
    o = world_from_cam[:3, 3]
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (o[0] * d[..., 0] + o[1] * d[..., 1])
    c = o[0] ** 2 + o[1] ** 2 - RADIUS ** 2
    lam = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
    X = o + lam[..., None] * d
    arc = np.arctan2(X[..., 1], X[..., 0]) * RADIUS
    z = X[..., 2]
    g = (0.5 + 0.18 * np.sin(arc / 1.3) * np.cos(z / 1.7) + 0.12 * np.sin((arc + 2 * z) / 2.9)
         + 0.1 * np.cos((arc - z) / 1.1)) * np.exp(-np.maximum(lam - 30, 0) / 80)
    img = np.clip(np.stack([g, 0.8 * g, 0.6 * g], -1), 0, 1)
    return (img * 255).round().astype(np.uint8)


def test_classical_vo_recovers_motion_on_a_tube():
    start = pose([0.05, -0.04, 0.0], [6.0, -4.0, 0.0])  # off-axis, looking roughly down the tube
    step = pose([0.0, 0.01, 0.02], [0.6, 0.3, 2.0])
    gt = np.stack([start @ np.linalg.matrix_power(step, i) for i in range(5)])
    frames = [render_tube(T) for T in gt]
    r = two_view_pose(frames[0], frames[1], K)
    assert r.ok and r.inliers > 50
    t_true = np.linalg.solve(gt[1], gt[0])[:3, 3]
    cosang = r.next_from_prev[:3, 3] @ t_true / np.linalg.norm(t_true)
    assert math.degrees(math.acos(min(1.0, cosang))) < 10.0
    R_err = r.next_from_prev[:3, :3].T @ np.linalg.solve(gt[1], gt[0])[:3, :3]
    assert math.degrees(Rotation.from_matrix(R_err).magnitude()) < 0.5
    vo = classical_vo(frames, K)
    assert vo.failures == [] and vo.next_from_prev.shape == (4, 4, 4)
    errs = snippet_pose_errors(chain_relative_poses(vo.next_from_prev), gt)
    standing_still = ate(np.tile(np.eye(4), (5, 1, 1)), gt)[0]  # ~4.7 mm: rms distance from the start
    assert errs.ate_mm < 1.5 and errs.ate_mm < standing_still / 3
    assert errs.rpe_rot_deg < 2.0
    # a static pair has no parallax: reported as a failure, not as a random pose
    assert not two_view_pose(frames[0], frames[0], K).ok


def test_umeyama_recovers_a_similarity_and_aligned_ate_is_zero():
    from colondepth.eval.pose_metrics import trajectory_ate_aligned, umeyama_alignment

    rng = np.random.default_rng(7)
    X = rng.normal(size=(30, 3)) * 5.0
    a = 0.7
    R = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    Y = 2.5 * X @ R.T + np.array([1.0, -2.0, 3.0])
    s, R_est, t = umeyama_alignment(X, Y)
    assert s == pytest.approx(2.5) and np.allclose(R_est, R) and np.allclose(t, [1.0, -2.0, 3.0])
    s1, R1, _ = umeyama_alignment(X, Y, with_scale=False)
    assert s1 == 1.0 and np.allclose(R1, R)  # the rotation does not depend on the scale
    T = np.tile(np.eye(4), (30, 1, 1))
    T[:, :3, 3] = X
    G = T.copy()
    G[:, :3, 3] = Y
    ate_sim, (s2, _, _) = trajectory_ate_aligned(T, G)
    assert ate_sim == pytest.approx(0.0, abs=1e-9) and s2 == pytest.approx(2.5)
    ate_rigid, _ = trajectory_ate_aligned(T, G, with_scale=False)
    assert ate_rigid > 1.0  # without the scale the error remains


def test_path_length_and_constant_speed_line():
    from colondepth.eval.pose_metrics import constant_speed_line, path_length, trajectory_ate_aligned

    T = np.tile(np.eye(4), (5, 1, 1))
    T[:, :3, 3] = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0], [2, 2, 0]]
    assert path_length(T) == pytest.approx(4.0)
    line = constant_speed_line(T)
    np.testing.assert_allclose(line[:, :3, 3], np.linspace([0, 0, 0], [2, 2, 0], 5))
    ate_line, _ = trajectory_ate_aligned(line, T)
    assert 0.2 < ate_line < 0.5  # the staircase is close to, but not on, the straight line
    assert trajectory_ate_aligned(T, T)[0] == pytest.approx(0.0, abs=1e-12)
