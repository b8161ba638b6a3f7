"""benchmarks/bench_depthnet.py: the whole pipeline in quick mode on a tiny bundle, and the target rule."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark, write_tiny_bundle


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_depthnet")


@pytest.fixture(scope="module")
def tube_bundle_path(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("dn") / "tiny.pt")


def test_target_rule_compares_fused_with_the_better_single_method(bench):
    res = {"sfs": {"median": {"abs_rel": 0.20}}, "two-frame (ground truth)": {"median": {"abs_rel": 0.25}},
           "fused (ground truth)": {"median": {"abs_rel": 0.17}}}
    rows = bench.target_rows({"sets": {"synthetic_L5": res}})
    assert rows == [{"set": "synthetic_L5", "motion": "ground truth", "better_single": "sfs",
                     "better_single_abs_rel": 0.20, "fused_abs_rel": 0.17, "relative_gain": pytest.approx(0.15),
                     "met": True}]
    res["fused (ground truth)"]["median"]["abs_rel"] = 0.19
    assert not bench.target_rows({"sets": {"synthetic_L5": res}})[0]["met"]


def test_cue_analysis_measures_where_each_cue_wins_and_the_fusion_bound(bench):
    """Analytic cases: identical errors (correlation 1, nothing to gain); independent errors of equal size
    (correlation ~0, the best constant weight ~0.5 and about 1 - 1/sqrt(2) = 29 % lower error); a confidence
    that marks exactly the pixels where the two-frame depth is right."""
    import numpy as np

    rng = np.random.default_rng(0)
    gt = rng.uniform(5.0, 50.0, 20000)
    e1, e2 = rng.normal(0.0, 0.1, (2, gt.size))
    conf = rng.uniform(0.0, 1.0, gt.size)
    same = bench.cue_analysis([(gt * np.exp(e1), 3.0 * gt * np.exp(e1), gt, conf)])  # any scale: median-scaled
    assert same["error_log_correlation"] == pytest.approx(1.0)
    assert same["best_constant_weight"]["gain_over_better_single"] == pytest.approx(0.0, abs=1e-9)
    assert same["sfs_abs_rel"] == pytest.approx(same["two_frame_abs_rel"])
    ind = bench.cue_analysis([(gt * np.exp(e1), gt * np.exp(e2), gt, conf)])
    assert abs(ind["error_log_correlation"]) < 0.03 and ind["best_constant_weight"]["weight"] in (0.4, 0.5, 0.6)
    assert ind["best_constant_weight"]["gain_over_better_single"] == pytest.approx(1 - 2 ** -0.5, abs=0.02)
    assert ind["two_frame_closer"] == pytest.approx(0.5, abs=0.02)
    # two-frame exact where the confidence is high (top third), poor elsewhere
    two = np.where(conf > 2 / 3, gt, gt * np.exp(3 * e2))
    where = bench.cue_analysis([(gt * np.exp(e1), two, gt, conf)])
    lo, hi = where["by_confidence"][0], where["by_confidence"][-1]
    # (exact up to the frame's median scale, a ratio of medians that the noisy pixels move a little)
    assert hi["two_frame_closer"] > 0.6 > 0.4 > lo["two_frame_closer"]
    assert hi["two_frame_abs_rel"] < lo["two_frame_abs_rel"] / 4
    assert sum(b["pixels"] for b in where["by_confidence"]) == gt.size
    assert bench.cue_analysis([]) == {"pixels": 0}


def test_quick_run(bench, tmp_path, tube_bundle_path, monkeypatch):
    monkeypatch.setattr(bench, "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text(f"{bench.TABLE_START}\nold\n{bench.TABLE_END}\n")
    out = tmp_path / "d.json"
    argv = ["--quick", "--checkpoint", str(tube_bundle_path), "--out", str(out), "--maps", str(tmp_path / "m.png"),
            "--threads", "1", "--readme", "--selfsup-steps", "2", "--work", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    for name in ("synthetic_L3", "synthetic_L5"):
        res = doc["sets"][name]
        assert set(res) == {"sfs", "two-frame (ground truth)", "fused (ground truth)", "two-frame (pose network)",
                            "fused (pose network)"}
        assert all(0 < r["median"]["abs_rel"] < 5 and r["frames"] == 6 for r in res.values())
    assert {r["set"] for r in doc["targets"]} >= {"synthetic_L5"}
    assert doc["cues"]["synthetic_L5"]["pixels"] > 0 and len(doc["cues"]["synthetic_L5"]["by_confidence"]) == 3
    assert doc["speed"]["frames_per_s"]["fused"] > 0
    if "sinus" in doc["sets"]:  # the shared real video is there: self-supervised re-training before / after
        ss = doc["sinus_selfsup"]
        assert ss["steps"] == 2 and ss["test_first_frame"] == 250
        assert ss["before"]["sfs"]["median"]["abs_rel"] == ss["after"]["sfs"]["median"]["abs_rel"]  # depth net unchanged
        assert ss["before"]["fused (pose network)"]["median"]["abs_rel"] > 0
    assert (tmp_path / "m.png").is_file() and "| synthetic_L5 |" in (tmp_path / "README.md").read_text()


def test_readme_table_is_the_committed_json(bench, repo_root):
    """The README's two-frame table is generated from benchmarks/results/depthnet.json."""
    doc = json.loads(bench.DEFAULT_OUT.read_text())
    text = (repo_root / "README.md").read_text()
    table = text.split(bench.TABLE_START, 1)[1].split(bench.TABLE_END, 1)[0]
    assert table.strip() == bench.render_table(doc).strip()
    assert not doc["quick"]
