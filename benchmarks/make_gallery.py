"""Make the level gallery: docs/img/level_<L>.png = RGB | colour-mapped depth, one frame per level.

Each image comes from a real dataset generated with the level's recipe (via the public API and read
back with the dataset reader), so the gallery shows exactly what `colondepth synth` writes.

    .venv/bin/python benchmarks/make_gallery.py --size 192 --frame 24 --seed 0
    .venv/bin/python benchmarks/make_gallery.py --randomise --size 128 --frame 24 --seed 0

``--randomise`` writes docs/img/randomisation_gallery.png instead: one row per level, each row four
sequences with the recipe's randomisation block on, RGB above the colour-mapped depth.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def depth_to_colour(depth_mm: np.ndarray, max_mm: float) -> np.ndarray:
    """``(H, W)`` mm -> ``(H, W, 3) uint8`` RGB with OpenCV's TURBO map (near = blue); 0 (no surface) is black."""
    import cv2

    valid = depth_mm > 0
    x = np.clip(depth_mm / max_mm, 0.0, 1.0)
    col = cv2.applyColorMap(np.round(x * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    col[~valid] = 0
    return col


def main(argv=None) -> int:
    import cv2

    from colondepth.datasets.synthetic import open_sequence
    from colondepth.synth.generate import generate_dataset
    from colondepth.synth.recipe import load_recipe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=192, help="square image size in pixels")
    ap.add_argument("--frame", type=int, default=24, help="frame shown per level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-depth-mm", type=float, default=120.0, help="depth mapped to the end of the colour map")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--randomise", action="store_true", help="the randomisation gallery (4 sequences per level)")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.randomise:
        rows = []
        for path in sorted((REPO / "synth").glob("*.yaml")):
            with tempfile.TemporaryDirectory() as tmp:
                ds = generate_dataset(path, Path(tmp) / "ds", sequences=4, frames=args.frame + 1,
                                      size=(args.size, args.size), seed=args.seed, progress=False, video=False,
                                      randomise=True)
                tiles = []
                for i in range(4):
                    seq = open_sequence(ds / f"seq_{i:05d}")
                    rgb, depth = seq.rgb(args.frame), seq.depth_mm(args.frame)
                    tiles.append(np.concatenate([rgb, depth_to_colour(depth, args.max_depth_mm)], axis=0))
                    tiles.append(np.full((2 * args.size, 4, 3), 255, np.uint8))
            rows.append(np.concatenate(tiles[:-1], axis=1))
            rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
        target = args.out / "randomisation_gallery.png"
        cv2.imwrite(str(target), np.concatenate(rows[:-1], axis=0)[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{target.relative_to(REPO)}: {target.stat().st_size / 1024:.0f} KB")
        return 0
    for path in sorted((REPO / "synth").glob("*.yaml")):
        level = load_recipe(path).level
        with tempfile.TemporaryDirectory() as tmp:
            ds = generate_dataset(path, Path(tmp) / "ds", sequences=1, frames=args.frame + 1,
                                  size=(args.size, args.size), seed=args.seed, progress=False, video=False)
            seq = open_sequence(ds / "seq_00000")
            rgb, depth = seq.rgb(args.frame), seq.depth_mm(args.frame)
        gap = np.full((args.size, 4, 3), 255, np.uint8)
        panel = np.concatenate([rgb, gap, depth_to_colour(depth, args.max_depth_mm)], axis=1)
        target = args.out / f"level_{level}.png"
        cv2.imwrite(str(target), panel[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{target.relative_to(REPO)}: {target.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
