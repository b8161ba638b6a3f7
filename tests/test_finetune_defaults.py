"""One source of the fine-tuning defaults: `colondepth finetune`'s options take them from the curriculum schema,
and curriculum files report every validation problem at once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from colondepth import cli
from colondepth.commands import finetune
from colondepth.errors import UserError
from colondepth.train.config import (CheckpointSection, Curriculum, SelfSupervisedStage, load_curriculum, parse_curriculum,
                                     resolved_dict)

CARD = {"model": {"input_height": 32, "input_width": 32, "min_depth_mm": 1.0, "max_depth_mm": 150.0,
                  "encoder_channels": [8, 8], "decoder_channels": [8, 8], "num_scales": 1, "norm": "batch"}}
#: Options that are not stage settings (inputs, outputs, run control) or have no schema default (the budget).
NOT_STAGE_SETTINGS = {"help", "init", "video", "out", "crop", "intrinsics", "steps", "rehearsal_data", "resume",
                      "device", "stop_after_steps", "no_progress", "two_frame"}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    finetune.add_arguments(ap)
    return ap


def _schema_value(path: tuple):
    """Walk the schema independently of the command's helper: the field default, then attributes."""
    section, key, *rest = path
    model = {"stage": SelfSupervisedStage, "checkpoint": CheckpointSection, "curriculum": Curriculum}[section]
    value = model.model_fields[key].get_default(call_default_factory=True)
    for attr in rest:
        value = getattr(value, attr)
    return value


def test_every_option_default_is_the_schema_default():
    actions = {a.dest: a for a in _parser()._actions}
    settings = set(actions) - NOT_STAGE_SETTINGS
    assert settings == set(finetune.SCHEMA_DEFAULTS), "classify every new option: stage setting or not"
    for dest in settings:
        assert actions[dest].default == _schema_value(finetune.SCHEMA_DEFAULTS[dest]), dest


def test_every_stage_option_is_classified_for_two_frame():
    """With --two-frame an option either sets the two-frame stage, is general (checkpoints, seed) or is refused:
    none is silently dropped."""
    general = {"checkpoint_every", "seed"}
    two, depth_only = set(finetune.TWO_FRAME_OPTIONS), set(finetune.DEPTH_ONLY_OPTIONS)
    assert not (two & depth_only) and two | depth_only | general == set(finetune.SCHEMA_DEFAULTS)


def test_default_command_runs_the_default_stage():
    """The stage `colondepth finetune` writes with no options resolves to the stage a curriculum gets with no
    settings (only the inputs and the budget differ), so the two cannot drift apart."""
    args = _parser().parse_args(["--init", "a.pt", "--video", "v.mp4", "--out", "r", "--steps", "300"])
    cur = finetune.build_curriculum(args, CARD)
    written = resolved_dict(parse_curriculum(cur))
    bare = dict(cur, stages=[{k: cur["stages"][0][k] for k in ("name", "kind", "init_from", "sources", "budget")}],
                checkpoint={"log_every_steps": cur["checkpoint"]["log_every_steps"]})
    assert written == resolved_dict(parse_curriculum(bare))
    st = written["stages"][0]
    # the measured real-video setting (docs/finetune.md): anchor 0.1 decaying to 0 after the 100-step warm-up
    assert (st["anchor_weight"], st["anchor_decay_steps"], st["freeze_batchnorm"], st["automask"]) == (0.1, 200, True, False)
    assert (st["batch_size"], st["optimizer"]["lr"], st["lr_schedule"]["kind"]) == (4, 1e-4, "constant")


def test_help_shows_the_schema_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default 4)" in out and "default 0.1; 0: off" in out and "(default off: on the shared" in out
    assert "--no-freeze-batchnorm" in out and "--no-automask" in out


def test_epoch_budget_needs_an_explicit_anchor_decay():
    stage = {"name": "ss", "kind": "self_supervised", "init_from": "a.pt", "sources": [{"path": "v.mp4"}],
             "budget": {"epochs": 2}}
    with pytest.raises(UserError, match=r"stages\.0\.anchor_decay_steps: an 'epochs' budget needs"):
        parse_curriculum({"name": "t", "stages": [stage]}, "cur.yaml")
    ok = parse_curriculum({"name": "t", "stages": [dict(stage, anchor_decay_steps=0)]})
    assert ok.stages[0].anchor_decay_steps == 0
    off = parse_curriculum({"name": "t", "stages": [dict(stage, anchor_weight=0)]})
    assert off.stages[0].anchor_decay_steps == 0


def test_default_pose_curriculum_keeps_the_settings_it_was_trained_with():
    st = load_curriculum(Path(__file__).resolve().parents[1] / "curricula" / "default_pose.yaml").stages[0]
    assert (st.automask, st.anchor_weight, st.anchor_decay_steps, st.freeze_batchnorm) == (True, 0.0, 0, False)
    assert (st.batch_size, st.optimizer.lr, st.lr_schedule.kind) == (8, 3e-4, "cosine")


def test_every_validation_problem_is_reported(tmp_path, capsys):
    smoke = yaml.safe_load((Path(__file__).resolve().parents[1] / "curricula" / "smoke.yaml").read_text())
    smoke["stages"][0]["batch_size"] = 0
    smoke["stages"][1]["loss"] = {"ssim_weight": 0.5}
    bad = tmp_path / "two_errors.yaml"
    bad.write_text(yaml.safe_dump(smoke, sort_keys=False))
    code = cli.main(["train", "--no-progress", "--curriculum", str(bad), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0] == f"error: {bad}: 2 problems; fix the curriculum (see docs/training.md):"
    assert err[1:] == [f"  {bad}: stages.0.batch_size: Input should be greater than 0",
                       f"  {bad}: stages.1.loss.ssim_weight: Extra inputs are not permitted"]
    assert not (tmp_path / "run").exists()


def test_every_cross_field_problem_is_reported():
    data = {"name": "t", "generate": {"recipes": {"L4": "x.yaml"}},
            "stages": [{"name": "a", "kind": "supervised", "levels": ["L1"], "rehearsal": 0.2, "budget": {"steps": 1}},
                       {"name": "a", "kind": "supervised", "levels": ["L2"], "budget": {"steps": 1}}]}
    with pytest.raises(UserError) as info:
        parse_curriculum(data, "cur.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "cur.yaml: 3 problems; fix the curriculum (see docs/training.md):"
    assert lines[1:] == ["  cur.yaml: stages: stage names must be unique; repeated: a",
                         "  cur.yaml: stages.0.rehearsal: the first supervised stage has no earlier data to rehearse; "
                         "set rehearsal: 0",
                         "  cur.yaml: generate.recipes.L4: no stage uses level L4"]
