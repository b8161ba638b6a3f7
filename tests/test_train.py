"""The curriculum runner end to end through the CLI: train, interrupt, resume, NaN stop, plug-in stage kinds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import test_train_scenes as sfs_scenes
from colondepth import cli
from colondepth.train import stage as stage_mod
from colondepth.train.logging import read_metrics

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "curricula" / "smoke.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sfs_data")
    sfs_scenes.write_dataset(root / "planes", "L1", sequences=2, frames=6, size=32, seed=0)
    sfs_scenes.write_dataset(root / "tubes", "L2", sequences=2, frames=6, size=32, seed=1)
    return root


def _train(args, capsys=None):
    code = cli.main(["train", "--no-progress", *map(str, args)])
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


def _weights(path):
    return torch.load(path, weights_only=True)["model_state"]


def test_smoke_trains_end_to_end_and_resumes_identically(tmp_path, data_root, capsys):
    full = tmp_path / "full"
    code, err = _train(["--curriculum", SMOKE, "--out", full, "--data", data_root], capsys)
    assert code == 0, err
    ck = full / "checkpoints"
    assert {p.name for p in ck.iterdir()} == {"last.pt", "final.pt", "stage_00_level1.pt", "stage_01_level2.pt"}
    final = torch.load(ck / "final.pt", weights_only=True)
    card = final["card"]
    assert card["curriculum"] == "smoke" and card["stage"] == "level2"
    assert card["input_size"] == [32, 32] and card["depth_range_mm"] == [1.0, 200.0]
    assert card["conventions_version"] == "1.0"
    assert card["command"].startswith("colondepth train --curriculum")
    assert final["training"] is None
    resolved = yaml.safe_load((full / "config.resolved.yaml").read_text())
    assert resolved == final["config"] and resolved["stages"][1]["rehearsal"] == 0.25
    records = read_metrics(full / "metrics.jsonl")
    ends = [r for r in records if r["type"] == "stage_end"]
    assert [r["stage"] for r in ends] == ["level1", "level2"]
    total_steps = records[-1]["global_step"]
    assert records[-1]["type"] == "run_end" and total_steps == sum(r["steps"] for r in ends)
    assert all(r["val_loss"] > 0 for r in ends)

    # interrupted after 5 steps: the last checkpoint is from step 3 (every_steps: 3), mid-epoch
    part = tmp_path / "part"
    code, err = _train(["--curriculum", SMOKE, "--out", part, "--data", data_root, "--stop-after-steps", 5], capsys)
    assert code == 0 and "stopped after global step 5" in err
    assert not (part / "checkpoints" / "final.pt").exists()
    state = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["training"]
    assert (state["stage_index"], state["stage_step"], state["global_step"]) == (0, 3, 3)

    # without --resume the run folder is protected
    code, err = _train(["--curriculum", SMOKE, "--out", part, "--data", data_root], capsys)
    assert code == 2 and "--resume" in err

    # a different curriculum cannot continue this run
    changed = _write_curriculum(tmp_path / "changed.yaml", lambda d: d["model"].update(decoder_channels=[8, 8, 8]))
    code, err = _train(["--curriculum", changed, "--out", part, "--data", data_root, "--resume"], capsys)
    assert code == 2 and "its model or stage list differs from the curriculum" in err

    code, err = _train(["--curriculum", SMOKE, "--out", part, "--data", data_root, "--resume"], capsys)
    assert code == 0, err
    assert "resuming" in err and "stage 1/2, step 3 (global step 3)" in err
    resumed = read_metrics(part / "metrics.jsonl")
    assert resumed[-1]["global_step"] == total_steps
    train_steps = [r["global_step"] for r in resumed if r["type"] == "train"]
    assert train_steps == sorted(set(train_steps))  # no duplicated records after the resume
    a, b = _weights(ck / "final.pt"), _weights(part / "checkpoints" / "final.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k

    # a finished run resumed again does nothing more
    code, err = _train(["--curriculum", SMOKE, "--out", part, "--data", data_root, "--resume"], capsys)
    assert code == 0 and "already complete" in err
    assert read_metrics(part / "metrics.jsonl") == resumed


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_root, capsys, monkeypatch):
    import colondepth.train.steps as steps

    real = steps.supervised_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        total, parts = real(*args, **kwargs)
        return (total * float("nan") if calls["n"] == 5 else total), parts

    monkeypatch.setattr(steps, "supervised_loss", poisoned)
    run = tmp_path / "nan"
    code, err = _train(["--curriculum", SMOKE, "--out", run, "--data", data_root], capsys)
    assert code == 3
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: stage level1, step 5 (global step 5): loss nan is not finite")
    assert "last.pt (global step 3)" in line
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["training"]["global_step"] == 3
    assert all(torch.isfinite(v.float()).all() for v in last["model_state"].values())
    assert not (run / "checkpoints" / "final.pt").exists()

    # as the message says: lower the learning rate and resume
    lower = _write_curriculum(tmp_path / "lower.yaml", lambda d: d["stages"][0]["optimizer"].update(lr=0.001))
    code, err = _train(["--curriculum", lower, "--out", run, "--data", data_root, "--resume"], capsys)
    assert code == 0, err
    assert "changed since the run started" in err and "step 3 (global step 3)" in err
    final = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert final["config"]["stages"][0]["optimizer"]["lr"] == 0.001
    assert yaml.safe_load((run / "config.resolved.yaml").read_text()) == final["config"]


def _write_curriculum(path: Path, mutate) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_bad_curriculum_names_file_and_key_path(tmp_path, capsys):
    bad = _write_curriculum(tmp_path / "bad.yaml", lambda d: d["stages"][1]["loss"].update(ssim_weight=0.8)
                            if "loss" in d["stages"][1] else d["stages"][1].update(loss={"ssim_weight": 0.8}))
    code, err = _train(["--curriculum", bad, "--out", tmp_path / "run"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert f"{bad}: stages.1.loss.ssim_weight: Extra inputs are not permitted" in err


def _no_generate(d):
    d.pop("generate", None)


def test_missing_data_is_a_user_error(tmp_path, capsys):
    cur = _write_curriculum(tmp_path / "nogen.yaml", _no_generate)
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "--data" in err
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run2", "--data", tmp_path / "empty"], capsys)
    assert code == 2 and "--data folder not found" in err
    (tmp_path / "empty").mkdir()
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run2", "--data", tmp_path / "empty"], capsys)
    assert code == 2 and "no dataset.yaml" in err


def test_missing_level_is_a_user_error(tmp_path, capsys):
    root = tmp_path / "only_l1"
    sfs_scenes.write_dataset(root / "planes", "L1", sequences=2, frames=3, size=32)
    cur = _write_curriculum(tmp_path / "nogen.yaml", _no_generate)
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run", "--data", root], capsys)
    assert code == 2
    assert "level L2: no dataset of this level under --data (levels found: L1)" in err


def _with_selfsup(d):
    d.pop("generate", None)
    d["stages"] = d["stages"][:1] + [{
        "name": "video", "kind": "self_supervised", "sources": [{"path": "clip.mp4"}],
        "budget": {"steps": 4}, "batch_size": 2, "crop": [0, 0, 32, 32],
    }]


def test_self_supervised_stage_without_implementation_fails_clearly(tmp_path, data_root, capsys, monkeypatch):
    monkeypatch.setitem(stage_mod.STAGE_KINDS, "self_supervised", "colondepth.train.not_installed:Kind")
    cur = _write_curriculum(tmp_path / "ss.yaml", _with_selfsup)
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run", "--data", data_root], capsys)
    assert code == 2
    assert "stage video: kind 'self_supervised' is not available" in err
    # checked before anything trains
    assert not (tmp_path / "run").exists()


class _ConstantDepthKind:
    """A stand-in photometric kind: pulls predicted depth towards 42 mm on random frames."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.steps = 0

    def make_data(self):
        g = torch.Generator().manual_seed(0)
        frames = torch.rand(6, 3, 32, 32, generator=g)
        return stage_mod.StageData(train=torch.utils.data.TensorDataset(frames),
                                   val=torch.utils.data.TensorDataset(frames[:2]))

    def parameters(self):
        return list(self.ctx.net.parameters())

    def step(self, batch):
        self.steps += 1
        depth = self.ctx.model(self.ctx.net.normalise(batch[0].to(self.ctx.device)))[0]
        return ((depth - 42.0) / 42.0).abs().mean(), {"abs": 1.0}

    def validate(self, loader):
        with torch.no_grad():
            self.ctx.net.eval()
            d = torch.cat([self.ctx.net(self.ctx.net.normalise(b[0]))[0] for b in loader])
            self.ctx.net.train()
        return {"val_loss": float(((d - 42.0) / 42.0).abs().mean())}

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = int(state.get("steps", 0))


def test_plugged_in_stage_kind_is_driven_by_the_runner(tmp_path, data_root, capsys, monkeypatch):
    monkeypatch.setattr(stage_mod, "STAGE_KINDS", dict(stage_mod.STAGE_KINDS))  # restored after the test
    stage_mod.register_stage_kind("self_supervised", _ConstantDepthKind)
    cur = _write_curriculum(tmp_path / "ss.yaml", _with_selfsup)
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run", "--data", data_root], capsys)
    assert code == 0, err
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    end = [r for r in records if r["type"] == "stage_end" and r["stage"] == "video"][0]
    assert end["steps"] == 4 and end["kind"] == "self_supervised" and end["val_loss"] < 1.0
    train = [r for r in records if r["type"] == "train" and r["stage"] == "video"]
    assert train and train[0]["abs"] == 1.0
    card = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)["card"]
    assert card["stage"] == "video"
    assert json.dumps(card)  # plain data only


@pytest.mark.parametrize("min_steps, expected_steps", [(0, 3), (5, 5)])
def test_plateau_promotes_early(tmp_path, data_root, capsys, min_steps, expected_steps):
    def mutate(d):
        _no_generate(d)
        d["stages"] = d["stages"][:1]
        d["stages"][0]["budget"] = {"steps": 50}
        # no improvement can ever beat min_delta after the first evaluation
        d["stages"][0]["promotion"] = {"rule": "plateau", "eval_every_steps": 1, "patience": 2,
                                       "min_delta": 10.0, "min_steps": min_steps}

    cur = _write_curriculum(tmp_path / "plateau.yaml", mutate)
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run", "--data", data_root], capsys)
    assert code == 0, err
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    end = [r for r in records if r["type"] == "stage_end"][0]
    assert (end["reason"], end["steps"]) == ("plateau", expected_steps)
    vals = [r for r in records if r["type"] == "val"]
    assert [r["bad_evals"] for r in vals[:3]] == [0, 1, 2]


def test_competence_promotes_at_the_threshold_and_carries_the_budget_over(tmp_path, data_root, capsys):
    """``rule: competence`` promotes once the validation abs_rel (median-scaled) reaches the threshold;
    ``carry_over`` hands the unused budget to the next stage (equal samples in all), also across a resume at
    the stage boundary; ``lr_schedule.scope: run`` gives one learning-rate shape over the run's global steps."""
    from colondepth.train.config import LRSchedule
    from colondepth.train.steps import lr_factor

    def mutate(d):
        _no_generate(d)
        sched = {"kind": "cosine", "warmup_steps": 2, "min_factor": 0.0, "scope": "run"}
        d["stages"][0].update(budget={"steps": 8}, lr_schedule=sched, promotion={
            "rule": "competence", "eval_every_steps": 2, "patience": 50, "threshold": 10.0, "carry_over": True})
        d["stages"][1].update(budget={"steps": 4}, lr_schedule=sched, promotion={"rule": "budget"})

    cur = _write_curriculum(tmp_path / "competence.yaml", mutate)
    code, err = _train(["--curriculum", cur, "--out", tmp_path / "run", "--data", data_root], capsys)
    assert code == 0, err
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    ends = [r for r in records if r["type"] == "stage_end"]
    # any abs_rel is under 10: promoted at the first evaluation (step 2); its 6 unused steps go to stage 2
    assert [(r["reason"], r["steps"]) for r in ends] == [("competence", 2), ("budget", 10)]
    assert records[-1]["global_step"] == 12
    lrs = {r["global_step"]: r["lr"] for r in records if r["type"] == "train"}
    sched = LRSchedule(kind="cosine", warmup_steps=2, min_factor=0.0, scope="run")
    for g, lr in lrs.items():  # the run-wide shape at the global step, whatever the stage
        assert lr == pytest.approx(0.002 * lr_factor(sched, g - 1, 12)), g

    # stopped right after stage 1 (global step 2) and resumed: stage 2 still gets the carried-over steps
    part = tmp_path / "part"
    code, err = _train(["--curriculum", cur, "--out", part, "--data", data_root, "--stop-after-steps", 3], capsys)
    assert code == 0
    state = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["training"]
    assert (state["stage_index"], state["stage_step"], state["carry_steps"]) == (1, 0, 6)
    code, err = _train(["--curriculum", cur, "--out", part, "--data", data_root, "--resume"], capsys)
    assert code == 0, err
    assert read_metrics(part / "metrics.jsonl")[-1]["global_step"] == 12

    # a run-wide schedule needs it in every stage, with step budgets
    def half(d):
        mutate(d)
        d["stages"][1]["lr_schedule"] = {"kind": "cosine"}

    bad = _write_curriculum(tmp_path / "half.yaml", half)
    code, err = _train(["--curriculum", bad, "--out", tmp_path / "bad", "--data", data_root], capsys)
    assert code == 2 and "stages.1.lr_schedule.scope" in err


def test_supervised_stage_starts_from_init_checkpoint(tmp_path, data_root, capsys):
    """``init_from: CKPT`` on a supervised stage: with a vanishing learning rate the stage ends with the
    checkpoint's weights (BatchNorm statistics aside: they move in train mode); a wrong
    architecture or a missing file is a one-line error naming the file."""
    first = tmp_path / "first"
    cur1 = _write_curriculum(tmp_path / "one.yaml", lambda d: (_no_generate(d), d.update(stages=d["stages"][:1])))
    code, err = _train(["--curriculum", cur1, "--out", first, "--data", data_root], capsys)
    assert code == 0, err
    src = first / "checkpoints" / "final.pt"

    def mutate(d):
        _no_generate(d)
        d["stages"] = d["stages"][1:]
        d["stages"][0].update(rehearsal=0.0, init_from=str(src), optimizer={"lr": 1e-12, "weight_decay": 0.0},
                              lr_schedule={"kind": "constant"}, promotion={"rule": "budget"})

    cur2 = _write_curriculum(tmp_path / "two.yaml", mutate)
    code, err = _train(["--curriculum", cur2, "--out", tmp_path / "second", "--data", data_root], capsys)
    assert code == 0, err
    a, b = _weights(src), _weights(tmp_path / "second" / "checkpoints" / "final.pt")
    params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-9) for k in params)

    # a fresh run of the same stage without init_from ends elsewhere
    cur3 = _write_curriculum(tmp_path / "three.yaml", lambda d: (mutate(d), d["stages"][0].pop("init_from")))
    code, err = _train(["--curriculum", cur3, "--out", tmp_path / "third", "--data", data_root], capsys)
    assert code == 0, err
    c = _weights(tmp_path / "third" / "checkpoints" / "final.pt")
    assert not all(torch.allclose(a[k], c[k], rtol=0, atol=1e-3) for k in params)

    def other_arch(d):
        mutate(d)
        d["model"]["encoder_channels"] = [8, 12, 24]

    cur4 = _write_curriculum(tmp_path / "four.yaml", other_arch)
    code, err = _train(["--curriculum", cur4, "--out", tmp_path / "fourth", "--data", data_root], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{src}: init checkpoint's model differs from the curriculum's (encoder_channels)" in err

    cur5 = _write_curriculum(tmp_path / "five.yaml", lambda d: (mutate(d), d["stages"][0].update(init_from="nope.pt")))
    code, err = _train(["--curriculum", cur5, "--out", tmp_path / "fifth", "--data", data_root], capsys)
    assert code == 2 and err.count("\n") == 1 and "nope.pt" in err
