"""Choose inference settings of a depth model on a VALIDATION split, never on reported frames.

Settings compared: ``flip_average`` off / on (test-time augmentation: the mirrored frame with the mirrored
camera, depths averaged geometrically; half the speed).  Validation data: held-out sequences of every level,
as written and randomised, generated with seeds 5000, 5001, 5002 (three independent validation sets; no
training set and no reported benchmark uses them).  Scores: median-scaled abs_rel and δ<1.25, mean and
standard deviation over the three sets; the per-set difference of the two settings.  Writes
``benchmarks/results/inference_selection.json``.

    python benchmarks/select_inference.py [--checkpoint CKPT] [--frames 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEEDS = (5000, 5001, 5002)
LEVELS = ("L1_straight", "L2_curved", "L3_haustra", "L4_flexures", "L5_tortuous", "L6_cavity")


def validation_sets(cache: Path, frames: int, size: int) -> dict:
    """``{seed: [Sequence, ...]}``: one plain and one randomised sequence per level and seed."""
    from colondepth.datasets.synthetic import open_sequence
    from colondepth.synth.generate import generate_dataset

    out = {}
    for seed in SEEDS:
        seqs = []
        for level in LEVELS:
            for randomise in (False, True):
                name = f"{level.split('_')[0]}{'r' if randomise else ''}_s{seed}_f{frames}_{size}"
                ds = generate_dataset(REPO / "synth" / f"{level}.yaml", cache / name, sequences=1, frames=frames,
                                      size=(size, size), seed=seed, progress=False, video=False,
                                      randomise=randomise)
                seqs.append(open_sequence(ds / "seq_00000"))
        out[seed] = seqs
    return out


def add_validation_arguments(ap: argparse.ArgumentParser, out: str) -> None:
    """The options every script scoring on the validation split shares (one split for all of them)."""
    ap.add_argument("--frames", type=int, default=12, help="frames per validation sequence")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--cache", type=Path, default=REPO / "benchmarks" / ".cache" / "validation")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / out)
    ap.add_argument("--threads", type=int, default=2)


def score_validation(predict_batch, sets: dict) -> dict:
    """Median-scaled scores of ``predict_batch`` on every validation set.

    Returns ``{str(seed): {"abs_rel", "delta1", "frames", "levels": {level: {"abs_rel", "delta1"}}}}``.
    """
    from colondepth.eval.evaluate import OVERALL, evaluate_sequences

    per_seed = {}
    for seed, seqs in sets.items():
        doc = evaluate_sequences(seqs, predict_batch, align="median", progress=False,
                                 cameras=[s.intrinsics for s in seqs]).to_dict()
        m = doc[OVERALL]["metrics"]["model"]
        per_seed[str(seed)] = {
            "abs_rel": m["abs_rel"], "delta1": m["delta1"], "frames": doc[OVERALL]["num_frames"],
            "levels": {lv: {"abs_rel": r["metrics"]["model"]["abs_rel"], "delta1": r["metrics"]["model"]["delta1"]}
                       for lv, r in doc["levels"].items()},
        }
    return per_seed


def spread(per_seed: dict) -> dict:
    """Mean and standard deviation (ddof 1) of abs_rel and δ<1.25 over the validation sets of ``per_seed``."""
    vals = np.array([[v["abs_rel"], v["delta1"]] for v in per_seed.values()])
    return {"abs_rel_mean": float(vals[:, 0].mean()), "abs_rel_sd": float(vals[:, 0].std(ddof=1)),
            "delta1_mean": float(vals[:, 1].mean()), "delta1_sd": float(vals[:, 1].std(ddof=1))}


def _display_path(path) -> str:
    """``path`` relative to the repository when inside it (results files must not depend on a checkout's place)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    import torch

    from colondepth.infer.predictor import DEFAULT_MODEL_PATH, DepthPredictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(DEFAULT_MODEL_PATH))
    add_validation_arguments(ap, "inference_selection.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    sets = validation_sets(args.cache, args.frames, args.size)
    results = {}
    for flip in (False, True):
        pred = DepthPredictor.from_checkpoint(args.checkpoint, device="cpu", flip_average=flip)
        t0 = time.perf_counter()
        per_seed = score_validation(pred.predict_batch, sets)
        elapsed = time.perf_counter() - t0
        results["flip_average" if flip else "single"] = {
            "per_seed": {k: {"abs_rel": v["abs_rel"], "delta1": v["delta1"]} for k, v in per_seed.items()},
            **spread(per_seed),
            "seconds_incl_scoring": round(elapsed, 1), "frames": sum(v["frames"] for v in per_seed.values()),
        }
    diff = [results["flip_average"]["per_seed"][str(s)]["abs_rel"] - results["single"]["per_seed"][str(s)]["abs_rel"]
            for s in SEEDS]
    better = all(d < 0 for d in diff)
    doc = {
        "benchmark": "select_inference",
        "command": "python benchmarks/select_inference.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": _display_path(args.checkpoint),
        "validation": {"seeds": list(SEEDS), "levels": list(LEVELS), "variants": ["as written", "randomised"],
                       "frames_per_sequence": args.frames, "size": args.size, "align": "median"},
        "results": results,
        "abs_rel_difference_flip_minus_single": diff,
        "choice": {"flip_average": bool(better),
                   "rule": "flip_average only if it lowers abs_rel on every one of the three validation sets"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: (v["abs_rel_mean"], v["abs_rel_sd"]) for k, v in results.items()}), "choice:",
          doc["choice"]["flip_average"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
