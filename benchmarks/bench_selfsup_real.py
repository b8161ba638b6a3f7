"""Self-supervised fine-tuning and pose on a real video with ground truth: the sinus SfM sample.

    python benchmarks/bench_selfsup_real.py                      # the shipped default model; writes
                                                                 # benchmarks/results/selfsup_real.json
    python benchmarks/bench_selfsup_real.py --checkpoint CKPT --steps 300 --out /tmp/selfsup_real.json
    python benchmarks/bench_selfsup_real.py --no-finetune        # only the model as it is (depth and pose)

The video (``SHARED/sinus_sfm_sample``, 381 frames) is split in time:

- frames 0-249: the fine-tuning input, images and intrinsics only (``colondepth finetune --video FRAMES
  --intrinsics K.yaml`` with its defaults, the product's own command);
- frames 250-380: the test frames.  Depth: median-scaled abs_rel at the SfM points
  (``bench_transfer.score_sinus``: bilinear sampling, errors pooled over points), model against the physics
  and constant baselines.  Pose: 5-frame snippets starting every 4 frames; each method's relative poses are
  chained into a trajectory and compared with the SfM trajectory after a per-snippet scale alignment (Zhou et
  al. 2017; :func:`colondepth.eval.pose_metrics.snippet_pose_errors`): the model's pose network through
  :func:`colondepth.recon.poses.load_pose_estimator` (what ``reconstruct --poses predicted`` uses), OpenCV
  essential-matrix VO (:func:`colondepth.eval.classical_vo.classical_vo`) and zero motion.

Both are measured before and after fine-tuning.  Targets of the self-supervised work: abs_rel improves by at
least 15 % relative; pose-network ATE at most half of OpenCV VO's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "selfsup_real.json"
FINETUNE_FRAMES = range(0, 250)
TEST_FRAMES = range(250, 381)
SNIPPET = 5
SNIPPET_STRIDE = 4


def pose_scores(seq, frames, estimator, snippet: int = SNIPPET, stride: int = SNIPPET_STRIDE) -> dict:
    """ATE / RPE over ``snippet``-frame windows of ``frames`` for a pose estimator, OpenCV VO and zero motion.

    ``estimator(rgb_prev, rgb_cur, rgb_next) -> prev_from_cur`` (or ``None``: only the baselines).
    """
    from colondepth.eval.classical_vo import classical_vo
    from colondepth.eval.pose_metrics import chain_relative_poses, snippet_pose_errors, summarize

    frames = list(frames)
    errs = {"pose_network": [], "opencv_vo": [], "zero_motion": []}
    vo_failures = 0
    for s in range(0, len(frames) - snippet + 1, stride):
        idx = frames[s:s + snippet]
        gt = seq.world_from_cam[idx]
        rgbs = [seq.rgb(i) for i in idx]
        if estimator is not None:
            traj = [np.eye(4)]
            for k in range(1, snippet):
                nxt = rgbs[k + 1] if k + 1 < snippet else None
                traj.append(traj[-1] @ estimator(rgbs[k - 1], rgbs[k], nxt))
            errs["pose_network"].append(snippet_pose_errors(np.stack(traj), gt))
        vo = classical_vo(rgbs, seq.intrinsics.K, seq.fov_mask)
        vo_failures += len(vo.failures)
        errs["opencv_vo"].append(snippet_pose_errors(chain_relative_poses(vo.next_from_prev), gt))
        errs["zero_motion"].append(snippet_pose_errors(np.tile(np.eye(4), (snippet, 1, 1)), gt))
    out = {k: summarize(v) for k, v in errs.items() if v}
    out["opencv_vo"]["failed_pairs"] = vo_failures
    out["units"] = "SfM units (the SfM trajectory has no metric scale); per-snippet scale-aligned ATE"
    return out


def score_model(checkpoint, root: Path, frames, max_frames) -> dict:
    from bench_transfer import score_sinus

    from colondepth.errors import UserError
    from colondepth.infer.predictor import DepthPredictor
    from colondepth.recon.poses import load_pose_estimator

    predictor = DepthPredictor.from_checkpoint(checkpoint, device="cpu")
    depth = score_sinus(root, predictor, max_frames, 8, frames=frames)
    try:
        estimator, pose_note = load_pose_estimator(checkpoint, device="cpu"), None
    except UserError as exc:
        estimator, pose_note = None, str(exc)
    from colondepth.datasets import sinus_sfm

    seq = sinus_sfm.read_sequence(root)
    sel = list(frames)[: max_frames] if max_frames else list(frames)
    pose = pose_scores(seq, sel, estimator)
    if pose_note:
        pose["pose_network_missing"] = pose_note
    return {"depth": {m: depth[m]["pooled"] for m in ("model", "physics", "constant")},
            "depth_frames": depth["frames"], "depth_points": depth["num_points"], "pose": pose}


def frames_folder(root: Path, work: Path, frames) -> tuple[Path, Path]:
    """``(folder, intrinsics.yaml)``: the sinus video's ``frames`` as links in ``work/finetune_frames`` (a frame
    folder the product reads) and its pinhole camera as an intrinsics file."""
    import yaml

    from colondepth.datasets import sinus_sfm

    seq = sinus_sfm.read_sequence(root)
    src = work / "finetune_frames"
    src.mkdir(parents=True, exist_ok=True)
    files = sorted((root / "rgb").glob("*.jpg"))
    for f in frames:
        link = src / files[f].name
        if not link.exists():
            link.symlink_to(files[f].resolve())
    k = seq.intrinsics
    (work / "intrinsics.yaml").write_text(yaml.safe_dump(
        {"width": k.size.width, "height": k.size.height, "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}))
    return src, work / "intrinsics.yaml"


def model_id(checkpoint) -> str:
    """The first 12 hex digits of a checkpoint file's SHA-256: run folders are keyed by it, so a run of another
    starting model (e.g. a new default model) is never resumed or reused."""
    import hashlib

    return hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:12]


def sinus_root(shared_data) -> Path:
    """``SHARED/sinus_sfm_sample`` of ``--shared-data``, or exit with a one-line message naming the fix."""
    root = (Path(shared_data) if shared_data else Path("missing")) / "sinus_sfm_sample"
    if not root.is_dir():
        raise SystemExit(f"{root}: not found; pass --shared-data with the folder holding sinus_sfm_sample/")
    return root


def finetune(checkpoint, root: Path, work: Path, steps: int, frames, options=()) -> tuple[Path, float]:
    """Fine-tune ``checkpoint`` with ``colondepth finetune`` on ``frames`` (its defaults, plus the command-line
    ``options``, e.g. ``["--seed", "1"]``); ``(final.pt, seconds)``."""
    from colondepth import cli

    src, k_yaml = frames_folder(root, work, frames)
    run = work / "run"
    argv = ["finetune", "--init", str(checkpoint), "--video", str(src), "--intrinsics", str(k_yaml),
            "--out", str(run), "--steps", str(steps), "--no-progress", *options]
    if (run / "checkpoints" / "last.pt").is_file():
        argv.append("--resume")
    t0 = time.perf_counter()
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"colondepth {' '.join(argv)} failed with exit code {code}")
    return run / "checkpoints" / "final.pt", time.perf_counter() - t0


def main(argv=None) -> int:
    import torch

    from colondepth.resources import default_model_path, default_shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="model to start from (default: the shipped default model)")
    ap.add_argument("--steps", type=int, default=1000, help="fine-tuning steps (default 1000, finetune's default)")
    ap.add_argument("--no-finetune", action="store_true", help="only score the model as it is")
    ap.add_argument("--max-frames", type=int, default=None, help="at most this many test frames (a quick check)")
    ap.add_argument("--shared-data", type=Path, default=default_shared_data())
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".cache" / "selfsup_real",
                    help="run folders, one per starting checkpoint (its SHA-256, first 12 hex digits)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = sinus_root(args.shared_data)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_model_path()
    shown = os.path.relpath(checkpoint.resolve(), REPO) if args.checkpoint else "data/default_model.pt"
    doc = {"benchmark": "selfsup_real", "command": "python benchmarks/bench_selfsup_real.py " + " ".join(
               argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "checkpoint": shown, "finetune_frames": [FINETUNE_FRAMES[0], FINETUNE_FRAMES[-1]],
           "test_frames": [TEST_FRAMES[0], TEST_FRAMES[-1]], "snippet": SNIPPET, "snippet_stride": SNIPPET_STRIDE,
           "load_average_1min_start": os.getloadavg()[0]}
    print(f"scoring {shown} on test frames {TEST_FRAMES[0]}-{TEST_FRAMES[-1]}", flush=True)
    doc["before"] = score_model(checkpoint, root, TEST_FRAMES, args.max_frames)
    if not args.no_finetune:
        print(f"fine-tuning on frames {FINETUNE_FRAMES[0]}-{FINETUNE_FRAMES[-1]} ({args.steps} steps)", flush=True)
        tuned, seconds = finetune(checkpoint, root, args.work / model_id(checkpoint), args.steps, FINETUNE_FRAMES)
        doc["finetune"] = {"steps": args.steps, "seconds": round(seconds, 1),
                           "command": "colondepth finetune --init CKPT --video FRAMES_0_249 --intrinsics K.yaml "
                                      f"--steps {args.steps} (all other options at their defaults)"}
        doc["after"] = score_model(tuned, root, TEST_FRAMES, args.max_frames)
        b, a = doc["before"]["depth"]["model"]["abs_rel"], doc["after"]["depth"]["model"]["abs_rel"]
        doc["depth_relative_change"] = (a - b) / b
    final = doc.get("after", doc["before"])["pose"]
    if "pose_network" in final:
        doc["pose_ate_ratio_to_opencv_vo"] = final["pose_network"]["ate_mm"] / final["opencv_vo"]["ate_mm"]
    doc["targets"] = {
        "depth_improves_15_percent": None if "depth_relative_change" not in doc else bool(
            doc["depth_relative_change"] <= -0.15),
        "pose_ate_at_most_half_of_opencv_vo": None if "pose_ate_ratio_to_opencv_vo" not in doc else bool(
            doc["pose_ate_ratio_to_opencv_vo"] <= 0.5),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from colondepth.io import atomic_write_text

    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    for when in ("before", "after"):
        if when in doc:
            d, p = doc[when]["depth"], doc[when]["pose"]
            pn = p.get("pose_network", {}).get("ate_mm")
            print(f"{when}: abs_rel {d['model']['abs_rel']:.3f} (physics {d['physics']['abs_rel']:.3f}, constant "
                  f"{d['constant']['abs_rel']:.3f}); pose ATE network {pn if pn is None else round(pn, 4)}, "
                  f"OpenCV VO {p['opencv_vo']['ate_mm']:.4f}, zero motion {p['zero_motion']['ate_mm']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
