"""The forgetting monitor (colondepth.train.monitor) through `colondepth train`: every level trained on so far and
every foreign set scored at the set interval and at each stage's end, with the product's own metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import test_train_scenes as sfs_scenes
from colondepth import cli
from colondepth.train.logging import read_metrics

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors on one thread


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("monitor_data")
    sfs_scenes.write_dataset(root / "planes", "L1", sequences=2, frames=6, size=32, seed=0)
    sfs_scenes.write_dataset(root / "tubes", "L2", sequences=2, frames=6, size=32, seed=1)
    sfs_scenes.write_dataset(root / "foreign", "L3", sequences=1, frames=4, size=32, seed=2)
    return root


def _sparse_video(root: Path) -> Path:
    """A 6-frame 'real' video with sparse points (sinus_sfm layout) whose depth is 20 mm everywhere."""
    from colondepth.conventions import ImageSize
    from colondepth.datasets import sinus_sfm
    from colondepth.geometry.camera import PinholeIntrinsics

    rng = np.random.default_rng(0)
    rgbs = [rng.integers(60, 200, (32, 40, 3), dtype=np.uint8) for _ in range(6)]
    pts = [(rng.uniform(2, 37, 30), rng.uniform(2, 29, 30), np.full(30, 20.0)) for _ in range(6)]
    k = PinholeIntrinsics(fx=30.0, fy=30.0, cx=19.5, cy=15.5, size=ImageSize(32, 40))
    sinus_sfm.write_sequence(root, rgbs, pts, k)
    return root


def _curriculum(path: Path, data_root: Path, every: int) -> Path:
    doc = yaml.safe_load((REPO / "curricula" / "smoke.yaml").read_text())
    doc.pop("generate")
    doc["stages"][1]["promotion"] = {"rule": "budget"}
    doc["monitor"] = {"every_steps": every, "max_frames": 3, "foreign": [
        {"name": "dense", "path": str(data_root / "foreign"), "format": "colondepth"},
        {"name": "sparse", "path": str(_sparse_video(path.parent / "sparse_video")), "format": "sinus_sfm",
         "frames": [1, 4]},
        {"name": "absent", "path": "no/such/folder", "format": "simcol3d"},
    ]}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_monitor_scores_levels_seen_so_far_and_foreign_sets(tmp_path, data_root, capsys):
    cur = _curriculum(tmp_path / "c.yaml", data_root, every=4)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="foreign set absent .* skipped"):
        code = cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(out),
                         "--data", str(data_root / "planes"), "--data", str(data_root / "tubes")])
    assert code == 0, capsys.readouterr().err
    recs = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "monitor"]
    by_step: dict = {}
    for r in recs:
        by_step.setdefault(r["global_step"], {})[r["set"]] = r
    # every 4 global steps and at both stage ends (6 and 12 steps of budget): 4, 6, 8, 12
    assert sorted(by_step) == [4, 6, 8, 12]
    # stage 1 trains on L1 only, stage 2 on L2 (with L1 rehearsed): levels appear as they are first trained
    assert set(by_step[4]) == {"L1", "dense", "sparse"} and set(by_step[6]) == {"L1", "dense", "sparse"}
    assert set(by_step[8]) == {"L1", "L2", "dense", "sparse"}
    for r in recs:
        assert r["abs_rel_median_scaled"] > 0 and np.isfinite(r["abs_rel_median_scaled"])
        if r["set"] == "sparse":  # scale-free ground truth: no metric error; frames 1-4 of 6, at most 3
            assert r["abs_rel"] is None and r["set_kind"] == "foreign" and r["frames"] == 3
        else:
            assert r["abs_rel"] > 0 and r["frames"] <= 3
    assert by_step[4]["L1"]["set_kind"] == "level" and by_step[4]["dense"]["set_kind"] == "foreign"
    # the stage-end score is that of the final weights: the same network scored again gives the same number
    from colondepth.infer.predictor import DepthPredictor
    from colondepth.train.config import load_curriculum
    from colondepth.train.data import DataPool
    from colondepth.train.monitor import ForgettingMonitor

    c = load_curriculum(cur)
    pool = DataPool([data_root / "planes", data_root / "tubes"], 0.2, c.data.val_max_frames_per_level, cur.parent)
    pred = DepthPredictor.from_checkpoint(out / "checkpoints" / "final.pt")
    mon = ForgettingMonitor(c.monitor, pool, cur.parent)
    with pytest.warns(UserWarning):
        again = {r.set: r for r in mon.evaluate(pred.model, pred.card, c, 1, "cpu")}
    assert again["L2"].abs_rel_median_scaled == pytest.approx(by_step[12]["L2"]["abs_rel_median_scaled"], rel=1e-5)
    assert again["sparse"].abs_rel_median_scaled == pytest.approx(by_step[12]["sparse"]["abs_rel_median_scaled"],
                                                                  rel=1e-5)


def test_monitor_section_is_validated(tmp_path):
    from colondepth.errors import UserError
    from colondepth.train.config import load_curriculum

    doc = yaml.safe_load((REPO / "curricula" / "smoke.yaml").read_text())
    doc["monitor"] = {"every_steps": -1, "foreign": [{"name": "x", "path": "p", "format": "jpeg", "frames": [5, 2]}]}
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError) as exc:
        load_curriculum(p)
    msg = str(exc.value)
    assert "monitor.every_steps" in msg and "monitor.foreign.0.format" in msg and str(p) in msg
