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
    assert raw["format"] == "colondepth-depth-checkpoint"
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
    with pytest.raises(UserError, match="not a ColonDepth depth checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "colondepth-depth-checkpoint", "obj": _Obj()}, tmp_path / "pickled.pt")
    with pytest.raises(UserError, match="not a readable ColonDepth checkpoint"):
        load_checkpoint(tmp_path / "pickled.pt")  # weights_only=True refuses arbitrary objects
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(UserError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
