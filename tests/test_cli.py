"""The CLI skeleton: fast help, no heavy imports, one-line user errors."""

from __future__ import annotations

import subprocess
import sys

from colondepth import cli
from colondepth.errors import UserError


def test_import_is_light():
    code = (
        "import sys, colondepth, colondepth.cli, colondepth.conventions, colondepth.geometry.camera\n"
        "colondepth.cli.build_parser()\n"
        "heavy = [m for m in ('pyrender', 'streamlit', 'pyvista', 'torch', 'monai') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_commands(capsys):
    parser = cli.build_parser()
    text = parser.format_help()
    assert "colondepth" in text


def test_help_process_exits_zero():
    out = subprocess.run([sys.executable, "-m", "colondepth.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "usage: colondepth" in out.stdout


def test_user_error_is_one_line(monkeypatch, capsys):
    def boom(args):
        raise UserError("data/x.yaml: not found;\n pass --data DIR")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_fake(parser, boom))
    code = cli.main(["fake"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: data/x.yaml: not found; pass --data DIR\n"


def _with_fake(parser, fn):
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    p = sub.add_parser("fake")
    p.set_defaults(_run=fn)
    return parser


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 1
    assert "usage" in capsys.readouterr().out


def test_threads_option(capsys):
    import torch

    assert cli.main(["--threads", "0", "synth", "--recipe", "x.yaml", "--out", "y"]) == 2
    assert capsys.readouterr().err == "error: --threads 0: must be at least 1\n"
    n = torch.get_num_threads()
    try:
        # a valid value is applied before the command runs (the command then fails on its missing recipe)
        assert cli.main(["--threads", "1", "synth", "--recipe", "missing.yaml", "--out", "y"]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)
