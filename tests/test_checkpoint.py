"""Checkpoints: round trip with weights_only=True, model card contents, atomic writes, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from colondepth.conventions import CONVENTIONS_VERSION
from colondepth.errors import UserError
from colondepth.models.depth_net import DepthNet, DepthNetConfig
from colondepth.train.checkpoint import load_checkpoint, make_card, read_checkpoint, save_checkpoint

TINY = dict(input_height=32, input_width=64, encoder_channels=[8, 12, 16], decoder_channels=[8, 8, 12], num_scales=3,
            min_depth_mm=2.0, max_depth_mm=120.0)


def _net():
    torch.manual_seed(3)
    net = DepthNet(DepthNetConfig(**TINY))
    with torch.no_grad():  # non-default BN statistics must survive the round trip too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net


def test_round_trip_identical_weights_and_card(tmp_path):
    net = _net()
    card = make_card(net, "smoke", "tubes", 1, 12, "colondepth train --curriculum c.yaml --out run")
    config = {"name": "smoke", "stages": [{"name": "tubes", "kind": "supervised"}]}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(2, 3, 32, 64))[0].mean().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "a.pt", net, card, config, {"optimizer": opt.state_dict(), "global_step": 12})

    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["format"] == "colondepth-model" and raw["format_version"] == 2 and raw["pose"] is None
    json.dumps(raw["card"])
    json.dumps(raw["config"])
    model, card2, config2 = load_checkpoint(path)
    assert not model.training
    assert card2 == card and config2 == config
    ref = net.state_dict()
    got = model.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert model.config == net.config
    x = torch.rand(1, 3, 32, 64)
    assert torch.equal(net.eval().predict_depth(x), model.predict_depth(x))
    # the optimizer state loads back into a fresh optimizer
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(raw["training"]["optimizer"])
    assert opt2.state_dict()["state"][0]["step"] == 1


def test_card_contents():
    card = make_card(_net(), "sfs_curriculum", "L3_haustra", 2, 2500, "colondepth train ...")
    assert card["input_size"] == [32, 64]
    assert card["depth_range_mm"] == [2.0, 120.0]
    assert card["normalisation"]["mean"] == [0.45, 0.45, 0.45]
    assert card["conventions_version"] == CONVENTIONS_VERSION
    assert (card["curriculum"], card["stage"], card["stage_index"], card["step"]) == ("sfs_curriculum", "L3_haustra", 2, 2500)
    assert card["model"]["encoder_channels"] == [8, 12, 16]


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    net = _net()
    card = make_card(net, "c", "s", 0, 1, "cmd")
    path = save_checkpoint(tmp_path / "last.pt", net, card, {})

    def broken(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        save_checkpoint(path, net, dict(card, step=2), {})
    monkeypatch.undo()
    assert read_checkpoint(path)["card"]["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


class _Obj:
    pass


def test_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(UserError, match="not a ColonDepth model"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "colondepth-depth-checkpoint", "obj": _Obj()}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="not a readable ColonDepth checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")  # weights_only=True refuses arbitrary objects
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(UserError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")


def _pose_net():
    from colondepth.models.pose_net import PoseNet, PoseNetConfig

    torch.manual_seed(5)
    return PoseNet(PoseNetConfig(num_sources=2, channels=(8, 8, 16, 16, 16))).eval()


def test_bundle_holds_the_pose_network(tmp_path):
    from colondepth.models.bundle import load_bundle, pose_entry, upgrade_bundle

    net, pose = _net(), _pose_net()
    card = make_card(net, "ft", "finetune", 0, 4, "colondepth finetune")
    path = save_checkpoint(tmp_path / "a.pt", net, card, {}, pose=pose_entry(pose, 2.5))
    b = load_bundle(path)
    assert b.translation_norm_mm == 2.5 and not b.pose.training and b.card == card
    x, src = torch.rand(1, 3, 32, 64), torch.rand(1, 2, 3, 32, 64)
    assert torch.equal(pose(x, src).src_from_tgt, b.pose(x, src).src_from_tgt)
    assert load_bundle(path, with_pose=False).pose is None
    # re-saving a format-2 bundle keeps its pose network
    upgrade_bundle(path, tmp_path / "b.pt")
    assert torch.equal(load_bundle(tmp_path / "b.pt").pose(x, src).src_from_tgt, pose(x, src).src_from_tgt)


def test_format_1_checkpoints_load_and_upgrade(tmp_path):
    """A version-1 file (depth only, pose network in pose_net_<stage>.pt beside it) loads as a bundle with
    its stage's pose network, and upgrade_bundle writes one version-2 file from the pair."""
    from colondepth.models.bundle import load_bundle, upgrade_bundle

    net, pose = _net(), _pose_net()
    card = make_card(net, "ft", "finetune", 0, 4, "colondepth finetune")
    old = tmp_path / "run" / "final.pt"
    old.parent.mkdir()
    torch.save({"format": "colondepth-depth-checkpoint", "format_version": 1, "card": card, "config": {},
                "model_state": net.state_dict(), "training": None}, old)
    assert load_bundle(old).pose is None  # no pose file yet
    torch.save({"format": "colondepth-pose-net", "config": pose.config.to_dict(), "state": pose.state_dict(),
                "translation_norm_mm": -1.0}, old.parent / "pose_net_finetune.pt")
    b = load_bundle(old)
    x, src = torch.rand(1, 3, 32, 64), torch.rand(1, 2, 3, 32, 64)
    assert b.translation_norm_mm is None and torch.equal(b.pose(x, src).src_from_tgt, pose(x, src).src_from_tgt)
    assert torch.equal(b.depth.predict_depth(x), net.eval().predict_depth(x))
    new = upgrade_bundle(old, tmp_path / "new.pt")
    (old.parent / "pose_net_finetune.pt").unlink()
    raw = torch.load(new, weights_only=True)
    assert raw["format"] == "colondepth-model" and raw["training"] is None
    assert torch.equal(load_bundle(new).pose(x, src).src_from_tgt, pose(x, src).src_from_tgt)


def test_bundle_version_and_kind_errors(tmp_path):
    from colondepth.models.bundle import read_bundle

    net = _net()
    path = save_checkpoint(tmp_path / "a.pt", net, make_card(net, "c", "s", 0, 1, "cmd"), {})
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 3
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(UserError, match=r"future.pt: model format 3 is newer .* upgrade colondepth"):
        read_bundle(tmp_path / "future.pt")
    torch.save({"format": "colondepth-pose-net", "config": {}, "state": {}}, tmp_path / "pose_net_x.pt")
    with pytest.raises(UserError, match="is a pose-network file, not a model"):
        read_bundle(tmp_path / "pose_net_x.pt")
