"""``colondepth train``: run a training curriculum (supervised shape-from-shading, then fine-tuning stages).

Before training, the command renders the levels of the curriculum's ``generate:`` section that no ``--data``
folder provides into ``RUN/data/<level>`` (:func:`generate_missing_levels`; under ``torchrun`` rank 0 renders
while the other processes wait) and passes ``RUN/data`` on as a data folder.  The trainer
(:func:`colondepth.train.curriculum.train_curriculum`) itself only reads data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train the depth network through a curriculum of synthetic levels (checkpoints, --resume, torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--curriculum", required=True, metavar="FILE",
                        help="curriculum: a YAML file (e.g. curricula/sfs_curriculum.yaml) or a shipped curriculum's "
                             "name (e.g. default_model)")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder: checkpoints/, metrics.jsonl, config.resolved.yaml")
    parser.add_argument("--data", action="append", default=[], metavar="DIR",
                        help="dataset folder (with dataset.yaml) or a parent of several; repeatable (levels of the "
                             "curriculum's 'generate:' section found in none of them are rendered into RUN/data "
                             "first)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN from RUN/checkpoints/last.pt")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                        help="stop after N optimizer steps in total without a final checkpoint "
                             "(simulates an interruption; continue with --resume)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def generate_missing_levels(curriculum, curriculum_dir: Path, out: Path, data_dirs: list, dist,
                            progress: bool = True) -> list:
    """Render the levels of ``curriculum.generate.recipes`` that no folder of ``data_dirs`` provides.

    Datasets go to ``RUN/data/<level>`` (``dist.is_main`` renders; the other processes wait at a barrier).
    ``generate_dataset`` resumes unfinished datasets, so an interrupted generation continues on the next run.
    Returns the data folders to train on (``RUN/data`` appended when any level is generated there).  Recipe
    paths are relative to ``curriculum_dir``; a missing recipe is a one-line :class:`UserError` on every process.
    """
    from colondepth.errors import UserError

    gen = curriculum.generate
    if gen is None:
        return list(data_dirs)
    from colondepth.train.data import discover_datasets

    have = {i.level for i in discover_datasets(data_dirs)} if data_dirs else set()
    missing = [lv for lv in curriculum.levels if lv not in have and lv in gen.recipes]
    if not missing:
        return list(data_dirs)
    root = Path(out) / "data"
    recipes = {}
    for lv in missing:  # checked on every rank, so a bad path fails everywhere instead of blocking the others
        recipe = Path(gen.recipes[lv])
        recipes[lv] = recipe if recipe.is_absolute() else (Path(curriculum_dir) / recipe)
        if not recipes[lv].is_file():
            raise UserError(f"{recipes[lv]}: recipe for level {lv} (generate.recipes.{lv}) not found; paths are "
                            f"relative to the curriculum file")
    if dist.is_main:
        try:
            from colondepth.synth import generate_dataset  # a package-level replacement (tests) wins
        except ImportError:
            from colondepth.synth.generate import generate_dataset

        for lv in missing:
            recipe = recipes[lv]
            print(f"generating level {lv} from {recipe} into {root / lv}", file=sys.stderr)
            generate_dataset(recipe, root / lv, sequences=gen.sequences, frames=gen.frames, size=gen.size,
                             seed=gen.seed, progress=progress)
    dist.barrier()
    return list(data_dirs) + [root]


def run(args: argparse.Namespace) -> int:
    import os
    import shlex

    from colondepth.errors import UserError
    from colondepth.train.curriculum import RunOptions, check_run, train_curriculum
    from colondepth.train.distributed import DistContext

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
    dist, _ = DistContext.setup(args.device)  # under torchrun: one process group for generation and training
    try:
        curriculum, _ = check_run(opts)  # bad inputs fail before anything is generated
        opts.data_dirs = generate_missing_levels(curriculum, Path(opts.curriculum_path).resolve().parent,
                                                 opts.out_dir, list(opts.data_dirs), dist, opts.progress)
        result = train_curriculum(opts)
    finally:
        dist.close()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    if result["stopped"]:
        print(f"stopped after global step {result['global_step']}; continue with --resume", file=sys.stderr)
    else:
        print(f"done: {result['global_step']} steps; weights in {result['checkpoint']}", file=sys.stderr)
    return 0
