"""The shipped default model: small, loadable without pickle, recorded provenance, used when no checkpoint is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from colondepth import cli
from colondepth.infer.predictor import DEFAULT_MODEL_PATH, DepthPredictor


def test_default_model_is_small_and_loads_with_weights_only():
    assert DEFAULT_MODEL_PATH.is_file()
    assert DEFAULT_MODEL_PATH.stat().st_size < 30 * 2**20
    payload = torch.load(DEFAULT_MODEL_PATH, weights_only=True)
    card = payload["card"]
    assert payload["training"] is None  # no optimizer state shipped
    assert card["conventions_version"] == "1.0"
    # provenance: the curriculum that trained it ships in curricula/, and the recorded commands reproduce it
    # with repository-relative paths only
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "curricula" / f"{card['curriculum']}.yaml").is_file()
    trained_with = card["default_model"]["trained_with"]
    assert f"train --curriculum curricula/{card['curriculum']}.yaml" in trained_with
    assert not [w for w in trained_with.split() if w.startswith("/")]
    if "pose_network" in card:  # the pose network ships inside the same file
        assert (repo / "curricula" / f"{card['pose_network']['curriculum']}.yaml").is_file()
        assert payload["pose"] is not None
        assert not [w for w in card["pose_network"]["trained_with"].split() if w.startswith("/")]
    # so does the two-frame network of predict --method two-frame|fused
    assert (repo / "curricula" / f"{card['two_frame_network']['curriculum']}.yaml").is_file()
    assert payload["two_frame"] is not None


def test_default_model_predicts_plausible_depth_without_checkpoint(tmp_path, capsys):
    import imageio.v3 as iio

    # A bright centre and dark edges is a wall seen head-on: not a lumen; a dark centre is the lumen.
    yy, xx = np.mgrid[0:96, 0:96]
    r = np.hypot(yy - 47.5, xx - 47.5) / 48.0
    lumen = (np.clip(r, 0.05, 1.0) ** 1.5 * 230).astype(np.uint8)
    img = np.stack([lumen, (lumen * 0.55).astype(np.uint8), (lumen * 0.45).astype(np.uint8)], -1)
    iio.imwrite(tmp_path / "frame.png", img)
    assert cli.main(["predict", "--input", str(tmp_path / "frame.png"), "--out", str(tmp_path / "out"),
                     "--device", "cpu"]) == 0
    depth = np.load(tmp_path / "out" / "frame_depth.npy")
    assert depth.shape == (96, 96) and depth.dtype == np.float32
    lo, hi = DepthPredictor.from_checkpoint(None, device="cpu").depth_range_mm
    assert np.all((depth >= lo) & (depth <= hi))
    centre, rim = depth[40:56, 40:56].mean(), depth[r > 0.8].mean()
    assert centre > 1.5 * rim  # the dark centre (lumen) is predicted farther than the bright wall
