"""Depth from two frames against shape from shading, alone and fused (DepthNet, docs/depthnet.md).

    python benchmarks/bench_depthnet.py [--checkpoint CKPT] [--readme]
    python benchmarks/bench_depthnet.py --quick                  # a minute: the whole pipeline, tiny settings

Scores the model's three methods (:mod:`colondepth.infer.two_frame`: ``sfs``, ``two-frame``, ``fused``), the
camera motion of the last two either from the ground truth (synthetic poses; the sinus video's SfM trajectory,
whose scale does not matter after median scaling) or from the model's pose network (what ``predict`` uses), on

- held-out synthetic L3 and L5 sequences (``bench_transfer``'s set, seed 9001: never trained on), every pixel
  with ground-truth depth, median-scaled and metric abs_rel (mean over frames);
- the real sinus video's test frames 110-380 at the SfM points, median-scaled abs_rel pooled over the points.

Writes ``benchmarks/results/depthnet.json``, error maps of a few frames per set (``docs/img/depthnet_errors.png``:
frame, each method's relative error, the two-frame confidence) and, with ``--readme``, the README table between
``<!-- depthnet-table:start -->`` and ``<!-- depthnet-table:end -->``.  Speed: ``predict --method fused``'s path
(:func:`colondepth.infer.two_frame.iter_depths` with the pose network) on 256x256 frames, frames/s.

Target (issue): fused at least 10 % lower abs_rel than the better single method on held-out L5 and on the
sinus video; ``predict --method fused`` >= 15 frames/s at 256x256.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_OUT = REPO / "benchmarks" / "results" / "depthnet.json"
ERROR_MAPS = REPO / "docs" / "img" / "depthnet_errors.png"
README = REPO / "README.md"
TABLE_START = "<!-- depthnet-table:start -->"
TABLE_END = "<!-- depthnet-table:end -->"
METHODS = ("sfs", "two-frame", "fused")
LEVELS = ("L3", "L5")
MODES = {"full": dict(heldout=dict(sequences=2, frames=24, size=None), sinus_stride=1, sinus_frames=None,
                      speed_frames=40),
         "quick": dict(heldout=dict(sequences=1, frames=6, size=32), sinus_stride=5, sinus_frames=16, speed_frames=6)}


def _sequence_results(rgbs, method, predictor, bundle, intrinsics, seq, poses, estimator):
    from colondepth.infer.two_frame import iter_depths

    view = predictor.video_view(seq, intrinsics)
    sfs = lambda batch: predictor.predict_batch(batch, intrinsics=intrinsics, view=view)  # noqa: E731
    return list(iter_depths(iter(rgbs), method, sfs, bundle.two_frame, intrinsics, world_from_cam=poses,
                            pose_estimator=estimator))


#: Confidence bins of :func:`cue_analysis` (quantiles of the two-frame confidence over the scored pixels).
CONFIDENCE_BINS = 3
#: Constant log-depth weights of the two-frame depth tried by :func:`cue_analysis`'s upper bound.
GLOBAL_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


def _median_log_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``log(pred * s / gt)`` with the frame's median scale (:func:`colondepth.eval.alignment.align_depth`)."""
    from colondepth.eval.alignment import align_depth

    return np.log(align_depth(pred, gt, "median")[0] / gt)


def cue_analysis(frames: list) -> dict:
    """Where each cue wins, and why fusing them gains little or much: per frame ``(sfs, two_frame, gt,
    confidence)`` 1-D arrays over the scored pixels (or SfM points), depths > 0.

    Each method is median-scaled per frame.  Returns ``error_log_correlation`` (Pearson r of the two
    methods' log errors pooled over pixels: near 1, their errors sit in the same places and no per-pixel
    weighting can cancel them), ``by_confidence`` (pixels split at quantiles of the two-frame confidence:
    abs_rel of each method and the share of pixels where the two-frame depth is the closer one), and
    ``best_constant_weight`` (the log-depth weight of the two-frame depth, among :data:`GLOBAL_WEIGHTS`,
    that fuses best on these very pixels, its abs_rel and gain over the better single method: an upper
    bound for any constant weighting, chosen on the scored data, not a method).
    """
    es, et, conf, fused = [], [], [], {w: [] for w in GLOBAL_WEIGHTS}
    for sfs, two, gt, c in frames:
        sfs, two, gt, c = (np.asarray(a, dtype=np.float64).ravel() for a in (sfs, two, gt, c))
        ok = (gt > 0) & (sfs > 0) & (two > 0) & np.isfinite(sfs) & np.isfinite(two) & np.isfinite(c)
        if ok.sum() < 2:
            continue
        es.append(_median_log_error(sfs[ok], gt[ok]))
        et.append(_median_log_error(two[ok], gt[ok]))
        conf.append(c[ok])
        for w in GLOBAL_WEIGHTS:  # the fused map, median-scaled as a method of its own
            fused[w].append(_median_log_error(np.exp((1.0 - w) * np.log(sfs[ok]) + w * np.log(two[ok])), gt[ok]))
    if not es:
        return {"pixels": 0}
    es, et, conf = np.concatenate(es), np.concatenate(et), np.concatenate(conf)
    abs_rel = lambda e: float(np.mean(np.abs(np.expm1(e))))  # noqa: E731
    edges = np.quantile(conf, np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1))
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, CONFIDENCE_BINS - 1)
    bins = []
    for b in range(CONFIDENCE_BINS):
        m = idx == b
        if m.any():
            bins.append({"confidence": [float(edges[b]), float(edges[b + 1])], "pixels": int(m.sum()),
                         "sfs_abs_rel": abs_rel(es[m]), "two_frame_abs_rel": abs_rel(et[m]),
                         "two_frame_closer": float(np.mean(np.abs(et[m]) < np.abs(es[m])))})
    fused = {w: abs_rel(np.concatenate(v)) for w, v in fused.items()}
    w_best = min(fused, key=fused.get)
    single = min(abs_rel(es), abs_rel(et))
    r = float(np.corrcoef(es, et)[0, 1]) if es.std() > 0 and et.std() > 0 else float("nan")
    return {"pixels": int(len(es)), "sfs_abs_rel": abs_rel(es), "two_frame_abs_rel": abs_rel(et),
            "error_log_correlation": r, "two_frame_closer": float(np.mean(np.abs(et) < np.abs(es))),
            "by_confidence": bins,
            "best_constant_weight": {"weight": w_best, "abs_rel": fused[w_best],
                                     "gain_over_better_single": 1.0 - fused[w_best] / single}}


def score_synthetic(seqs, predictor, bundle, estimator) -> tuple[dict, list, dict]:
    """``{pose_source: {method: {median, metric}}}`` on dense ground truth, error-map samples and
    :func:`cue_analysis` of shading against the two-frame depth with ground-truth motion."""
    from colondepth.eval.depth_metrics import frame_depth_metrics, mean_metrics

    out: dict = {}
    samples = []
    kept: dict = {}  # (sequence, frame) -> {"sfs": depth, "two-frame": (depth, confidence)}
    for source in ("ground_truth", "pose_network"):
        for method in METHODS:
            if method == "sfs" and source == "pose_network":
                continue
            per = {"median": [], "none": []}
            for seq in seqs:
                rgbs = [seq.rgb(i) for i in range(len(seq))]
                poses = np.asarray(seq.world_from_cam) if source == "ground_truth" else None
                res = _sequence_results(rgbs, method, predictor, bundle, seq.intrinsics, seq, poses,
                                        None if poses is not None else estimator)
                for r in res:
                    gt = seq.depth_mm(r.index)
                    for align in per:
                        m = frame_depth_metrics(r.depth, gt, align=align, fov_mask=seq.fov_mask)
                        if m is not None:
                            per[align].append(m.metrics)
                    if source == "ground_truth" and r.index == len(seq) // 2 and seq is seqs[0]:
                        samples.append((seq.level, method, rgbs[r.index], r.depth, gt, r.confidence))
                    if source == "ground_truth" and method != "fused":
                        kept.setdefault((id(seq), r.index), {})[method] = (r.depth, r.confidence, gt, seq.fov_mask)
            key = "sfs" if method == "sfs" else f"{method} ({source.replace('_', ' ')})"
            out[key] = {"median": mean_metrics(per["median"]), "metric": mean_metrics(per["none"]),
                        "frames": len(per["median"])}
    pairs = []
    for both in kept.values():
        if "sfs" in both and "two-frame" in both:
            (sfs, _, gt, fov), (two, conf, _, _) = both["sfs"], both["two-frame"]
            ok = (gt > 0) if fov is None else (gt > 0) & np.asarray(fov, bool)
            pairs.append((sfs[ok], two[ok], gt[ok], conf[ok]))
    return out, samples, cue_analysis(pairs)


def score_sinus(root: Path, predictor, bundle, estimator, stride: int, count=None, first=None,
                sources=("ground_truth", "pose_network")) -> dict:
    """Median-scaled abs_rel at the SfM points of the test frames (``first`` (default 110) to the end, or the
    first ``count`` of them; every ``stride``-th scored, every frame streamed so partners are the video's own
    neighbours); the motion of the two-frame methods from each of ``sources``."""
    from bench_transfer import SINUS_TEST_FIRST_FRAME

    from colondepth.datasets import sinus_sfm
    from colondepth.eval.sparse_depth import SparseScores, sample_depth

    seq = sinus_sfm.read_sequence(root)
    frames = list(range(SINUS_TEST_FIRST_FRAME if first is None else first, len(seq)))[:count]
    rgbs = [seq.rgb(f) for f in frames]
    out = {}
    # the SfM trajectory has no metric scale: bring it to millimetres with the ratio of the shading depth to the
    # SfM depth at the points (median over the frames), so the adaptive baseline sees millimetres
    sfs_res = _sequence_results(rgbs, "sfs", predictor, bundle, seq.intrinsics, seq, None, None)
    ratios = []
    for r in sfs_res:
        pts = sinus_sfm.sparse_points(seq, frames[r.index])
        if len(pts.z):
            ratios.append(np.median(sample_depth(r.depth, pts.u, pts.v)) / np.median(pts.z))
    sfm_to_mm = float(np.median(ratios)) if ratios else 1.0
    sfm_poses = np.asarray(seq.world_from_cam, dtype=np.float64)[frames].copy()
    sfm_poses[:, :3, 3] *= sfm_to_mm
    pairs = []
    for source in sources:
        for method in METHODS:
            if method == "sfs" and source == "pose_network" and "ground_truth" in sources:
                continue
            poses = sfm_poses if source == "ground_truth" else None
            res = sfs_res if method == "sfs" else _sequence_results(
                rgbs, method, predictor, bundle, seq.intrinsics, seq, poses, None if poses is not None else estimator)
            if method == "two-frame" and source == "ground_truth":
                for a, b in zip(sfs_res, res):
                    pts = sinus_sfm.sparse_points(seq, frames[b.index])
                    if b.index % stride == 0 and len(pts.z) and b.confidence is not None:
                        pairs.append((sample_depth(a.depth, pts.u, pts.v), sample_depth(b.depth, pts.u, pts.v),
                                      pts.z, sample_depth(b.confidence, pts.u, pts.v)))
            sc = SparseScores(align="median")
            for r in res:
                if r.index % stride:
                    continue
                pts = sinus_sfm.sparse_points(seq, frames[r.index])
                if len(pts.z):
                    sc.add(sample_depth(r.depth, pts.u, pts.v), pts.z)
            key = "sfs" if method == "sfs" else f"{method} ({source.replace('_', ' ')})"
            out[key] = {"median": sc.summary()["pooled"], "frames": sc.num_frames}
    out["sfm_to_mm"] = sfm_to_mm
    if pairs:
        out["cues"] = cue_analysis(pairs)
    return out


#: Self-supervised re-training of the two-frame and pose networks on the sinus video: fine-tune on these frames
#: (images and intrinsics only), score on bench_selfsup_real's test frames.
SELFSUP_FRAMES = range(0, 250)
SELFSUP_TEST_FIRST = 250


def selfsup_sinus(root: Path, checkpoint: str, work: Path, steps: int, threads: int, count=None) -> dict:
    """Fine-tune the checkpoint's two-frame and pose networks (``colondepth finetune --two-frame``) on
    frames 0-249 of the sinus video, and score sfs / two-frame / fused (pose-network motion) on frames 250-380
    before and after (median-scaled abs_rel at the SfM points)."""
    from bench_selfsup_real import frames_folder

    from colondepth import cli
    from colondepth.infer.predictor import DepthPredictor
    from colondepth.models.bundle import load_bundle
    from colondepth.recon.poses import load_pose_estimator

    frames, k_yaml = frames_folder(root, work, SELFSUP_FRAMES)
    run = work / "run"
    argv = ["--threads", str(threads), "finetune", "--two-frame", "--no-progress", "--init",
            str(Path(checkpoint).resolve()), "--video", str(frames), "--intrinsics", str(k_yaml),
            "--steps", str(int(steps)), "--out", str(run)]
    if (run / "checkpoints" / "last.pt").is_file():
        argv.append("--resume")
    timing = work / "seconds.txt"  # the training time, kept beside a finished run that later calls reuse
    if not (run / "checkpoints" / "final.pt").is_file():
        t0 = time.perf_counter()
        if cli.main(argv) != 0:
            raise SystemExit(f"colondepth {' '.join(argv)} failed")
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    seconds = float(timing.read_text()) if timing.is_file() else None
    out = {"finetune_frames": [SELFSUP_FRAMES[0], SELFSUP_FRAMES[-1]], "test_first_frame": SELFSUP_TEST_FIRST,
           "steps": int(steps), "seconds": seconds}
    for when, ck in (("before", checkpoint), ("after", str(run / "checkpoints" / "final.pt"))):
        res = score_sinus(root, DepthPredictor.from_checkpoint(ck, device="cpu"), load_bundle(ck, with_pose=False),
                          load_pose_estimator(ck, device="cpu"), 1, count, first=SELFSUP_TEST_FIRST,
                          sources=("pose_network",))
        out[when] = {k: v for k, v in res.items() if isinstance(v, dict)}
    return out


def measure_speed(checkpoint, frames: int, threads: int) -> dict:
    """``predict --method fused``'s path on ``frames`` synthetic 256x256 frames: frames/s (after one warm-up)."""
    import torch

    from colondepth.conventions import ImageSize
    from colondepth.geometry.camera import PinholeIntrinsics
    from colondepth.infer.predictor import DepthPredictor
    from colondepth.infer.two_frame import iter_depths
    from colondepth.models.bundle import load_bundle
    from colondepth.recon.poses import load_pose_estimator
    from colondepth.resources import default_model_path

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rgbs = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(frames)]
    K = PinholeIntrinsics.from_fov(ImageSize(256, 256), 120.0)
    pred = DepthPredictor.from_checkpoint(checkpoint, device="cpu")
    bundle = load_bundle(checkpoint or default_model_path(), with_pose=False)
    est = load_pose_estimator(checkpoint, device="cpu")
    view = pred.video_view(np.stack(rgbs[:8]), K)
    sfs = lambda batch: pred.predict_batch(batch, intrinsics=K, view=view)  # noqa: E731
    out = {}
    for method in METHODS:
        list(iter_depths(iter(rgbs[:3]), method, sfs, bundle.two_frame, K, pose_estimator=est))  # warm-up
        t = time.perf_counter()
        list(iter_depths(iter(rgbs), method, sfs, bundle.two_frame, K, pose_estimator=est))
        out[method] = frames / (time.perf_counter() - t)
    return {"frames_per_s": out, "size": [256, 256], "threads": threads, "frames": frames}


def save_error_maps(samples: list, path: Path) -> None:
    """One row per (level, method): frame, relative error |pred - gt| / gt after median scaling (0-0.5), and the
    two-frame confidence."""
    import cv2

    rows = []
    for level, method, rgb, depth, gt, conf in samples:
        ok = gt > 0
        s = np.median(gt[ok]) / np.median(depth[ok])
        err = np.where(ok, np.abs(depth * s - gt) / np.maximum(gt, 1e-6), 0)
        e8 = (np.clip(err / 0.5, 0, 1) * 255).astype(np.uint8)
        err_rgb = cv2.cvtColor(cv2.applyColorMap(e8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
        c = np.zeros_like(gt) if conf is None else conf
        c_rgb = cv2.cvtColor(cv2.applyColorMap((np.clip(c, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS),
                             cv2.COLOR_BGR2RGB)
        row = np.concatenate([rgb[..., :3], err_rgb, c_rgb], 1)
        label = f"{level} {method}"
        cv2.putText(row, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    import imageio.v3 as iio

    iio.imwrite(path, np.concatenate(rows, 0))


def target_rows(doc: dict) -> list:
    """Per set: better single method (sfs or two-frame, ground-truth motion), fused, and the relative gain."""
    rows = []
    for name in ("synthetic_L5", "sinus"):
        res = doc["sets"].get(name)
        if not res:
            continue
        for source in ("ground truth", "pose network"):
            two = f"two-frame ({source})"
            fused = f"fused ({source})"
            if two not in res or fused not in res:
                continue
            singles = {"sfs": res["sfs"]["median"]["abs_rel"], two: res[two]["median"]["abs_rel"]}
            best = min(singles, key=singles.get)
            f = res[fused]["median"]["abs_rel"]
            gain = 1.0 - f / singles[best]
            rows.append({"set": name, "motion": source, "better_single": best, "better_single_abs_rel": singles[best],
                         "fused_abs_rel": f, "relative_gain": gain, "met": gain >= 0.10})
    return rows


def render_table(doc: dict) -> str:
    lines = ["| set | " + " | ".join(doc["columns"]) + " |", "|---|" + "---:|" * len(doc["columns"])]
    for name, res in doc["sets"].items():
        res = {k: v for k, v in res.items() if isinstance(v, dict)}
        cells = [f"{res[c]['median']['abs_rel']:.3f}" if c in res else "–" for c in doc["columns"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| target: fused >= 10 % below the better single method | motion | better single | fused | gain | met |")
    lines.append("|---|---|---:|---:|---:|---|")
    for r in doc["targets"]:
        lines.append(f"| {r['set']} | {r['motion']} | {r['better_single']} {r['better_single_abs_rel']:.3f} | "
                     f"{r['fused_abs_rel']:.3f} | {100 * r['relative_gain']:+.1f} % | {'yes' if r['met'] else '**no**'} |")
    cues = {k: v for k, v in (doc.get("cues") or {}).items() if v.get("pixels")}
    if cues:
        lines.append("")
        lines.append("| where and why (ground-truth motion, pixels pooled) | log-error correlation | two-frame closer | "
                     "two-frame closer, lowest / highest third of its confidence | best constant weight: gain |")
        lines.append("|---|---:|---:|---:|---:|")
        for name, c in cues.items():
            lo, hi = c["by_confidence"][0], c["by_confidence"][-1]
            b = c["best_constant_weight"]
            lines.append(f"| {name} | {c['error_log_correlation']:.2f} | {100 * c['two_frame_closer']:.0f} % | "
                         f"{100 * lo['two_frame_closer']:.0f} % / {100 * hi['two_frame_closer']:.0f} % | "
                         f"w={b['weight']:.1f}: {100 * b['gain_over_better_single']:+.1f} % |")
    ss = doc.get("sinus_selfsup")
    if ss:
        cols = [c for c in ("sfs", "two-frame (pose network)", "fused (pose network)") if c in ss["before"]]
        lines.append("")
        lines.append(f"| sinus frames {ss['test_first_frame']}-380, two-frame and pose networks re-trained "
                     f"self-supervised on frames {ss['finetune_frames'][0]}-{ss['finetune_frames'][1]} "
                     f"({ss['steps']} steps) | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---:|" * len(cols))
        for when in ("before", "after"):
            lines.append(f"| {when} | " + " | ".join(f"{ss[when][c]['median']['abs_rel']:.3f}" for c in cols) + " |")
    sp = doc.get("speed")
    if sp:
        fps = sp["frames_per_s"]
        lines.append("")
        lines.append(f"Speed (256x256, {sp['threads']} torch thread(s), motion from the pose network, frames streamed "
                     f"as `predict` does): sfs {fps['sfs']:.1f}, "
                     f"two-frame {fps['two-frame']:.1f}, fused {fps['fused']:.1f} frames/s (target fused >= 15).")
    return "\n".join(lines) + "\n"


def update_readme(doc: dict, readme: Path | None = None) -> bool:
    """Write the table between this benchmark's README markers; False when they are missing."""
    from bench_transfer import write_marked_table

    return write_marked_table(readme or README, TABLE_START, TABLE_END, render_table(doc).rstrip("\n")) is not None


def main(argv=None) -> int:
    import torch

    from bench_transfer import heldout_levels

    from colondepth.infer.predictor import DepthPredictor
    from colondepth.io import atomic_write_text
    from colondepth.models.bundle import load_bundle
    from colondepth.recon.poses import load_pose_estimator
    from colondepth.resources import default_model_path, default_shared_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="model with a two-frame network (default: the shipped model)")
    ap.add_argument("--shared-data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--maps", type=Path, default=ERROR_MAPS, help="error-map image (PNG)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    ap.add_argument("--speed-only", action="store_true",
                    help="measure the speed again (run it alone) and update it in the existing --out JSON")
    ap.add_argument("--readme", action="store_true")
    ap.add_argument("--selfsup-steps", type=int, default=0, metavar="N",
                    help="also re-train the two-frame and pose networks self-supervised on sinus frames 0-249 for N "
                         "steps and score frames 250-380 before and after (default 0: skip)")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".cache" / "depthnet")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    mode = MODES["quick" if args.quick else "full"]
    if args.speed_only:
        if not args.out.is_file():
            raise SystemExit(f"{args.out}: no results to update; run without --speed-only first")
        doc = json.loads(args.out.read_text())
        doc["speed"] = measure_speed(args.checkpoint, mode["speed_frames"], args.threads)
        doc["speed"]["command"] = "python benchmarks/bench_depthnet.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
        print(render_table(doc))
        if args.readme:
            print("README table " + ("updated" if update_readme(doc) else "markers not found"))
        return 0
    ckpt = args.checkpoint or str(default_model_path())
    bundle = load_bundle(ckpt, with_pose=False)
    if bundle.two_frame is None:
        raise SystemExit(f"{ckpt}: has no two-frame network; train one (curricula/two_frame.yaml) and export it "
                         "into the model (export_default_model.py --two-frame)")
    predictor = DepthPredictor.from_checkpoint(ckpt, device="cpu")
    estimator = load_pose_estimator(ckpt, device="cpu")
    ho = argparse.Namespace(synthetic=None, seed=9001, cache=str(REPO / "benchmarks" / ".cache" / "transfer"))
    held, prov = heldout_levels(ho, dict(mode["heldout"]), only=LEVELS)
    doc = {"benchmark": "depthnet",
           "command": "python benchmarks/bench_depthnet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "quick": bool(args.quick), "checkpoint": Path(ckpt).name, "heldout": prov, "sets": {}}
    samples = []
    doc["cues"] = {}
    for level in LEVELS:
        res, smp, cues = score_synthetic(held[level], predictor, bundle, estimator)
        doc["sets"][f"synthetic_{level}"] = res
        doc["cues"][f"synthetic_{level}"] = cues
        samples += smp
    shared = args.shared_data or default_shared_data()
    if shared is not None and (Path(shared) / "sinus_sfm_sample").is_dir():
        doc["sets"]["sinus"] = score_sinus(Path(shared) / "sinus_sfm_sample", predictor, bundle, estimator,
                                           mode["sinus_stride"], mode["sinus_frames"])
        if "cues" in doc["sets"]["sinus"]:
            doc["cues"]["sinus"] = doc["sets"]["sinus"].pop("cues")
    if args.selfsup_steps > 0 and "sinus" in doc["sets"]:
        doc["sinus_selfsup"] = selfsup_sinus(Path(shared) / "sinus_sfm_sample", ckpt, args.work, args.selfsup_steps,
                                             args.threads, mode["sinus_frames"])
    doc["columns"] = ["sfs"] + [f"{m} ({s})" for s in ("ground truth", "pose network") for m in METHODS[1:]]
    doc["targets"] = target_rows(doc)
    if not args.no_speed:
        doc["speed"] = measure_speed(args.checkpoint, mode["speed_frames"], args.threads)
    elif args.out.is_file():  # --no-speed keeps the speed measured earlier (alone, with --speed-only)
        prev = json.loads(args.out.read_text())
        if "speed" in prev and prev.get("checkpoint") == doc["checkpoint"] and not args.quick:
            doc["speed"] = prev["speed"]
    save_error_maps(samples, args.maps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(render_table(doc))
    print(f"wrote {args.out} and {args.maps}")
    if args.readme:
        print("README table " + ("updated" if update_readme(doc) else "markers not found"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
