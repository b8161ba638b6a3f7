"""benchmarks/bench_transfer.py: a quick run end to end on tiny data and a random tiny model, the sparse-point
protocol checked on an analytic scene, and the README table generated from the committed results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from colondepth.datasets.sinus_sfm import write_sequence

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_transfer")


def _tiny_checkpoint(path):
    """A randomly initialised 32x32 DepthNet saved with the training code's checkpoint writer."""
    import torch

    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.train.checkpoint import make_card, save_checkpoint

    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(input_height=32, input_width=32, encoder_channels=[4, 8], decoder_channels=[4, 4],
                                  num_scales=1, norm="none", min_depth_mm=1.0, max_depth_mm=100.0)).eval()
    return save_checkpoint(path, net, make_card(net, "tests", "random", 0, 0, "tests"), config={})


def _plane_sinus(root):
    """Three frames of tilted planes lit by a light at the lens (I = G / r^2), with sparse points on them."""
    from colondepth.conventions import ImageSize
    from colondepth.geometry.camera import PinholeIntrinsics

    size = ImageSize(30, 44)
    k = PinholeIntrinsics(fx=30.0, fy=29.0, cx=21.7, cy=14.2, size=size)
    rng = np.random.default_rng(1)
    rgbs, pts = [], []
    for normal, d in (((0.2, -0.1, 1.0), 30.0), ((0.1, 0.3, 1.0), 40.0), ((-0.25, 0.1, 1.0), 35.0)):
        n = np.asarray(normal) / np.linalg.norm(normal)
        v, u = np.mgrid[0:size.height, 0:size.width].astype(np.float64)
        ray = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1)
        r = d / (ray @ n) * np.linalg.norm(ray, axis=-1)
        lin = 700.0 / r**2
        rgbs.append(np.round(np.repeat((lin ** (1 / 2.2))[..., None], 3, -1) * 255).astype(np.uint8))
        pu, pv = rng.uniform(3, size.width - 4, 40), rng.uniform(3, size.height - 4, 40)
        pray = np.stack([(pu - k.cx) / k.fx, (pv - k.cy) / k.fy, np.ones_like(pu)], -1)
        pts.append((pu, pv, 0.01 * d / (pray @ n)))  # SfM units: an arbitrary scale
    return write_sequence(root, rgbs, pts, k)


def test_quick_run_end_to_end(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "SINUS_TEST_FIRST_FRAME", 1)  # the tiny video's test frames: 1 and 2
    shared = tmp_path / "shared"
    _plane_sinus(shared / "sinus_sfm_sample")
    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "transfer.json"
    readme_before = bench.README.read_text()
    code = bench.main(["--quick", "--checkpoint", str(ckpt), "--out", str(out), "--shared-data", str(shared),
                       "--cache", str(tmp_path / "cache"), "--no-speed"])
    assert code == 0
    assert bench.README.read_text() == readme_before  # a quick run never touches the README
    doc = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert bench.render_table(doc) in printed
    assert doc["quick"] and list(doc["skipped"]) == ["simcol3d_sample"]

    assert doc["sets"]["sinus_sfm_sample"]["frames"] == [1, 2] and doc["sets"]["sinus_sfm_sample"]["num_points"] == 80
    sinus = doc["sets"]["sinus_sfm_sample_all_frames"]
    assert sinus["sampling"] == "bilinear" and sinus["scored_frames"] == 3 and sinus["num_points"] == 120
    # The physics baseline inverts the rendering: at the points it is right up to the per-frame scale.
    assert sinus["physics"]["pooled"]["abs_rel"] < 0.02 and sinus["physics"]["scale"]["cv"] < 0.02
    assert set(sinus["model"]) >= {"pooled", "per_frame_mean", "scale"}

    syn = doc["synthetic"]
    assert syn["provenance"]["seed"] == 9001 and syn["provenance"]["generated"]
    assert list(syn["levels"]) == ["L1", "L2", "L3", "L4", "L5", "L6"]
    for r in syn["levels"].values():
        assert r["scored_frames"] == 2
        assert set(r["median"]) == {"model", "physics", "constant"} and set(r["metric"]) == {"model", "constant"}
        assert all(math.isfinite(x) for x in r["median"]["model"].values())

    targets = {t["name"]: t for t in doc["targets"]}
    assert targets["simcol3d_abs_rel"]["value"] is None and targets["simcol3d_abs_rel"]["passed"] is None
    assert targets["synthetic_L5_delta1"]["value"] == syn["levels"]["L5"]["median"]["model"]["delta1"]
    assert targets["sinus_beats_physics"]["passed"] is False  # a random model loses to exact physics
    assert targets["speed_fps"]["passed"] is None and "speed" not in doc

    # The held-out levels are reused by a rerun (no regeneration), and the README table renders from the file.
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("meta.yaml")}
    assert bench.main(["--quick", "--checkpoint", str(ckpt), "--out", str(out), "--shared-data", str(shared),
                       "--cache", str(tmp_path / "cache"), "--no-speed", "--max-frames", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("meta.yaml")} == stamps
    assert json.loads(out.read_text())["synthetic"]["levels"]["L1"]["scored_frames"] == 1


def test_speed_in_a_fresh_process(bench, tmp_path):
    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    sp = bench.measure_speed(ckpt, size=32, threads=2, batch=2, repeats=1, references=False)
    assert sp["frames_per_s"] > 0 and sp["torch_threads"] == 2 and sp["frame_size"] == [32, 32]
    assert 50 < sp["peak_rss_mib"] < 2048  # torch alone is well above 50 MiB
    doc = {"sets": {}, "speed": sp}
    targets = {t["name"]: t for t in bench.evaluate_targets(doc)}
    assert targets["speed_fps"]["value"] == sp["frames_per_s"] and targets["peak_memory"]["passed"] is True


def test_readme_update_between_markers(bench, tmp_path):
    doc = {"command": "python benchmarks/bench_transfer.py", "quick": False, "sets": {},
           "model": {"checkpoint": "m.pt", "description": "d", "intrinsics_passed": True}}
    doc["targets"] = bench.evaluate_targets(doc)
    assert all(t["passed"] is None for t in doc["targets"])
    assert "not measured" in bench.render_table(doc)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{bench.TABLE_START}\nold\n{bench.TABLE_END}\n\nafter\n")
    assert bench.update_readme(doc, readme)
    assert bench.readme_table(readme) == bench.render_table(doc)
    assert readme.read_text().endswith("after\n") and not bench.update_readme(doc, readme)


def test_readme_table_matches_results_json(bench):
    """The README's transfer table is exactly what benchmarks/results/transfer.json renders to."""
    assert bench.DEFAULT_OUT.is_file(), "benchmarks/results/transfer.json is missing; run benchmarks/bench_transfer.py"
    doc = json.loads(bench.DEFAULT_OUT.read_text())
    assert not doc["quick"]
    assert bench.readme_table(bench.README) == bench.render_table(doc), (
        "README transfer table is stale; run: python benchmarks/bench_transfer.py --readme-only")
    assert {t["name"] for t in doc["targets"]} == set(bench.TARGETS)


def test_dense_view_angle_errors_see_a_radial_bias(bench):
    """Dense ground truth, every pixel a point: a predictor that puts the centre 20 % too far is seen in the
    0-15° band (mean log error +0.18 against the frame median) and not beyond; the constant's bands are
    minus the true radial trend."""
    from colondepth.conventions import ImageSize
    from colondepth.eval.sparse_depth import view_angle_deg
    from colondepth.geometry.camera import PinholeIntrinsics

    K = PinholeIntrinsics.from_fov(ImageSize(40, 40), 100.0)
    v, u = np.mgrid[0:40, 0:40]
    ang = view_angle_deg(u, v, K.K)
    gt = 10.0 + 0.2 * ang  # farther off axis

    class Seq:
        intrinsics, fov_mask = K, None

        def __len__(self):
            return 2

        def rgb(self, i):
            return np.zeros((40, 40, 3), np.uint8)

        def depth_mm(self, i):
            return gt.astype(np.float32)

    class Predictor:
        def predict_batch(self, rgbs, intrinsics=None):
            return np.stack([np.where(ang < 15, 1.2 * gt, gt) for _ in rgbs])

    out = bench.dense_view_angle_errors([Seq()], Predictor())
    model = {tuple(b["deg"]): b["mean_log_error"] for b in out["model"]}
    const = {tuple(b["deg"]): b["mean_log_error"] for b in out["constant"]}
    assert model[(0.0, 15.0)] == pytest.approx(math.log(1.2), abs=0.01)
    assert abs(model[(15.0, 30.0)]) < 0.01 and abs(model[(45.0, 60.0)]) < 0.01
    assert const[(0.0, 15.0)] > 0 > const[(45.0, 60.0)]  # the truth is nearer at the centre here
    assert sum(b["points"] for b in out["model"]) == 2 * 40 * 40
