"""Fine-tuning never ends worse on its own video than it started without saying so: the held-out split of the
self-supervised stage, the held-out photometric error, and ``keep_best`` (``colondepth finetune``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from colondepth.cli import main
from colondepth.datasets.clips import Snippet, make_snippets, split_heldout
from colondepth.models.bundle import load_bundle, pose_entry
from colondepth.models.depth_net import DepthNet, DepthNetConfig
from colondepth.models.pose_net import PoseNet, PoseNetConfig
from colondepth.train.checkpoint import make_card, read_checkpoint, save_checkpoint
from colondepth.train.logging import read_metrics
from test_finetune import TINY, write_tube_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAMES = 24  # 22 three-frame snippets: 3 held out, 4 guard snippets dropped, 15 train


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A camera moving 1.5 mm per frame down an analytic textured tube, with its intrinsics file."""
    return write_tube_video(tmp_path_factory.mktemp("kb_video") / "frames", FRAMES)


@pytest.fixture(scope="module")
def inits(tmp_path_factory):
    """``(bundle with a pose network of the stage's configuration, bundle without one)``, same depth weights."""
    root = tmp_path_factory.mktemp("kb_init")
    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(**TINY))
    pose = PoseNet(PoseNetConfig(num_sources=2, channels=(16, 32, 64, 128), num_mask_scales=0))
    card = make_card(net, "test", "sup", 0, 0, "test")
    with_pose = save_checkpoint(root / "init_pose.pt", net, card, {}, pose=pose_entry(pose, None))
    without = save_checkpoint(root / "init.pt", net, card, {})
    return with_pose, without


def _finetune(capsys, init, video, out, steps, lr, eval_every, extra=()):
    argv = ["finetune", "--init", init, "--video", video, "--out", out, "--steps", steps, "--batch-size", 2,
            "--intrinsics", Path(video).parent / "k.yaml", "--no-progress", "--lr", lr, "--eval-every", eval_every,
            *extra]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def _records(out: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(out / "metrics.jsonl") if r["type"] == kind]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning: fine-tuning did not lower")]


# -- the split ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame_skip", [1, 2])
def test_heldout_split_is_frame_disjoint_and_deterministic(frame_skip):
    clips = {0: [list(range(60))], 1: [list(range(0, 300)), list(range(310, 700))], 2: [list(range(10))]}
    snippets = [sn for s, cs in clips.items() for c in cs for sn in make_snippets(c, 3, frame_skip, sequence=s)]
    split = split_heldout(snippets)
    assert split == split_heldout(list(snippets))  # deterministic
    assert split.unsplit == (2,)  # 8 or 6 snippets: too short, all of them train
    assert set(split.train) | set(split.heldout) | set(split.guard) == set(snippets)
    assert not set(split.train) & set(split.heldout) and not set(split.guard) & set(split.heldout)
    for s in (0, 1):
        n = sum(sn.sequence == s for sn in snippets)
        held = [sn for sn in split.heldout if sn.sequence == s]
        assert 3 <= len(held) and 0.10 <= len(held) / n <= 0.15, (s, len(held), n)
        held_frames = {f for sn in held for f in sn.frames}
        train_frames = {f for sn in split.train if sn.sequence == s for f in sn.frames}
        assert not held_frames & train_frames  # no held-out frame is trained on, as target or source
        guard = [sn for sn in split.guard if sn.sequence == s]
        assert all(held_frames & set(sn.frames) for sn in guard)  # only snippets that touch held-out frames
    # sequence 0 (one block of 7 or 6 snippets) is held out in its middle; sequence 1 in blocks spread over it
    mid = [sn.target_frame for sn in split.heldout if sn.sequence == 0]
    assert abs(np.mean(mid) - 30) <= 2
    seq1 = sorted(sn.target_frame for sn in split.heldout if sn.sequence == 1)
    assert seq1[0] < 200 and seq1[-1] > 500
    assert [sn for sn in snippets if sn.sequence == 2] == [sn for sn in split.train if sn.sequence == 2]


def test_heldout_split_of_a_single_short_video_is_empty():
    snippets = [Snippet(0, (i, i + 1, i + 2), 1) for i in range(12)]
    split = split_heldout(snippets)
    assert split.heldout == [] and split.train == snippets and split.unsplit == (0,)



def _self_supervised_kind(tmp_path, video, init, **stage):
    """``(SelfSupervisedKind, depth net)`` of a 10-step self-supervised stage on ``video`` from ``init``, the
    tiny model, ``stage`` keys added (its data not made yet)."""
    from colondepth.device import default_device
    from colondepth.train.config import parse_curriculum
    from colondepth.train.selfsup import SelfSupervisedKind
    from colondepth.train.stage import StageContext

    cur = parse_curriculum({
        "name": "t", "model": {"input_size": [32, 32], "encoder_channels": TINY["encoder_channels"],
                               "decoder_channels": TINY["decoder_channels"], "num_scales": 2, "norm": "group"},
        "stages": [{"name": "ss", "kind": "self_supervised", "init_from": str(init),
                    "sources": [{"path": str(video), "format": "frames"}], "intrinsics": str(video.parent / "k.yaml"),
                    "budget": {"steps": 10}, **stage}],
    })
    net = DepthNet(cur.model.to_net_config())
    ctx = StageContext(curriculum=cur, stage=cur.stages[0], stage_index=0, net=net, model=net,
                       device=default_device("cpu"), run_dir=tmp_path, curriculum_dir=tmp_path, data_dirs=[], pool=None)
    return SelfSupervisedKind(ctx), net


def test_stage_validates_on_snippets_it_never_trains_on(tmp_path, video, inits):
    kind, _ = _self_supervised_kind(tmp_path, video, inits[0])
    data = kind.make_data()
    train, val = data.train.snippets, data.val.snippets
    assert len(train) + len(val) + len(kind.guard_snippets) == FRAMES - 2 and len(val) == 3
    assert not {f for s in train for f in s.frames} & {f for s in val for f in s.frames}
    assert kind.init_pose_loaded and kind.reference_step == 0 and kind.validation_due(0)
    metrics = kind.validate(torch.utils.data.DataLoader(data.val, batch_size=2))
    # the held-out error is the photometric term alone: below the full objective (smoothness added), positive
    assert 0 < metrics["heldout_photometric"] < metrics["val_loss"] and 0.5 < metrics["heldout_coverage"] <= 1
    # the no-motion baseline: the un-warped neighbours of a camera moving 1.5 mm per frame differ from the target
    assert metrics["heldout_photometric_identity"] > 0.01


# -- keeping the better model -------------------------------------------------------------------------------------
def test_finetuning_that_hurts_keeps_the_initial_model_bit_for_bit(tmp_path, video, inits, capsys):
    """lr 0.01 wrecks the tiny model: at step 4 its held-out error is about 4x the initial model's, and from step 6
    its warps leave the field of view (from step 8 an error of 0 over no pixel, which must not count as better)."""
    init = inits[0]
    out = tmp_path / "run"
    err = _finetune(capsys, init, video, out, steps=12, lr=0.01, eval_every=4)
    assert len(_warnings(err)) == 1, err
    line = _warnings(err)[0]
    assert str(video) in line and line.endswith("final.pt keeps the initial model") and "init 0.0" in line
    final, start = read_checkpoint(out / "checkpoints" / "final.pt"), read_checkpoint(init)
    assert _same_weights(final["model_state"], start["model_state"])
    assert _same_weights(final["pose"]["state"], start["pose"]["state"])
    assert final["card"]["keep_best"]["kept"] == "init"
    end = _records(out, "stage_end")[-1]
    assert end["kept"] == "init" and end["heldout_reference"] == "init"
    assert end["heldout_photometric_kept"] == end["heldout_photometric_init"]
    vals = {r["step"]: r for r in _records(out, "val")}
    assert sorted(vals) == [0, 4, 6, 8, 12]  # 6: the end of the pose warm-up
    assert vals[4]["heldout_photometric"] > 2 * vals[0]["heldout_photometric"] and vals[4]["heldout_candidate"]
    assert end["heldout_photometric_best"] == vals[4]["heldout_photometric"]
    # the diverged evaluations scored lower than the initial model only by counting (almost) no pixel
    for s in (8, 12):
        assert vals[s]["heldout_photometric"] < vals[0]["heldout_photometric"] and not vals[s]["heldout_candidate"]
        assert vals[s]["heldout_coverage"] < 0.9 * vals[0]["heldout_coverage"]
    assert end["heldout_low_coverage_evals"] == 3 and not vals[6]["heldout_candidate"]
    assert "initial model kept" in err.splitlines()[-1]

    # switched off: the last (wrecked) weights, no warning, no keep-best record
    off = tmp_path / "off"
    err = _finetune(capsys, init, video, off, steps=12, lr=0.01, eval_every=4, extra=["--no-keep-best"])
    assert not _warnings(err)
    assert not _same_weights(read_checkpoint(off / "checkpoints" / "final.pt")["model_state"], start["model_state"])
    assert "kept" not in _records(off, "stage_end")[-1] and "keep_best" not in read_checkpoint(
        off / "checkpoints" / "final.pt")["card"]
    assert yaml.safe_load((off / "finetune.curriculum.yaml").read_text())["stages"][0]["keep_best"] is False


def test_resume_keeps_the_best_so_far(tmp_path, video, inits, capsys):
    """Interrupted after the initial model was measured and a worse step was seen, the resumed run still ends
    with the initial model: the kept weights and errors travel in last.pt."""
    init = inits[0]
    out = tmp_path / "run"
    _finetune(capsys, init, video, out, steps=12, lr=0.01, eval_every=4,
              extra=["--stop-after-steps", 6, "--checkpoint-every", 2])
    kind_state = read_checkpoint(out / "checkpoints" / "last.pt")["training"]["kind_state"]["keep_best"]
    assert kind_state["kept_step"] == 0 and kind_state["fine_tuned_evals"] == 1  # last.pt of step 4
    err = _finetune(capsys, init, video, out, steps=12, lr=0.01, eval_every=4,
                    extra=["--resume", "--checkpoint-every", 2])
    assert len(_warnings(err)) == 1, err
    final, start = read_checkpoint(out / "checkpoints" / "final.pt"), read_checkpoint(init)
    assert _same_weights(final["model_state"], start["model_state"])
    assert _same_weights(final["pose"]["state"], start["pose"]["state"])
    vals = [r["step"] for r in _records(out, "val")]
    assert vals == [0, 4, 6, 8, 12]  # the resumed run neither repeats nor skips an evaluation


@pytest.mark.parametrize("with_pose", [True, False])
def test_normal_run_keeps_its_best_step(tmp_path, video, inits, capsys, with_pose):
    """lr 1e-3: the held-out error falls.  Without a pose network in the bundle the reference is the initial
    depth network after the pose warm-up (8 of 16 steps), whose depth weights are still the initial ones."""
    init = inits[0] if with_pose else inits[1]
    out = tmp_path / "run"
    err = _finetune(capsys, init, video, out, steps=16, lr=1e-3, eval_every=2)
    assert not _warnings(err)
    end = _records(out, "stage_end")[-1]
    vals = {r["step"]: r for r in _records(out, "val")}
    ref = 0 if with_pose else 8
    assert end["heldout_reference"] == ("init" if with_pose else "pose_warmup_end") and min(vals) == ref
    assert vals[ref]["kept"] == "init" and end["heldout_photometric_init"] == vals[ref]["heldout_photometric"]
    kept = end["kept"]
    assert isinstance(kept, int) and ref < kept <= 16
    assert vals[kept]["heldout_photometric"] == end["heldout_photometric_kept"] <= end["heldout_photometric_init"]
    assert end["heldout_photometric_kept"] == min(v["heldout_photometric"] for s, v in vals.items() if s > ref)
    assert f"kept the step-{kept} model" in err.splitlines()[-1]
    # final.pt is the kept model: evaluated afresh on the held-out snippets it gives the kept step's error
    again = _heldout_error_of(tmp_path, out, out / "checkpoints" / "final.pt")
    assert again == pytest.approx(end["heldout_photometric_kept"], rel=1e-5)
    assert read_checkpoint(out / "checkpoints" / "final.pt")["card"]["keep_best"]["kept"] == kept


def _heldout_error_of(tmp_path, run: Path, bundle: Path) -> float:
    """The held-out photometric error of ``bundle`` (depth and pose networks) on ``run``'s held-out snippets."""
    from colondepth.device import default_device
    from colondepth.train.config import load_curriculum
    from colondepth.train.selfsup import SelfSupervisedKind
    from colondepth.train.stage import StageContext

    cur = load_curriculum(run / "finetune.curriculum.yaml")
    stage = cur.stages[0].model_copy(update={"init_from": str(bundle)})
    b = load_bundle(bundle)
    net = b.depth
    ctx = StageContext(curriculum=cur, stage=stage, stage_index=0, net=net, model=net,
                       device=default_device("cpu"), run_dir=tmp_path, curriculum_dir=tmp_path, data_dirs=[], pool=None)
    kind = SelfSupervisedKind(ctx)
    assert kind.init_pose_loaded
    data = kind.make_data()
    return kind.validate(torch.utils.data.DataLoader(data.val, batch_size=2))["heldout_photometric"]



def test_warns_when_only_the_pose_network_helped(tmp_path, video, inits):
    """The pose warm-up lowers the held-out error, fine-tuning the depth network raises it again: the stage ends
    with the initial depth network and the warm-up's pose network, and says so."""
    kind, net = _self_supervised_kind(tmp_path, video, inits[0], promotion={"eval_every_steps": 4})
    kind.make_data()
    assert kind.warmup_steps == 5 and [s for s in range(11) if kind.validation_due(s)] == [0, 4, 5, 8]
    initial = {k: v.clone() for k, v in net.state_dict().items()}

    def perturb(module):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.01)

    kind.observe_validation(0, {"heldout_photometric": 0.050, "heldout_coverage": 0.8})
    perturb(kind.pose_net)  # the warm-up trains the pose network only
    warm_pose = {k: v.clone() for k, v in kind.pose_net.state_dict().items()}
    assert kind.observe_validation(5, {"heldout_photometric": 0.030, "heldout_coverage": 0.8})["kept"] == 5
    perturb(net)
    perturb(kind.pose_net)
    rec = kind.observe_validation(8, {"heldout_photometric": 0.040, "heldout_coverage": 0.8})
    assert rec["kept"] == 5 and rec["heldout_candidate"]
    summary = kind.finish_stage(10)
    assert summary["kept"] == 5 and summary["kept_depth_is_initial"] is True
    assert summary["warning"].startswith(f"fine-tuning the depth network did not lower the held-out photometric "
                                         f"error of {video}")
    assert "best with fine-tuned depth 0.04000 at step 8" in summary["warning"]
    assert _same_weights(net.state_dict(), initial) and _same_weights(kind.pose_net.state_dict(), warm_pose)


@pytest.mark.parametrize("identity, warned", [(0.02, True), (0.0312, True), (0.06, False)])
def test_warns_when_the_kept_model_explains_no_more_than_no_motion(tmp_path, video, inits, identity, warned):
    """A pose network that collapses to no motion can lower the held-out error while the depth gets worse (the
    sinus video, docs/finetune.md); the stage then says that the kept model does not beat the un-warped
    neighbours by NO_MOTION_MARGIN (5 %: 0.030 against 0.0312 is not enough), and records the comparison."""
    kind, _ = _self_supervised_kind(tmp_path, video, inits[0], promotion={"eval_every_steps": 4})
    kind.make_data()
    rec = kind.observe_validation(0, {"heldout_photometric": 0.050, "heldout_coverage": 0.8,
                                      "heldout_photometric_identity": identity})
    assert rec["heldout_photometric_identity"] == identity
    kind.observe_validation(8, {"heldout_photometric": 0.030, "heldout_coverage": 0.8,
                                "heldout_photometric_identity": identity})
    summary = kind.finish_stage(10)
    assert summary["kept"] == 8 and summary["kept_beats_no_motion"] is (not warned)
    if warned:
        assert summary["warning"] == (f"the kept model explains the held-out frames of {video} no better than no "
                                      f"motion at all (held-out photometric error 0.03000, un-warped neighbours "
                                      f"{identity:.5f}): the video does not confirm its depth and poses; compare its depth "
                                      f"with the initial model's before relying on it")
    else:
        assert "warning" not in summary
    # kept across a resume
    state = kind.state_dict()
    again = type(kind)(kind.ctx)
    again.make_data()
    again._load_keep_best_state(state["keep_best"])
    assert again.heldout_identity == identity
