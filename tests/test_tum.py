"""TUM pose files: xyzw quaternions, world_from_cam, exact round trip, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from colondepth.datasets.tum import poses_to_tum_lines, read_tum, write_tum
from colondepth.errors import UserError


def _poses(n=5, seed=0):
    rng = np.random.default_rng(seed)
    P = np.tile(np.eye(4), (n, 1, 1))
    P[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    P[:, :3, 3] = rng.uniform(-100, 100, (n, 3))
    return P


def test_quaternion_is_scalar_last_xyzw():
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    pose[:3, 3] = [1.5, -2.0, 3.25]
    (line,) = poses_to_tum_lines(np.array([0.1]), pose[None])
    vals = [float(x) for x in line.split()]
    assert vals[:4] == [0.1, 1.5, -2.0, 3.25]
    s = np.sqrt(0.5)
    assert np.allclose(vals[4:], [0.0, 0.0, s, s], atol=1e-9)


def test_round_trip(tmp_path):
    P = _poses()
    t = np.arange(5) / 30.0
    write_tum(tmp_path / "poses.txt", t, P)
    t2, P2 = read_tum(tmp_path / "poses.txt")
    assert np.allclose(t2, t, atol=1e-6)
    assert np.allclose(P2[:, :3, 3], P[:, :3, 3], atol=1e-6)
    assert np.allclose(P2[:, :3, :3], P[:, :3, :3], atol=1e-8)
    assert np.allclose(P2[:, 3], [0, 0, 0, 1])


def test_text_is_unique_for_q_and_minus_q():
    P = _poses(3, seed=2)
    lines = poses_to_tum_lines(np.zeros(3), P)
    assert all(float(line.split()[7]) >= 0 for line in lines)
    again = poses_to_tum_lines(np.zeros(3), P.copy())
    assert lines == again


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("0 1 2 3 0 0 0\n", "expected 8 numbers"),
        ("0 1 2 3 0 0 0 x\n", "expected 8 numbers"),
        ("0 1 2 3 0 0 0 2\n", "quaternion norm"),
        ("# only a comment\n", "no poses"),
    ],
)
def test_bad_files_raise_user_error(tmp_path, content, fragment):
    p = tmp_path / "poses.txt"
    p.write_text(content)
    with pytest.raises(UserError, match=fragment) as exc:
        read_tum(p)
    assert str(p) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_tum(tmp_path / "nope.txt")


def test_comments_and_blank_lines_are_skipped(tmp_path):
    p = tmp_path / "poses.txt"
    p.write_text("# t tx ty tz qx qy qz qw\n\n0.0 1 2 3 0 0 0 1\n")
    t, P = read_tum(p)
    assert t.tolist() == [0.0] and P[0, :3, 3].tolist() == [1.0, 2.0, 3.0]
