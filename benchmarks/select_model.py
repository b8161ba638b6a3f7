"""Choose between depth-model candidates on a VALIDATION split, never on reported frames.

Each candidate checkpoint is scored, with its card's inference settings, on the validation sets of
``select_inference.py``: one sequence per level (L1-L6), as written and randomised, for each of the seeds
5000, 5001, 5002 (no training set and no reported benchmark uses these seeds).  Scores: median-scaled
abs_rel and δ<1.25 per seed (mean and standard deviation over the three sets), per level, and the per-seed
difference of every candidate to the first one (the incumbent).  The rule: a candidate replaces the
incumbent only if it has the lowest mean abs_rel *and* is better than the incumbent on every one of the
three sets.  Writes ``benchmarks/results/model_selection.json``.

    python benchmarks/select_model.py --candidate shipped=data/default_model.pt --candidate new=runs/x/final.pt

Candidate files outside the repository are recorded by label, file size and SHA-256 (and their model card's
provenance), not by a machine-specific path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from select_inference import (LEVELS, SEEDS, _display_path, add_validation_arguments, score_validation,  # noqa: E402
                              spread, validation_sets)


def _candidate(spec: str) -> tuple[str, Path]:
    if "=" not in spec:
        raise SystemExit(f"--candidate {spec!r}: expected LABEL=CHECKPOINT.pt")
    label, path = spec.split("=", 1)
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"--candidate {spec!r}: {p} is not a file; pass a checkpoint written by colondepth train")
    return label, p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def score_candidate(path: Path, sets: dict) -> dict:
    """Median-scaled abs_rel / δ<1.25 of one checkpoint on every validation set: overall and per level."""
    from colondepth.infer.predictor import DepthPredictor

    pred = DepthPredictor.from_checkpoint(path, device="cpu")
    t0 = time.perf_counter()
    per_seed = {k: {key: v[key] for key in ("abs_rel", "delta1", "levels")}
                for k, v in score_validation(pred.predict_batch, sets).items()}
    levels = sorted(next(iter(per_seed.values()))["levels"])
    card = pred.card
    return {
        "checkpoint": _display_path(path),
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "card": {k: card.get(k) for k in ("description", "trained_with", "curriculum", "stage", "step",
                                           "input_size", "inference") if k in card},
        "per_seed": per_seed,
        **spread(per_seed),
        "levels": {lv: {"abs_rel_mean": float(np.mean([v["levels"][lv]["abs_rel"] for v in per_seed.values()])),
                        "delta1_mean": float(np.mean([v["levels"][lv]["delta1"] for v in per_seed.values()]))}
                   for lv in levels},
        "seconds_incl_scoring": round(time.perf_counter() - t0, 1),
    }


def choose(results: dict) -> dict:
    """The selection rule (see the module docstring): ``{"chosen": label, "rule": ..., "differences": ...}``."""
    labels = list(results)
    incumbent = labels[0]
    diffs = {lab: [results[lab]["per_seed"][str(s)]["abs_rel"] - results[incumbent]["per_seed"][str(s)]["abs_rel"]
                   for s in SEEDS] for lab in labels[1:]}
    best = min(labels, key=lambda lab: results[lab]["abs_rel_mean"])
    chosen = best if best == incumbent or all(d < 0 for d in diffs[best]) else incumbent
    return {"chosen": chosen, "incumbent": incumbent,
            "abs_rel_difference_to_incumbent": diffs,
            "rule": "the candidate with the lowest mean abs_rel replaces the incumbent (the first candidate) only "
                    "if it lowers abs_rel on every one of the three validation sets"}


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", action="append", required=True, metavar="LABEL=CKPT",
                    help="a checkpoint to compare; the first one is the incumbent (give it 2+ times)")
    add_validation_arguments(ap, "model_selection.json")
    args = ap.parse_args(argv)
    cands = [_candidate(c) for c in args.candidate]
    if len(cands) < 2:
        raise SystemExit("--candidate: give at least two checkpoints (the incumbent first)")
    if len({lab for lab, _ in cands}) != len(cands):
        raise SystemExit("--candidate: labels must be unique")
    torch.set_num_threads(args.threads)

    sets = validation_sets(args.cache, args.frames, args.size)
    results = {}
    for label, path in cands:
        results[label] = score_candidate(path, sets)
        r = results[label]
        print(f"{label}: abs_rel {r['abs_rel_mean']:.4f} ± {r['abs_rel_sd']:.4f}, "
              f"δ<1.25 {r['delta1_mean']:.3f} ± {r['delta1_sd']:.3f}", flush=True)
    doc = {
        "benchmark": "select_model",
        "command": "python benchmarks/select_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "validation": {"seeds": list(SEEDS), "levels": list(LEVELS), "variants": ["as written", "randomised"],
                       "frames_per_sequence": args.frames, "size": args.size, "align": "median"},
        "results": results,
        "choice": choose(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print("chosen:", doc["choice"]["chosen"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
