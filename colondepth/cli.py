"""The ``colondepth`` command line.

Each subcommand lives in its own module ``colondepth/commands/<name>.py`` which defines::

    HELP = "one line shown in `colondepth --help`"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...

Command modules must import heavy libraries (torch, pyrender, ...) inside ``run`` only, so
``colondepth --help`` stays fast.  A :class:`colondepth.errors.UserError` raised anywhere is
printed as one line and the process exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from colondepth import __version__

#: Subcommands in the order ``--help`` lists them (the data flow order).
COMMAND_MODULES = [
    "synth",
    "train",
    "finetune",
    "evaluate",
    "predict",
    "reconstruct",
    "app",
    "demo",
]


def _available_commands():
    for name in COMMAND_MODULES:
        modname = f"colondepth.commands.{name}"
        if importlib.util.find_spec(modname) is not None:
            yield name, importlib.import_module(modname)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colondepth",
        description="Depth and 3D colon surfaces from colonoscopy video: synthetic data, "
        "curriculum training, self-supervised fine-tuning, reconstruction and review.",
    )
    parser.add_argument("--version", action="version", version=f"colondepth {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available_commands():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 1
    from colondepth.errors import UserError

    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume where supported", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
