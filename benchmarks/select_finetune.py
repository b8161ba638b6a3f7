"""Choose ``colondepth finetune`` settings on a real validation split, never on the reported frames.

    python benchmarks/select_finetune.py                       # every arm, seeds 0 1 2
    python benchmarks/select_finetune.py --arms defaults depth_scale_anchor --seeds 0
    python benchmarks/select_finetune.py --split long --steps 1000   # the longer clip

The sinus SfM sample (``SHARED/sinus_sfm_sample``) is split in time, away from the frames the fine-tuning is
reported on (``bench_selfsup_real`` fine-tunes on 0-249 and reports frames 250-380):

- ``--split short`` (default): fine-tune on frames 0-69 (images and intrinsics only: ``colondepth finetune``
  with its defaults plus the arm's options, ``--seed`` and ``--no-keep-best``), validate on frames 70-109
  (median-scaled abs_rel at the SfM points, ``bench_transfer.score_sinus``); both before ``bench_transfer``'s
  test frames 110-380;
- ``--split long``: fine-tune on frames 0-199, validate on 200-249: closer to the reported use (250 frames of
  input) and still disjoint from its test frames 250-380.

Every run ends with its last weights (``--no-keep-best``): the held-out check of ``colondepth finetune`` is a
safety net of the product, and on this short clip it keeps the initial depth network in every arm (measured:
its held-out photometric error rose once the depth network trained), which would hide what the settings do.

Each arm is run with every seed; the JSON (``benchmarks/results/finetune_selection.json``) holds the
per-seed scores and their mean and standard deviation, and the initial model's score.  Runs live in
``--work/<first 12 hex digits of the starting checkpoint's SHA-256>/<arm>_seed<seed>``, and the JSON keeps the rows
of an earlier invocation only when it started from the same model with the same split and steps (a new default
model starts a new table).  An arm is better
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

#: split name -> (fine-tuning frames, validation frames, results JSON)
SPLITS = {
    "short": (range(0, 70), range(70, 110), REPO / "benchmarks" / "results" / "finetune_selection.json"),
    "long": (range(0, 200), range(200, 250), REPO / "benchmarks" / "results" / "finetune_selection_long.json"),
}
TRAIN_FRAMES, VAL_FRAMES, DEFAULT_OUT = SPLITS["short"]
#: arm name -> extra ``colondepth finetune`` options (on top of its defaults)
ARMS = {
    "defaults": [],
    "depth_scale_anchor": ["--depth-scale-anchor"],
    "invalid_warp_identity": ["--invalid-warp", "identity"],
    "anchor_and_identity": ["--depth-scale-anchor", "--invalid-warp", "identity"],
    "frame_skip_2": ["--frame-skip", "2"],
    "light_tip": ["--light", "tip"],
    "coopnet": ["--coopnet"],
    "always_normalise": ["--min-translation-norm", "0"],
    "frame_skip_auto": ["--frame-skip", "auto"],
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

    from bench_selfsup_real import finetune, sinus_root
    from bench_selfsup_real import model_id as checkpoint_id
    from bench_transfer import score_sinus
    from colondepth.infer.predictor import DepthPredictor
    from colondepth.io import atomic_write_text
    from colondepth.resources import default_model_path, default_shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--split", choices=list(SPLITS), default="short",
                    help="short: fine-tune on 0-69, validate on 70-109; long: 0-199 -> 200-249 (default short)")
    ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps per run (default 400)")
    ap.add_argument("--checkpoint", default=None, help="model to start from (default: the shipped default model)")
    ap.add_argument("--shared-data", type=Path, default=default_shared_data())
    ap.add_argument("--work", type=Path, default=None,
                    help="run folders (default benchmarks/.cache/select_finetune, _long for the long split)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: the split's, see SPLITS)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rescore", action="store_true",
                    help="score the runs already in --work again with the current scoring code (no training)")
    args = ap.parse_args(argv)
    train_frames, val_frames, out = SPLITS[args.split]
    args.out = args.out or out
    args.work = args.work or REPO / "benchmarks" / ".cache" / ("select_finetune" + ("" if args.split == "short"
                                                                                  else f"_{args.split}"))
    torch.set_num_threads(args.threads)
    root = sinus_root(args.shared_data)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_model_path()
    if not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: no such checkpoint; pass --checkpoint with a model file")
    model_id = checkpoint_id(checkpoint)
    args.work = args.work / model_id  # runs of another starting model are never resumed or reused

    def score(ckpt) -> float:
        pred = DepthPredictor.from_checkpoint(ckpt, device="cpu")
        return float(score_sinus(root, pred, None, 8, frames=val_frames)["model"]["pooled"]["abs_rel"])

    doc = {"benchmark": "finetune_selection",
           "command": "python benchmarks/select_finetune.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "split": args.split, "finetune_frames": [train_frames[0], train_frames[-1]],
           "validation_frames": [val_frames[0], val_frames[-1]],
           "steps": args.steps, "checkpoint_sha256_12": model_id, "metric": "median-scaled abs_rel at the SfM points of the validation frames",
           "initial": score(checkpoint), "arms": {}}
    if args.out.is_file():  # runs of the same model, split and steps are kept (resumable)
        old = json.loads(args.out.read_text())
        if (old.get("steps"), old.get("finetune_frames"), old.get("checkpoint_sha256_12")) == (
                doc["steps"], doc["finetune_frames"], model_id):
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
            tuned, seconds = finetune(checkpoint, root, work, args.steps, train_frames,
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
