"""DepthPredictor and `colondepth predict`: files, shapes, crops, videos, errors."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from colondepth import cli
from colondepth.commands.predict import colorize_depth
from colondepth.errors import UserError
from colondepth.infer import predictor as predictor_mod
from colondepth.infer.predictor import DepthPredictor
from colondepth.models.depth_net import DepthNet, DepthNetConfig
from colondepth.train.checkpoint import make_card, save_checkpoint

TINY = dict(input_height=32, input_width=32, encoder_channels=[8, 12, 16], decoder_channels=[8, 8, 12], num_scales=3,
            min_depth_mm=1.0, max_depth_mm=100.0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(**TINY)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, net, make_card(net, "test", "s", 0, 0, "test"), {})
    return path


def _rgb(h, w, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_predictor_shapes_and_consistency(ckpt):
    p = DepthPredictor.from_checkpoint(ckpt, device="cpu", batch_size=2)
    assert p.card["input_size"] == [32, 32] and p.depth_range_mm == (1.0, 100.0)
    frames = np.stack([_rgb(40, 50, s) for s in range(3)])
    batch = p.predict_batch(frames)
    assert batch.shape == (3, 40, 50) and batch.dtype == np.float32
    assert batch.min() >= 1.0 - 1e-4 and batch.max() <= 100.0 + 1e-3
    single = p.predict(frames[1])
    assert single.shape == (40, 50)
    np.testing.assert_allclose(single, batch[1], rtol=1e-5)
    # same as running the model's own preprocessing by hand
    ref = p.model.predict_depth(torch.from_numpy(frames[1]).permute(2, 0, 1)[None].float() / 255.0)[0, 0].numpy()
    np.testing.assert_allclose(single, ref, rtol=1e-5)


def test_predictor_rejects_bad_frames(ckpt):
    p = DepthPredictor.from_checkpoint(ckpt, device="cpu")
    with pytest.raises(UserError, match="uint8"):
        p.predict_batch(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(UserError, match=r"\(H, W, 3\)"):
        p.predict(np.zeros((8, 8), np.uint8))


def test_missing_default_model_says_how_to_pass_a_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predictor_mod, "DEFAULT_MODEL_PATH", tmp_path / "data" / "default_model.pt")
    with pytest.raises(UserError, match="--checkpoint"):
        DepthPredictor.from_checkpoint()
    iio.imwrite(tmp_path / "a.png", _rgb(16, 16))
    assert cli.main(["predict", "--input", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    assert "default model is not installed" in capsys.readouterr().err


def test_default_model_path_is_package_data_linked_to_repo_data():
    path = predictor_mod.DEFAULT_MODEL_PATH
    assert path.parent == Path(predictor_mod.__file__).resolve().parents[1] / "resources"
    assert path.resolve() == Path(__file__).resolve().parents[1] / "data" / "default_model.pt"


def _predict(args):
    return cli.main(["predict", *map(str, args)])


def test_predict_image_folder_and_crop(ckpt, tmp_path):
    iio.imwrite(tmp_path / "one.png", _rgb(36, 52))
    out = tmp_path / "out1"
    assert _predict(["--checkpoint", ckpt, "--input", tmp_path / "one.png", "--out", out]) == 0
    d = np.load(out / "one_depth.npy")
    assert d.shape == (36, 52) and d.dtype == np.float32
    png = iio.imread(out / "one_depth.png")
    assert png.shape[0] == 36 and png.shape[1] > 52 and png.shape[2] == 3  # preview + colour bar

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        iio.imwrite(frames / f"f{i}.jpg", _rgb(24, 30, i))
    (frames / "notes.txt").write_text("ignored")
    out2 = tmp_path / "out2"
    assert _predict(["--checkpoint", ckpt, "--input", frames, "--out", out2, "--crop", 2, 4, 20, 16,
                     "--batch-size", 2]) == 0
    names = sorted(p.name for p in out2.iterdir())
    assert names == [f"f{i}_depth.{e}" for i in range(3) for e in ("npy", "png")]
    assert np.load(out2 / "f2_depth.npy").shape == (16, 20)


def test_predict_video(ckpt, tmp_path):
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, np.stack([_rgb(48, 64, i) for i in range(4)]), plugin="pyav", codec="libx264", fps=10)
    out = tmp_path / "vout"
    assert _predict(["--checkpoint", ckpt, "--input", video, "--out", out, "--no-png"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"clip_{i:06d}_depth.npy" for i in range(4)]
    assert np.load(out / "clip_000003_depth.npy").shape == (48, 64)


def test_predict_with_intrinsics_files(ckpt, tmp_path):
    """Pinhole and fisheye files (what the network sees is checked in test_intrinsics.py): depth on the input grid."""
    import yaml

    iio.imwrite(tmp_path / "wide.png", _rgb(48, 64))
    camera = {"width": 64, "height": 48, "fx": 25.0, "fy": 25.0, "cx": 31.5, "cy": 23.5}
    pinhole, fisheye = tmp_path / "pinhole.yaml", tmp_path / "fisheye.yaml"
    pinhole.write_text(yaml.safe_dump(camera))
    fisheye.write_text(yaml.safe_dump({**camera, "model": "fisheye", "k1": -0.02, "k2": 0.003, "k3": 0.0, "k4": 0.0}))
    for kfile in (pinhole, fisheye):
        for crop, shape in (([], (48, 64)), (["--crop", 12, 4, 40, 40], (40, 40))):
            out = tmp_path / f"{kfile.stem}_{len(crop)}"
            assert _predict(["--checkpoint", ckpt, "--input", tmp_path / "wide.png", "--out", out,
                             "--intrinsics", kfile, *crop]) == 0
            d = np.load(out / "wide_depth.npy")
            assert d.shape == shape and np.all(np.isfinite(d)) and d.min() >= 1.0 - 1e-4 and d.max() <= 100.0 + 1e-3


def test_predict_errors(ckpt, tmp_path, capsys):
    assert _predict(["--checkpoint", ckpt, "--input", tmp_path / "missing.png", "--out", tmp_path / "o"]) == 2
    assert "no such image, folder or video" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert _predict(["--checkpoint", ckpt, "--input", tmp_path / "bad.png", "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert "bad.png: cannot read image" in err and err.count("\n") == 1
    iio.imwrite(tmp_path / "small.png", _rgb(10, 10))
    assert _predict(["--checkpoint", ckpt, "--input", tmp_path / "small.png", "--out", tmp_path / "o",
                     "--crop", 0, 0, 20, 20]) == 2
    assert "lies outside" in capsys.readouterr().err
    assert _predict(["--checkpoint", ckpt, "--input", tmp_path, "--out", tmp_path]) == 2
    assert "is the input folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _predict(["--checkpoint", ckpt, "--input", tmp_path / "empty", "--out", tmp_path / "o"]) == 2
    assert "no images" in capsys.readouterr().err
    assert _predict(["--checkpoint", tmp_path / "none.pt", "--input", tmp_path / "small.png",
                     "--out", tmp_path / "o"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_colorize_depth_near_red_far_blue_invalid_black():
    depth = np.tile(np.linspace(10, 90, 32, dtype=np.float32), (8, 1))
    depth[:, :2] = 0.0
    rgb = colorize_depth(depth, lo=10.0, hi=90.0, bar=False)
    assert rgb.shape == (8, 32, 3)
    assert (rgb[:, :2] == 0).all()
    near, far = rgb[0, 2].astype(int), rgb[0, -1].astype(int)
    assert near[0] > near[2] and far[2] > far[0]  # turbo: red end near, blue end far
    with_bar = colorize_depth(depth)
    assert with_bar.shape[0] == 8 and with_bar.shape[1] > 32
