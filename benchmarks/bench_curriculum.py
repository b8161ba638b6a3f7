"""Curriculum science: does training through the levels in order beat the controls, with fair arms and seeds?

    python benchmarks/bench_curriculum.py                        # every arm, seeds 0 1 2, 2,000 steps per level
    python benchmarks/bench_curriculum.py --arms curriculum mixed --seeds 0 --steps-per-level 500
    python benchmarks/bench_curriculum.py --quick                # a minute: the whole pipeline, tiny settings

Arms (every one draws the same number of samples: ``len(levels) x steps_per_level`` steps of ``batch``, and
follows the same learning-rate shape over the whole run: ``lr_schedule.scope: run``, one warm-up and one cosine
decay, whatever its stages; same model, optimizer, augmentation and data):

- ``curriculum``: one stage per level, easiest first (L1 -> L6), 20 % rehearsal of the earlier levels;
- ``reversed``: the same stages, hardest first;
- ``mixed``: one stage with every level shuffled together;
- ``mixed_then_hardest``: ``mixed`` for all but half a level's steps, then a short stage on the hardest level
  (with rehearsal): what "recency" alone gives;
- ``competence``: ``curriculum`` paced by competence (promotion rule ``competence``: a level ends when its
  validation plateaus, ``carry_over`` hands the unused steps to the next level; the budget is the cap).

Every run logs the forgetting monitor (``colondepth.train.monitor``): its last evaluation is the VALIDATION
score (the held-out sequence of every training level, and the real video's validation frames 0-99), on which
the arms are compared and a winner may be chosen.  The trained models are then scored on the TEST sets of
``bench_transfer.py``: held-out synthetic levels (seed 9001, never trained on), the SimCol3D sample and the
sinus video's test frames 110-380, median-scaled (and metric where the scale is known).  Per arm and set:
mean and standard deviation over seeds; an arm beats another on a set only when its mean is lower by more than
the larger standard deviation (``select_finetune.better_than``), with at least 3 seeds.

Rule for the default model's schedule (fixed before the 3-seed results were in): an arm replaces the schedule the
default model was trained with only if it is established best on the real validation set (sinus frames 0-99:
the product is judged on real endoscopes) and established worse than no other arm on any level's validation set;
otherwise the default keeps its schedule.

Runs live in ``--work`` (default ``benchmarks/.cache/curriculum``): a finished run is reused (its test scores
too, from ``test_scores.json`` beside it), an interrupted one resumed.  Writes
``benchmarks/results/curriculum.json`` (``--out``) and, with ``--readme``, the README table between
``<!-- curriculum-table:start -->`` and ``<!-- curriculum-table:end -->``.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "curriculum.json"
README = REPO / "README.md"
TABLE_START = "<!-- curriculum-table:start -->"
TABLE_END = "<!-- curriculum-table:end -->"
ARMS = ("curriculum", "reversed", "mixed", "mixed_then_hardest", "competence")
LEVELS = ("L1", "L2", "L3", "L4", "L5", "L6")
REHEARSAL = 0.2

#: The model and training settings every arm shares (``full``), and the tiny ones of ``--quick``.
MODES = {
    "full": dict(model={"arch": "dispnet", "input_size": [64, 64], "min_depth_mm": 1.0, "max_depth_mm": 200.0,
                        "encoder_channels": [16, 24, 32, 48, 64], "decoder_channels": [8, 16, 24, 32, 48],
                        "num_scales": 4, "norm": "batch", "inputs": ["rays"]},
                 steps_per_level=2000, batch=8, lr=1e-3, warmup=100, eval_every=250, monitor_every=500,
                 monitor_frames=16, levels=LEVELS, heldout=dict(sequences=2, frames=24, size=64), max_frames=None,
                 sinus_frames=None),
    "quick": dict(model={"arch": "dispnet", "input_size": [32, 32], "min_depth_mm": 1.0, "max_depth_mm": 200.0,
                         "encoder_channels": [8, 12, 16], "decoder_channels": [8, 8, 12], "num_scales": 3,
                         "norm": "batch", "inputs": []},
                  steps_per_level=4, batch=4, lr=2e-3, warmup=2, eval_every=2, monitor_every=4, monitor_frames=2,
                  levels=("L1", "L2"), heldout=dict(sequences=1, frames=2, size=32), max_frames=2, sinus_frames=2),
}
#: Real-video validation frames the monitor scores (bench_transfer.SINUS_VALIDATION_FRAMES).
SINUS_VALIDATION = (0, 99)


# ----------------------------------------------------------------------------------------------------------
# the arms


def arm_stages(arm: str, levels, steps_per_level: int, common: dict) -> list[dict]:
    """The stages of ``arm`` (see the module docstring); ``common``: keys every stage shares (batch, optimizer,
    run-wide schedule).  Every arm's stages add up to ``len(levels) * steps_per_level`` steps."""
    levels = list(levels)
    total = len(levels) * steps_per_level

    def stage(name, lvls, steps, rehearsal=0.0, promotion=None):
        s = {"name": name, "kind": "supervised", "levels": list(lvls), "budget": {"steps": int(steps)},
             "rehearsal": rehearsal, **copy.deepcopy(common)}
        if promotion:
            s["promotion"] = promotion
        return s

    if arm in ("curriculum", "reversed", "competence"):
        order = levels if arm != "reversed" else levels[::-1]
        promo = None
        if arm == "competence":
            promo = {"rule": "competence", "eval_every_steps": common["_eval_every"], "patience": 3,
                     "min_delta": 1e-3, "carry_over": True}
        out = [stage(f"{lv}", [lv], steps_per_level, REHEARSAL if k else 0.0,
                     promo if k < len(order) - 1 else None) for k, lv in enumerate(order)]
    elif arm == "mixed":
        out = [stage("mixed", levels, total)]
    elif arm == "mixed_then_hardest":
        final = max(1, steps_per_level // 2)
        out = [stage("mixed", levels, total - final), stage(f"final_{levels[-1]}", [levels[-1]], final, REHEARSAL)]
    else:
        raise ValueError(f"unknown arm {arm!r}; choose one of {', '.join(ARMS)}")
    for s in out:
        s.pop("_eval_every", None)
    assert sum(s["budget"]["steps"] for s in out) == total
    return out


def arm_curriculum(arm: str, seed: int, mode: dict, shared: Path | None) -> dict:
    """The full curriculum dict of one arm and seed (monitor on, foreign sets from ``shared`` when present)."""
    common = {"batch_size": mode["batch"], "optimizer": {"lr": mode["lr"], "weight_decay": 1e-4},
              "lr_schedule": {"kind": "cosine", "warmup_steps": mode["warmup"], "min_factor": 0.05, "scope": "run"},
              "_eval_every": mode["eval_every"]}
    foreign = []
    if shared is not None and (shared / "sinus_sfm_sample").is_dir():
        foreign.append({"name": "sinus_validation", "path": str(shared / "sinus_sfm_sample"), "format": "sinus_sfm",
                        "frames": list(SINUS_VALIDATION)})
    return {"name": f"bench_{arm}", "description": f"bench_curriculum arm {arm}, seed {seed}", "seed": int(seed),
            "model": mode["model"], "data": {"num_workers": 0, "val_max_frames_per_level": 64},
            "checkpoint": {"every_steps": 500, "log_every_steps": 50},
            "monitor": {"every_steps": mode["monitor_every"], "max_frames": mode["monitor_frames"],
                        "foreign": foreign},
            "stages": arm_stages(arm, mode["levels"], mode["steps_per_level"], common)}


def train_arm(arm: str, seed: int, mode: dict, data: list[Path], work: Path, shared: Path | None,
              threads: int) -> Path:
    """Train (or reuse / resume) one arm and seed; returns its ``final.pt``."""
    import yaml

    from colondepth import cli

    run = work / f"{arm}_seed{seed}"
    final = run / "run" / "checkpoints" / "final.pt"
    cur = arm_curriculum(arm, seed, mode, shared)
    cur_path = run / "curriculum.yaml"
    if final.is_file() and cur_path.is_file() and yaml.safe_load(cur_path.read_text()) == cur:
        return final
    run.mkdir(parents=True, exist_ok=True)
    cur_path.write_text(yaml.safe_dump(cur, sort_keys=False))
    argv = ["--threads", str(threads), "train", "--no-progress", "--curriculum", str(cur_path),
            "--out", str(run / "run")]
    for d in data:
        argv += ["--data", str(d)]
    if (run / "run" / "checkpoints" / "last.pt").is_file():
        argv.append("--resume")
    elif (run / "run").exists():  # a stale run of other settings
        import shutil

        shutil.rmtree(run / "run")
    t0 = time.perf_counter()
    code = cli.main(argv)
    if code != 0 or not final.is_file():
        raise SystemExit(f"colondepth {' '.join(argv)} failed (exit {code})")
    (run / "seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return final


# ----------------------------------------------------------------------------------------------------------
# scoring


def validation_scores(run_dir: Path) -> dict:
    """The last forgetting-monitor evaluation of a run: set -> median-scaled (and metric) abs_rel."""
    from colondepth.train.logging import read_metrics

    recs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("type") == "monitor"]
    if not recs:
        return {}
    last = max(r["global_step"] for r in recs)
    return {r["set"]: {"abs_rel_median_scaled": r["abs_rel_median_scaled"], "abs_rel": r["abs_rel"]}
            for r in recs if r["global_step"] == last}


def cached_test_scores(final: Path, heldout: dict, held_prov, shared: Path | None, mode: dict) -> dict:
    """:func:`test_scores`, kept in ``test_scores.json`` beside the run and reused while the model file and
    the scoring inputs (held-out sets, shared data folder, frame limits) are the same."""
    from colondepth.io import atomic_write_text

    st = final.stat()
    key = {"model": [final.name, st.st_size, st.st_mtime_ns], "heldout": held_prov,
           "shared": None if shared is None else str(shared), "max_frames": mode["max_frames"],
           "sinus_frames": mode["sinus_frames"]}
    cache = final.parent.parent.parent / "test_scores.json"
    if cache.is_file():
        doc = json.loads(cache.read_text())
        if doc.get("key") == json.loads(json.dumps(key)):
            return doc["scores"]
    scores = test_scores(final, heldout, shared, mode)
    atomic_write_text(cache, json.dumps({"key": key, "scores": scores}, indent=1) + "\n")
    return scores


def test_scores(final: Path, heldout: dict, shared: Path | None, mode: dict) -> dict:
    """Median-scaled (and metric) abs_rel of a model on the test sets of bench_transfer."""
    from bench_transfer import SINUS_TEST_FIRST_FRAME, score_dense, score_simcol3d, score_sinus

    from colondepth.infer.predictor import DepthPredictor

    pred = DepthPredictor.from_checkpoint(final, device="cpu")
    out = {}
    for level, seqs in heldout.items():
        r = score_dense(seqs, pred, max_frames=mode["max_frames"])
        out[f"heldout_{level}"] = {"abs_rel_median_scaled": r["median"]["model"]["abs_rel"],
                                   "abs_rel": r["metric"]["model"]["abs_rel"]}
    if shared is not None and (shared / "simcol3d_sample").is_dir():
        r = score_simcol3d(shared / "simcol3d_sample", pred, mode["max_frames"], 8)
        out["simcol3d"] = {"abs_rel_median_scaled": r["median"]["model"]["abs_rel"],
                           "abs_rel": r["metric"]["model"]["abs_rel"]}
    if shared is not None and (shared / "sinus_sfm_sample").is_dir():
        r = score_sinus(shared / "sinus_sfm_sample", pred, mode["sinus_frames"], 8,
                        frames=range(SINUS_TEST_FIRST_FRAME, 1 << 30))
        out["sinus_test"] = {"abs_rel_median_scaled": r["model"]["pooled"]["abs_rel"], "abs_rel": None}
    return out


def summarize_arms(per_seed: dict) -> dict:
    """``{arm: {seed: {set: {metric: v}}}}`` -> ``{set: {metric: {arm: {mean, std, seeds}}}}``."""
    from select_finetune import summarize

    out: dict = {}
    for arm, seeds in per_seed.items():
        sets = sorted({s for scores in seeds.values() for s in scores})
        for s in sets:
            for metric in ("abs_rel_median_scaled", "abs_rel"):
                vals = [sc[s][metric] for sc in seeds.values() if s in sc and sc[s].get(metric) is not None]
                if vals:
                    out.setdefault(s, {}).setdefault(metric, {})[arm] = summarize(vals)
    return out


def winners(summary: dict) -> dict:
    """Per set and metric: the arm with the lowest mean, and whether it beats every other arm (mean lower by
    more than the larger standard deviation, >= 3 seeds each); ``None`` when nothing is established."""
    from select_finetune import better_than

    out: dict = {}
    for s, metrics in summary.items():
        for metric, arms in metrics.items():
            best = min(arms, key=lambda a: arms[a]["mean"])
            beats = [better_than(arms[best], arms[a]) for a in arms if a != best]
            out.setdefault(s, {})[metric] = {"lowest_mean": best,
                                             "beats_all": (None if not beats or any(b is None for b in beats)
                                                           else all(beats))}
    return out


# ----------------------------------------------------------------------------------------------------------
# README table


def render_table(doc: dict) -> str:
    """Markdown: one row per set, one column per arm (median-scaled abs_rel mean ± sd over seeds)."""
    arms = doc["arms"]
    lines = []
    for title, key, metric in (("validation (forgetting monitor, last evaluation)", "validation",
                                "abs_rel_median_scaled"),
                               ("test (bench_transfer sets)", "test", "abs_rel_median_scaled"),
                               ("test, metric depth (no alignment; sets with a known scale)", "test", "abs_rel")):
        summ = {s: v for s, v in doc["summary"][key].items() if metric in v}
        if not summ:
            continue
        kind = "median-scaled abs_rel" if metric == "abs_rel_median_scaled" else "abs_rel"
        lines.append(f"**{title}**, {kind}, mean ± sd over seeds ({', '.join(map(str, doc['seeds']))}):")
        lines.append("")
        lines.append("| set | " + " | ".join(arms) + " | lowest mean (established?) |")
        lines.append("|---|" + "---:|" * len(arms) + "---|")
        for s in sorted(summ):
            m = summ[s][metric]
            w = doc["winners"][key][s][metric]
            cells = [f"{m[a]['mean']:.3f} ± {m[a]['std']:.3f}" if a in m else "–" for a in arms]
            est = {True: "yes", False: "no", None: f"n/a (< 3 seeds)"}[w["beats_all"]]
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {w['lowest_mean']} ({est}) |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def update_readme(doc: dict, readme: Path | None = None) -> bool:
    """Write the table between this benchmark's README markers; False when they are missing."""
    from bench_transfer import write_marked_table

    return write_marked_table(readme or README, TABLE_START, TABLE_END, render_table(doc).rstrip("\n")) is not None


# ----------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    import torch

    from colondepth.io import atomic_write_text
    from colondepth.resources import default_shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps-per-level", type=int, default=None, help="training steps per level (default 2,000)")
    ap.add_argument("--data", type=Path, nargs="+", default=[REPO / "data_train"],
                    help="training data folders holding the levels (default data_train)")
    ap.add_argument("--shared-data", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".cache" / "curriculum")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline in about a minute")
    ap.add_argument("--readme", action="store_true", help="write the README table from the results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = copy.deepcopy(MODES["quick" if args.quick else "full"])
    if args.steps_per_level is not None:
        if args.steps_per_level < 1:
            raise SystemExit(f"--steps-per-level {args.steps_per_level}: must be at least 1")
        mode["steps_per_level"] = args.steps_per_level
    shared = args.shared_data or default_shared_data()
    shared = Path(shared) if shared is not None and Path(shared).is_dir() else None
    from colondepth.train.data import discover_datasets

    have = {i.level for i in discover_datasets(args.data)}
    missing = [lv for lv in mode["levels"] if lv not in have]
    if missing:
        raise SystemExit(f"{', '.join(map(str, args.data))}: no training data for level(s) {', '.join(missing)}; "
                         "render them with 'colondepth synth' (benchmarks/make_default_model_data.sh)")

    from bench_transfer import heldout_levels

    ho = argparse.Namespace(synthetic=None, seed=9001, cache=str(REPO / "benchmarks" / ".cache" / "transfer"))
    held, held_prov = heldout_levels(ho, dict(mode["heldout"]), only=mode["levels"])

    per_seed_val: dict = {}
    per_seed_test: dict = {}
    seconds: dict = {}
    for arm in args.arms:
        for seed in args.seeds:
            final = train_arm(arm, seed, mode, args.data, args.work, shared, args.threads)
            run_dir = final.parent.parent
            per_seed_val.setdefault(arm, {})[str(seed)] = validation_scores(run_dir)
            per_seed_test.setdefault(arm, {})[str(seed)] = cached_test_scores(final, held, held_prov, shared, mode)
            sec = run_dir.parent / "seconds.txt"
            seconds.setdefault(arm, {})[str(seed)] = float(sec.read_text()) if sec.is_file() else None
            print(f"{arm} seed {seed}: done", flush=True)
    summary = {"validation": summarize_arms(per_seed_val), "test": summarize_arms(per_seed_test)}
    doc = {"benchmark": "curriculum",
           "command": "python benchmarks/bench_curriculum.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "quick": bool(args.quick), "arms": list(args.arms), "seeds": list(args.seeds),
           "levels": list(mode["levels"]), "steps_per_level": mode["steps_per_level"],
           "steps_per_arm": mode["steps_per_level"] * len(mode["levels"]), "batch": mode["batch"],
           "model": mode["model"], "heldout": held_prov,
           "protocol": "equal samples and one run-wide cosine learning-rate shape in every arm; validation = the "
                       "forgetting monitor's last evaluation (held-out sequence of each training level, sinus "
                       "frames 0-99); test = bench_transfer's held-out levels (seed 9001), SimCol3D sample, sinus "
                       "frames 110-380; an arm is established as best only if its mean is lower than every other "
                       "arm's by more than the larger standard deviation with >= 3 seeds each",
           "per_seed": {"validation": per_seed_val, "test": per_seed_test}, "train_seconds": seconds,
           "summary": summary,
           "winners": {k: winners(v) for k, v in summary.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(render_table(doc))
    print(f"wrote {args.out}")
    if args.readme:
        print("README table " + ("updated" if update_readme(doc) else "markers not found"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
