"""``colondepth synth``: render a synthetic colonoscopy dataset from a recipe (synth/*.yaml)."""

from __future__ import annotations

import argparse

HELP = "render synthetic colonoscopy sequences (RGB, depth, poses, mesh) from a level recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, metavar="YAML",
                        help="level recipe: a YAML file (e.g. synth/L3_haustra.yaml) or a shipped level's name "
                             "(L1 ... L6, e.g. L3 or L3_haustra)")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder (created; reruns resume)")
    parser.add_argument("--sequences", type=int, default=1, metavar="N", help="sequences in the dataset (default 1)")
    parser.add_argument("--frames", type=int, default=100, metavar="F", help="frames per sequence (default 100)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="image height and width in pixels (default: the recipe's camera size)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; same seed, same files (default 0)")
    parser.add_argument("--workers", type=int, default=1, metavar="W", help="parallel processes (default 1)")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="generate only sequences i with i %% N == I, e.g. "
                             "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (default 0/1)")
    parser.add_argument("--no-video", action="store_true", help="skip video.mp4 (faster; not the full layout)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--randomise", action="store_true",
                        help="turn on the recipe's randomisation block (field of view, light guides, auto-gain, "
                             "gamma, albedo, near-wall views, noise, blur, compression; see docs/synth.md)")


def run(args: argparse.Namespace) -> int:
    from colondepth.conventions import ImageSize
    from colondepth.errors import UserError
    from colondepth.synth.generate import generate_dataset

    size = None
    if args.size is not None:
        h, w = args.size
        if h < 8 or w < 8:
            raise UserError(f"--size {h} {w}: images need at least 8x8 pixels")
        size = ImageSize(h, w)
    from colondepth.resources import recipe_path

    out = generate_dataset(recipe_path(args.recipe), args.out, sequences=args.sequences, frames=args.frames, size=size,
                           seed=args.seed, workers=args.workers, shard=args.shard, progress=not args.quiet,
                           video=not args.no_video, randomise=args.randomise)
    print(f"dataset ready: {out}")
    return 0
