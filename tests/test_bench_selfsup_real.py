"""benchmarks/bench_selfsup_real.py: snippet pose scoring (an exact estimator scores zero, zero motion does not)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_selfsup_real")


def test_pose_scores_exact_estimator_is_zero(bench):
    rng = np.random.default_rng(0)
    n = 13
    world_from_cam = [np.eye(4)]
    for _ in range(n - 1):
        step = np.eye(4)
        step[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.02, 3)).as_matrix()
        step[:3, 3] = rng.normal(0, 0.5, 3) + (0, 0, 1.0)
        world_from_cam.append(world_from_cam[-1] @ step)
    world_from_cam = np.stack(world_from_cam)
    frames = [np.full((24, 32, 3), i, np.uint8) for i in range(n)]  # frame i "is" camera i
    seq = SimpleNamespace(world_from_cam=world_from_cam, rgb=lambda i: frames[i],
                          intrinsics=SimpleNamespace(K=np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])),
                          fov_mask=None)

    def exact(prev, cur, nxt=None):  # prev_from_cur from the ground truth
        a, b = int(prev[0, 0, 0]), int(cur[0, 0, 0])
        return np.linalg.solve(world_from_cam[a], world_from_cam[b])

    out = bench.pose_scores(seq, range(n), exact, snippet=5, stride=4)
    assert out["pose_network"]["snippets"] == 3 and out["pose_network"]["ate_mm"] < 1e-9
    assert out["zero_motion"]["ate_mm"] > 0.5  # the camera moved about 1 unit per frame
    # flat frames give OpenCV nothing to match: every pair fails and is counted, not hidden
    assert out["opencv_vo"]["failed_pairs"] == 3 * 4
    assert set(bench.pose_scores(seq, range(n), None)) == {"opencv_vo", "zero_motion", "units"}


def test_runs_are_keyed_by_the_starting_checkpoint(bench, tmp_path, monkeypatch):
    """A new default model must not resume the fine-tuning run of the previous one."""
    import hashlib

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"model one")
    b.write_bytes(b"model two")
    assert bench.model_id(a) == hashlib.sha256(b"model one").hexdigest()[:12]
    assert bench.model_id(a) != bench.model_id(b) and len(bench.model_id(b)) == 12
    seen = {}

    def fake_finetune(checkpoint, root, work, steps, frames, options=()):
        seen["work"] = work
        raise SystemExit("stop after the work folder is chosen")

    monkeypatch.setattr(bench, "finetune", fake_finetune)
    monkeypatch.setattr(bench, "score_model", lambda *a, **k: {})
    monkeypatch.setattr(bench, "sinus_root", lambda shared: tmp_path)
    with pytest.raises(SystemExit, match="stop after"):
        bench.main(["--checkpoint", str(b), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o.json")])
    assert seen["work"] == tmp_path / "w" / bench.model_id(b)
