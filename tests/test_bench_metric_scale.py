"""benchmarks/bench_metric_scale.py: the per-sequence metric scale summary and the lumen radius it is fitted
against."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import load_benchmark


def _rows(radii, ratios, frame_sd=0.01):
    return [{"lumen_radius_mm": r, "ratio": q, "frame_sd_log": frame_sd} for r, q in zip(radii, ratios)]


def test_one_predicted_lumen_size_gives_slope_minus_one():
    bench = load_benchmark("bench_metric_scale")
    radii = [14.0, 16.0, 18.0, 20.0, 22.0]
    s = bench.summarize(_rows(radii, [18.0 / r for r in radii]))  # the model always predicts an 18 mm lumen
    fit = s["fit_log_ratio_vs_log_radius"]
    assert fit["slope"] == pytest.approx(-1.0, abs=1e-9)
    assert fit["intercept"] == pytest.approx(math.log(18.0), abs=1e-9)
    assert fit["variance_explained"] == pytest.approx(1.0, abs=1e-9)
    assert s["correlation_log_ratio_log_radius"] == pytest.approx(-1.0, abs=1e-9)
    assert s["between_sequences_sd_log"] == pytest.approx(np.std(np.log(18.0 / np.array(radii)), ddof=1))
    assert s["within_sequence_sd_log_mean"] == pytest.approx(0.01)
    assert s["ratio_median"] == pytest.approx(1.0)  # 18 mm is the middle radius


def test_a_scale_error_unrelated_to_the_radius_is_not_explained():
    bench = load_benchmark("bench_metric_scale")
    radii = [14.0, 22.0, 14.0, 22.0]
    s = bench.summarize(_rows(radii, [0.8, 0.8, 1.25, 1.25]))
    assert s["fit_log_ratio_vs_log_radius"]["slope"] == pytest.approx(0.0, abs=1e-9)
    assert s["fit_log_ratio_vs_log_radius"]["variance_explained"] == pytest.approx(0.0, abs=1e-9)
    assert s["between_sequences_sd_log"] == pytest.approx(np.std(np.log([0.8, 0.8, 1.25, 1.25]), ddof=1))


def test_lumen_radius_read_from_the_sequence_meta_or_a_clear_exit():
    bench = load_benchmark("bench_metric_scale")
    seq = SimpleNamespace(name="L3/seq_00000", extra={"meta": SimpleNamespace(params={"lumen": {"radius_mm": 17.5}})})
    assert bench.lumen_radius_mm(seq) == 17.5
    bad = SimpleNamespace(name="L3/seq_00001", extra={"meta": SimpleNamespace(params={})})
    with pytest.raises(SystemExit, match="L3/seq_00001: meta.yaml has no params.lumen.radius_mm"):
        bench.lumen_radius_mm(bad)
