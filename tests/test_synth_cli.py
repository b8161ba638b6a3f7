"""`colondepth synth` on the command line: runs, resumes, and reports user errors on one line."""

from __future__ import annotations

from pathlib import Path

import yaml

from colondepth import cli

SYNTH = Path(__file__).resolve().parents[1] / "synth"


def test_synth_command_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    args = ["synth", "--recipe", str(SYNTH / "L1_straight.yaml"), "--out", str(out), "--sequences", "2",
            "--frames", "2", "--size", "24", "32", "--seed", "4", "--shard", "1/2", "--quiet"]
    assert cli.main(args) == 0
    assert f"dataset ready: {out}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["dataset.yaml", "seq_00001"]
    info = yaml.safe_load((out / "dataset.yaml").read_text())
    assert (info["height"], info["width"], info["seed"], info["sequences"]) == (24, 32, 4, 2)
    assert (out / "seq_00001" / "video.mp4").stat().st_size > 0


def test_help_mentions_slurm_sharding():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    text = sub.choices["synth"].format_help()
    assert "--shard" in text and "SLURM_ARRAY_TASK_ID" in text


def _err(args, capsys):
    code = cli.main(args)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    return code, err


def test_user_errors(tmp_path, capsys):
    base = ["synth", "--out", str(tmp_path / "x"), "--quiet"]
    code, err = _err(base + ["--recipe", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "recipe file not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("level: L1\nfolds: {depth: 1.5}\n")
    code, err = _err(base + ["--recipe", str(bad)], capsys)
    assert code == 2 and "folds.depth" in err
    code, err = _err(base + ["--recipe", str(SYNTH / "L1_straight.yaml"), "--shard", "2/2"], capsys)
    assert code == 2 and "--shard 2/2" in err
    code, err = _err(base + ["--recipe", str(SYNTH / "L1_straight.yaml"), "--size", "4", "4"], capsys)
    assert code == 2 and "--size 4 4" in err
