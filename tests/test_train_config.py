"""Curriculum validation (key paths in one-line errors), shipped curricula, LR schedule, data split, generation."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml

import test_train_scenes as sfs_scenes
from colondepth.errors import UserError
from colondepth.train.config import LRSchedule, SelfSupervisedStage, load_curriculum, parse_curriculum
from colondepth.train.steps import lr_factor

REPO = Path(__file__).resolve().parents[1]


def _base():
    return {
        "name": "t",
        "model": {"input_size": [32, 32], "encoder_channels": [8, 12, 16], "decoder_channels": [8, 8, 12],
                  "num_scales": 3},
        "stages": [
            {"name": "a", "kind": "supervised", "levels": ["L1"], "budget": {"steps": 2}},
            {"name": "b", "kind": "supervised", "levels": ["L2"], "rehearsal": 0.2, "budget": {"epochs": 1}},
        ],
    }


def _error(data) -> str:
    with pytest.raises(UserError) as info:
        parse_curriculum(data, "cur.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("cur.yaml: ")
    return msg


def test_shipped_curricula_validate():
    names = {}
    for f in ("sfs_curriculum", "sfs_mixed", "smoke"):
        c = load_curriculum(REPO / "curricula" / f"{f}.yaml")
        names[f] = c
    assert names["sfs_curriculum"].levels == ["L1", "L2", "L3", "L4", "L5"]
    assert [s.levels for s in names["sfs_curriculum"].stages] == [["L1"], ["L2"], ["L3"], ["L4"], ["L5"]]
    # the control has the same sample budget (steps x batch) over the same levels
    budget = lambda c: sum(s.budget.steps * s.batch_size for s in c.stages)  # noqa: E731
    assert budget(names["sfs_mixed"]) == budget(names["sfs_curriculum"])
    assert names["sfs_mixed"].levels == names["sfs_curriculum"].levels
    assert names["sfs_mixed"].model == names["sfs_curriculum"].model
    for c in names.values():
        if c.generate:
            for recipe in c.generate.recipes.values():
                assert (REPO / "curricula" / recipe).resolve().is_file()


@pytest.mark.parametrize("path", sorted((REPO / "curricula").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_curriculum_validates(path):
    c = load_curriculum(path)
    assert c.name == path.stem  # the file name is the curriculum's name (checkpoint cards record the name)
    for s in c.stages:
        init = getattr(s, "init_from", "previous")
        if init != "previous":  # a run folder of another shipped curriculum, or the shipped default model
            target = Path(os.path.normpath(path.parent / init))
            runs = {p.stem for p in path.parent.glob("*.yaml")}
            assert target.parent.parent.name in runs or target == path.parent.parent / "data" / "default_model.pt"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["stages"][1].update(loss={"ssim_weight": 0.5}), "cur.yaml: stages.1.loss.ssim_weight: Extra inputs are not permitted"),
        (lambda d: d["stages"][0].update(budget={"steps": 2, "epochs": 1}), "cur.yaml: stages.0.budget: give exactly one of"),
        (lambda d: d["stages"][1].update(name="a"), "cur.yaml: stages: stage names must be unique; repeated: a;"),
        (lambda d: d["stages"][0].update(rehearsal=0.3), "cur.yaml: stages.0.rehearsal: the first supervised stage"),
        (lambda d: d["stages"][0].update(levels=["level1"]), "cur.yaml: stages.0.levels: 'level1' is not a synthetic level name"),
        (lambda d: d["model"].update(input_size=[30, 32]), "cur.yaml: model.input_size: [30, 32] must be multiples of 8"),
        (lambda d: d["model"].update(input_size=[-8, 32]), "cur.yaml: model.input_size: must be positive"),
        (lambda d: d["stages"][0].update(kind="photometric"), "cur.yaml: stages.0: Input tag 'photometric'"),
        (lambda d: d["stages"][0].update(batch_size=0), "cur.yaml: stages.0.batch_size: Input should be greater than 0"),
        (lambda d: d.update(stages=[]), "cur.yaml: stages: List should have at least 1 item"),
        (lambda d: d.update(generate={"recipes": {"L4": "x.yaml"}}), "cur.yaml: generate.recipes.L4: no stage uses level L4"),
        (lambda d: d.update(extra_key=1), "cur.yaml: extra_key: Extra inputs are not permitted"),
    ],
)
def test_errors_name_the_key_path(mutate, expected):
    data = _base()
    mutate(data)
    assert _error(data).startswith(expected)


def test_self_supervised_stage_fields():
    data = _base()
    data["stages"].append({
        "name": "video", "kind": "self_supervised", "sources": [{"path": "clip.mp4"}, {"path": "frames/",
                                                                                     "format": "frames"}],
        "budget": {"steps": 10}, "crop": [0, 0, 192, 192], "intrinsics": "k.yaml", "frame_skip": 2,
        "loss": {"ssim_weight": 0.85, "l1_weight": 0.15, "smoothness_weight": 0.001, "explainability_weight": 0.1},
        "min_reprojection": True, "automask": True, "brightness_alignment": False, "translation_normalisation": True,
    })
    c = parse_curriculum(data, "cur.yaml")
    s = c.stages[2]
    assert isinstance(s, SelfSupervisedStage) and s.init_from == "previous" and s.frame_skip == 2
    data["stages"][2]["crop"] = [0, 0, -1, 10]
    assert _error(data).startswith("cur.yaml: stages.2.crop: must be x, y >= 0 and width, height > 0")
    data["stages"][2]["crop"] = [0, 0, 10, 10]
    data["stages"][2]["loss"]["silog_weight"] = 1.0
    assert "stages.2.loss.silog_weight: Extra inputs are not permitted" in _error(data)
    data2 = _base()
    data2["stages"] = [dict(data["stages"][2], loss={})]
    assert "stages.0.init_from: 'previous' needs an earlier stage" in _error(data2)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="curriculum file not found"):
        load_curriculum(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: not valid YAML at line"):
        load_curriculum(bad)
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="must be a YAML mapping"):
        load_curriculum(bad)


def test_lr_schedules():
    assert lr_factor(LRSchedule(kind="constant", warmup_steps=4), 0, 10) == pytest.approx(0.25)
    assert lr_factor(LRSchedule(kind="constant", warmup_steps=4), 3, 10) == 1.0
    cos = LRSchedule(kind="cosine", min_factor=0.1)
    assert lr_factor(cos, 0, 11) == 1.0
    assert lr_factor(cos, 5, 11) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(cos, 10, 11) == pytest.approx(0.1)
    step = LRSchedule(kind="step", step_every=3, step_gamma=0.5)
    assert [lr_factor(step, i, 10) for i in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]
    assert math.isclose(lr_factor(LRSchedule(kind="cosine", warmup_steps=2, min_factor=0.0), 2, 12), 1.0)


def test_holdout_is_last_sequence_and_single_sequence_split(tmp_path):
    from colondepth.train.data import DataPool, rehearsal_frames

    sfs_scenes.write_dataset(tmp_path / "d1", "L1", sequences=3, frames=4, size=16)
    sfs_scenes.write_dataset(tmp_path / "d2", "L2", sequences=1, frames=10, size=16)
    pool = DataPool([tmp_path], val_fraction_single=0.2, val_max_frames=3, base_dir=tmp_path)
    assert pool.available_levels == ["L1", "L2"]
    l1 = pool.level("L1")
    assert {f.sequence.name.split("/")[-1] for f in l1.train} == {"seq_00000", "seq_00001"}
    assert {f.sequence.name.split("/")[-1] for f in l1.val} == {"seq_00002"}
    assert [f.index for f in l1.val] == [0, 2, 3]  # 3 evenly spaced of 4 frames (0, 1.5, 3 rounded)
    l2 = pool.level("L2")
    assert [f.index for f in l2.train] == list(range(8)) and [f.index for f in l2.val] == [8, 9]
    extra = rehearsal_frames(l2.train, l1.train, 0.2, seed=1)
    assert len(extra) == 2 and all(f in l1.train for f in extra)
    assert rehearsal_frames(l2.train, l1.train, 0.2, seed=1) == extra  # deterministic
    with pytest.raises(UserError, match="level L3: no dataset of this level"):
        pool.level("L3")


def test_generate_fills_only_missing_levels(tmp_path, monkeypatch):
    """`generate:` calls colondepth.synth.generate_dataset for levels absent from --data, into RUN/data
    (the command layer does it, before training)."""
    import colondepth.synth as synth
    from colondepth.commands.train import generate_missing_levels
    from colondepth.train.distributed import DistContext

    calls = []

    def fake_generate(recipe, out_dir, sequences, frames, size=None, seed=0, progress=True):
        calls.append((Path(recipe).name, Path(out_dir).name, sequences, frames, size))
        return sfs_scenes.write_dataset(out_dir, "L2", sequences=sequences, frames=frames, size=16)

    monkeypatch.setattr(synth, "generate_dataset", fake_generate, raising=False)
    (tmp_path / "L2_x.yaml").write_text("level: L2\n")
    (tmp_path / "L1_x.yaml").write_text("level: L1\n")
    data = _base()
    data["generate"] = {"recipes": {"L1": "L1_x.yaml", "L2": "L2_x.yaml"}, "sequences": 2, "frames": 3, "size": [16, 16]}
    cur = parse_curriculum(data)
    have = tmp_path / "have"
    sfs_scenes.write_dataset(have / "l1", "L1", sequences=2, frames=2, size=16)
    dirs = generate_missing_levels(cur, tmp_path, tmp_path / "run", [have], DistContext(), progress=False)
    assert calls == [("L2_x.yaml", "L2", 2, 3, (16, 16))]
    assert dirs == [have, tmp_path / "run" / "data"]
    assert yaml.safe_load((tmp_path / "run" / "data" / "L2" / "dataset.yaml").read_text())["level"] == "L2"


def test_epoch_budget_counts_batches_per_process():
    from colondepth.train.runner import stage_steps as _stage_steps

    cur = parse_curriculum(_base())
    assert _stage_steps(cur.stages[0], steps_per_epoch=7) == 2  # steps: 2
    assert _stage_steps(cur.stages[1], steps_per_epoch=7) == 7  # epochs: 1
    data = _base()
    data["stages"][1]["budget"] = {"epochs": 0.5}
    assert _stage_steps(parse_curriculum(data).stages[1], steps_per_epoch=7) == 4  # ceil(3.5)


def test_stage_datasets_are_relative_to_the_curriculum(tmp_path):
    from colondepth.train.data import DataPool

    sfs_scenes.write_dataset(tmp_path / "cur" / "extra", "L3", sequences=2, frames=2, size=16)
    pool = DataPool([], val_fraction_single=0.2, val_max_frames=4, base_dir=tmp_path / "cur")
    split = pool.dataset("extra")
    assert len(split.train) == 2 and len(split.val) == 2
    with pytest.raises(UserError, match="relative to the curriculum file"):
        pool.dataset("missing")
