"""Trajectories: analytic on a straight tube; backward motion, roll and wall looks when asked."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.synth.colon import build_colon
from colondepth.synth.recipe import recipe_from_dict
from colondepth.synth.trajectory import make_trajectory


def _setup(traj, frames=120, seed=0, **extra):
    data = {"level": "L1", "centreline": {"length_mm": 300}, "lumen": {"radius_mm": 18.0},
            "mesh": {"ring_spacing_mm": 3.0, "segments": 24}, "trajectory": traj}
    data.update(extra)
    r = recipe_from_dict(data)
    g = build_colon(r, np.random.default_rng(seed))
    return r, g, make_trajectory(r, g, frames, np.random.default_rng(seed + 1))


def test_straight_tube_axis_camera_is_identity_rotation_and_uniform_speed():
    _, _, tr = _setup({"start_mm": 30, "speed_mm_per_frame": 1.25, "lateral": 0.0}, frames=50)
    P = tr["world_from_cam"]
    assert np.allclose(P[:, :3, :3], np.eye(3), atol=1e-9)  # +Z along the tube, +Y along N2 = world +Y
    assert np.allclose(P[:, :3, 3], np.stack([np.zeros(50), np.zeros(50), 30 + 1.25 * np.arange(50)], 1), atol=1e-9)


def test_backward_fraction_gives_backward_motion():
    _, _, tr = _setup({"speed_mm_per_frame": 1.0, "backward_fraction": 0.3, "smoothness_frames": 5}, frames=400)
    ds = np.diff(tr["s_mm"])
    back = float(np.mean(ds < 0))
    assert 0.2 < back < 0.45
    _, _, fwd = _setup({"speed_mm_per_frame": 1.0, "backward_fraction": 0.0}, frames=100)
    assert (np.diff(fwd["s_mm"]) > 0).all()


def test_roll_and_wall_looks_change_orientation_as_asked():
    _, _, calm = _setup({"lateral": 0.0}, frames=200)
    _, _, rolled = _setup({"lateral": 0.0, "roll_deg": 20.0}, frames=200)
    _, _, walls = _setup({"lateral": 0.0, "wall_look_fraction": 0.3, "wall_look_deg": 50.0}, frames=200)

    def view_angle(tr):
        return np.degrees(np.arccos(np.clip(tr["world_from_cam"][:, 2, 2], -1, 1)))  # angle of +Z to the axis

    def roll_angle(tr):
        x = tr["world_from_cam"][:, :3, 0]
        return np.degrees(np.arctan2(x[:, 1], x[:, 0]))

    assert view_angle(calm).max() < 1e-6 and np.abs(roll_angle(calm)).max() < 1e-6
    assert 8 < np.std(roll_angle(rolled)) < 40 and view_angle(rolled).max() < 1e-6
    va = view_angle(walls)
    assert va.max() == pytest.approx(50.0, abs=1.0) and 0.2 < np.mean(va > 25) < 0.4


def test_lateral_wander_stays_within_the_safe_radius_at_folds():
    _, g, tr = _setup({"lateral": 1.0, "safe_radius_fraction": 0.5}, frames=300,
                      folds={"depth": 0.5, "spacing_mm": 20, "continuity": 1.0})
    assert np.all(tr["offset_mm"] <= tr["limit_mm"] + 1e-9)
    assert tr["offset_mm"].max() > 0.5 * tr["limit_mm"].min()  # it does wander
    assert tr["limit_mm"].min() < 0.5 * 18 * 0.75  # the limit shrinks at the folds
