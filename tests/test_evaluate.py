"""The evaluation runner and the ``colondepth evaluate`` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from colondepth import cli
from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.errors import UserError
from colondepth.eval.baselines import physics_depth_mm
from colondepth.eval.depth_metrics import DEPTH_METRICS, frame_depth_metrics
from colondepth.eval.evaluate import (
    evaluate_sequences,
    format_report,
    resize_depth,
    select_frames,
    write_report_json,
)
from colondepth.geometry.camera import PinholeIntrinsics

SIZE = ImageSize(24, 32)
K = PinholeIntrinsics(fx=26.0, fy=27.0, cx=14.3, cy=10.9, size=SIZE)
GAIN = 700.0  # linear intensity I = GAIN / range^2 (brightest pixel < 1 for planes beyond 26.5 mm)


def _plane_frame(normal, d_mm):
    """RGB (uint8, I = GAIN / r^2, gamma 1/2.2) and z-depth (mm) of the plane n . X = d."""
    v, u = np.mgrid[0 : SIZE.height, 0 : SIZE.width].astype(np.float64)
    ray = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    z = d_mm / (ray @ n)
    r = z * np.linalg.norm(ray, axis=-1)
    lin = GAIN / r**2
    assert lin.max() < 1.0
    rgb = np.round(np.repeat((lin ** (1 / 2.2))[..., None], 3, axis=-1) * 255).astype(np.uint8)
    return rgb, z.astype(np.float32)


def _sequence(name, level, planes):
    frames = [_plane_frame(n, d) for n, d in planes]
    return Sequence(
        name=name,
        intrinsics=K,
        num_frames=len(frames),
        load_rgb=lambda i: frames[i][0].copy(),
        load_depth_mm=lambda i: frames[i][1].copy(),
        level=level,
    )


def _dataset():
    a = _sequence("seq_a", "L1", [((0.2, -0.1, 1.0), 30.0), ((0.1, 0.3, 1.0), 35.0), ((-0.2, 0.0, 1.0), 40.0)])
    b = _sequence("seq_b", "L2", [((0.0, 0.25, 1.0), 28.0), ((0.3, 0.2, 1.0), 45.0)])
    return [a, b]


def _exact_predictor(factor=1.0, out_size=None):
    """A 'model' that inverts the rendering exactly (metric z-depth times ``factor``)."""

    def predict_batch(rgb):
        assert rgb.dtype == np.uint8 and rgb.ndim == 4
        out = []
        for img in rgb:
            depth = factor * physics_depth_mm(img, K, smooth_sigma_px=0.0, scale=math.sqrt(GAIN))
            if out_size is not None:
                import cv2

                depth = cv2.resize(depth, (out_size.width, out_size.height), interpolation=cv2.INTER_AREA)
            out.append(depth)
        return np.stack(out)

    return predict_batch


class TestRunner:
    def test_exact_model_scores_near_zero_metric_and_aligned(self):
        seqs = _dataset()
        for align in ("none", "median"):
            rep = evaluate_sequences(seqs, _exact_predictor(), align=align, progress=False)
            s = rep.summary()
            assert s["num_frames"] == 5
            assert s["metrics"]["model"]["abs_rel"] < 2e-3  # 8-bit quantisation only
            assert s["metrics"]["model"]["delta1"] == 1.0
            # The physics baseline is the same estimator without a scale: exact after median alignment.
            assert s["metrics"]["physics"]["abs_rel"] < 5e-3

    def test_scaled_model_metric_vs_median(self):
        seqs = _dataset()
        metric = evaluate_sequences(seqs, _exact_predictor(2.0), align="none", progress=False)
        aligned = evaluate_sequences(seqs, _exact_predictor(2.0), align="median", progress=False)
        assert metric.summary()["metrics"]["model"]["abs_rel"] == pytest.approx(1.0, abs=5e-3)
        assert metric.summary()["metrics"]["model"]["delta3"] == 0.0
        assert aligned.summary()["metrics"]["model"]["abs_rel"] < 5e-3
        scales = [f["scale"]["model"] for f in aligned.frames]
        np.testing.assert_allclose(scales, 0.5, rtol=5e-3)
        assert all(f["scale"]["model"] == 1.0 for f in metric.frames)

    def test_low_resolution_prediction_is_resized_to_gt(self):
        rep = evaluate_sequences(
            _dataset(), _exact_predictor(out_size=ImageSize(12, 16)), align="none", progress=False
        )
        assert rep.summary()["metrics"]["model"]["abs_rel"] < 0.01

    def test_levels_and_frame_average(self):
        seqs = _dataset()
        rep = evaluate_sequences(seqs, _exact_predictor(1.5), align="none", progress=False)
        assert rep.levels == ["L1", "L2"]
        assert rep.summary("L1")["num_frames"] == 3 and rep.summary("L2")["num_frames"] == 2
        # Overall = mean over the 5 frames (not over the two levels).
        per_frame = [f["metrics"]["constant"]["rmse"] for f in rep.frames]
        assert rep.summary()["metrics"]["constant"]["rmse"] == pytest.approx(np.mean(per_frame))
        # Each frame's numbers equal a direct call on that frame.
        seq = seqs[1]
        direct = frame_depth_metrics(
            physics_depth_mm(seq.rgb(1), K), seq.depth_mm(1), align="median"
        ).metrics
        row = next(f for f in rep.frames if f["sequence"] == "seq_b" and f["frame"] == 1)
        assert row["metrics"]["physics"] == pytest.approx(direct)

    def test_constant_baseline_values(self):
        seqs = _dataset()
        given = evaluate_sequences(seqs, None, align="none", constant_mm=30.0, progress=False)
        assert "model" not in given.methods
        assert given.methods["constant"]["value_mm"] == 30.0
        f0 = seqs[0].depth_mm(0)
        expected = frame_depth_metrics(np.full(f0.shape, 30.0, np.float32), f0, align="none").metrics
        assert given.frames[0]["metrics"]["constant"] == pytest.approx(expected)
        oracle = evaluate_sequences(seqs, None, align="none", progress=False)
        all_gt = np.concatenate([s.depth_mm(i).ravel() for s in seqs for i in range(len(s))])
        assert oracle.methods["constant"]["value_mm"] == pytest.approx(float(np.median(all_gt)), rel=1e-6)
        assert "oracle" in oracle.methods["constant"]["description"]
        # Physics is always median-aligned, and says so.
        assert oracle.methods["physics"]["align"] == "median"
        assert "gamma 2.2" in oracle.methods["physics"]["description"]

    def test_physics_gamma_is_passed_through(self):
        seqs = _dataset()
        rep = evaluate_sequences(seqs, None, physics_kwargs={"gamma": 1.0}, progress=False)
        assert "gamma 1" in rep.methods["physics"]["description"]
        direct = frame_depth_metrics(physics_depth_mm(seqs[0].rgb(0), K, gamma=1.0), seqs[0].depth_mm(0)).metrics
        assert rep.frames[0]["metrics"]["physics"] == pytest.approx(direct)
        # The scenes were encoded with gamma 1/2.2, so decoding with 1.0 is worse than 2.2.
        assert direct["abs_rel"] > 0.01

    def test_max_frames_and_skipped_frames(self):
        seqs = _dataset()
        rep = evaluate_sequences(seqs, _exact_predictor(), max_frames=2, progress=False)
        assert [(f["sequence"], f["frame"]) for f in rep.frames] == [("seq_a", 0), ("seq_b", 1)]
        rep = evaluate_sequences(seqs, _exact_predictor(), max_mm=33.0, progress=False)
        assert rep.skipped_frames > 0  # the 40 and 45 mm planes lie beyond 33 mm
        assert all(f["num_valid"] > 0 for f in rep.frames)

    def test_fov_mask_restricts_pixels(self):
        seq = _dataset()[0]
        fov = np.zeros(SIZE.as_hw(), bool)
        fov[4:20, 6:26] = True
        seq.fov_mask = fov
        rep = evaluate_sequences([seq], _exact_predictor(), progress=False)
        assert all(f["num_valid"] == int(fov.sum()) for f in rep.frames)

    def test_batching_does_not_change_results(self):
        a = evaluate_sequences(_dataset(), _exact_predictor(1.3), batch_size=1, progress=False)
        b = evaluate_sequences(_dataset(), _exact_predictor(1.3), batch_size=8, progress=False)
        assert a.to_dict() == b.to_dict()

    def test_bad_inputs_are_user_errors(self):
        seqs = _dataset()
        with pytest.raises(UserError, match="--align"):
            evaluate_sequences(seqs, None, align="mean", progress=False)
        with pytest.raises(UserError, match="--max-frames"):
            evaluate_sequences(seqs, None, max_frames=0, progress=False)
        nodepth = Sequence(name="video", intrinsics=K, num_frames=1, load_rgb=lambda i: np.zeros((24, 32, 3), np.uint8))
        with pytest.raises(UserError, match="video: has no ground-truth depth"):
            evaluate_sequences([nodepth], None, progress=False)
        with pytest.raises(UserError, match="no evaluated frame"):
            evaluate_sequences(seqs, None, max_mm=5.0, progress=False)
        with pytest.raises(ValueError, match=r"expected \(B, H, W\)"):
            evaluate_sequences(seqs, lambda rgb: np.ones((1, 2, 2, 1)), progress=False)


class TestReport:
    def test_json_matches_summary_and_is_atomic(self, tmp_path):
        rep = evaluate_sequences(_dataset(), _exact_predictor(2.0), align="none", progress=False)
        rep.inputs = {"data": "tiny"}
        out = write_report_json(rep, tmp_path / "sub" / "eval.json")
        doc = json.loads(out.read_text())
        assert doc["align"] == "none" and doc["num_frames"] == 5 and doc["num_sequences"] == 2
        assert doc["metric_names"] == list(DEPTH_METRICS)
        assert set(doc["levels"]) == {"L1", "L2"}
        assert doc["overall"]["metrics"]["model"] == pytest.approx(rep.summary()["metrics"]["model"])
        assert doc["levels"]["L2"]["num_frames"] == 2
        assert doc["inputs"] == {"data": "tiny"}
        assert [p.name for p in (tmp_path / "sub").iterdir()] == ["eval.json"]  # no temporary left

    def test_table_lists_levels_methods_and_metrics(self):
        rep = evaluate_sequences(_dataset(), _exact_predictor(2.0), align="none", progress=False)
        text = format_report(rep)
        assert "### level L1 (3 frames)" in text and "### level L2 (2 frames)" in text
        assert "### overall (5 frames)" in text
        header = next(line for line in text.splitlines() if line.startswith("| method"))
        assert header.split("|")[3].strip() == "abs_rel" and "δ<1.25³" in header
        model_row = next(line for line in text.splitlines() if line.startswith("| model"))
        cells = [c.strip() for c in model_row.strip("|").split("|")]
        assert cells[1] == "none" and abs(float(cells[2]) - 1.0) < 5e-3
        assert "| physics | median |" in text


def test_select_frames_and_resize():
    assert select_frames([2, 2, 2], max_frames=3) == [(0, 0), (1, 0), (2, 1)]
    assert select_frames([4], max_frames=10) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    d = resize_depth(np.full((3, 4), 7.0, np.float32), ImageSize(6, 8))
    assert d.shape == (6, 8) and np.all(d == 7.0)


class TestCommandErrors:
    """Bad inputs give one-line errors and exit status 2."""

    def _run(self, capsys, argv):
        code = cli.main(["evaluate"] + argv)
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    def test_missing_data_dir(self, tmp_path, capsys):
        err = self._run(capsys, ["--data", str(tmp_path / "nope")])
        assert "nope" in err and "no such dataset folder" in err

    def test_unknown_format(self, tmp_path, capsys):
        err = self._run(capsys, ["--data", str(tmp_path), "--format", "kitti"])
        assert "--format kitti" in err

    def test_missing_checkpoint(self, tmp_path, capsys):
        err = self._run(capsys, ["--data", str(tmp_path), "--checkpoint", str(tmp_path / "model.pt")])
        assert "model.pt: checkpoint not found" in err

    def test_bad_align_and_max_frames(self, tmp_path, capsys):
        assert "--align mean" in self._run(capsys, ["--data", str(tmp_path), "--align", "mean"])
        assert "--max-frames 0" in self._run(capsys, ["--data", str(tmp_path), "--max-frames", "0"])
        assert "--physics-gamma 0.0" in self._run(capsys, ["--data", str(tmp_path), "--physics-gamma", "0"])


# -- end to end: a dataset on disk (DESIGN section 3 layout) and a real checkpoint ------------------------------
def _write_dataset(root, depth_scale_mm=0.01):
    """Two sequences (levels L1, L2) of the tilted-plane scenes above, in the on-disk dataset layout."""
    import imageio.v3 as iio
    import yaml

    from colondepth.conventions import CONVENTIONS_VERSION

    root.mkdir(parents=True)
    seqs = _dataset()
    for k, seq in enumerate(seqs):
        d = root / f"seq_{k:05d}"
        (d / "rgb").mkdir(parents=True)
        (d / "depth").mkdir()
        meta = {**K.to_dict(), "depth_scale_mm": depth_scale_mm, "fps": 10.0, "level": seq.level, "seed": k}
        (d / "meta.yaml").write_text(yaml.safe_dump(meta))
        lines = []
        for i in range(len(seq)):
            iio.imwrite(d / "rgb" / f"{i:06d}.png", seq.rgb(i))
            iio.imwrite(d / "depth" / f"{i:06d}.png", np.round(seq.depth_mm(i) / depth_scale_mm).astype(np.uint16))
            lines.append(f"{i / 10.0:.6f} 0 0 {2.0 * i:.6f} 0 0 0 1")
        (d / "poses.txt").write_text("\n".join(lines) + "\n")
    info = {"level": "mixed", "seed": 0, "generator": "tests", "conventions_version": CONVENTIONS_VERSION,
            "num_sequences": len(seqs), "num_frames": sum(len(s) for s in seqs)}
    (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    return root


def _tiny_checkpoint(path):
    """A randomly initialised 32x32 DepthNet saved with the training code's checkpoint writer."""
    torch = pytest.importorskip("torch")
    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.train.checkpoint import make_card, save_checkpoint

    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(input_height=32, input_width=32, encoder_channels=[4, 8], decoder_channels=[4, 4],
                                  num_scales=1, norm="none", min_depth_mm=1.0, max_depth_mm=100.0)).eval()
    card = make_card(net, "tests", "random", 0, 0, "tests")
    return save_checkpoint(path, net, card, config={})


def test_command_end_to_end(tmp_path, capsys):
    pytest.importorskip("colondepth.datasets.synthetic")
    data = _write_dataset(tmp_path / "data")
    ckpt = _tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "eval.json"
    code = cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--json", str(out),
                     "--align", "none", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "### overall (5 frames)" in printed and "| model | none |" in printed and "| physics | median |" in printed
    doc = json.loads(out.read_text())
    assert doc["num_frames"] == 5 and set(doc["levels"]) == {"L1", "L2"}
    assert doc["inputs"]["checkpoint"] == str(ckpt)
    # The command's numbers are the runner's numbers with the same predictor.
    from colondepth.datasets.registry import open_sequences
    from colondepth.infer.predictor import DepthPredictor

    pred = DepthPredictor.from_checkpoint(ckpt, device="cpu")
    rep = evaluate_sequences(open_sequences(data, "colondepth"), pred.predict_batch, align="none", progress=False)
    assert doc["overall"]["metrics"]["model"] == pytest.approx(rep.summary()["metrics"]["model"])
    # The physics baseline on the decoded PNGs is as exact as on the in-memory frames.
    assert doc["overall"]["metrics"]["physics"]["abs_rel"] < 5e-3
    # --max-frames limits the work.
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--max-frames", "2"]) == 0
    assert "### overall (2 frames)" in capsys.readouterr().out


def test_command_default_model_missing_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("colondepth.datasets.synthetic")
    from colondepth.infer import predictor

    monkeypatch.setattr(predictor, "DEFAULT_MODEL_PATH", tmp_path / "absent.pt")
    data = _write_dataset(tmp_path / "data")
    code = cli.main(["evaluate", "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "absent.pt" in err


def test_command_rejects_a_foreign_checkpoint(tmp_path, capsys):
    pytest.importorskip("colondepth.datasets.synthetic")
    data = _write_dataset(tmp_path / "data")
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    code = cli.main(["evaluate", "--checkpoint", str(bad), "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "notes.pt" in err
