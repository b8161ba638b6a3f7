"""benchmarks/bench_curriculum.py: every arm draws the same samples under the same run-wide learning-rate shape,
and the whole pipeline (train, monitor, score, summarise, README table) runs in quick mode."""

from __future__ import annotations

import json

import pytest

import test_train_scenes as sfs_scenes
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_curriculum")


def test_arms_share_samples_and_learning_rate_shape(bench):
    from colondepth.train.config import parse_curriculum
    from colondepth.train.runner import run_total_steps

    mode = bench.MODES["full"]
    totals, schedules = set(), set()
    for arm in bench.ARMS:
        cur = bench.arm_curriculum(arm, 0, mode, None)
        c = parse_curriculum(cur)
        totals.add(run_total_steps(c))
        schedules |= {json.dumps(s.lr_schedule.model_dump(), sort_keys=True) for s in c.stages}
        assert {s.batch_size for s in c.stages} == {mode["batch"]}
        assert {lv for s in c.stages for lv in s.levels} == set(bench.LEVELS)
    assert totals == {len(bench.LEVELS) * mode["steps_per_level"]} and totals.pop() >= 10_000
    assert len(schedules) == 1 and '"scope": "run"' in schedules.pop()
    order = lambda arm: [s["levels"] for s in bench.arm_stages(arm, bench.LEVELS, 10, {"_eval_every": 5})]  # noqa
    assert order("curriculum") == [[lv] for lv in bench.LEVELS] == order("reversed")[::-1]
    assert order("mixed") == [list(bench.LEVELS)] and order("mixed_then_hardest")[-1] == ["L6"]
    comp = bench.arm_stages("competence", bench.LEVELS, 10, {"_eval_every": 5})
    assert all(s["promotion"]["rule"] == "competence" and s["promotion"]["carry_over"] for s in comp[:-1])


def test_winner_needs_three_seeds_and_a_gap_beyond_the_spread(bench):
    per_seed = {"a": {str(s): {"x": {"abs_rel_median_scaled": 0.10 + 0.001 * s, "abs_rel": None}} for s in range(3)},
                "b": {str(s): {"x": {"abs_rel_median_scaled": 0.20 + 0.001 * s, "abs_rel": None}} for s in range(3)},
                "c": {"0": {"x": {"abs_rel_median_scaled": 0.05, "abs_rel": None}}}}
    summ = bench.summarize_arms(per_seed)
    assert summ["x"]["abs_rel_median_scaled"]["a"]["mean"] == pytest.approx(0.101)
    assert "abs_rel" not in summ["x"]  # scale-free everywhere
    w = bench.winners(summ)
    assert w["x"]["abs_rel_median_scaled"] == {"lowest_mean": "c", "beats_all": None}  # one seed: no claim
    del per_seed["c"]
    assert bench.winners(bench.summarize_arms(per_seed))["x"]["abs_rel_median_scaled"] == {
        "lowest_mean": "a", "beats_all": True}


def test_quick_mode_end_to_end(bench, tmp_path, monkeypatch):
    data = tmp_path / "data"
    sfs_scenes.write_dataset(data / "planes", "L1", sequences=2, frames=6, size=32, seed=0)
    sfs_scenes.write_dataset(data / "tubes", "L2", sequences=2, frames=6, size=32, seed=1)
    monkeypatch.setattr(bench, "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text(f"x\n{bench.TABLE_START}\nold\n{bench.TABLE_END}\ny\n")
    out = tmp_path / "curriculum.json"
    argv = ["--quick", "--arms", "curriculum", "mixed", "--seeds", "0", "--data", str(data),
            "--work", str(tmp_path / "work"), "--out", str(out), "--threads", "1", "--shared-data", str(tmp_path / "none")]
    assert bench.main(argv + ["--readme"]) == 0
    doc = json.loads(out.read_text())
    assert doc["steps_per_arm"] == 8 and doc["arms"] == ["curriculum", "mixed"]
    val = doc["per_seed"]["validation"]["curriculum"]["0"]
    assert set(val) == {"L1", "L2"} and all(v["abs_rel_median_scaled"] > 0 for v in val.values())
    test = doc["per_seed"]["test"]["mixed"]["0"]
    assert set(test) == {"heldout_L1", "heldout_L2"} and test["heldout_L2"]["abs_rel"] > 0
    text = (tmp_path / "README.md").read_text()
    assert "old" not in text and "| heldout_L2 |" in text and "n/a (< 3 seeds)" in text
    # a second call reuses the finished runs and their test scores (no training, no scoring: same numbers)
    monkeypatch.setattr(bench, "test_scores", lambda *a, **k: pytest.fail("scored a finished run again"))
    assert bench.main(argv) == 0
    assert json.loads(out.read_text())["per_seed"] == doc["per_seed"]


def test_readme_table_is_the_committed_json(bench, repo_root):
    """The README's curriculum table is generated from benchmarks/results/curriculum.json, a full run: every
    arm, at least 3 seeds, at least 10,000 steps per arm."""
    doc = json.loads(bench.DEFAULT_OUT.read_text())
    text = (repo_root / "README.md").read_text()
    table = text.split(bench.TABLE_START, 1)[1].split(bench.TABLE_END, 1)[0]
    assert table.strip() == bench.render_table(doc).strip()
    assert not doc["quick"] and doc["arms"] == list(bench.ARMS)
    assert len(doc["seeds"]) >= 3 and doc["steps_per_arm"] >= 10_000
