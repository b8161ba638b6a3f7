"""``colondepth train``: run a training curriculum (supervised shape-from-shading, then fine-tuning stages)."""

from __future__ import annotations

import argparse

HELP = "train the depth network through a curriculum of synthetic levels (checkpoints, --resume, torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curriculum", required=True, metavar="FILE",
                        help="curriculum: a YAML file (e.g. curricula/sfs_curriculum.yaml) or a shipped curriculum's "
                             "name (e.g. default_model)")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder: checkpoints/, metrics.jsonl, config.resolved.yaml")
    parser.add_argument("--data", action="append", default=[], metavar="DIR",
                        help="dataset folder (with dataset.yaml) or a parent of several; repeatable")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN from RUN/checkpoints/last.pt")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                        help="stop after N optimizer steps in total without a final checkpoint "
                             "(simulates an interruption; continue with --resume)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    import os
    import shlex
    import sys
    from pathlib import Path

    from colondepth.errors import UserError
    from colondepth.train.curriculum import RunOptions, train_curriculum

    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        raise UserError(f"--stop-after-steps {args.stop_after_steps}: must be at least 1 (or leave it out)")

    command = " ".join(shlex.quote(a) for a in ["colondepth", *sys.argv[1:]]) if sys.argv else "colondepth train"
    if not sys.argv or "train" not in sys.argv:
        # called programmatically (cli.main(argv)): rebuild the command from the parsed arguments
        parts = ["colondepth", "train", "--curriculum", str(args.curriculum), "--out", str(args.out)]
        for d in args.data:
            parts += ["--data", str(d)]
        if args.resume:
            parts.append("--resume")
        if args.device:
            parts += ["--device", args.device]
        command = " ".join(shlex.quote(p) for p in parts)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        per_node = os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])
        command = command.replace("colondepth ", f"torchrun --nproc_per_node {per_node} -m colondepth.cli ", 1)
    from colondepth.resources import curriculum_path

    opts = RunOptions(curriculum_path=curriculum_path(args.curriculum), out_dir=Path(args.out),
                      data_dirs=[Path(d) for d in args.data], resume=args.resume, device=args.device,
                      command=command, stop_after_steps=args.stop_after_steps, progress=not args.no_progress)
    result = train_curriculum(opts)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    if result["stopped"]:
        print(f"stopped after global step {result['global_step']}; continue with --resume", file=sys.stderr)
    else:
        print(f"done: {result['global_step']} steps; weights in {result['checkpoint']}", file=sys.stderr)
    return 0
