"""End-to-end inference speed of a depth model through the public predictor (what `colondepth predict` runs).

For each input frame size it times :meth:`DepthPredictor.predict` (one uint8 frame in, a depth map in mm at
the frame's resolution out, including the model's own resize and normalisation) and ``predict_batch`` with
8 frames, for each requested torch thread count, and reports the peak resident memory of the process.

    python benchmarks/bench_predict.py                          # default model, 128² and 256², 1 and 2 threads
    python benchmarks/bench_predict.py --checkpoint RUN/checkpoints/final.pt --sizes 256 --threads 2

Writes the rows to ``--json`` (default ``benchmarks/results/predict.json``, the file behind the README's speed row).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _time(fn, repeats: int) -> float:
    import numpy as np

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv=None) -> int:
    import numpy as np
    import torch

    from colondepth.infer.predictor import DepthPredictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped data/default_model.pt")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square frame sizes (px)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to try")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "predict.json"),
                    help="where the rows are written (default: benchmarks/results/predict.json)")
    args = ap.parse_args(argv)
    rows = []

    pred = DepthPredictor.from_checkpoint(args.checkpoint, device=args.device, batch_size=8)
    card = pred.card
    n_params = sum(p.numel() for p in pred.model.parameters()) if hasattr(pred, "model") else None
    print(f"model: {args.checkpoint or 'data/default_model.pt'} (input {card['input_size'][0]}x"
          f"{card['input_size'][1]}, {n_params if n_params is not None else '?'} parameters), device {args.device}")
    load = os.getloadavg()[0]
    print(f"1-min load average before: {load:.2f} on {os.cpu_count()} cores\n")
    print("| frame size | torch threads | frames/s (1 frame per call) | frames/s (batches of 8) | ms/frame (1 frame) |")
    print("|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        rgb = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        batch = np.stack([rgb] * 8)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for _ in range(3):
                pred.predict(rgb)
            single = _time(lambda: pred.predict(rgb), args.repeats)
            batched = _time(lambda: pred.predict_batch(batch), max(3, args.repeats // 8))
            print(f"| {size}x{size} | {threads} | {1 / single:.1f} | {8 / batched:.1f} | {1000 * single:.1f} |")
            rows.append({"size": size, "threads": threads, "fps_single": 1 / single, "fps_batch8": 8 / batched,
                         "ms_per_frame_single": 1000 * single})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_after = os.getloadavg()[0]
    print(f"\npeak resident memory of this process (torch included): {peak:.0f} MB; "
          f"1-min load average after: {load_after:.2f}")
    doc = {"benchmark": "predict",
           "command": "python benchmarks/bench_predict.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "model": {"checkpoint": args.checkpoint or "data/default_model.pt", "input_size": card["input_size"],
                     "parameters": n_params},
           "device": args.device, "repeats": args.repeats, "cpu_count": os.cpu_count(),
           "load_average_1min": {"before": load, "after": load_after},
           "rows": rows, "peak_rss_mb": peak}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
