"""The parts of the trainer: data generation in the command layer, resume state, distributed context."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

import test_train_scenes as sfs_scenes
from colondepth import cli
from colondepth.errors import UserError
from colondepth.train.curriculum import RunOptions, train_curriculum
from colondepth.train.distributed import DistContext
from colondepth.train.resume import ResumeState

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "curricula" / "smoke.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def fake_synth(monkeypatch):
    """Replaces colondepth.synth.generate_dataset by a tiny writer; returns the list of (level dir) calls."""
    import colondepth.synth as synth

    calls = []

    def fake_generate(recipe, out_dir, sequences, frames, size=None, seed=0, progress=True):
        level = Path(out_dir).name
        calls.append(level)
        return sfs_scenes.write_dataset(out_dir, level, sequences=sequences, frames=frames, size=size[0], seed=seed)

    monkeypatch.setattr(synth, "generate_dataset", fake_generate, raising=False)
    return calls


def test_command_renders_missing_levels_before_training(tmp_path, fake_synth, capsys):
    run = tmp_path / "run"
    code = cli.main(["train", "--no-progress", "--curriculum", str(SMOKE), "--out", str(run), "--stop-after-steps", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert fake_synth == ["L1", "L2"]
    assert "generating level L1" in err and "stopped after global step 2" in err
    assert yaml.safe_load((run / "data" / "L2" / "dataset.yaml").read_text())["level"] == "L2"
    # resuming finds the rendered levels; generate_dataset is asked again only for what is still missing
    code = cli.main(["train", "--no-progress", "--curriculum", str(SMOKE), "--out", str(run), "--resume",
                     "--data", str(run / "data" / "L1"), "--stop-after-steps", "3"])
    assert code == 0, capsys.readouterr().err
    assert fake_synth == ["L1", "L2", "L2"]


def test_bad_inputs_fail_before_anything_is_generated(tmp_path, fake_synth, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"not": "a run"}, run / "checkpoints" / "last.pt")
    code = cli.main(["train", "--no-progress", "--curriculum", str(SMOKE), "--out", str(run)])
    assert code == 2 and "--resume" in capsys.readouterr().err
    code = cli.main(["train", "--no-progress", "--curriculum", str(SMOKE), "--out", str(tmp_path / "r2"),
                     "--data", str(tmp_path / "nowhere")])
    assert code == 2 and "--data folder not found" in capsys.readouterr().err
    assert fake_synth == [] and not (tmp_path / "r2").exists()


def test_trainer_only_reads_data(tmp_path, fake_synth):
    """train_curriculum never renders: a level missing from the data folders is one line naming the fix."""
    root = tmp_path / "only_l1"
    sfs_scenes.write_dataset(root / "planes", "L1", sequences=2, frames=3, size=32)
    opts = RunOptions(curriculum_path=SMOKE, out_dir=tmp_path / "run", data_dirs=[root], progress=False)
    with pytest.raises(UserError) as info:
        train_curriculum(opts)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{SMOKE}: level L2: no dataset of this level under --data")
    assert "renders it from generate.recipes.L2" in msg
    assert fake_synth == [] and not (tmp_path / "run" / "data").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()  # failed before the first step


def test_resume_state_round_trip_keeps_the_checkpoint_layout():
    state = ResumeState(stage_index=1, stage_step=3, global_step=9, stage_total_steps=12, optimizer={"x": 1},
                        plateau_best=0.25, plateau_bad_evals=2, kind_state={"k": 3}, rng={"torch": 1}, world_size=2)
    d = state.to_dict()
    assert list(d) == ["stage_index", "stage_step", "global_step", "stage_total_steps", "optimizer", "plateau",
                       "kind_state", "rng", "world_size", "carry_steps"]
    assert d["plateau"] == {"best": 0.25, "bad_evals": 2}
    assert ResumeState.from_dict(d) == state
    fresh = ResumeState().to_dict()
    assert fresh["optimizer"] is None and math.isinf(fresh["plateau"]["best"]) and fresh["kind_state"] == {}


def test_single_process_context_collectives_are_identities():
    dist, device = DistContext.setup("cpu")
    assert (dist.rank, dist.world_size, dist.is_main, dist.distributed) == (0, 1, True, False)
    assert device.type == "cpu"
    assert dist.all_reduce_max(0.5) == 0.5
    assert dist.all_reduce_mean({"loss": 0.3}) == {"loss": 0.3}
    assert dist.broadcast_from_main({"val_loss": 1.0}) == {"val_loss": 1.0}
    net = torch.nn.Linear(2, 2)
    assert dist.wrap_model(net, device) == (net, net)
    p = torch.nn.Parameter(torch.ones(2))
    dist.average_gradients([p])
    assert p.grad is None  # nothing to average for one process
    dist.barrier()
    dist.close()
