"""Choose between depth-model candidates on VALIDATION splits, never on reported frames.

Each candidate checkpoint is scored, with its card's inference settings, on two validation splits:

- synthetic: the sets of ``select_inference.py``, one sequence per level (L1-L6), as written and randomised,
  for each of the seeds 5000, 5001, 5002 (no training set and no reported benchmark uses these seeds);
- real: frames 0-99 of the real sinus video (``bench_transfer.SINUS_VALIDATION_FRAMES``; the transfer
  benchmark reports its targets on frames 110-380 only), median-scaled abs_rel at the SfM points, in three
  consecutive blocks of frames (0-33, 34-66, 67-99).

The rule: the product is judged on real endoscopes, so the real split decides and the synthetic split guards.
A challenger replaces the incumbent (the first candidate) only if it has the lowest mean real-video abs_rel
of the candidates that qualify, lowers the real abs_rel on every one of the three blocks, and does not raise
the synthetic mean abs_rel by more than ``SYNTHETIC_TOLERANCE`` (0.01).  Without the real video (``--shared-data``
missing) the synthetic split decides alone: the lowest mean abs_rel, better than the incumbent on all three
seeds.  Writes ``benchmarks/results/model_selection.json``.

    python benchmarks/select_model.py --candidate shipped=data/default_model.pt --candidate new=runs/x/final.pt

Candidate files outside the repository are recorded by label, file size and SHA-256 (and their model card's
provenance), not by a machine-specific path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_transfer import SINUS_VALIDATION_FRAMES, score_sinus  # noqa: E402
from select_inference import (LEVELS, SEEDS, _display_path, add_validation_arguments, score_validation,  # noqa: E402
                              spread, validation_sets)

#: Consecutive blocks of the real validation frames: a challenger must win on each (as on each synthetic seed).
REAL_BLOCKS = 3
#: How much a challenger may raise the synthetic validation mean abs_rel and still replace the incumbent.
SYNTHETIC_TOLERANCE = 0.01


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


def depth_state_sha256(path: Path) -> str:
    """SHA-256 of a model bundle's depth weights alone (tensor names, shapes, dtypes and bytes in name order):
    the same for a file that later gained a pose or two-frame network beside unchanged depth weights."""
    from colondepth.models.bundle import read_bundle

    h = hashlib.sha256()
    for name, t in sorted(read_bundle(path)["model_state"].items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def real_blocks(frames=SINUS_VALIDATION_FRAMES, blocks: int = REAL_BLOCKS) -> list[list[int]]:
    """The real validation frames in ``blocks`` consecutive, nearly equal runs."""
    return [list(map(int, b)) for b in np.array_split(np.asarray(list(frames)), blocks)]


def score_real(pred, sinus_root: Path) -> dict:
    """Median-scaled abs_rel at the SfM points of each real validation block (model, physics, constant)."""
    blocks = []
    for frames in real_blocks():
        r = score_sinus(sinus_root, pred, None, 8, frames=frames)
        blocks.append({"frames": r["frames"], "points": r["num_points"],
                       **{m: r[m]["pooled"]["abs_rel"] for m in ("model", "physics", "constant")}})
    return {"blocks": blocks, "abs_rel_mean": float(np.mean([b["model"] for b in blocks])),
            "physics_abs_rel_mean": float(np.mean([b["physics"] for b in blocks])),
            "constant_abs_rel_mean": float(np.mean([b["constant"] for b in blocks]))}


def score_candidate(path: Path, sets: dict, sinus_root: Path | None = None) -> dict:
    """Median-scaled abs_rel / δ<1.25 of one checkpoint on every validation set: overall and per level,
    and on the real validation blocks when ``sinus_root`` is given."""
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
        "depth_state_sha256": depth_state_sha256(path),
        "card": {k: card.get(k) for k in ("description", "trained_with", "curriculum", "stage", "step",
                                           "input_size", "normalisation", "inference") if k in card},
        "per_seed": per_seed,
        **spread(per_seed),
        "levels": {lv: {"abs_rel_mean": float(np.mean([v["levels"][lv]["abs_rel"] for v in per_seed.values()])),
                        "delta1_mean": float(np.mean([v["levels"][lv]["delta1"] for v in per_seed.values()]))}
                   for lv in levels},
        **({"real": score_real(pred, sinus_root)} if sinus_root is not None else {}),
        "seconds_incl_scoring": round(time.perf_counter() - t0, 1),
    }


def choose(results: dict) -> dict:
    """The selection rule (see the module docstring): ``{"chosen": label, "rule": ..., "differences": ...}``."""
    labels = list(results)
    incumbent = labels[0]
    diffs = {lab: [results[lab]["per_seed"][str(s)]["abs_rel"] - results[incumbent]["per_seed"][str(s)]["abs_rel"]
                   for s in SEEDS] for lab in labels[1:]}
    if all("real" in r for r in results.values()):
        real_diffs = {lab: [b["model"] - b0["model"] for b, b0 in zip(results[lab]["real"]["blocks"],
                                                                      results[incumbent]["real"]["blocks"])]
                      for lab in labels[1:]}
        limit = results[incumbent]["abs_rel_mean"] + SYNTHETIC_TOLERANCE
        qualified = [lab for lab in labels[1:] if results[lab]["abs_rel_mean"] <= limit]
        best = min(qualified, key=lambda lab: results[lab]["real"]["abs_rel_mean"], default=None)
        chosen = best if best is not None and all(d < 0 for d in real_diffs[best]) else incumbent
        return {"chosen": chosen, "incumbent": incumbent, "decided_by": "real",
                "abs_rel_difference_to_incumbent": diffs, "real_abs_rel_difference_to_incumbent": real_diffs,
                "qualified_on_synthetic": qualified,
                "rule": "among the candidates whose synthetic validation mean abs_rel is at most the incumbent's "
                        f"+ {SYNTHETIC_TOLERANCE}, the one with the lowest real-video validation abs_rel replaces the "
                        "incumbent (the first candidate) only if it lowers the real abs_rel on every one of the "
                        f"{REAL_BLOCKS} real validation blocks"}
    best = min(labels, key=lambda lab: results[lab]["abs_rel_mean"])
    chosen = best if best == incumbent or all(d < 0 for d in diffs[best]) else incumbent
    return {"chosen": chosen, "incumbent": incumbent, "decided_by": "synthetic",
            "abs_rel_difference_to_incumbent": diffs,
            "rule": "no real validation video: the candidate with the lowest mean abs_rel replaces the incumbent "
                    "(the first candidate) only if it lowers abs_rel on every one of the three validation sets"}


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", action="append", required=True, metavar="LABEL=CKPT",
                    help="a checkpoint to compare; the first one is the incumbent (give it 2+ times)")
    add_validation_arguments(ap, "model_selection.json")
    ap.add_argument("--shared-data", type=Path,
                    default=Path(os.environ.get("COLONDEPTH_SHARED_DATA", REPO.parent / "shared" / "data")),
                    help="folder holding sinus_sfm_sample/ (the real validation frames); default ../shared/data")
    args = ap.parse_args(argv)
    cands = [_candidate(c) for c in args.candidate]
    if len(cands) < 2:
        raise SystemExit("--candidate: give at least two checkpoints (the incumbent first)")
    if len({lab for lab, _ in cands}) != len(cands):
        raise SystemExit("--candidate: labels must be unique")
    torch.set_num_threads(args.threads)

    sets = validation_sets(args.cache, args.frames, args.size)
    sinus = args.shared_data / "sinus_sfm_sample"
    if not sinus.is_dir():
        print(f"warning: {sinus} not found: choosing on the synthetic validation split alone", flush=True)
        sinus = None
    results = {}
    for label, path in cands:
        results[label] = score_candidate(path, sets, sinus)
        r = results[label]
        real = f", real {r['real']['abs_rel_mean']:.4f}" if "real" in r else ""
        print(f"{label}: abs_rel {r['abs_rel_mean']:.4f} ± {r['abs_rel_sd']:.4f}, "
              f"δ<1.25 {r['delta1_mean']:.3f} ± {r['delta1_sd']:.3f}{real}", flush=True)
    doc = {
        "benchmark": "select_model",
        "command": "python benchmarks/select_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "validation": {"seeds": list(SEEDS), "levels": list(LEVELS), "variants": ["as written", "randomised"],
                       "frames_per_sequence": args.frames, "size": args.size, "align": "median",
                       "real": None if sinus is None else {
                           "source": "sinus_sfm_sample", "blocks": [[b[0], b[-1]] for b in real_blocks()],
                           "align": "median per frame at the SfM points, pooled per block"}},
        "results": results,
        "choice": choose(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print("chosen:", doc["choice"]["chosen"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
