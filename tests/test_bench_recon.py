"""benchmarks/bench_recon.py: the fusion throughput can be measured again on its own (on an idle machine) without
touching the accuracy rows."""

from __future__ import annotations

import json

import pytest

from conftest import load_benchmark


def test_throughput_only_updates_just_the_throughput(tmp_path):
    bench = load_benchmark("bench_recon")
    out = tmp_path / "recon.json"
    with pytest.raises(SystemExit, match="no results to update"):
        bench.main(["--throughput-only", "--json", str(out), "--work", str(tmp_path / "w"), "--frames", "2"])
    out.write_text(json.dumps({"rows": [{"level": "L3", "trajectory_ate_mm": 5.0}], "fusion_throughput": []}))
    assert bench.main(["--throughput-only", "--json", str(out), "--work", str(tmp_path / "w"), "--frames", "2"]) == 0
    doc = json.loads(out.read_text())
    assert doc["rows"] == [{"level": "L3", "trajectory_ate_mm": 5.0}]
    assert [r["size"] for r in doc["fusion_throughput"]] == [128, 256]
    assert all(r["fps_wall"] > 0 and r["fps_cpu"] > 0 and r["blocks"] > 0 for r in doc["fusion_throughput"])
    assert doc["throughput_command"].endswith("--frames 2")
