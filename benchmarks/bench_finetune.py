#!/usr/bin/env python
"""Self-supervised fine-tuning benchmark; prints markdown tables and writes ``results_<variant>.json``.

Question: does photometric fine-tuning on the *unlabelled* frames of a domain-shifted set lower depth
error against the supervised-only model?  And how does the learned pose compare with a classical
two-view baseline?

1. Generate synthetic data: supervised levels (default L1, L2) and a shifted level never used in
   supervised training (default L5): one dataset of "unlabelled" sequences (its depth is never read
   during fine-tuning) and one held-out evaluation dataset (another seed).
2. Train a small depth model on the supervised levels (``colondepth train``'s runner).
3. Fine-tune it on the unlabelled shifted frames (``kind: self_supervised``, same runner).
4. Depth on the held-out shifted sequences: abs_rel (metric, and median-scaled per frame), before/after.
5. Pose on 5-frame snippets of the held-out sequences: ATE (scale-aligned per snippet) and RPE of the
   fine-tuned pose network against OpenCV essential-matrix VO (:mod:`colondepth.eval.classical_vo`);
   trajectories of the first snippet written as TUM files for ``evo``.
6. ``--real``: also fine-tune on the real video sample (``../shared/data``); without ground truth, score
   both models on the held-out real snippets with label-free checks (:func:`real_proxies`: photometric
   error under shared poses, rim/centre depth ratio, depth-darkness correlation, share of changed pixels)
   and save a before | after | photometric-error preview to ``WORK/finetune_real_<variant>.png``.

Stage options of the fine-tuning (``--anchor``, ``--freeze-bn``, ``--automask``, ``--rehearsal``, ...) name a
*variant*; every variant reuses the supervised model of ``--work`` and gets its own run folders.  Options left
out take the ``self_supervised`` stage defaults of ``colondepth.train.config`` (the ``colondepth finetune``
defaults); every variant's resolved stage settings are recorded with its numbers.

Results: ``WORK/results_<variant>.json`` and, merged by variant name, ``--json`` (default
``benchmarks/results/finetune.json``, committed; the README's fine-tuning tables are checked against it).

    .venv/bin/python benchmarks/bench_finetune.py --quick          # a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_finetune.py --quick --real --freeze-bn yes --anchor 0.1 --automask no
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_depth import repo_relative  # noqa: E402  (one owner of the repo-relative paths of committed JSON)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def generate(level_recipe: str, out: Path, sequences: int, frames: int, size: int, seed: int) -> Path:
    from colondepth.synth.generate import generate_dataset

    if (out / "dataset.yaml").is_file():
        return out
    _log(f"generating {out.name}: {sequences} x {frames} frames at {size}px")
    return generate_dataset(REPO / "synth" / level_recipe, out, sequences=sequences, frames=frames,
                            size=(size, size), seed=seed, progress=False, video=False)


def model_section(size: int) -> dict:
    return {"input_size": [size, size], "min_depth_mm": 1.0, "max_depth_mm": 200.0,
            "encoder_channels": [16, 24, 32, 48], "decoder_channels": [8, 16, 24, 32], "num_scales": 3,
            "norm": "batch"}


def run_curriculum(cur: dict, out: Path, data_dirs: list[Path]) -> Path:
    import yaml

    from colondepth.io import atomic_write_text
    from colondepth.train.curriculum import RunOptions, train_curriculum

    final = out / "checkpoints" / "final.pt"
    if final.is_file():
        return final
    path = out.parent / f"{out.name}.curriculum.yaml"
    atomic_write_text(path, yaml.safe_dump(cur, sort_keys=False))
    train_curriculum(RunOptions(curriculum_path=path, out_dir=out, data_dirs=data_dirs,
                                resume=(out / "checkpoints" / "last.pt").is_file(), command="bench_finetune",
                                progress=True))
    return final


#: Resolved settings of the fine-tuning stage recorded with every variant's numbers (what "defaults" meant).
STAGE_KEYS = ("batch_size", "optimizer", "lr_schedule", "frame_skip", "loss", "min_reprojection", "automask",
              "brightness_alignment", "translation_normalisation", "anchor_weight", "anchor_decay_steps",
              "freeze_encoder_steps", "freeze_batchnorm", "rehearsal")


def resolved_stage(cur: dict) -> dict:
    """The fine-tuning stage of ``cur`` with every schema default filled in (the keys of :data:`STAGE_KEYS`)."""
    from colondepth.train.config import parse_curriculum, resolved_dict

    stage = resolved_dict(parse_curriculum(cur, "bench_finetune"))["stages"][0]
    return {k: stage[k] for k in STAGE_KEYS if k in stage}


def write_results_json(path: Path, tag: str, results: dict) -> None:
    """Merge ``results`` into ``path`` under ``variants.<tag>`` (other variants' numbers are kept)."""
    from colondepth.io import atomic_write_text

    doc = json.loads(path.read_text()) if path.is_file() else {}
    doc["description"] = ("benchmarks/bench_finetune.py: a model trained on synthetic L1+L2, fine-tuned "
                          "self-supervised on unlabelled L5 frames (and on the real video sample with --real); "
                          "one entry per fine-tuning variant")
    doc.setdefault("variants", {})[tag] = repo_relative(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def depth_eval(ckpt: Path, dataset: Path, max_frames: int) -> dict:
    import torch

    from colondepth.datasets.registry import open_sequences
    from colondepth.eval.depth_metrics import frame_depth_metrics, mean_metrics
    from colondepth.train.checkpoint import load_checkpoint

    net, _, _ = load_checkpoint(ckpt)
    seqs = open_sequences(dataset, "colondepth")
    frames = [(s, i) for s in seqs for i in range(s.num_frames)]
    pick = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    rows = {"none": [], "median": []}
    with torch.no_grad():
        for k in pick:
            s, i = frames[k]
            rgb = torch.from_numpy(s.rgb(i)).permute(2, 0, 1)[None].float() / 255.0
            pred = net.predict_depth(rgb)[0, 0].numpy()
            gt = s.depth_mm(i)
            for align in rows:
                m = frame_depth_metrics(pred, gt, align=align, fov_mask=s.fov_mask)
                if m is not None:
                    rows[align].append(m.metrics)
    return {"frames": int(len(pick)), "metric": mean_metrics(rows["none"]), "median_scaled": mean_metrics(rows["median"])}


def pose_eval(pose_path: Path, dataset: Path, size: int, work: Path, snippet: int = 5, max_snippets: int = 40) -> dict:
    import torch

    from colondepth.conventions import ImageSize
    from colondepth.datasets.clips import _resize_rgb
    from colondepth.datasets.registry import open_sequences
    from colondepth.datasets.tum import write_tum
    from colondepth.eval.classical_vo import classical_vo
    from colondepth.eval.pose_metrics import chain_relative_poses, snippet_pose_errors, summarize
    from colondepth.recon.poses import pose_network

    pose_net, _, _, _ = pose_network(pose_path)
    seqs = open_sequences(dataset, "colondepth")
    net_err, vo_err, still_err, vo_fail, wrote = [], [], [], 0, False
    sz = ImageSize(size, size)
    for seq in seqs:
        for start in range(0, seq.num_frames - snippet + 1, snippet - 1):
            if len(net_err) >= max_snippets:
                break
            idx = list(range(start, start + snippet))
            gt = seq.world_from_cam[idx]
            full = [seq.rgb(i) for i in idx]
            small = [_resize_rgb(f, sz).astype(np.float32) / 255.0 for f in full]
            # chain 3-frame windows: window centred on k gives cam_{k-1}_from_cam_k and cam_{k+1}_from_cam_k
            next_from_prev = []
            with torch.no_grad():
                for k in range(1, snippet - 1):
                    t = torch.from_numpy(small[k]).permute(2, 0, 1)[None]
                    s = torch.from_numpy(np.stack([small[k - 1], small[k + 1]])).permute(0, 3, 1, 2)[None]
                    P = pose_net(t, s).src_from_tgt[0].double().numpy()
                    if k == 1:
                        next_from_prev.append(np.linalg.inv(P[0]))  # cam_1_from_cam_0
                    next_from_prev.append(P[1])  # cam_{k+1}_from_cam_k
            traj_net = chain_relative_poses(np.stack(next_from_prev))
            vo = classical_vo(full, seq.intrinsics.K, seq.fov_mask)
            vo_fail += len(vo.failures)
            traj_vo = chain_relative_poses(vo.next_from_prev)
            net_err.append(snippet_pose_errors(traj_net, gt))
            still_err.append(snippet_pose_errors(np.tile(np.eye(4), (snippet, 1, 1)), gt))
            vo_err.append(snippet_pose_errors(traj_vo, gt))
            if not wrote:
                ts = np.asarray(idx, dtype=np.float64)
                gt0 = np.linalg.solve(gt[0], gt)
                write_tum(work / "traj_gt.txt", ts, gt0)
                write_tum(work / "traj_posenet.txt", ts, _scaled(traj_net, net_err[-1].scale))
                write_tum(work / "traj_classical.txt", ts, _scaled(traj_vo, vo_err[-1].scale))
                wrote = True
    return {"posenet": summarize(net_err), "classical": {**summarize(vo_err), "failed_pairs": vo_fail},
            "zero_motion": summarize(still_err)}


def _scaled(traj: np.ndarray, s: float) -> np.ndarray:
    out = traj.copy()
    out[:, :3, 3] *= s
    return out


RIM_PX = 6  # width (px at the 64 px network size) of the field-of-view ring used by the rim/centre proxy
CHANGE_THRESHOLD = 0.25  # a pixel "changed" when its median-scaled depth moved by more than 25 %


def real_heldout(video: Path, size: int):
    """Held-out snippets of the real video: every VAL_EVERY-th snippet, exactly the stage's validation split."""
    import warnings

    from colondepth.conventions import ImageSize
    from colondepth.datasets.clips import SnippetDataset, sequence_snippets
    from colondepth.datasets.video import read_video, select_clips
    from colondepth.train.selfsup import SNIPPET_LENGTH, VAL_EVERY

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = read_video(video, crop=(0, 0, 192, 192), min_frames=SNIPPET_LENGTH)
    snippets = sequence_snippets([seq], [select_clips(seq, min_clip_frames=SNIPPET_LENGTH)], SNIPPET_LENGTH)
    val = [s for i, s in enumerate(snippets) if i % VAL_EVERY == VAL_EVERY - 1]
    return SnippetDataset([seq], val, ImageSize(size, size))


def real_proxies(ckpts: dict, pose_path: Path, data) -> dict:
    """Label-free checks of depth maps on held-out real snippets, per model in ``ckpts`` (name -> checkpoint).

    - ``photometric``: mean photometric error (0.85 SSIM + 0.15 L1, per-pixel minimum over the two sources,
      brightness alignment, FOV and specular masks, no auto-mask) of the full-resolution depth, every model
      warped with the *same* poses (``pose_path``'s network, translations normalised to its stored norm).
    - ``rim_over_centre``: median depth in the outer ``RIM_PX`` ring of the FOV / median depth in the rest
      (the reported failure made the rim the farthest region: a large ratio).
    - ``dark_far``: Spearman correlation between depth and darkness (grey level blurred, negated) in the FOV:
      the lumen is the dark region and should be far (positive).
    - ``changed``: fraction of FOV pixels whose median-scaled depth differs by > CHANGE_THRESHOLD from the
      first model's.
    """
    import torch
    import torch.nn.functional as F
    from scipy.stats import spearmanr

    from colondepth.losses.photometric import PhotometricOptions, normalize_translation, photometric_loss
    from colondepth.train.checkpoint import load_checkpoint
    from colondepth.recon.poses import pose_network

    pose_net, t_norm, _, _ = pose_network(pose_path)
    nets = {k: load_checkpoint(p)[0].eval() for k, p in ckpts.items()}
    opts = PhotometricOptions(automask=False)
    out = {k: {"photometric": [], "rim_over_centre": [], "dark_far": [], "changed": []} for k in nets}
    ref_name = next(iter(nets))
    with torch.no_grad():
        for i in range(len(data)):
            b = data[i]
            tgt, src, K, fov = b["target"][None], b["sources"][None], b["K"][None], b["fov_mask"][None]
            pose = pose_net(tgt, src).src_from_tgt
            if t_norm is not None:
                pose = normalize_translation(pose, t_norm)
            fov_np = fov[0, 0].numpy()
            inner = F.max_pool2d((~fov).float(), 2 * RIM_PX + 1, stride=1, padding=RIM_PX)[0, 0].numpy() < 0.5
            rim = fov_np & ~inner
            grey = F.avg_pool2d(tgt.mean(1, keepdim=True), 5, stride=1, padding=2)[0, 0].numpy()
            ref = None
            for k, net in nets.items():
                d = net(net.normalise(tgt))[0]
                photo, _ = photometric_loss(tgt, src, [d], pose, K, fov_mask=fov, options=opts)
                dn = d[0, 0].numpy()
                r = out[k]
                r["photometric"].append(float(photo))
                r["rim_over_centre"].append(float(np.median(dn[rim]) / np.median(dn[inner])))
                r["dark_far"].append(float(spearmanr(dn[fov_np], -grey[fov_np])[0]))
                dm = dn / np.median(dn[fov_np])
                if k == ref_name:
                    ref = dm
                r["changed"].append(float(np.mean(np.abs(dm[fov_np] / ref[fov_np] - 1.0) > CHANGE_THRESHOLD)))
    return {k: {m: float(np.mean(v)) for m, v in r.items()} | {"snippets": len(data)} for k, r in out.items()}


def batchnorm_check(ckpt: Path, data, n: int = 16) -> dict:
    """Median predicted depth (mm) of ``ckpt`` on the first ``n`` held-out real targets, with BatchNorm in eval
    mode (running statistics) and in train mode (statistics of this batch): a large gap means fine-tuning in
    train mode starts from a different depth scale than the one the pose warm-up saw."""
    import torch

    from colondepth.train.checkpoint import load_checkpoint

    net = load_checkpoint(ckpt)[0]
    x = torch.stack([data[i]["target"] for i in range(min(n, len(data)))])
    with torch.no_grad():
        net.eval()
        d_eval = float(net(net.normalise(x))[0].median())
        net.train()
        d_train = float(net(net.normalise(x))[0].median())
    return {"median_depth_eval_mm": d_eval, "median_depth_train_mode_mm": d_train, "frames": int(len(x))}


def real_figure(ckpts: dict, pose_path: Path, video: Path, out_png: Path, size: int, frames=(20, 120, 250, 380),
                show_frames: bool = False) -> None:
    """Rows: [frame,] each model's depth (mm), each model's photometric error map (same poses).

    The video frames themselves are left out unless ``show_frames``: the sample video's licence does not allow
    redistributing it, and the figures in docs/ are shared with the repository.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from colondepth.conventions import ImageSize
    from colondepth.datasets.clips import Snippet, SnippetDataset
    from colondepth.datasets.video import read_video
    from colondepth.losses.photometric import (PhotometricOptions, _per_source_errors, normalize_translation,
                                               photometric_loss)
    from colondepth.train.checkpoint import load_checkpoint
    from colondepth.recon.poses import pose_network

    seq = read_video(video, crop=(0, 0, 192, 192), max_frames=max(frames) + 2)
    ds = SnippetDataset([seq], [Snippet(0, (f - 1, f, f + 1), 1) for f in frames], ImageSize(size, size))
    pose_net, t_norm, _, _ = pose_network(pose_path)
    nets = {k: load_checkpoint(p)[0].eval() for k, p in ckpts.items()}
    top = 1 if show_frames else 0
    rows = top + 2 * len(nets)
    fig, ax = plt.subplots(rows, len(frames), figsize=(2.2 * len(frames), 2.15 * rows), squeeze=False)
    opts = PhotometricOptions(automask=False)
    for c, f in enumerate(frames):
        rgb = seq.rgb(f)
        if show_frames:
            ax[0, c].imshow(rgb)
            ax[0, c].set_title(f"frame {f}", fontsize=8)
        b = ds[c]
        tgt, src, K, fov = b["target"][None], b["sources"][None], b["K"][None], b["fov_mask"][None]
        with torch.no_grad():
            pose = pose_net(tgt, src).src_from_tgt
            if t_norm is not None:
                pose = normalize_translation(pose, t_norm)
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
            for r, (k, net) in enumerate(nets.items()):
                d = net.predict_depth(x)[0, 0].numpy()
                d = np.where(seq.fov_mask, d, np.nan)
                im = ax[top + r, c].imshow(d, cmap="magma_r")
                fig.colorbar(im, ax=ax[top + r, c], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
                ds_small = net(net.normalise(tgt))[0]
                _, info = photometric_loss(tgt, src, [ds_small], pose, K, fov_mask=fov, options=opts)
                err, valid, _ = _per_source_errors(tgt, src, ds_small, pose, K, opts, info["mask"],
                                                   source_fov=fov)
                err = torch.where(valid, err, torch.full_like(err, np.inf)).min(1)[0]
                e = np.where(info["mask"][0, 0].numpy(), err[0].numpy(), np.nan)
                im = ax[top + len(nets) + r, c].imshow(e, cmap="viridis", vmin=0, vmax=0.15)
                fig.colorbar(im, ax=ax[top + len(nets) + r, c], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    for r in range(rows):
        for c in range(len(frames)):
            ax[r, c].axis("off")
    for r, k in enumerate(nets):
        ax[top + r, 0].set_title(f"{k}: depth (mm)" + ("" if show_frames else f" — frames {', '.join(map(str, frames))}"),
                                 fontsize=8, loc="left")
        ax[top + len(nets) + r, 0].set_title(f"{k}: photometric error", fontsize=8, loc="left")
    fig.tight_layout()
    from colondepth.io import atomic_path

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    out_png.chmod(0o644)  # temporary files are created 0600
    plt.close(fig)


def reprojection_error(depth_i, depth_j, K, world_from_i, world_from_j) -> float:
    """Median relative depth error of frame i's depth re-projected into frame j (nearest pixel)."""
    H, W = depth_i.shape
    v, u = np.mgrid[:H, :W]
    m = depth_i > 0
    z = depth_i[m]
    pts = np.stack([(u[m] - K[0, 2]) / K[0, 0] * z, (v[m] - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)])
    pj = np.linalg.solve(world_from_j, world_from_i) @ pts
    front = pj[2] > 1.0
    uj = np.round(K[0, 0] * pj[0] / np.where(front, pj[2], 1) + K[0, 2]).astype(int)
    vj = np.round(K[1, 1] * pj[1] / np.where(front, pj[2], 1) + K[1, 2]).astype(int)
    ok = front & (uj >= 0) & (uj < W) & (vj >= 0) & (vj < H)
    dj = depth_j[vj[ok], uj[ok]]
    good = dj > 0
    return float(np.median(np.abs(pj[2][ok][good] - dj[good]) / dj[good]))


def simcol3d_check() -> None:
    """Print the SimCol3D conversion evidence: re-projection errors for the reader's poses and intrinsics,
    the unconverted Unity poses, the row-major cam.txt reading, and a focal-length sweep."""
    from colondepth.datasets import simcol3d

    root = REPO.parent / "shared" / "data" / "simcol3d_sample"
    seq = simcol3d.read_sequences(root)[0]
    D = [seq.depth_mm(i).astype(np.float64) for i in range(seq.num_frames)]
    T = seq.world_from_cam
    S = simcol3d.UNITY_FLIP_Y
    raw = S @ T @ S
    K = seq.intrinsics.K
    pairs = [(0, 9), (9, 0), (0, 4), (5, 9)]
    K_row = np.array([[227.60416, 0, 227.60416], [0, 237.5, 237.5], [0, 0, 1]])
    print("\n### SimCol3D: median relative depth error of re-projected frames\n")
    print("| poses / intrinsics | " + " | ".join(f"{i}->{j}" for i, j in pairs) + " | mean |")
    print("|---|" + "---|" * (len(pairs) + 1))
    for name, KK, TT in (("reader (S P S, fx=fy=227.6, cx=cy=237.5)", K, T), ("unconverted Unity P", K, raw),
                         ("reader poses, row-major cam.txt", K_row, T)):
        e = [reprojection_error(D[i], D[j], KK, TT[i], TT[j]) for i, j in pairs]
        print(f"| {name} | " + " | ".join(f"{100 * x:.2f} %" for x in e) + f" | {100 * np.mean(e):.2f} % |")
    print("\nfocal-length sweep (cx = cy = 237.5), mean over the pairs:")
    for f in (200.0, 215.0, 227.60416, 240.0, 255.0):
        KK = np.array([[f, 0, 237.5], [0, f, 237.5], [0, 0, 1]])
        e = np.mean([reprojection_error(D[i], D[j], KK, T[i], T[j]) for i, j in pairs])
        print(f"  fx = fy = {f:g}: {100 * e:.2f} %")


def video_selection_check() -> None:
    """Print frame-selection statistics of the shared real video (crop 0 0 192 192, default thresholds)."""
    import warnings

    from colondepth.datasets.video import frame_motion_stats, read_video, select_clips

    video = REPO.parent / "shared" / "data" / "real_colon_video" / "colonoscopy_side_by_side.mp4"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = read_video(video, crop=(0, 0, 192, 192))
    stats = frame_motion_stats(seq)
    clips = select_clips(seq)
    h = stats["hist"]
    print(f"frames {seq.num_frames}; FOV mask covers {100 * seq.fov_mask.mean():.1f} % of the crop")
    print(f"neighbour mean abs grey difference: median {np.median(stats['mad']):.2f}, "
          f"{100 * np.mean(stats['mad'] < 1.0):.0f} % of pairs below 1.0")
    print(f"histogram distance: median {np.median(h):.4f}, max {h.max():.4f} ({h.max() / np.median(h):.1f}x median)")
    print(f"clips {len(clips)}, kept frames {[len(c) for c in clips]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny data and short training (a few minutes)")
    ap.add_argument("--work", type=Path, default=None, help="output folder (default out/bench_finetune/<mode>)")
    ap.add_argument("--size", type=int, default=64, help="image and network size in px (default 64)")
    ap.add_argument("--sup-steps", type=int, default=None, help="supervised steps (quick 300, full 3000)")
    ap.add_argument("--ft-steps", type=int, default=None, help="fine-tuning steps (quick 300, full 2000)")
    ap.add_argument("--shifted", default="L5_tortuous.yaml", help="recipe of the shifted level")
    ap.add_argument("--real", action="store_true", help="also fine-tune on the real video and save previews")
    ap.add_argument("--figure-frames", action="store_true",
                    help="include the video frames in the preview (for local use: the sample's licence forbids "
                         "redistributing them)")
    ap.add_argument("--anchor", type=float, default=None, metavar="W",
                    help="stage anchor_weight (scale-invariant log-depth anchor to the supervised model)")
    ap.add_argument("--anchor-decay-steps", type=int, default=None, metavar="N", help="stage anchor_decay_steps")
    ap.add_argument("--freeze-bn", choices=("yes", "no"), default=None,
                    help="stage freeze_batchnorm (keep the supervised BatchNorm statistics)")
    ap.add_argument("--freeze-encoder-steps", type=int, default=None, metavar="N", help="stage freeze_encoder_steps")
    ap.add_argument("--rehearsal", type=float, default=None, metavar="W",
                    help="stage rehearsal weight: supervised L1+L2 batches mixed into every joint step")
    ap.add_argument("--automask", choices=("yes", "no"), default=None, help="stage automask")
    ap.add_argument("--ft-lr", type=float, default=1e-4, help="fine-tuning learning rate (default 1e-4)")
    ap.add_argument("--tag", default=None,
                    help="name of this fine-tuning variant (run folders run_ft_<tag>, run_real_<tag>; the "
                         "supervised model in --work is shared); default: built from the options")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "finetune.json",
                    help="results file the variant is merged into (default benchmarks/results/finetune.json)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine more threads spin and run "
                         "~50x slower; raise it on an idle machine)")
    ap.add_argument("--simcol3d", action="store_true",
                    help="only print the SimCol3D pose/intrinsics conversion evidence (needs ../shared/data)")
    ap.add_argument("--video-stats", action="store_true",
                    help="only print frame-selection statistics of the shared real video")
    args = ap.parse_args()
    if args.video_stats:
        video_selection_check()
        return 0
    if args.simcol3d:
        simcol3d_check()
        return 0

    import torch

    torch.set_num_threads(args.threads)

    mode = "quick" if args.quick else "full"
    work = (args.work or REPO / "out" / "bench_finetune" / mode).resolve()
    work.mkdir(parents=True, exist_ok=True)
    n_seq, n_frames = (3, 24) if args.quick else (8, 64)
    sup_steps = args.sup_steps or (300 if args.quick else 3000)
    ft_steps = args.ft_steps or (300 if args.quick else 2000)
    size = args.size
    t0 = time.time()
    _log(f"load average {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}")

    d1 = generate("L1_straight.yaml", work / "data" / "L1", n_seq, n_frames, size, seed=0)
    d2 = generate("L2_curved.yaml", work / "data" / "L2", n_seq, n_frames, size, seed=0)
    unl = generate(args.shifted, work / "data" / "shifted_unlabelled", n_seq, n_frames, size, seed=11)
    ev = generate(args.shifted, work / "data" / "shifted_eval", 2, n_frames, size, seed=23)

    sup_cur = {
        "name": "bench_sup", "seed": 0, "model": model_section(size),
        "checkpoint": {"every_steps": 100, "log_every_steps": 20},
        "stages": [{"name": "sup", "kind": "supervised", "levels": ["L1", "L2"], "budget": {"steps": sup_steps},
                    "batch_size": 8, "optimizer": {"lr": 2e-3}, "lr_schedule": {"kind": "cosine"}}],
    }
    _log(f"supervised training: {sup_steps} steps on L1+L2")
    sup = run_curriculum(sup_cur, work / "run_sup", [d1, d2])

    extra: dict = {}
    if args.anchor is not None:
        extra["anchor_weight"] = args.anchor
    if args.anchor_decay_steps is not None:
        extra["anchor_decay_steps"] = args.anchor_decay_steps
    if args.freeze_bn is not None:
        extra["freeze_batchnorm"] = args.freeze_bn == "yes"
    if args.freeze_encoder_steps is not None:
        extra["freeze_encoder_steps"] = args.freeze_encoder_steps
    if args.rehearsal is not None:
        extra["rehearsal"] = {"levels": ["L1", "L2"], "weight": args.rehearsal, "batch_size": 4}
    if args.automask is not None:
        extra["automask"] = args.automask == "yes"
    if args.ft_lr != 1e-4:
        extra["optimizer"] = {"lr": args.ft_lr}
    tag = args.tag or ("_".join(f"{k}-{v if not isinstance(v, dict) else v['weight']}" for k, v in extra.items())
                       or "defaults")
    sup_data = [d1, d2] if args.rehearsal else []

    def ft_cur(name, source, fmt, crop=None):
        st = {"name": "ft", "kind": "self_supervised", "init_from": str(sup),
              "sources": [{"path": str(source), "format": fmt}], "budget": {"steps": ft_steps}, "batch_size": 4,
              "optimizer": {"lr": 1e-4}, "lr_schedule": {"kind": "constant"}, **extra}
        if crop:
            st["crop"] = list(crop)
        return {"name": name, "seed": 0, "model": model_section(size),
                "checkpoint": {"every_steps": 100, "log_every_steps": 20}, "stages": [st]}

    _log(f"self-supervised fine-tuning ({tag}): {ft_steps} steps on the unlabelled shifted frames")
    tuned = run_curriculum(ft_cur("bench_ft", unl, "colondepth"), work / f"run_ft_{tag}", sup_data)

    _log("depth evaluation on held-out shifted sequences")
    before = depth_eval(sup, ev, 96)
    after = depth_eval(tuned, ev, 96)
    _log("pose evaluation (5-frame snippets)")
    pose = pose_eval(work / f"run_ft_{tag}" / "checkpoints" / "final.pt", ev, size, work)

    results = {"mode": mode, "size": size, "sup_steps": sup_steps, "ft_steps": ft_steps, "variant": tag,
               "stage_options": extra, "shifted_recipe": args.shifted,
               "depth": {"supervised_only": before, "fine_tuned": after},
               "pose": pose, "seconds": None, "load_average": os.getloadavg()[0]}

    if args.real:
        video = REPO.parent / "shared" / "data" / "real_colon_video" / "colonoscopy_side_by_side.mp4"
        if video.is_file():
            _log(f"fine-tuning on the real video sample ({tag}): {ft_steps} steps")
            real_dir = work / f"run_real_{tag}"
            real = run_curriculum(ft_cur("bench_real", video, "video", crop=(0, 0, 192, 192)), real_dir, sup_data)
            pose_path = real_dir / "checkpoints" / "final.pt"  # the bundle holds the pose network
            ckpts = {"supervised": sup, "fine-tuned": real}
            _log("label-free checks on held-out real snippets")
            held = real_heldout(video, size)
            results["real"] = real_proxies(ckpts, pose_path, held)
            results["real_batchnorm"] = batchnorm_check(sup, held)
            png = work / f"finetune_real_{tag}.png"
            real_figure(ckpts, pose_path, video, png, size, show_frames=args.figure_frames)
            results["real_preview"] = str(png)
        else:
            _log(f"{video} not found: skipping --real")
    results["seconds"] = round(time.time() - t0, 1)
    results["command"] = " ".join(["python", "benchmarks/bench_finetune.py", *sys.argv[1:]])
    results["threads"] = torch.get_num_threads()
    results["stage"] = resolved_stage(ft_cur("bench_ft", unl, "colondepth"))

    (work / f"results_{tag}.json").write_text(json.dumps(results, indent=2))
    write_results_json(args.json, tag, results)
    b, a = before, after
    print(f"\n### Depth on held-out {args.shifted} (never used in supervised training), {b['frames']} frames\n")
    print("| model | abs_rel (metric) | abs_rel (median-scaled) | delta1 (median-scaled) |")
    print("|---|---|---|---|")
    for name, r in (("supervised only (L1+L2)", b), (f"+ self-supervised fine-tuning ({ft_steps} steps)", a)):
        print(f"| {name} | {r['metric']['abs_rel']:.3f} | {r['median_scaled']['abs_rel']:.3f} | "
              f"{r['median_scaled']['delta1']:.3f} |")
    print(f"\n### Pose on 5-frame snippets ({pose['posenet']['snippets']} snippets; scale aligned per snippet)\n")
    print("| method | ATE (mm) | RPE trans (mm) | RPE rot (deg) |")
    print("|---|---|---|---|")
    for name, r in (("pose network (fine-tuned)", pose["posenet"]), ("OpenCV essential matrix VO", pose["classical"]),
                    ("zero motion (reference)", pose["zero_motion"])):
        print(f"| {name} | {r['ate_mm']:.3f} ± {r['ate_mm_std']:.3f} | {r['rpe_trans_mm']:.3f} | {r['rpe_rot_deg']:.2f} |")
    if "real" in results:
        print(f"\n### Real video, {results['real']['supervised']['snippets']} held-out snippets (no ground truth)\n")
        print("| model | photometric error | rim / centre depth | dark-far correlation | changed > 25 % |")
        print("|---|---|---|---|---|")
        for name, r in results["real"].items():
            print(f"| {name} | {r['photometric']:.4f} | {r['rim_over_centre']:.3f} | {r['dark_far']:.3f} | "
                  f"{100 * r['changed']:.1f} % |")
        bn = results["real_batchnorm"]
        print(f"\nsupervised model on {bn['frames']} held-out real frames: median depth "
              f"{bn['median_depth_eval_mm']:.1f} mm (BatchNorm eval mode), {bn['median_depth_train_mode_mm']:.1f} mm "
              f"(train mode)")
        print(f"\npreview: {results['real_preview']}")
    print(f"\nvariant {tag}: {json.dumps(extra)}")
    print(f"\nclassical VO failed pairs: {pose['classical']['failed_pairs']}; total {results['seconds']} s; "
          f"results in {work / f'results_{tag}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
