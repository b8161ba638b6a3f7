"""Where the metric scale of monocular depth comes from: per-sequence scale error against the lumen radius.

    python benchmarks/bench_metric_scale.py [--checkpoint CKPT]

Scores the depth model on the validation split of ``select_inference.py`` (seeds 5000-5002, one sequence per
level L1-L6, as written and randomised, 12 frames of 160x160 each; no training set and no reported benchmark
uses these seeds) and records, per sequence, the metric scale error ``ratio = median(pred) / median(gt)`` of each
frame (``colondepth.eval.depth_metrics.frame_depth_metrics``: ``1 / scale`` of its median alignment, over the
valid field-of-view pixels), the sequence's median ratio, the spread of the frames' ratios inside the sequence
(standard deviation of ``log ratio``), and the lumen radius the generator drew for it (``meta.yaml``).

The question it answers: is the metric error of a reconstruction (``bench_recon.py``: trajectory ATE after a
rigid alignment, surface distance) noise from frame to frame, which tracking over many frames could average
away, or one error per scene, which no amount of frames removes?  The summary gives the spread of ``log ratio``
between sequences and within them, and the least-squares fit ``log ratio = a + b log(radius)`` with the share of
the between-sequence variance it explains (``b = -1``: the model predicts one lumen size whatever the scene).
Writes ``benchmarks/results/metric_scale.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from select_inference import SEEDS, _display_path, add_validation_arguments, validation_sets  # noqa: E402


def lumen_radius_mm(seq) -> float:
    """The lumen radius (mm) the generator drew for a synthetic sequence (its ``meta.yaml`` parameters)."""
    meta = (seq.extra or {}).get("meta")
    try:
        return float(meta.params["lumen"]["radius_mm"])
    except (AttributeError, KeyError, TypeError) as exc:
        raise SystemExit(f"{seq.name}: meta.yaml has no params.lumen.radius_mm ({exc}); regenerate the "
                         "validation cache (delete --cache)") from None


def frame_ratios(pred, seq) -> np.ndarray:
    """``(N,)`` ``median(pred) / median(gt)`` of every frame of ``seq`` (valid field-of-view pixels), with the
    predictor's camera and crop as ``colondepth evaluate`` uses them."""
    from colondepth.eval.depth_metrics import frame_depth_metrics

    rgbs = np.stack([seq.rgb(i) for i in range(seq.num_frames)])
    depth = pred.predict_batch(rgbs, intrinsics=seq.intrinsics, view=pred.video_view(seq, seq.intrinsics))
    out = []
    for i in range(seq.num_frames):
        m = frame_depth_metrics(depth[i], seq.depth_mm(i), align="median", fov_mask=seq.fov_mask)
        out.append(np.nan if m is None else 1.0 / m.scale)
    return np.asarray(out, dtype=np.float64)


def summarize(rows: list[dict]) -> dict:
    """Between- and within-sequence spread of ``log ratio`` and the fit against ``log radius``."""
    lr = np.log([r["ratio"] for r in rows])
    lrad = np.log([r["lumen_radius_mm"] for r in rows])
    b, a = np.polyfit(lrad, lr, 1)
    resid = lr - (a + b * lrad)
    explained = 1.0 - float(np.var(resid)) / float(np.var(lr)) if np.var(lr) > 0 else 0.0
    return {
        "sequences": len(rows),
        "ratio_median": float(np.exp(np.median(lr))),
        "between_sequences_sd_log": float(np.std(lr, ddof=1)),
        "within_sequence_sd_log_mean": float(np.mean([r["frame_sd_log"] for r in rows])),
        "fit_log_ratio_vs_log_radius": {"slope": float(b), "intercept": float(a),
                                        "variance_explained": explained,
                                        "residual_sd_log": float(np.std(resid, ddof=1))},
        "correlation_log_ratio_log_radius": float(np.corrcoef(lrad, lr)[0, 1]),
    }


def main(argv=None) -> int:
    import torch

    from colondepth.infer.predictor import DepthPredictor
    from colondepth.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="depth model (default: the shipped model)")
    add_validation_arguments(ap, "metric_scale.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pred = DepthPredictor.from_checkpoint(args.checkpoint, device="cpu")
    sets = validation_sets(args.cache, args.frames, args.size)
    rows = []
    for seed, seqs in sets.items():
        for seq in seqs:
            r = frame_ratios(pred, seq)
            r = r[np.isfinite(r)]
            if not len(r):
                raise SystemExit(f"{seq.name}: no frame with valid ground truth; regenerate the validation cache")
            rows.append({"seed": int(seed), "sequence": seq.name, "level": seq.level,
                         "lumen_radius_mm": lumen_radius_mm(seq), "ratio": float(np.median(r)),
                         "frame_sd_log": float(np.std(np.log(r))), "frames": int(len(r))})
            print(f"{seq.name:28s} radius {rows[-1]['lumen_radius_mm']:5.1f} mm  pred/gt {rows[-1]['ratio']:.3f}  "
                  f"frame spread (sd log) {rows[-1]['frame_sd_log']:.3f}", flush=True)
    summary = summarize(rows)
    fit = summary["fit_log_ratio_vs_log_radius"]
    print(f"\nbetween sequences: sd(log ratio) {summary['between_sequences_sd_log']:.3f}; within a sequence: "
          f"{summary['within_sequence_sd_log_mean']:.3f}; log ratio = {fit['intercept']:.2f} + "
          f"{fit['slope']:.2f} log radius explains {100 * fit['variance_explained']:.0f} % of the between-sequence "
          "variance")
    doc = {"benchmark": "metric_scale",
           "command": "python benchmarks/bench_metric_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "checkpoint": "data/default_model.pt" if args.checkpoint is None else _display_path(args.checkpoint),
           "validation": {"seeds": list(SEEDS), "frames_per_sequence": args.frames, "size": args.size,
                          "variants": ["as written", "randomised"]},
           "ratio": "median(pred) / median(gt) per frame over the valid field-of-view pixels; per sequence the "
                    "median over its frames",
           "rows": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(f"wrote {_display_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
