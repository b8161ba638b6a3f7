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
