"""``colondepth finetune`` end to end on a tiny analytic video, resume, clear errors, and the
self-supervised stage kind with ground-truth validation (C3VD fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from colondepth.cli import main
from colondepth.models.depth_net import DepthNet, DepthNetConfig, build_depth_net
from colondepth.train.checkpoint import load_checkpoint, make_card, save_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


S = 64
K = np.array([[40.0, 0.0, 31.5], [0.0, 40.0, 31.5], [0.0, 0.0, 1.0]])


def _render_tube(world_from_cam, radius=15.0):
    v, u = np.mgrid[:S, :S].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = rays @ world_from_cam[:3, :3].T
    o = world_from_cam[:3, 3]
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (o[0] * d[..., 0] + o[1] * d[..., 1])
    c = o[0] ** 2 + o[1] ** 2 - radius ** 2
    lam = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
    X = o + lam[..., None] * d
    arc, z = np.arctan2(X[..., 1], X[..., 0]) * radius, X[..., 2]
    g = (0.55 + 0.2 * np.sin(arc / 1.5) * np.cos(z / 1.9) + 0.1 * np.sin((arc + z) / 2.7)) / (1 + lam / 40)
    img = np.stack([g, 0.75 * g, 0.55 * g], -1)
    vv, uu = np.mgrid[:S, :S]
    img[(uu - 31.5) ** 2 + (vv - 31.5) ** 2 > 31.0 ** 2] = 0.0  # black corners of an endoscope image
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_tube_video(d: Path, frames: int) -> Path:
    """``frames`` PNGs of a camera moving 1.5 mm per frame down the analytic textured tube, in folder ``d``,
    with its intrinsics in ``d.parent / "k.yaml"``."""
    d.mkdir()
    for i in range(frames):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec([0.02 * np.sin(i), 0.03, 0.0]).as_matrix()
        T[:3, 3] = [3.0, -2.0, 1.5 * i]
        iio.imwrite(d / f"{i:04d}.png", _render_tube(T))
    (d.parent / "k.yaml").write_text("fx: 40\nfy: 40\ncx: 31.5\ncy: 31.5\nwidth: 64\nheight: 64\n")
    return d


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    return write_tube_video(tmp_path_factory.mktemp("video") / "frames", 12)


TINY = dict(input_height=32, input_width=32, min_depth_mm=1.0, max_depth_mm=150.0,
            encoder_channels=[8, 8, 16, 16], decoder_channels=[8, 8, 8, 8], num_scales=2, norm="group")


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(**TINY))
    path = tmp_path_factory.mktemp("ckpt") / "init.pt"
    save_checkpoint(path, net, make_card(net, "test", "sup", 0, 0, "test"), {})
    return path


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def _args(init, video, out, steps=4, extra=()):
    return ["finetune", "--init", init, "--video", video, "--out", out, "--steps", steps, "--batch-size", 2,
            "--intrinsics", Path(video).parent / "k.yaml", "--no-progress", "--lr", 1e-3, *extra]


def test_finetune_end_to_end_and_resume(tmp_path, video_dir, init_ckpt, capsys):
    out = tmp_path / "run"
    code, err = _run(_args(init_ckpt, video_dir, out), capsys)
    assert code == 0, err
    final = out / "checkpoints" / "final.pt"
    net, card, config = load_checkpoint(final)
    assert config["stages"][0]["kind"] == "self_supervised" and card["step"] == 4
    init_net, _, _ = load_checkpoint(init_ckpt)
    changed = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point
               and not torch.equal(v, init_net.state_dict()[k])]
    assert changed  # the depth network was trained after the pose warm-up step
    from colondepth.models.bundle import load_bundle

    bundle = load_bundle(final)  # the pose network travels inside the model bundle
    pose_net, t_norm = bundle.pose, bundle.translation_norm_mm
    assert not list((out / "checkpoints").glob("pose_net_*.pt"))  # no second copy beside it
    # 2 warm-up steps are too few for the pose network to move: translation normalisation stays off
    assert pose_net.config.num_sources == 2 and t_norm is None
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("type") == "train"]
    assert train and all(np.isfinite(r["photometric"]) for r in train)
    # an interrupted run resumes to the same step count
    out2 = tmp_path / "run2"
    code, _ = _run(_args(init_ckpt, video_dir, out2, extra=["--stop-after-steps", 2, "--checkpoint-every", 1]), capsys)
    assert code == 0 and not (out2 / "checkpoints" / "final.pt").exists()
    code, err = _run(_args(init_ckpt, video_dir, out2, extra=["--resume", "--checkpoint-every", 1]), capsys)
    assert code == 0, err
    assert load_checkpoint(out2 / "checkpoints" / "final.pt")[1]["step"] == 4
    # a second fresh run into the same folder is refused
    code, err = _run(_args(init_ckpt, video_dir, out), capsys)
    assert code == 2 and "--resume" in err


def test_finetune_keeps_a_basic_unet_with_its_input_channels(tmp_path, video_dir, capsys):
    """The shipped default model is a MONAI BasicUNet with ray and physics input channels: finetune rebuilds
    exactly that network from the card (not a DispNet with the card's unused DispNet keys) and trains it."""
    torch.manual_seed(0)
    cfg = DepthNetConfig(input_height=32, input_width=32, arch="basic_unet", features=[4, 4, 8, 8, 8, 4],
                         inputs=["rays", "physics"], min_depth_mm=1.0, max_depth_mm=100.0)
    net = build_depth_net(cfg)
    init = tmp_path / "unet.pt"
    save_checkpoint(init, net, make_card(net, "test", "sup", 0, 0, "test"), {})
    out = tmp_path / "run"
    code, err = _run(_args(init, video_dir, out, steps=3), capsys)
    assert code == 0, err
    tuned, card, config = load_checkpoint(out / "checkpoints" / "final.pt")
    assert tuned.config.to_dict() == net.config.to_dict()
    assert config["model"]["arch"] == "basic_unet" and config["model"]["inputs"] == ["rays", "physics"]
    changed = [k for k, v in tuned.state_dict().items() if v.dtype.is_floating_point
               and not torch.equal(v, net.state_dict()[k])]
    assert changed


@pytest.mark.parametrize("case, match", [
    ("missing_video", "no such video file or frame folder"),
    ("bad_steps", "--steps 0"),
    ("short_video", "only 2 frame"),
    ("bad_crop", "lies outside"),
    ("missing_init", "checkpoint not found"),
])
def test_finetune_errors_are_one_line(tmp_path, video_dir, init_ckpt, capsys, case, match):
    video, steps, extra, init = video_dir, 4, [], init_ckpt
    if case == "missing_video":
        video = tmp_path / "nope.mp4"
        (tmp_path / "k.yaml").write_text((video_dir.parent / "k.yaml").read_text())
    elif case == "bad_steps":
        steps = 0
    elif case == "short_video":
        short = tmp_path / "short"
        short.mkdir()
        for f in sorted(video_dir.glob("*.png"))[:2]:
            (short / f.name).write_bytes(f.read_bytes())
        (tmp_path / "k.yaml").write_text((video_dir.parent / "k.yaml").read_text())
        video = short
    elif case == "bad_crop":
        extra = ["--crop", 40, 0, 32, 32]
    elif case == "missing_init":
        init = tmp_path / "missing.pt"
    code, err = _run(_args(init, video, tmp_path / "run", steps=steps, extra=extra), capsys)
    assert code == 2 and match in err, err
    assert len(err.strip().splitlines()) == 1


def test_stage_kind_validates_against_ground_truth(tmp_path):
    from colondepth.device import default_device
    from colondepth.train.config import parse_curriculum
    from colondepth.train.selfsup import SelfSupervisedKind
    from colondepth.train.stage import StageContext

    fixtures = Path(__file__).resolve().parent / "fixtures" / "c3vd"
    cur = parse_curriculum({
        "name": "t", "model": {"input_size": [32, 32], "encoder_channels": TINY["encoder_channels"],
                               "decoder_channels": TINY["decoder_channels"], "num_scales": 2, "norm": "group"},
        "stages": [{"name": "ss", "kind": "self_supervised", "init_from": "none.pt",
                    "sources": [{"path": str(fixtures), "format": "c3vd"}], "budget": {"steps": 10},
                    "loss": {"explainability_weight": 0.1}}],
    })
    torch.manual_seed(0)
    net = DepthNet(cur.model.to_net_config())
    ctx = StageContext(curriculum=cur, stage=cur.stages[0], stage_index=0, net=net, model=net,
                       device=default_device("cpu"), run_dir=tmp_path, curriculum_dir=Path("."), data_dirs=[],
                       pool=None)
    stage = cur.stages[0].model_copy(update={"init_from": "previous"})
    ctx.stage = stage
    kind = SelfSupervisedKind(ctx)
    data = kind.make_data()
    assert len(data.train) == 1 and data.val is None
    item = data.train[0]
    assert item["sources"].shape == (2, 3, 32, 32) and item["src_from_tgt"].shape == (2, 4, 4)
    loader = torch.utils.data.DataLoader(data.train, batch_size=1)
    loss, parts = kind.step(next(iter(loader)))
    assert torch.isfinite(loss) and "explainability" in parts and parts["pose_warmup"] == 1.0
    metrics = kind.validate(loader)
    assert np.isfinite(metrics["val_loss"]) and 0 < metrics["val_abs_rel"] < 200
    state = kind.state_dict()
    kind2 = SelfSupervisedKind(ctx)
    kind2.load_state_dict(state)
    assert kind2.steps_done == 1
    from colondepth.models.bundle import build_pose

    pose_net, t_norm = build_pose(kind.bundle_pose(), "test")
    assert t_norm is None  # still in the pose warm-up
    for a, b in zip(kind.pose_net.parameters(), pose_net.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(kind.pose_net.parameters(), kind2.pose_net.parameters()):
        assert torch.equal(a, b)


def _kind(tmp_path, stage_extra, pool=None, norm="group"):
    from colondepth.device import default_device
    from colondepth.train.config import parse_curriculum
    from colondepth.train.selfsup import SelfSupervisedKind
    from colondepth.train.stage import StageContext

    fixtures = Path(__file__).resolve().parent / "fixtures" / "c3vd"
    cur = parse_curriculum({
        "name": "t", "model": {"input_size": [32, 32], "encoder_channels": TINY["encoder_channels"],
                               "decoder_channels": TINY["decoder_channels"], "num_scales": 2, "norm": norm},
        "stages": [{"name": "ss", "kind": "self_supervised", "init_from": "none.pt",
                    "sources": [{"path": str(fixtures), "format": "c3vd"}], "budget": {"steps": 10},
                    "translation_normalisation": False, **stage_extra}],
    })
    torch.manual_seed(0)
    net = DepthNet(cur.model.to_net_config())
    ctx = StageContext(curriculum=cur, stage=cur.stages[0], stage_index=0, net=net, model=net,
                       device=default_device("cpu"), run_dir=tmp_path, curriculum_dir=Path("."), data_dirs=[],
                       pool=pool)
    ctx.stage = cur.stages[0].model_copy(update={"init_from": "previous"})
    kind = SelfSupervisedKind(ctx)
    data = kind.make_data()
    batch = next(iter(torch.utils.data.DataLoader(data.train, batch_size=1)))
    return kind, net, batch


def test_anchor_term_zero_at_init_and_decays(tmp_path):
    kind, net, batch = _kind(tmp_path, {"anchor_weight": 0.5, "anchor_decay_steps": 4})
    assert [kind.anchor_weight_at(s) for s in (0, 2, 4, 9)] == [0.5, 0.25, 0.0, 0.0]
    kind.steps_done = kind.warmup_steps  # first joint step: the depth net still equals the initial model
    loss, parts = kind.step(batch)
    assert parts["anchor"] == pytest.approx(0.0, abs=1e-10) and parts["anchor_weight"] == 0.5
    with torch.no_grad():  # change the depth network's shape (not only its scale): the anchor sees it
        for p in net.heads.parameters():
            p.add_(0.3 * torch.randn_like(p))
    kind.steps_done = kind.warmup_steps + 2
    _, parts = kind.step(batch)
    assert parts["anchor"] > 1e-4 and parts["anchor_weight"] == 0.25
    # warm-up steps never add the anchor (the depth net is frozen there)
    kind.steps_done = 0
    _, parts = kind.step(batch)
    assert "anchor" not in parts


def test_depth_scale_anchor_gives_the_initial_scale(tmp_path):
    """With the depth-scale anchor a depth network whose output doubled (same shape) is trained on depth at the
    initial model's scale: the photometric term equals the initial model's, and only the gauge term sees the
    doubling; translations are never normalised."""
    kind, net, batch = _kind(tmp_path, {"depth_scale_anchor": True, "translation_normalisation": True,
                                        "anchor_weight": 0.0})
    assert kind.depth_scale_anchor and not kind.normalise_translation
    kind.steps_done = kind.warmup_steps
    _, parts0 = kind.step(batch)
    assert parts0["depth_scale_gauge"] == pytest.approx(0.0, abs=1e-12)
    forward = kind.ctx.model.forward
    kind.ctx.model.forward = lambda x, *a, **k: [2.0 * d for d in forward(x, *a, **k)]  # twice the depth
    try:
        kind.steps_done = kind.warmup_steps
        _, parts1 = kind.step(batch)
    finally:
        del kind.ctx.model.forward
    assert parts1["photometric"] == pytest.approx(parts0["photometric"], rel=1e-5)
    assert parts1["depth_scale_gauge"] == pytest.approx(float(np.log(2.0)) ** 2, rel=1e-4)
    assert kind.translation_norm_mm is None


def test_coopnet_stage_trains_a_flow_network_and_masks_after_the_warm_up(tmp_path):
    kind, net, batch = _kind(tmp_path, {"coopnet": {"enabled": True, "features": [4, 4, 8, 8, 8, 4]}})
    assert kind.flow_net is not None
    flow_ids = {id(p) for p in kind.flow_net.parameters()}
    assert flow_ids <= {id(p) for p in kind.parameters()}
    loss, parts = kind.step(batch)  # warm-up: the flow learns, no mask yet
    assert "flow_photometric" in parts and "nonrigid_fraction" not in parts
    loss.backward()
    assert all(p.grad is not None for p in kind.flow_net.parameters())
    kind.steps_done = kind.warmup_steps
    _, parts = kind.step(batch)
    assert 0.0 <= parts["nonrigid_fraction"] <= kind.coop.max_nonrigid_fraction
    state = kind.state_dict()
    with torch.no_grad():
        for p in kind.flow_net.parameters():
            p.add_(1.0)
    kind.load_state_dict(state)
    for k, v in kind.flow_net.state_dict().items():
        assert torch.equal(v, state["flow_net"][k])


def test_frozen_encoder_gets_no_gradient(tmp_path):
    kind, net, batch = _kind(tmp_path, {"freeze_encoder_steps": 1})
    kind.steps_done = kind.warmup_steps
    loss, _ = kind.step(batch)
    loss.backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.heads.parameters())
    net.zero_grad(set_to_none=True)
    loss, _ = kind.step(batch)  # the freeze is over
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.encoder.parameters())


def test_rehearsal_batches_add_the_supervised_loss_and_its_gradient(tmp_path):
    import test_train_scenes as sfs_scenes
    from colondepth.train.data import DataPool
    from colondepth.train.steps import supervised_step

    sfs_scenes.write_dataset(tmp_path / "planes", "L1", sequences=2, frames=4, size=32, seed=0)
    pool = DataPool([tmp_path / "planes"], 0.2, 64, tmp_path)
    kind, net, batch = _kind(tmp_path, {"rehearsal": {"levels": ["L1"], "weight": 2.0, "batch_size": 2}}, pool)
    assert kind.rehearsal_frames == 4  # the training sequence of the 2 (the other is held out)
    reh = kind._rehearsal_batch()
    assert reh["rgb"].shape == (2, 3, 32, 32) and float(reh["depth_mm"].max()) > 0
    kind._rehearsal_batch = lambda: reh
    kind.steps_done = kind.warmup_steps
    total, parts = kind.step(batch)
    kind.steps_done = kind.warmup_steps
    kind.rehearsal_weight = 0.0
    photo_only, _ = kind.step(batch)
    sup, _ = supervised_step(net, net, reh, kind.rehearsal_weights, torch.device("cpu"))
    assert parts["rehearsal"] == pytest.approx(float(sup.detach()), rel=1e-5)
    assert float((total - photo_only).detach()) == pytest.approx(2.0 * float(sup.detach()), rel=1e-4)
    g_total = torch.autograd.grad(total, list(net.heads.parameters()), allow_unused=True)
    g_photo = torch.autograd.grad(photo_only, list(net.heads.parameters()), allow_unused=True)
    g_sup = torch.autograd.grad(sup, list(net.heads.parameters()), allow_unused=True)
    for a, b, c in zip(g_total, g_photo, g_sup):
        if c is not None:
            assert torch.allclose(a - (b if b is not None else 0), 2.0 * c, atol=1e-6)


def test_rehearsal_needs_sources():
    from colondepth.train.config import parse_curriculum

    with pytest.raises(Exception, match="rehearsal"):
        parse_curriculum({"name": "t", "stages": [{
            "name": "ss", "kind": "self_supervised", "sources": [{"path": "v.mp4"}], "budget": {"steps": 1},
            "rehearsal": {"weight": 1.0}}]})


def test_finetune_command_writes_the_measured_real_video_setting():
    import argparse

    from colondepth.commands import finetune

    ap = argparse.ArgumentParser()
    finetune.add_arguments(ap)
    card = {"model": {"input_height": 32, "input_width": 32, "min_depth_mm": 1.0, "max_depth_mm": 150.0,
                      "encoder_channels": [8, 8], "decoder_channels": [8, 8], "num_scales": 1, "norm": "batch"}}
    from colondepth.train.config import parse_curriculum, resolved_dict

    def stage(argv):  # the stage as the runner sees it (the schema resolves anchor_decay_steps)
        args = ap.parse_args(["--init", "a.pt", "--video", "v.mp4", "--out", "r", *argv])
        return resolved_dict(parse_curriculum(finetune.build_curriculum(args, card)))["stages"][0]

    st = stage(["--steps", "300"])
    assert (st["anchor_weight"], st["anchor_decay_steps"], st["freeze_batchnorm"], st["automask"]) == (0.1, 200, True, False)
    assert st["lr_schedule"]["kind"] == "constant" and st["optimizer"]["lr"] == 1e-4 and st["batch_size"] == 4
    st = stage(["--steps", "10", "--anchor", "0", "--no-freeze-batchnorm", "--automask"])
    assert (st["anchor_weight"], st["anchor_decay_steps"], st["freeze_batchnorm"], st["automask"]) == (0.0, 5, False, True)
    st = stage(["--steps", "10", "--anchor-decay-steps", "3", "--no-translation-normalisation"])
    assert (st["anchor_decay_steps"], st["translation_normalisation"]) == (3, False)


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_batchnorm_keeps_the_initial_statistics(tmp_path, freeze):
    kind, net, batch = _kind(tmp_path, {"freeze_batchnorm": freeze}, norm="batch")
    before = {k: v.clone() for k, v in net.state_dict().items() if "running_mean" in k}
    assert before
    net.train()
    kind.steps_done = kind.warmup_steps
    kind.step(batch)
    after = net.state_dict()
    same = all(torch.equal(v, after[k]) for k, v in before.items())
    assert same == freeze


def test_pose_only_stage_leaves_the_depth_network_exactly_as_loaded(tmp_path):
    """``train_depth: false``: every step is a warm-up step (frozen depth, BatchNorm statistics included),
    the optimizer sees only the pose network, and no translation normalisation is ever set."""
    kind, net, batch = _kind(tmp_path, {"train_depth": False, "translation_normalisation": True}, norm="batch")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    params = kind.parameters()
    assert {id(p) for p in params} == {id(p) for p in kind.pose_net.parameters()}
    opt = torch.optim.AdamW(params, lr=1e-3)
    pose_before = [p.detach().clone() for p in kind.pose_net.parameters()]
    for _ in range(kind.warmup_steps + 3):  # well past the normal warm-up
        loss, parts = kind.step(batch)
        assert parts["pose_warmup"] == 1.0
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert any(not torch.equal(a, b) for a, b in zip(pose_before, kind.pose_net.parameters()))
    assert kind.translation_norm_mm is None and kind.bundle_pose()["translation_norm_mm"] == -1.0


def test_relative_pose_loss_counts_millimetres_of_displacement():
    import math

    from colondepth.losses.pose import relative_pose_loss

    gt = torch.eye(4).repeat(2, 3, 1, 1)
    assert float(relative_pose_loss(gt.clone(), gt)) == 0.0
    moved = gt.clone()
    moved[..., :3, 3] = torch.tensor([1.0, 2.0, -2.0])  # L1 norm 5 mm
    assert float(relative_pose_loss(moved, gt)) == pytest.approx(5.0)
    th = 0.1
    turned = gt.clone()
    turned[..., :2, :2] = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    # 2 sin(theta / 2) * rotation_mm: the chord a point at that distance travels
    assert float(relative_pose_loss(turned, gt, rotation_mm=30.0)) == pytest.approx(30 * 2 * math.sin(th / 2), rel=1e-5)
    with pytest.raises(ValueError, match="4, 4"):
        relative_pose_loss(gt[..., :3, :], gt[..., :3, :])


def test_pose_supervision_teaches_the_pose_network_the_true_motion(tmp_path):
    """A pose-only stage with ``pose_supervision_weight`` on a sequence with exact poses: the supervised term
    is logged and falls under training; without it the stage does not see the ground truth."""
    from colondepth.losses.pose import relative_pose_loss

    kind, net, batch = _kind(tmp_path, {"train_depth": False, "pose_supervision_weight": 1.0})
    opt = torch.optim.AdamW(kind.parameters(), lr=1e-3)
    first = None
    for _ in range(40):
        loss, parts = kind.step(batch)
        first = parts["pose_supervision"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = kind.pose_model(batch["target"], batch["sources"])
    last = float(relative_pose_loss(out.src_from_tgt, batch["src_from_tgt"]))
    assert first > 1.0 and last < 0.5 * first
    kind0, _, _ = _kind(tmp_path / "off", {"train_depth": False})
    assert "pose_supervision" not in kind0.step(batch)[1]
    # validation reports the pose error of sequences with exact poses, as the loss computes it
    val = kind.validate([batch])
    assert val["val_pose_error_mm"] == pytest.approx(last, rel=1e-4)


def test_pose_supervision_needs_sources_with_poses(tmp_path):
    from colondepth.device import default_device
    from colondepth.errors import UserError
    from colondepth.train.config import parse_curriculum
    from colondepth.train.selfsup import SelfSupervisedKind
    from colondepth.train.stage import StageContext

    video = write_tube_video(tmp_path / "frames", 8)
    cur = parse_curriculum({
        "name": "t", "model": {"input_size": [32, 32], "encoder_channels": TINY["encoder_channels"],
                               "decoder_channels": TINY["decoder_channels"], "num_scales": 2, "norm": "group"},
        "stages": [{"name": "ss", "kind": "self_supervised", "init_from": "none.pt", "pose_supervision_weight": 1.0,
                    "sources": [{"path": str(video), "format": "frames"}], "intrinsics": str(tmp_path / "k.yaml"),
                    "budget": {"steps": 10}}],
    })
    net = DepthNet(cur.model.to_net_config())
    ctx = StageContext(curriculum=cur, stage=cur.stages[0], stage_index=0, net=net, model=net,
                       device=default_device("cpu"), run_dir=tmp_path, curriculum_dir=tmp_path, data_dirs=[], pool=None)
    ctx.stage = cur.stages[0].model_copy(update={"init_from": "previous"})
    with pytest.raises(UserError, match="pose_supervision_weight 1 needs poses.*frames"):
        SelfSupervisedKind(ctx).make_data()


def test_stage_starts_from_the_pose_network_of_its_init_bundle(tmp_path):
    from colondepth.models.bundle import pose_entry
    from colondepth.train.checkpoint import make_card, save_checkpoint
    from colondepth.train.selfsup import SelfSupervisedKind

    kind, net, _ = _kind(tmp_path, {})
    with torch.no_grad():
        for p in kind.pose_net.parameters():
            p.add_(torch.randn_like(p))
    ckpt = save_checkpoint(tmp_path / "bundle.pt", net, make_card(net, "t", "ss", 0, 1, "cmd"), {},
                           pose=pose_entry(kind.pose_net, None))
    ctx = kind.ctx
    ctx.stage = ctx.stage.model_copy(update={"init_from": str(ckpt)})
    kind2 = SelfSupervisedKind(ctx)
    for a, b in zip(kind.pose_net.parameters(), kind2.pose_net.parameters()):
        assert torch.equal(a, b)
    # another pose configuration (explainability masks on): a fresh pose network, with a warning
    ctx.stage = ctx.stage.model_copy(update={"loss": ctx.stage.loss.model_copy(update={"explainability_weight": 0.1})})
    with pytest.warns(UserWarning, match="another configuration"):
        kind3 = SelfSupervisedKind(ctx)
    assert not all(torch.equal(a, b) for a, b in zip(kind.pose_net.parameters(), kind3.pose_net.parameters()))
