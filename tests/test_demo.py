"""The main job end to end (``colondepth demo``) on a tiny setting: every step runs and the outputs exist."""

from __future__ import annotations

import json

import numpy as np
import pytest

from colondepth import cli


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path, repo_root, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--size", "32", "32", "--sequences", "2", "--frames", "6",
            "--curriculum", str(repo_root / "curricula" / "smoke.yaml"), "--finetune-steps", "2",
            "--shared-data", str(tmp_path / "absent"), "--device", "cpu"]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "ColonDepth demo finished" in text
    assert f"colondepth app --root {out}" in text

    for level in ("L1", "L2", "L3", "L4", "L5"):
        assert (out / "data" / level / "dataset.yaml").is_file()
    assert (out / "runs" / "curriculum" / "checkpoints" / "final.pt").is_file()
    assert (out / "runs" / "finetune" / "checkpoints" / "final.pt").is_file()

    report = json.loads((out / "eval_test_L5.json").read_text())
    assert set(report["overall"]["metrics"]) == {"model", "physics", "constant"}

    preds = sorted((out / "predictions" / "test_L5").glob("*_depth.npy"))
    assert len(preds) == 12  # the held-out sequence has 2 x 6 frames
    depth = np.load(preds[0])
    assert depth.shape == (32, 32) and depth.dtype == np.float32 and np.all(depth > 0)

    for name in ("test_L5_gt", "test_L5_predicted"):
        rec = out / "reconstructions" / name
        for f in ("mesh.ply", "points.ply", "coverage.json", "unobserved.ply", "tsdf.nii.gz", "report.json"):
            assert (rec / f).is_file(), f"{name}/{f} missing"
    gt = json.loads((out / "reconstructions" / "test_L5_gt" / "report.json").read_text())
    assert 0.0 < gt["coverage"]["observed_fraction"] <= 1.0

    steps = json.loads((out / "steps.json").read_text())
    assert [s["skipped"] for s in steps].count(False) == len(steps)
    # A rerun skips every finished step except prediction (cheap, always refreshed).
    assert cli.main(argv) == 0
    steps = json.loads((out / "steps.json").read_text())
    assert [s["step"] for s in steps if not s["skipped"]] == ["predict depth maps"]


def test_an_incomplete_reconstruction_is_not_a_done_step(tmp_path):
    from colondepth.commands.demo import _is_done

    report = tmp_path / "report.json"
    assert not _is_done(report) and not _is_done(None)
    report.write_text(json.dumps({"complete": False, "warnings": ["mesh.ply incomplete: ..."]}))
    assert not _is_done(report)  # rerunning the demo redoes it
    report.write_text(json.dumps({"complete": True, "warnings": []}))
    assert _is_done(report)
    report.write_text(json.dumps({"sequence": "seq_00000"}))  # a report from before the flag existed
    assert _is_done(report)
    report.write_text("{not json")
    assert not _is_done(report)
    other = tmp_path / "final.pt"
    other.write_bytes(b"x")
    assert _is_done(other)
