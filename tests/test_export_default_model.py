"""benchmarks/export_default_model.py: a model bundle without training state, with the pose network of a
pose-only run on exactly the same depth weights (and a clear refusal otherwise)."""

from __future__ import annotations


import pytest
import torch

from colondepth.models.bundle import load_bundle, pose_entry, read_bundle
from colondepth.models.depth_net import DepthNet, DepthNetConfig
from colondepth.models.pose_net import PoseNet, PoseNetConfig
from colondepth.train.checkpoint import make_card, save_checkpoint

from conftest import load_benchmark


@pytest.fixture(scope="module")
def export():
    return load_benchmark("export_default_model").main


def _depth(seed):
    torch.manual_seed(seed)
    return DepthNet(DepthNetConfig(input_height=32, input_width=32, encoder_channels=[4, 8], decoder_channels=[4, 4],
                                   num_scales=1, norm="none"))


def test_export_with_pose_network(tmp_path, export, capsys):
    net = _depth(0)
    depth_ckpt = save_checkpoint(tmp_path / "depth.pt", net, make_card(net, "d", "all", 1, 9, "train d"), {"name": "d"},
                                 training={"optimizer": None})
    pose = PoseNet(PoseNetConfig(channels=(8, 8, 8, 8, 8), num_mask_scales=0)).eval()
    pose_ckpt = save_checkpoint(tmp_path / "pose.pt", net, make_card(net, "p", "pose", 0, 5, "train p"), {},
                                pose=pose_entry(pose, None))
    out = tmp_path / "default_model.pt"
    assert export([str(depth_ckpt), str(out), "--pose", str(pose_ckpt)]) == 0
    raw = read_bundle(out)
    assert raw["training"] is None and raw["config"] == {"name": "d"}
    assert raw["card"]["curriculum"] == "d" and raw["card"]["pose_network"]["curriculum"] == "p"
    assert "--pose" in raw["card"]["default_model"]["exported_with"]
    b = load_bundle(out)
    x, src = torch.rand(1, 3, 32, 32), torch.rand(1, 2, 3, 32, 32)
    assert torch.equal(b.pose(x, src).src_from_tgt, pose(x, src).src_from_tgt)
    assert torch.equal(b.depth.predict_depth(x), net.eval().predict_depth(x))

    other = _depth(1)
    wrong = save_checkpoint(tmp_path / "wrong.pt", other, make_card(other, "p", "pose", 0, 5, "x"), {},
                            pose=pose_entry(pose, None))
    assert export([str(depth_ckpt), str(tmp_path / "x.pt"), "--pose", str(wrong)]) == 2
    assert "depth weights differ" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_average_checkpoints(tmp_path, repo_root):
    mod = load_benchmark("average_checkpoints")
    a, b = _depth(0), _depth(1)
    pa = save_checkpoint(tmp_path / "a.pt", a, make_card(a, "d", "s", 0, 10, "x"), {})
    pb = save_checkpoint(tmp_path / "b.pt", b, make_card(b, "d", "s", 0, 20, "x"), {})
    out = mod.average([pa, pb], tmp_path / "avg.pt")
    got = load_bundle(out).depth.state_dict()
    for k, v in a.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(got[k], (v + b.state_dict()[k]) / 2, atol=1e-7)
    assert read_bundle(out)["card"]["averaged_from"] == [{"file": "a.pt", "step": 10}, {"file": "b.pt", "step": 20}]


def test_export_with_two_frame_network(tmp_path, export, capsys):
    from colondepth.models.bundle import two_frame_entry
    from colondepth.models.two_frame_net import TwoFrameConfig, TwoFrameDepthNet

    net = _depth(0)
    depth_ckpt = save_checkpoint(tmp_path / "depth.pt", net, make_card(net, "d", "all", 1, 9, "train d"), {})
    tf = TwoFrameDepthNet(TwoFrameConfig(DepthNetConfig(arch="basic_unet", input_height=32, input_width=32,
                                                        features=[4, 4, 8, 8, 16, 4]), 2.0)).eval()
    tf_ckpt = save_checkpoint(tmp_path / "tf.pt", net, make_card(net, "two_frame", "general", 1, 7, "train tf"), {},
                              two_frame=two_frame_entry(tf))
    out = tmp_path / "default_model.pt"
    assert export([str(depth_ckpt), str(out), "--two-frame", str(tf_ckpt)]) == 0
    raw = read_bundle(out)
    assert raw["card"]["two_frame_network"]["curriculum"] == "two_frame" and raw["card"]["two_frame_network"]["step"] == 7
    b = load_bundle(out)
    x, p = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    assert torch.equal(b.two_frame.predict_depth(x, p, torch.tensor([1.0])), tf.predict_depth(x, p, torch.tensor([1.0])))
    assert export([str(depth_ckpt), str(tmp_path / "x.pt"), "--two-frame", str(depth_ckpt)]) == 2
    assert "has no two-frame network" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_export_again_with_grey_input_keeps_the_weights_and_the_provenance(tmp_path, export):
    from colondepth.train.config import ModelSection

    net = _depth(0)
    ckpt = save_checkpoint(tmp_path / "depth.pt", net, make_card(net, "d", "all", 1, 9, "train d"), {"name": "d"},
                           training={"optimizer": None})
    first = tmp_path / "default_model.pt"
    assert export([str(ckpt), str(first), "--trained-with", "make data", "--trained-with", "train d"]) == 0
    grey = tmp_path / "grey.pt"
    assert export([str(first), str(grey), "--colour", "grey"]) == 0
    card = read_bundle(grey)["card"]
    assert card["model"]["colour"] == "grey" and "grey" in card["normalisation"]["input"]
    assert card["default_model"]["trained_with"] == "make data && train d"
    assert card["default_model"]["source_checkpoint"] == "depth.pt"
    steps = card["default_model"]["exported_with"].split(" && ")
    assert len(steps) == 2 and steps[1].endswith("default_model.pt grey.pt --colour grey")
    a, b = load_bundle(first).depth, load_bundle(grey).depth
    assert b.config.colour == "grey" and a.config.colour == "rgb"
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    # the curriculum section that continues training from it keeps the grey input
    assert ModelSection.dict_from_card(card["model"])["colour"] == "grey"
    assert ModelSection(colour="grey").to_net_config().colour == "grey"
