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


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one ``error:`` line (exit 2) instead of the usage block."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="colondepth",
        description="Depth and 3D colon surfaces from colonoscopy video: synthetic data, "
        "curriculum training, self-supervised fine-tuning, reconstruction and review.",
    )
    parser.add_argument("--version", action="version", version=f"colondepth {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice); on a busy shared machine "
                             "--threads 1 is often much faster")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
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

    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads {args.threads}: must be at least 1", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    if not args.debug:
        import warnings

        warnings.formatwarning = _format_warning  # "warning: <message>", one line
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # safety net: a file-system problem the command did not anticipate
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume where supported", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
