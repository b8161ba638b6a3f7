"""``colondepth.recon.feature_pose``: the motion between two frames of a textured tube from tracked corners
(essential-matrix rotation and direction, PnP length on the first frame's depth), against the true motion; and
the per-input defaults of ``reconstruct``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from colondepth.recon.feature_pose import feature_relative_pose

S = 192
F = 110.0
K = np.array([[F, 0.0, (S - 1) / 2], [0.0, F, (S - 1) / 2], [0.0, 0.0, 1.0]])
RADIUS = 14.0


_WAVES = [(a, w, p) for a, w, p in zip(*np.random.default_rng(7).uniform([0, 1.0, 0], [np.pi, 1.8, 6.28], (14, 3)).T)]


def _tube_view(world_from_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (S, S, 3) uint8, z-depth (S, S) mm)`` of a textured tube (axis = world z) seen by the camera."""
    v, u = np.mgrid[:S, :S].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / F, (v - K[1, 2]) / F, np.ones_like(u)], -1)
    d = rays @ world_from_cam[:3, :3].T
    o = world_from_cam[:3, 3]
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (o[0] * d[..., 0] + o[1] * d[..., 1])
    c = o[0] ** 2 + o[1] ** 2 - RADIUS ** 2
    lam = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)  # z-depth: the rays have unit z in the camera
    X = o + lam[..., None] * d
    arc, z = np.arctan2(X[..., 1], X[..., 0]) * RADIUS, X[..., 2]
    # blobs in every direction (a sum of plane waves of random orientation, 4-6 mm periods): corners without an
    # aperture problem
    g = 0.5 + sum(0.05 * np.sin(np.cos(a) * arc * w + np.sin(a) * z * w + p) for a, w, p in _WAVES)
    g = g / (1 + lam / 60)
    img = (np.clip(np.stack([g, 0.8 * g, 0.6 * g], -1), 0, 1) * 255).round().astype(np.uint8)
    return img, lam.astype(np.float32)


def _pose(t, rotvec=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


@pytest.mark.parametrize("motion, max_dir_deg", [
    (((0.0, 0.0, 1.2), (0.0, 0.0, 0.0)), 10.0),  # straight down the tube: the focus of expansion is the least sure
    (((0.5, -0.3, 0.8), (0.01, -0.015, 0.02)), 5.0),  # sideways and turning (measured 8.0 and 3.3 degrees)
])
def test_feature_pose_recovers_the_metric_motion(motion, max_dir_deg):
    t, rv = motion
    first = _pose((2.0, -1.5, 0.0), (0.05, 0.08, 0.0))
    step = _pose(t, rv)  # prev_from_cur
    second = first @ step
    rgb0, depth0 = _tube_view(first)
    rgb1, _ = _tube_view(second)
    fp = feature_relative_pose(rgb0, depth0, rgb1, K)
    assert fp is not None and fp.method == "essential+pnp" and fp.inliers >= 50
    est = fp.prev_from_cur
    assert np.linalg.norm(est[:3, 3]) == pytest.approx(np.linalg.norm(t), rel=0.1)  # metric length from depth
    cos = est[:3, 3] @ np.asarray(t) / (np.linalg.norm(est[:3, 3]) * np.linalg.norm(t))
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < max_dir_deg
    dR = est[:3, :3].T @ step[:3, :3]
    assert np.degrees(np.linalg.norm(Rotation.from_matrix(dR).as_rotvec())) < 0.3


def test_feature_pose_gives_up_without_texture_or_depth():
    flat = np.full((S, S, 3), 128, np.uint8)
    assert feature_relative_pose(flat, np.full((S, S), 20.0), flat, K) is None  # nothing to track
    rgb0, depth0 = _tube_view(_pose((1.0, 0.0, 0.0)))
    rgb1, _ = _tube_view(_pose((1.0, 0.0, 1.0)))
    assert feature_relative_pose(rgb0, np.zeros_like(depth0), rgb1, K) is None  # no valid depth: no length
    with pytest.raises(ValueError, match="one size"):
        feature_relative_pose(rgb0, depth0[:-1], rgb1, K)


def test_reconstruct_defaults_depend_on_the_input(monkeypatch, tmp_path):
    """A video gets the real-video defaults (tracked corners, no model tracking), a dataset sequence the rendered
    ones; explicit flags win."""
    from colondepth import cli
    from colondepth.recon import pipeline

    seen = []

    class _Stop(Exception):
        pass

    def fake(seq, out, cfg, **kw):
        seen.append(cfg)
        raise _Stop

    monkeypatch.setattr(pipeline, "reconstruct_sequence", fake)
    import colondepth.commands.reconstruct as rc

    class _Seq:
        has_depth = has_poses = False
        name = "v"

    monkeypatch.setattr(rc, "_open_input", lambda args: _Seq())
    for argv, want in (
        (["--video", "v.mp4"], pipeline.VIDEO_POSE_DEFAULTS),
        (["--sequence", "s"], pipeline.SEQUENCE_POSE_DEFAULTS),
        (["--video", "v.mp4", "--tracking", "model", "--pose-guess", "network"],
         {"pose_guess": "network", "tracking": "model"}),
    ):
        seen.clear()
        with pytest.raises(_Stop):
            cli.main(["reconstruct", *argv, "--out", str(tmp_path / f"o{len(argv)}"), "--no-progress"])
        assert seen and {"pose_guess": seen[0].pose_guess, "tracking": seen[0].tracking} == want
    assert pipeline.VIDEO_POSE_DEFAULTS == {"pose_guess": "features", "tracking": "none"}
