"""Choose ``colondepth finetune`` settings on a real validation split, never on the reported frames.

    python benchmarks/select_finetune.py                       # every arm, seeds 0 1 2
    python benchmarks/select_finetune.py --arms defaults depth_scale_anchor --seeds 0

The sinus SfM sample (``SHARED/sinus_sfm_sample``) is split in time, away from every reported frame
(``bench_selfsup_real`` reports frames 250-380, ``bench_transfer`` 110-380):

- frames 0-69: fine-tuning input (images and intrinsics only), ``colondepth finetune`` with its defaults
  plus the arm's options, ``--seed`` and ``--no-keep-best``;
- frames 70-109: validation, median-scaled abs_rel at the SfM points (``bench_transfer.score_sinus``).

Every run ends with its last weights (``--no-keep-best``): the held-out check of ``colondepth finetune`` is a
safety net of the product, and on this short clip it keeps the initial depth network in every arm (measured:
its held-out photometric error rose once the depth network trained), which would hide what the settings do.

Each arm is run with every seed; the JSON (``benchmarks/results/finetune_selection.json``) holds the
per-seed scores and their mean and standard deviation, and the initial model's score.  An arm is better
than the defaults only when its mean is lower by more than the larger of the two spreads.
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

DEFAULT_OUT = REPO / "benchmarks" / "results" / "finetune_selection.json"
TRAIN_FRAMES = range(0, 70)
VAL_FRAMES = range(70, 110)
#: arm name -> extra ``colondepth finetune`` options (on top of its defaults)
ARMS = {
    "defaults": [],
    "depth_scale_anchor": ["--depth-scale-anchor"],
    "invalid_warp_identity": ["--invalid-warp", "identity"],
    "anchor_and_identity": ["--depth-scale-anchor", "--invalid-warp", "identity"],
    "frame_skip_2": ["--frame-skip", "2"],
    "light_tip": ["--light", "tip"],
    "coopnet": ["--coopnet"],
}


#: A comparison needs at least this many seeds on both sides.
MIN_SEEDS = 3


def better_than(a: dict, b: dict):
    """Whether arm summary ``a`` beats ``b``: a lower mean abs_rel by more than the larger standard deviation,
    with at least :data:`MIN_SEEDS` seeds each; ``None`` when either has fewer (no claim either way)."""
    if min(a["seeds"], b["seeds"]) < MIN_SEEDS:
        return None
    return (b["mean"] - a["mean"]) > max(a["std"], b["std"])


def summarize(scores: list[float]) -> dict:
    x = np.asarray(scores, dtype=np.float64)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "seeds": len(x)}


def main(argv=None) -> int:
    import torch

    from bench_selfsup_real import finetune
    from bench_transfer import score_sinus
    from colondepth.infer.predictor import DepthPredictor
    from colondepth.io import atomic_write_text
    from colondepth.resources import default_model_path, default_shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps per run (default 400)")
    ap.add_argument("--checkpoint", default=None, help="model to start from (default: the shipped default model)")
    ap.add_argument("--shared-data", type=Path, default=default_shared_data())
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".cache" / "select_finetune")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rescore", action="store_true",
                    help="score the runs already in --work again with the current scoring code (no training)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = (args.shared_data or Path("missing")) / "sinus_sfm_sample"
    if not root.is_dir():
        raise SystemExit(f"{root}: not found; pass --shared-data with the folder holding sinus_sfm_sample/")
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_model_path()

    def score(ckpt) -> float:
        pred = DepthPredictor.from_checkpoint(ckpt, device="cpu")
        return float(score_sinus(root, pred, None, 8, frames=VAL_FRAMES)["model"]["pooled"]["abs_rel"])

    doc = {"benchmark": "finetune_selection",
           "command": "python benchmarks/select_finetune.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "finetune_frames": [TRAIN_FRAMES[0], TRAIN_FRAMES[-1]], "validation_frames": [VAL_FRAMES[0], VAL_FRAMES[-1]],
           "steps": args.steps, "metric": "median-scaled abs_rel at the SfM points of the validation frames",
           "initial": score(checkpoint), "arms": {}}
    if args.out.is_file():  # runs already measured with the same split and steps are kept (resumable)
        old = json.loads(args.out.read_text())
        if (old.get("steps"), old.get("finetune_frames")) == (doc["steps"], doc["finetune_frames"]):
            doc["arms"] = old.get("arms", {})
    print(f"initial model: {doc['initial']:.4f}", flush=True)
    if args.rescore:  # every finished run, scored again: one scoring code for every row
        for arm, rec in doc["arms"].items():
            for seed, row in rec["per_seed"].items():
                row["abs_rel"] = score(args.work / f"{arm}_seed{seed}" / "run" / "checkpoints" / "final.pt")
            rec["summary"] = summarize([v["abs_rel"] for v in rec["per_seed"].values()])
        args.arms = []
    for arm in args.arms:
        rec = doc["arms"].setdefault(arm, {"options": ARMS[arm], "per_seed": {}})
        for seed in args.seeds:
            if str(seed) in rec["per_seed"]:
                continue
            work = args.work / f"{arm}_seed{seed}"
            tuned, seconds = finetune(checkpoint, root, work, args.steps, TRAIN_FRAMES,
                                      options=[*ARMS[arm], "--seed", str(seed), "--no-keep-best"])
            rec["per_seed"][str(seed)] = {"abs_rel": score(tuned), "seconds": round(seconds, 1)}
            print(f"{arm} seed {seed}: {rec['per_seed'][str(seed)]['abs_rel']:.4f} ({seconds:.0f} s)", flush=True)
            rec["summary"] = summarize([v["abs_rel"] for v in rec["per_seed"].values()])
            atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    if "defaults" in doc["arms"]:
        base = doc["arms"]["defaults"]["summary"]
        for arm, rec in doc["arms"].items():
            rec["better_than_defaults"] = None if arm == "defaults" else better_than(rec["summary"], base)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    for arm, rec in doc["arms"].items():
        s = rec["summary"]
        print(f"{arm:24s} {s['mean']:.4f} ± {s['std']:.4f} ({s['seeds']} seeds)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
