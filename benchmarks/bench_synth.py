"""Benchmark the synthetic-colon generator against bare pyrender rendering of the same mesh.

Prints a markdown table: per level and image size, the generator's frames/s (render + camera
response + PNG + video encoding), pyrender's bare colour+depth frames/s for the same scene, their
ratio (overhead; the target is <= 1.3x when motion blur is off) by wall clock and by process CPU
time (steadier when the CPU is shared), the one-off setup time per sequence (colon mesh, textures,
trajectory, OpenGL context) and the triangle count.

    .venv/bin/python benchmarks/bench_synth.py --frames 40 --sizes 128 256

Writes the rows to ``--json`` (default ``benchmarks/results/synth.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40, help="frames timed per level and size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square image sizes in pixels")
    ap.add_argument("--levels", nargs="+", default=None, help="recipe files (default: all of synth/*.yaml)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "synth.json"),
                    help="where the rows are written (default: benchmarks/results/synth.json)")
    args = ap.parse_args(argv)
    rows = []

    from colondepth.synth.generate import time_frames
    from colondepth.synth.recipe import load_recipe

    paths = [Path(p) for p in args.levels] if args.levels else sorted((REPO / "synth").glob("*.yaml"))
    print(f"CPU: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"PYOPENGL_PLATFORM={os.environ.get('PYOPENGL_PLATFORM', 'osmesa')}; {args.frames} frames per row\n")
    print("| level | size | triangles | generator frames/s | bare pyrender frames/s | overhead (wall) "
          "| overhead (CPU time) | setup s |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        recipe = load_recipe(path)
        for size in args.sizes:
            r = time_frames(recipe.with_size(size, size), args.frames, seed=args.seed)
            gen = args.frames / r["full_s"]
            bare = args.frames / r["bare_s"]
            blur = recipe.light.motion_blur_samples
            note = f" ({blur} sub-frames)" if blur > 1 else ""
            print(f"| {recipe.level} | {size}² | {r['triangles']:,} | {gen:.1f} | {bare:.1f} | "
                  f"{r['full_s'] / r['bare_s']:.2f}×{note} | {r['full_cpu_s'] / r['bare_cpu_s']:.2f}× "
                  f"| {r['setup_s']:.2f} |", flush=True)
            rows.append({"level": recipe.level, "size": size, "triangles": int(r["triangles"]),
                         "generator_fps": gen, "bare_pyrender_fps": bare, "motion_blur_samples": int(blur),
                         "overhead_wall": r["full_s"] / r["bare_s"], "overhead_cpu": r["full_cpu_s"] / r["bare_cpu_s"],
                         "setup_s": r["setup_s"]})
    doc = {"benchmark": "synth",
           "command": "python benchmarks/bench_synth.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "frames_per_row": args.frames, "seed": args.seed, "cpu_count": os.cpu_count(),
           "opengl_platform": os.environ.get("PYOPENGL_PLATFORM", "osmesa"), "rows": rows}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
