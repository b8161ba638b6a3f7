"""Depth from two frames (colondepth.models.two_frame_net, colondepth.train.two_frame): labels relative to the
displacement, pairs chosen by gap, motion and rotation, the stage kind end to end with resume, the bundle entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.transform import Rotation

from colondepth import cli
from colondepth.train.logging import read_metrics


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors on one thread


def test_label_is_depth_relative_to_the_displacement():
    from colondepth.models.two_frame_net import pair_depth_label

    depth = torch.tensor([[[[10.0, 0.0], [20.0, 40.0]]]]).repeat(2, 1, 1, 1)
    lab = pair_depth_label(depth, torch.tensor([2.0, 0.5]), reference_mm=1.0)
    assert lab[0].flatten().tolist() == [5.0, 0.0, 10.0, 20.0] and lab[1].flatten().tolist() == [20.0, 0.0, 40.0, 80.0]


def test_network_output_scales_with_the_displacement():
    from colondepth.models.two_frame_net import TwoFrameConfig, TwoFrameDepthNet
    from colondepth.models.depth_net import DepthNetConfig

    torch.manual_seed(0)
    net = TwoFrameDepthNet(TwoFrameConfig(DepthNetConfig(arch="basic_unet", input_height=32, input_width=32,
                                                         features=[4, 4, 8, 8, 16, 4], inputs=["rays"],
                                                         min_depth_mm=0.5, max_depth_mm=400.0), 2.0)).eval()
    t, p = torch.rand(2, 3, 24, 40), torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        d = net.predict_depth(t, p, torch.tensor([2.0, 2.0]))
        d3 = net.predict_depth(t, p, torch.tensor([3.0, 1.0]))
    assert d.shape == (2, 1, 24, 40)  # back on the frame, aspect ratio kept
    assert torch.allclose(d3[0], 1.5 * d[0]) and torch.allclose(d3[1], 0.5 * d[1])
    with pytest.raises(ValueError, match="same shape"):
        net.inputs(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 16, 32))


def test_a_grey_two_frame_network_sees_both_frames_grey():
    from colondepth.models.depth_net import DepthNetConfig, grey_frames
    from colondepth.models.two_frame_net import TwoFrameConfig, TwoFrameDepthNet

    cfg = dict(arch="basic_unet", input_height=32, input_width=32, features=[4, 4, 8, 8, 16, 4], inputs=["rays"],
               min_depth_mm=0.5, max_depth_mm=400.0)
    grey = TwoFrameDepthNet(TwoFrameConfig(DepthNetConfig(**cfg, colour="grey"))).eval()
    colour = TwoFrameDepthNet(TwoFrameConfig(DepthNetConfig(**cfg))).eval()
    torch.manual_seed(3)
    t, p = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    K = torch.tensor([[20.0, 0, 15.5], [0, 20.0, 15.5], [0, 0, 1]])
    assert torch.allclose(grey.inputs(t, p, K), colour.inputs(grey_frames(t), grey_frames(p), K), atol=1e-6)
    assert not torch.allclose(grey.inputs(t, p, K)[:, -3:], colour.inputs(t, p, K)[:, -3:], atol=1e-3)


def test_pairs_follow_gap_motion_and_rotation_limits():
    from types import SimpleNamespace

    from colondepth.train.two_frame import pair_snippets

    n = 12
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 2, 3] = np.arange(n) * 1.0  # 1 mm per frame along the axis
    T[6:, :3, :3] = Rotation.from_rotvec([0, 0.3, 0]).as_matrix()  # a 17-degree turn between frames 5 and 6
    seq = SimpleNamespace(world_from_cam=T)
    pairs = pair_snippets([seq], lambda s: range(n), (2, 3), 0.0, None, seed=0)
    assert len(pairs) == n and all(2 <= abs(p.frames[1] - p.frames[0]) <= 3 for p in pairs)
    assert sorted(p.target_frame for p in pairs) == list(range(n))
    assert len(pair_snippets([seq], lambda s: range(n), (1, 1), 1.5, None, seed=0)) == 0  # too little motion
    calm = pair_snippets([seq], lambda s: range(n), (1, 1), 0.0, 5.0, seed=0)
    assert calm and all(not (min(p.frames) <= 5 < max(p.frames)) for p in calm)  # none across the turn
    # only the allowed frames (e.g. a training split) are used, as targets and as partners
    part = pair_snippets([seq], lambda s: range(0, 6), (1, 2), 0.0, None, seed=1)
    assert all(max(p.frames) < 6 for p in part)


@pytest.fixture(scope="module")
def synth_l1(tmp_path_factory):
    from colondepth.synth.generate import generate_dataset

    root = tmp_path_factory.mktemp("two_frame_data")
    return generate_dataset("synth/L1_straight.yaml", root / "L1", sequences=2, frames=8, size=(32, 32), seed=0,
                            progress=False, video=False)


def _curriculum(path, stages):
    doc = {"name": "tf", "seed": 0,
           "model": {"input_size": [32, 32], "encoder_channels": [8, 12, 16], "decoder_channels": [8, 8, 12],
                     "num_scales": 3},
           "checkpoint": {"every_steps": 2, "log_every_steps": 1}, "stages": stages}
    path.write_text(yaml.safe_dump(doc))
    return path


def _stage(name, steps, **kw):
    return {"name": name, "kind": "two_frame", "levels": ["L1"], "budget": {"steps": steps}, "batch_size": 2,
            "optimizer": {"lr": 1e-3}, "frame_gap": [1, 2], "min_displacement_mm": 0.1,
            "network": {"features": [4, 4, 8, 8, 16, 4]}, **kw}


def test_stage_trains_resumes_and_ships_the_network(tmp_path, synth_l1, capsys):
    from colondepth.models.bundle import load_bundle

    cur = _curriculum(tmp_path / "c.yaml", [_stage("rigid", 4, max_rotation_deg=30.0), _stage("general", 4)])
    full = tmp_path / "full"
    code = cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(full), "--data", str(synth_l1)])
    assert code == 0, capsys.readouterr().err
    recs = read_metrics(full / "metrics.jsonl")
    train = [r for r in recs if r["type"] == "train"]
    assert len(train) == 8 and all(np.isfinite(r["loss"]) and r["valid_fraction"] > 0.3 for r in train)
    ends = [r for r in recs if r["type"] == "stage_end"]
    assert [r["stage"] for r in ends] == ["rigid", "general"] and all(0 < r["val_abs_rel"] < 10 for r in ends)
    b = load_bundle(full / "checkpoints" / "final.pt")
    assert b.two_frame is not None and b.two_frame.two_frame.reference_displacement_mm == 1.0
    rgb = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        d = b.two_frame.predict_depth(rgb, rgb.flip(-1), torch.tensor([1.5]))
    assert d.shape == (1, 1, 32, 32) and torch.isfinite(d).all()
    # the second stage started from the first one's network, not from a fresh one
    first = load_bundle(full / "checkpoints" / "stage_00_rigid.pt").two_frame.state_dict()
    fresh_stage = _curriculum(tmp_path / "f.yaml", [_stage("rigid", 4, max_rotation_deg=30.0),
                                                    _stage("general", 4, init_from="none")])
    code = cli.main(["train", "--no-progress", "--curriculum", str(fresh_stage), "--out", str(tmp_path / "fresh"),
                     "--data", str(synth_l1)])
    assert code == 0
    first_val = [r for r in read_metrics(full / "metrics.jsonl") if r["type"] == "train" and r["stage"] == "general"]
    fresh_val = [r for r in read_metrics(tmp_path / "fresh" / "metrics.jsonl")
                 if r["type"] == "train" and r["stage"] == "general"]
    assert first_val[0]["loss"] != pytest.approx(fresh_val[0]["loss"])
    assert set(first) == set(b.two_frame.state_dict())

    # interrupted in the middle of stage 2 and resumed: the same final two-frame weights
    part = tmp_path / "part"
    assert cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(part), "--data", str(synth_l1),
                     "--stop-after-steps", "7"]) == 0
    assert cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(part), "--data", str(synth_l1),
                     "--resume"]) == 0
    a = load_bundle(part / "checkpoints" / "final.pt").two_frame.state_dict()
    for k, v in b.two_frame.state_dict().items():
        assert torch.allclose(v, a[k], atol=1e-5), k


def test_stage_needs_poses_and_enough_motion(tmp_path, synth_l1, capsys):
    cur = _curriculum(tmp_path / "c.yaml", [_stage("still", 2, min_displacement_mm=1000.0)])
    code = cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(tmp_path / "r"),
                     "--data", str(synth_l1)])
    err = capsys.readouterr().err
    assert code == 2 and "no training pair" in err and "frame_gap" in err


def test_self_supervised_two_frame_stage_on_unlabelled_video(tmp_path, capsys):
    """Photometric re-training of a bundle's two-frame and pose networks on a tube video: every step has a finite
    loss and valid warps, the checkpoint keeps the bundle's depth network and carries both trained networks, a
    resume ends identically, and a bundle without a two-frame network is a one-line error."""
    from conftest import write_tiny_bundle
    from colondepth.models.bundle import load_bundle, read_bundle
    from test_finetune import TINY, write_tube_video

    video = write_tube_video(tmp_path / "frames", 12)
    init = write_tiny_bundle(tmp_path / "init.pt")
    model = {"input_size": [32, 32], "min_depth_mm": 1.0, "max_depth_mm": 150.0,
             "encoder_channels": TINY["encoder_channels"], "decoder_channels": TINY["decoder_channels"],
             "num_scales": 2, "norm": "group"}
    stage = {"name": "real", "kind": "two_frame_self_supervised", "init_from": str(init),
             "sources": [{"path": str(video), "format": "frames"}], "intrinsics": str(tmp_path / "k.yaml"),
             "budget": {"steps": 6}, "batch_size": 2, "optimizer": {"lr": 1e-3}}
    cur = tmp_path / "c.yaml"
    cur.write_text(yaml.safe_dump({"name": "tfss", "model": model, "checkpoint": {"every_steps": 2, "log_every_steps": 1},
                                   "stages": [stage]}))
    out = tmp_path / "run"
    assert cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(out)]) == 0, capsys.readouterr().err
    recs = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
    assert len(recs) == 6 and all(np.isfinite(r["loss"]) and r["valid_warp_fraction"] > 0.5 for r in recs)
    before, after = read_bundle(init), read_bundle(out / "checkpoints" / "final.pt")
    assert all(torch.equal(v, after["model_state"][k]) for k, v in before["model_state"].items())
    assert any(not torch.equal(v, after["two_frame"]["state"][k]) for k, v in before["two_frame"]["state"].items())
    assert any(not torch.equal(v, after["pose"]["state"][k]) for k, v in before["pose"]["state"].items())
    assert load_bundle(out / "checkpoints" / "final.pt").two_frame is not None
    part = tmp_path / "part"
    assert cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(part), "--stop-after-steps", "3"]) == 0
    assert cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(part), "--resume"]) == 0
    resumed = read_bundle(part / "checkpoints" / "final.pt")["two_frame"]["state"]
    assert all(torch.allclose(v, resumed[k], atol=1e-5) for k, v in after["two_frame"]["state"].items())
    stage["init_from"] = str(write_tiny_bundle(tmp_path / "no_tf.pt", two_frame=False))
    cur.write_text(yaml.safe_dump({"name": "tfss", "model": model, "stages": [stage]}))
    assert cli.main(["train", "--no-progress", "--curriculum", str(cur), "--out", str(tmp_path / "bad")]) == 2
    assert "needs a model with a two-frame and a pose network" in capsys.readouterr().err


def test_finetune_two_frame_runs_the_self_supervised_two_frame_stage(tmp_path, capsys):
    """``colondepth finetune --two-frame`` writes a ``two_frame_self_supervised`` stage with the options given
    (the rest left to that stage's defaults), re-trains the two-frame and pose networks and leaves the depth
    network as loaded; depth-only options and a bundle without a two-frame network are one-line errors."""
    from conftest import write_tiny_bundle
    from colondepth.models.bundle import read_bundle
    from test_finetune import write_tube_video

    video = write_tube_video(tmp_path / "frames", 12)
    init = write_tiny_bundle(tmp_path / "init.pt")
    out = tmp_path / "run"
    base = ["finetune", "--two-frame", "--no-progress", "--init", str(init), "--video", str(video),
            "--intrinsics", str(tmp_path / "k.yaml")]
    assert cli.main([*base, "--out", str(out), "--steps", "4", "--batch-size", "2", "--lr", "0.001",
                     "--checkpoint-every", "2"]) == 0
    assert "predict --method fused --checkpoint" in capsys.readouterr().err
    doc = yaml.safe_load((out / "finetune.curriculum.yaml").read_text())
    (stage,) = doc["stages"]
    assert stage["kind"] == "two_frame_self_supervised" and stage["budget"] == {"steps": 4}
    assert stage["batch_size"] == 2 and stage["optimizer"] == {"lr": 0.001}
    assert "frame_skip" not in stage and "loss" not in stage  # left at the command default: the stage's default
    recs = [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == "train"]
    assert recs and all(np.isfinite(r["loss"]) for r in recs)
    before, after = read_bundle(init), read_bundle(out / "checkpoints" / "final.pt")
    assert after["card"]["step"] == 4 and after["card"]["stage"] == "finetune_two_frame"
    assert all(torch.equal(v, after["model_state"][k]) for k, v in before["model_state"].items())
    assert any(not torch.equal(v, after["two_frame"]["state"][k]) for k, v in before["two_frame"]["state"].items())

    assert cli.main([*base, "--out", str(tmp_path / "light"), "--light", "tip"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--light applies to the depth network's fine-tuning, not to --two-frame" in err and "\n" not in err
    assert not (tmp_path / "light" / "finetune.curriculum.yaml").exists()
    no_tf = write_tiny_bundle(tmp_path / "no_tf.pt", two_frame=False)
    assert cli.main(["finetune", "--two-frame", "--init", str(no_tf), "--video", str(video),
                     "--out", str(tmp_path / "bad")]) == 2
    assert "no_tf.pt: has no two-frame and pose network for --two-frame" in capsys.readouterr().err
