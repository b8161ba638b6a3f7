"""What the review app shows, found and loaded under one root folder (no Streamlit here).

The app (``colondepth/app/review.py``, started by ``colondepth app``) browses a single *root* folder and
never reads outside it.  This module holds the pure, testable parts:

- path safety: :func:`resolve_root`, :func:`safe_path` (symlinks are resolved before the check);
- discovery: :func:`find_datasets`, :func:`find_runs`, :func:`find_prediction_dirs`,
  :func:`find_reconstructions`;
- loading: :func:`load_sequences` (the package reader :func:`colondepth.datasets.synthetic.read_sequences`),
  :func:`sequence_fps`, :func:`frame_stem`, :func:`read_metrics`, :func:`read_curriculum`, :func:`load_prediction`, :func:`load_reconstruction`;
- depth scores: :func:`score_prediction`, :func:`frame_metrics`, :func:`sequence_metrics`,
  :func:`prediction_sequence_metrics` (frames of :func:`scored_frames`), :func:`score_sequence_with_model`, all through :mod:`colondepth.eval` (the bilinear resize of
  ``colondepth evaluate``, :func:`colondepth.eval.depth_metrics.frame_depth_metrics`,
  :func:`colondepth.eval.evaluate.evaluate_sequences`), so the app's numbers are ``colondepth evaluate``'s;
- pictures: :func:`colorize`, :func:`colorbar_image`, :func:`depth_display_range`, :func:`mesh_figure`,
  :func:`decimate_mesh`, :func:`export_mesh_bytes`;
- the New-video page: :func:`check_upload`, :func:`save_upload`, :func:`probe_video`,
  :func:`reconstruct_command`, :func:`run_reconstruct` (follows the command's progress events),
  :func:`reconstruct_fraction`, :func:`error_line`; fine-tuning on the video first:
  :func:`finetune_command`, :func:`run_finetune` (follows the run's ``metrics.jsonl``),
  :func:`finetune_step`, :func:`finetune_fraction`, :func:`finetune_finished`, :func:`finetuned_checkpoint`.

Units: depth in millimetres (z-depth, 0 = invalid), meshes and trajectories in the world frame in
millimetres, trajectories ``world_from_cam`` in TUM format (see :mod:`colondepth.conventions`).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from colondepth.errors import UserError
from colondepth.eval.evaluate import resize_depth  # noqa: F401  (re-exported: the evaluate command's resize)
from colondepth.progress import ProgressEvent

#: Environment variable that passes the root folder to the Streamlit script.
ROOT_ENV = "COLONDEPTH_APP_ROOT"
#: Root used when neither ``--root`` nor :data:`ROOT_ENV` is given.
DEFAULT_ROOT = "out"
#: Largest video the New-video page accepts (MB); also passed to Streamlit's ``server.maxUploadSize``.
MAX_UPLOAD_MB = 500
#: File endings accepted as videos.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
#: Folders never searched (virtual envs, VCS, caches, partial atomic outputs).
_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".cache"}
#: Colour map of depth pictures: near = red, far = blue, as the previews of ``colondepth predict``.
DEPTH_CMAP = "turbo_r"
#: Colour map of error pictures (black = no error).
ERROR_CMAP = "magma"
#: Faces kept in the browser's 3D view by default.
DEFAULT_MAX_FACES = 60_000


# --------------------------------------------------------------------------------------------
# Root and path safety
# --------------------------------------------------------------------------------------------
def resolve_root(root: str | os.PathLike) -> Path:
    """The root folder as an absolute, symlink-free path.

    Raises
    ------
    UserError
        ``root`` does not exist or is not a folder.
    """
    p = Path(root).expanduser()
    if not p.is_dir():
        raise UserError(
            f"{p}: app root folder not found; create it or pass --root with a folder holding datasets, "
            "runs and reconstructions (default ./out)"
        )
    return p.resolve()


def safe_path(root: str | os.PathLike, candidate: str | os.PathLike) -> Path:
    """Resolve ``candidate`` (absolute, or relative to ``root``) and refuse it outside ``root``.

    Symlinks are resolved first, so a link inside the root that points outside is refused too.

    Raises
    ------
    UserError
        The resolved path is not ``root`` itself or below it.

    >>> import tempfile; r = Path(tempfile.mkdtemp())
    >>> safe_path(r, "a/b") == r.resolve() / "a" / "b"
    True
    """
    root_p = Path(root).resolve()
    c = Path(candidate).expanduser()
    if not c.is_absolute():
        c = root_p / c
    resolved = c.resolve()
    if resolved != root_p and root_p not in resolved.parents:
        raise UserError(f"{candidate}: outside the app root {root_p}; pick a path inside it")
    return resolved


def relative_name(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` relative to ``root`` as a POSIX string (``"."`` for the root itself)."""
    rel = Path(path).resolve().relative_to(Path(root).resolve())
    return rel.as_posix() or "."


def _walk_dirs(root: Path, max_depth: int) -> Iterable[Path]:
    """Folders below ``root`` (itself included) up to ``max_depth`` levels, sorted, staying inside root."""
    root_r = root.resolve()
    stack = [(root_r, 0)]
    seen: set[Path] = set()
    while stack:
        d, depth = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        yield d
        if depth >= max_depth:
            continue
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:
            continue
        for child in reversed(children):
            if child.name in _SKIP_DIRS or child.name.startswith("."):
                continue
            real = child.resolve()
            if real != root_r and root_r not in real.parents:
                continue  # a symlink leaving the root
            stack.append((real, depth + 1))


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """A synthetic dataset (``dataset.yaml`` + ``seq_*/``) or a lone sequence folder under the root."""

    path: Path
    name: str
    sequence_dirs: tuple[Path, ...]


def _is_sequence_dir(d: Path) -> bool:
    return (d / "meta.yaml").is_file() and (d / "rgb").is_dir()


def find_datasets(root: str | os.PathLike, max_depth: int = 4) -> list[DatasetInfo]:
    """Datasets under ``root``: folders with ``dataset.yaml``, and sequence folders outside any dataset.

    Returns them sorted by their path relative to the root (used as ``name``).
    """
    root_p = resolve_root(root)
    found: list[DatasetInfo] = []
    claimed: set[Path] = set()
    dirs = list(_walk_dirs(root_p, max_depth))
    for d in dirs:
        if (d / "dataset.yaml").is_file():
            seqs = tuple(sorted(p.resolve() for p in d.iterdir() if p.is_dir() and _is_sequence_dir(p)))
            claimed.update(seqs)
            found.append(DatasetInfo(d, relative_name(root_p, d), seqs))
    for d in dirs:
        if _is_sequence_dir(d) and d not in claimed:
            found.append(DatasetInfo(d, relative_name(root_p, d), (d,)))
    return sorted(found, key=lambda x: x.name)


def load_sequences(dataset: DatasetInfo) -> list:
    """The sequences of ``dataset`` as :class:`colondepth.datasets.base.Sequence` objects, sorted by name.

    Read by the package reader :func:`colondepth.datasets.synthetic.read_sequences` (the one
    ``colondepth evaluate`` and ``colondepth reconstruct`` use); ``extra["path"]`` is the sequence
    folder, ``extra["meta"]`` its validated ``meta.yaml`` and ``extra["frame_stems"]`` its frame names.

    Raises
    ------
    UserError
        A sequence folder is incomplete or its ``meta.yaml`` invalid (one line from the reader).
    """
    from colondepth.datasets.synthetic import read_sequences

    return sorted(read_sequences(dataset.path), key=lambda s: s.name)


def sequence_fps(seq, default: float = 10.0) -> float:
    """Frame rate of ``seq`` in frames/s (``meta.yaml``'s ``fps``), ``default`` when the reader has none."""
    meta = seq.extra.get("meta")
    fps = getattr(meta, "fps", None)
    return float(fps) if fps else float(default)


def frame_stem(seq, i: int) -> str:
    """File stem of frame ``i`` (``000012``), as prediction files are named ``<stem>_depth.npy``.

    From the reader's ``extra["frame_stems"]``; ``f"{i:06d}"`` for readers without file names.
    """
    stems = seq.extra.get("frame_stems")
    if stems and 0 <= i < len(stems):
        return stems[i]
    return f"{i:06d}"


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------
def find_prediction_dirs(root: str | os.PathLike, max_depth: int = 5) -> list[Path]:
    """Folders under ``root`` holding ``<stem>_depth.npy`` files (``colondepth predict`` outputs)."""
    root_p = resolve_root(root)
    return [d for d in _walk_dirs(root_p, max_depth) if any(d.glob("*_depth.npy"))]


def prediction_index(pred_dir: str | os.PathLike) -> dict[str, Path]:
    """``stem -> path`` of every ``<stem>_depth.npy`` in ``pred_dir``."""
    return {p.name[: -len("_depth.npy")]: p for p in sorted(Path(pred_dir).glob("*_depth.npy"))}


def load_prediction(path: str | os.PathLike) -> np.ndarray:
    """A predicted depth map ``(H, W) float32`` mm from ``<stem>_depth.npy``.

    Raises
    ------
    UserError
        The file is not a 2-D numeric array.
    """
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{p}: cannot read depth array ({exc}); rerun 'colondepth predict'") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{p}: expected an (H, W) depth array in mm, got shape {arr.shape}; rerun 'colondepth predict'")
    return arr.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Depth pictures and metrics
# --------------------------------------------------------------------------------------------
def colormap_lut(name: str = "turbo") -> np.ndarray:
    """``(256, 3) uint8`` lookup table of a matplotlib colour map."""
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def colorize(values: np.ndarray, vmin: float, vmax: float, cmap: str = "turbo",
             valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Map ``(H, W)`` values to ``(H, W, 3) uint8`` RGB through a 256-entry LUT; invalid pixels black.

    ``vmin`` maps to the first LUT entry and ``vmax`` to the last (values clipped in between).
    ``valid`` defaults to finite values.
    """
    v = np.asarray(values, dtype=np.float64)
    if valid is None:
        valid = np.isfinite(v)
    span = max(float(vmax) - float(vmin), 1e-12)
    idx = np.clip(np.round((np.nan_to_num(v) - float(vmin)) / span * 255.0), 0, 255).astype(np.uint8)
    out = colormap_lut(cmap)[idx]
    out[~valid] = 0
    return out


def colorbar_image(vmin: float, vmax: float, cmap: str = "turbo", label: str = "mm",
                   height: int = 256, width: int = 96, ticks: int = 5) -> np.ndarray:
    """A vertical colour bar ``(height, width, 3) uint8``: ``vmax`` at the top, tick labels in ``label`` units."""
    from PIL import Image, ImageDraw, ImageFont

    bar_w = 18
    top = bottom = 8
    h_bar = height - top - bottom
    ramp = np.linspace(1.0, 0.0, h_bar)[:, None] * np.ones((1, bar_w))
    img = np.full((height, width, 3), 255, np.uint8)
    img[top: top + h_bar, 4: 4 + bar_w] = colormap_lut(cmap)[np.round(ramp * 255).astype(int)]
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default(size=12)
    for k in range(ticks):
        frac = k / (ticks - 1)
        y = top + round((1.0 - frac) * (h_bar - 1))
        value = vmin + frac * (vmax - vmin)
        draw.line([(4 + bar_w, y), (8 + bar_w, y)], fill=(0, 0, 0))
        text = f"{value:.3g}" + (f" {label}" if k == ticks - 1 else "")
        draw.text((11 + bar_w, y - 7), text, fill=(0, 0, 0), font=font)
    return np.asarray(pil)


def upscale_nearest(img: np.ndarray, min_height: int) -> np.ndarray:
    """Repeat pixels by the smallest integer factor that makes the image at least ``min_height`` tall."""
    f = max(1, math.ceil(min_height / max(img.shape[0], 1)))
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1) if f > 1 else img


def depth_panel(values: np.ndarray, vmin: float, vmax: float, cmap: str = DEPTH_CMAP, label: str = "mm",
                valid: Optional[np.ndarray] = None, min_height: int = 256) -> np.ndarray:
    """Colour-mapped ``(H, W)`` values with a colour bar on the right, ``(H', W' + 96, 3) uint8``.

    Small images are upscaled (nearest) to at least ``min_height`` rows so the bar's labels fit.
    """
    img = upscale_nearest(colorize(values, vmin, vmax, cmap, valid), min_height)
    bar = colorbar_image(vmin, vmax, cmap, label, height=img.shape[0])
    return np.concatenate([img, bar], axis=1)


def depth_display_range(*depths_mm: Optional[np.ndarray], lo_pct: float = 2.0,
                        hi_pct: float = 98.0) -> tuple[float, float]:
    """Colour range ``(vmin, vmax)`` mm shared by several depth maps: percentiles of their valid pixels."""
    vals = [np.asarray(d, np.float64)[np.isfinite(d) & (np.asarray(d) > 0)] for d in depths_mm if d is not None]
    vals = [v for v in vals if v.size]
    if not vals:
        return 0.0, 1.0
    allv = np.concatenate(vals)
    lo, hi = np.percentile(allv, [lo_pct, hi_pct])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


@dataclass(frozen=True)
class FrameScore:
    """A prediction scored against one ground-truth frame (see :func:`score_prediction`).

    Attributes
    ----------
    pred_mm : (H, W) float32, the prediction resized to the ground truth's grid (mm, as predicted).
    error_mm : (H, W) float32, ``|s * pred - gt|`` in mm at the scored pixels, NaN elsewhere.
    valid : (H, W) bool, the scored pixels.
    metrics : dict or None, :data:`colondepth.eval.depth_metrics.DEPTH_METRICS` plus ``scale`` (the
        alignment factor ``s``) and ``num_valid``; None when no pixel can be scored.
    """

    pred_mm: np.ndarray
    error_mm: np.ndarray
    valid: np.ndarray
    metrics: Optional[dict]


def score_prediction(pred_mm: np.ndarray, gt_mm: np.ndarray, *, fov_mask: Optional[np.ndarray] = None,
                     align: str = "median") -> FrameScore:
    """Score a predicted depth map exactly as ``colondepth evaluate`` scores the model on that frame.

    The prediction is resized bilinearly to the ground truth's size
    (:func:`colondepth.eval.evaluate.resize_depth`), then selected, aligned, clamped and scored by
    :func:`colondepth.eval.depth_metrics.frame_depth_metrics` (the error map by
    :func:`~colondepth.eval.depth_metrics.depth_error_map`, from the same steps).

    Parameters
    ----------
    pred_mm : (h, w) float, predicted z-depth (mm; any positive unit with median alignment).
    gt_mm : (H, W) float, ground-truth z-depth in mm, 0 = invalid.
    fov_mask : (H, W) bool, optional; True inside the field of view (``Sequence.fov_mask``).
    align : ``"median"`` or ``"none"``.

    Raises
    ------
    ValueError
        The prediction is not finite, or (median alignment) its median is not positive, at valid pixels;
        ``fov_mask`` does not match the ground truth's shape.
    """
    from colondepth.conventions import ImageSize
    from colondepth.eval.depth_metrics import depth_error_map, frame_depth_metrics

    gt = np.asarray(gt_mm, np.float32)
    if gt.ndim != 2:
        raise ValueError(f"ground-truth depth must be (H, W), got shape {gt.shape}")
    pred = resize_depth(np.asarray(pred_mm, np.float32), ImageSize(*gt.shape))
    res = frame_depth_metrics(pred, gt, align=align, fov_mask=fov_mask)
    err, valid, _ = depth_error_map(pred, gt, align=align, fov_mask=fov_mask)
    metrics = None if res is None else {**res.metrics, "scale": res.scale, "num_valid": res.num_valid}
    return FrameScore(pred_mm=pred, error_mm=err, valid=valid, metrics=metrics)


def frame_metrics(pred_mm: np.ndarray, gt_mm: np.ndarray, *, fov_mask: Optional[np.ndarray] = None,
                  align: str = "median") -> Optional[dict]:
    """Depth metrics of one frame, ``None`` without valid pixels (:func:`score_prediction`'s ``metrics``)."""
    return score_prediction(pred_mm, gt_mm, fov_mask=fov_mask, align=align).metrics


def sequence_metrics(pairs: Iterable[tuple[np.ndarray, np.ndarray]], *, fov_mask: Optional[np.ndarray] = None,
                     align: str = "median") -> Optional[dict]:
    """Frame-averaged metrics over ``(pred_mm, gt_mm)`` pairs; ``None`` when no frame had valid pixels.

    Frames without a valid pixel are left out, and the others averaged with
    :func:`colondepth.eval.depth_metrics.mean_metrics`, as ``colondepth evaluate`` does.  Adds
    ``frames``: the number of frames averaged.
    """
    from colondepth.eval.depth_metrics import mean_metrics

    rows = [m for m in (frame_metrics(p, g, fov_mask=fov_mask, align=align) for p, g in pairs) if m is not None]
    if not rows:
        return None
    return {**mean_metrics(rows), "frames": len(rows)}


#: Frames scored per sequence at most (evenly spaced, as ``colondepth evaluate --max-frames``).
MAX_SCORED_FRAMES = 300


def scored_frames(seq, max_frames: int = MAX_SCORED_FRAMES) -> list[int]:
    """Indices of the frames of ``seq`` that whole-sequence scores use: those of
    ``colondepth evaluate --max-frames max_frames`` on this one sequence."""
    from colondepth.eval.evaluate import select_frames

    return [f for _, f in select_frames([seq.num_frames], max_frames)]


def prediction_sequence_metrics(seq, pred_dir: str | os.PathLike, max_frames: int = MAX_SCORED_FRAMES,
                                align: str = "median") -> Optional[dict]:
    """Frame-averaged metrics of the ``<stem>_depth.npy`` files of ``pred_dir`` against ``seq``'s ground truth.

    Scores the frames of :func:`scored_frames` that have a prediction file; ``None`` when none has
    a prediction or a valid pixel.
    """
    index = prediction_index(pred_dir)
    pairs = ((load_prediction(index[frame_stem(seq, k)]), seq.depth_mm(k))
             for k in scored_frames(seq, max_frames) if frame_stem(seq, k) in index)
    return sequence_metrics(pairs, fov_mask=seq.fov_mask, align=align)


def score_sequence_with_model(seq, predict_batch: Callable, max_frames: int = MAX_SCORED_FRAMES,
                              align: str = "median", batch_size: int = 8,
                              on_frames: Optional[Callable[[int, int], None]] = None, view="frame") -> dict:
    """Score a depth model on ``seq`` by running :func:`colondepth.eval.evaluate.evaluate_sequences`.

    The numbers are those of ``colondepth evaluate --data SEQ --max-frames max_frames --align align``
    (the model gets the sequence's camera and frames in batches of ``batch_size``, as there).

    Parameters
    ----------
    seq : Sequence with ground-truth depth.
    predict_batch : ``(B, H, W, 3) uint8 RGB, intrinsics= -> (B, h, w) float32`` depth in mm, e.g.
        :meth:`colondepth.infer.predictor.DepthPredictor.predict_batch`.
    on_frames : optional ``(frames_predicted, frames_total)`` callback, called after each batch.
    view : the crop ``predict_batch`` gets (``view=``), e.g. ``DepthPredictor.video_view(seq, seq.intrinsics)``
        as ``colondepth evaluate`` passes it; ``"frame"``: the predictor's per-frame default.

    Returns
    -------
    dict
        The model's frame-averaged metrics plus ``frames`` (frames averaged).
    """
    frames_total = len(scored_frames(seq, max_frames))
    done = 0

    def counted(rgbs, **kw):
        nonlocal done
        out = predict_batch(rgbs, **kw)
        done += len(rgbs)
        if on_frames is not None:
            on_frames(done, frames_total)
        return out

    from colondepth.eval.evaluate import evaluate_sequences

    report = evaluate_sequences([seq], counted, align=align, max_frames=max_frames, batch_size=batch_size,
                                progress=False, cameras=[seq.intrinsics], views=[view])
    summary = report.summary()
    return {**summary["metrics"]["model"], "frames": summary["num_frames"]}


# --------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------
def find_runs(root: str | os.PathLike, max_depth: int = 4) -> list[Path]:
    """Training-run folders under ``root`` (those holding ``metrics.jsonl``), sorted."""
    root_p = resolve_root(root)
    return [d for d in _walk_dirs(root_p, max_depth) if (d / "metrics.jsonl").is_file()]


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``RUN/metrics.jsonl``, one dict per logged step, in file order.

    A truncated last line (a run killed while writing) is ignored; any other bad line raises.
    Each record gets ``_index``: its position in the file, a monotone x axis across stages.

    Raises
    ------
    UserError
        A line other than the last is not a JSON object.
    """
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines()
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if lineno == len(lines):
                break
            raise UserError(f"{path}:{lineno}: not a JSON object; fix or delete the line") from None
        rec["_index"] = len(out)
        out.append(rec)
    return out


#: Record types of ``metrics.jsonl`` that hold curve points (others mark stage or run ends).
CURVE_RECORD_TYPES = ("train", "val")


def _curve_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("type", "train") in CURVE_RECORD_TYPES]


def metric_columns(records: list[dict]) -> list[str]:
    """Numeric fields to plot, losses and depth errors first (counters such as ``step`` are left out).

    Only records of type ``train`` / ``val`` (or without a ``type``) count.
    """
    skip = {"step", "global_step", "epoch", "_index", "time", "wall_time", "elapsed_s", "stage_index", "steps",
            "bad_evals", "best_val_loss"}
    names: dict[str, None] = {}
    for r in _curve_records(records):
        for k, v in r.items():
            if k in skip or isinstance(v, bool):
                continue
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                names.setdefault(k, None)

    def rank(name: str) -> int:
        for i, key in enumerate(("loss", "abs_rel", "rmse", "delta")):
            if key in name:
                return i
        return 9

    return sorted(names, key=rank)


def monitor_frame(records: list[dict]):
    """The forgetting monitor's records (``type: monitor``, :mod:`colondepth.train.monitor`) as a DataFrame with
    columns ``x`` (global step), ``set``, ``set_kind``, ``abs_rel_median_scaled`` and ``abs_rel`` (NaN for
    scale-free sets); empty when the run had no monitor."""
    import pandas as pd

    rows = [{"x": r.get("global_step", r.get("step")), "set": str(r["set"]), "set_kind": r.get("set_kind", ""),
             "abs_rel_median_scaled": r.get("abs_rel_median_scaled"),
             "abs_rel": float("nan") if r.get("abs_rel") is None else r["abs_rel"]}
            for r in records if r.get("type") == "monitor" and "set" in r]
    return pd.DataFrame(rows, columns=["x", "set", "set_kind", "abs_rel_median_scaled", "abs_rel"])


def metrics_frame(records: list[dict]):
    """The curve records as a pandas DataFrame with columns ``x`` (global step), ``stage`` and the metrics.

    ``x`` is ``global_step`` when logged; otherwise ``step`` plus the last step of earlier stages,
    so curves of consecutive stages continue instead of restarting at 0.
    """
    import pandas as pd

    df = pd.DataFrame.from_records(_curve_records(records))
    if df.empty:
        return pd.DataFrame(columns=["x", "stage"])
    if "stage" not in df:
        df["stage"] = "run"
    df["stage"] = df["stage"].astype(str)
    if "global_step" in df:
        df["x"] = df["global_step"]
    elif "step" in df:
        x = []
        offset = 0
        last_stage = None
        stage_max = 0
        for stage, step in zip(df["stage"], df["step"].fillna(0)):
            if stage != last_stage:
                offset += stage_max
                stage_max = 0
                last_stage = stage
            stage_max = max(stage_max, int(step))
            x.append(offset + int(step))
        df["x"] = x
    else:
        df["x"] = df["_index"]
    return df


def read_curriculum(run_dir: str | os.PathLike) -> list[dict]:
    """The stages of ``RUN/config.resolved.yaml`` as table rows: ``stage`` (index), ``name``, ``kind``,
    ``levels``, ``budget`` and ``promotion`` (the rule that ends the stage).

    ``levels`` and ``budget`` are shown as text (``L0, L1``; ``steps=200``).  Returns ``[]`` when the
    run has no resolved config.
    """
    from colondepth.io import load_yaml

    path = Path(run_dir) / "config.resolved.yaml"
    if not path.is_file():
        return []
    cfg = load_yaml(path, fix="rerun 'colondepth train' or restore the file") or {}
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a YAML mapping at the top level; rerun 'colondepth train'")
    stages = cfg.get("stages") or []
    rows = []
    for i, st in enumerate(stages):
        if not isinstance(st, dict):
            raise UserError(f"{path}: stages.{i} is not a mapping; regenerate the run's config")

        def fmt(v):
            if isinstance(v, dict):
                return ", ".join(f"{k}={v[k]}" for k in v if v[k] is not None)
            if isinstance(v, (list, tuple)):
                return ", ".join(str(x) for x in v)
            return "" if v is None else str(v)

        rows.append({"stage": i, "name": str(st.get("name", f"stage{i}")), "kind": fmt(st.get("kind")),
                     "levels": fmt(st.get("levels", st.get("level"))), "budget": fmt(st.get("budget")),
                     "promotion": fmt((st.get("promotion") or {}).get("rule"))})
    return rows


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """``RUN/checkpoints/*.pt``, sorted by name."""
    return sorted((Path(run_dir) / "checkpoints").glob("*.pt"))


# --------------------------------------------------------------------------------------------
# Reconstructions
# --------------------------------------------------------------------------------------------
@dataclass
class Reconstruction:
    """A reconstruction folder's content (world frame, mm).

    Attributes
    ----------
    path : the folder.
    mesh : trimesh.Trimesh, the fused surface (``mesh.ply``).
    unobserved : trimesh.Trimesh or None, never-seen regions (``unobserved.ply``).
    trajectory_xyz : (N, 3) float64 or None, camera centres from ``trajectory.txt``.
    world_from_cam : (N, 4, 4) float64 or None, the poses of ``trajectory.txt``.
    coverage : dict from ``coverage.json`` ({} when absent).
    report : dict from ``report.json`` ({} when absent).
    files : name -> Path of every known output present (``mesh.ply``, ``tsdf.nii.gz`` ...).
    """

    path: Path
    mesh: object
    unobserved: Optional[object] = None
    trajectory_xyz: Optional[np.ndarray] = None
    world_from_cam: Optional[np.ndarray] = None
    coverage: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


RECON_FILES = ("mesh.ply", "points.ply", "coverage.json", "unobserved.ply", "tsdf.nii.gz", "trajectory.txt",
               "report.json")


def find_reconstructions(root: str | os.PathLike, max_depth: int = 5) -> list[Path]:
    """Reconstruction folders under ``root``: a ``mesh.ply`` next to ``coverage.json``, ``report.json`` or
    ``trajectory.txt`` (dataset sequences, which hold only a ground-truth ``mesh.ply``, are not listed)."""
    root_p = resolve_root(root)
    out = []
    for d in _walk_dirs(root_p, max_depth):
        if (d / "mesh.ply").is_file() and any((d / n).is_file() for n in ("coverage.json", "report.json",
                                                                          "trajectory.txt")):
            out.append(d)
    return out


def _load_mesh(path: Path):
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types for corrupt files
        raise UserError(f"{path}: cannot read mesh ({type(exc).__name__}: {exc}); "
                        "rerun 'colondepth reconstruct'") from None
    return mesh


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read JSON ({exc}); rerun 'colondepth reconstruct'") from None
    return data if isinstance(data, dict) else {"value": data}


def load_reconstruction(recon_dir: str | os.PathLike) -> Reconstruction:
    """Load the outputs of ``colondepth reconstruct`` found in ``recon_dir``.

    Raises
    ------
    UserError
        ``mesh.ply`` is missing or unreadable, or a JSON/trajectory file is corrupt.
    """
    d = Path(recon_dir)
    mesh_path = d / "mesh.ply"
    if not mesh_path.is_file():
        raise UserError(f"{mesh_path}: no fused surface; run 'colondepth reconstruct --out {d}' first")
    files = {n: d / n for n in RECON_FILES if (d / n).is_file()}
    rec = Reconstruction(path=d, mesh=_load_mesh(mesh_path), files=files)
    if "unobserved.ply" in files:
        un = _load_mesh(files["unobserved.ply"])
        rec.unobserved = un if len(getattr(un, "faces", [])) else None
    if "trajectory.txt" in files:
        from colondepth.datasets.tum import read_tum

        _, poses = read_tum(files["trajectory.txt"])
        if len(poses):
            rec.world_from_cam = poses
            rec.trajectory_xyz = poses[:, :3, 3].copy()
    if "coverage.json" in files:
        rec.coverage = _read_json(files["coverage.json"])
    if "report.json" in files:
        rec.report = _read_json(files["report.json"])
    return rec


def coverage_summary(coverage: dict) -> dict[str, float]:
    """Top-level numeric entries of ``coverage.json`` (e.g. ``observed_fraction``), in file order."""
    return {k: float(v) for k, v in coverage.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def decimate_mesh(mesh, max_faces: int = DEFAULT_MAX_FACES):
    """A copy of ``mesh`` with at most ``max_faces`` triangles, for the browser.

    Uses VTK's quadric decimation (through pyvista) and returns the input unchanged when it is small
    enough.  The result keeps the world frame and mm units.
    """
    import trimesh

    n = len(mesh.faces)
    if n <= max_faces:
        return mesh
    import pyvista as pv

    poly = pv.wrap(mesh).triangulate()
    target = 1.0 - max_faces / n
    dec = poly.decimate(target).triangulate()
    faces = np.asarray(dec.faces).reshape(-1, 4)[:, 1:]
    out = trimesh.Trimesh(np.asarray(dec.points, np.float64), faces, process=False)
    if len(out.faces) > max_faces:  # decimation overshoots by a handful of faces at most
        out = trimesh.Trimesh(out.vertices, out.faces[:max_faces], process=False)
        out.remove_unreferenced_vertices()
    return out


#: Download formats: name -> (file ending, MIME type).
MESH_FORMATS = {"PLY": ("ply", "application/octet-stream"), "STL": ("stl", "model/stl"),
                "GLB": ("glb", "model/gltf-binary")}


def export_mesh_bytes(mesh, fmt: str, world_from_ref_cam: Optional[np.ndarray] = None) -> bytes:
    """``mesh`` (world frame, mm) serialised as ``PLY``, ``STL`` or ``GLB``.

    Goes through :func:`colondepth.recon.export.export_mesh`, so PLY and STL keep the world frame and
    GLB gets the glTF axes seen from the reference camera ``world_from_ref_cam`` (4x4; e.g. the first
    pose of the trajectory), exactly as files written by ``colondepth reconstruct``.
    """
    import tempfile

    from colondepth.recon.export import export_mesh

    key = fmt.upper()
    if key not in MESH_FORMATS:
        raise UserError(f"mesh format {fmt}: unknown; choose one of {', '.join(MESH_FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="colondepth-export-") as tmp:
        path = Path(tmp) / f"mesh.{MESH_FORMATS[key][0]}"
        export_mesh(mesh, path, world_from_ref_cam=world_from_ref_cam)
        return path.read_bytes()


def report_metrics_rows(report: dict) -> list[dict]:
    """Surface metrics of ``report.json`` as table rows, one per reference surface.

    ``report["metrics"]`` maps a reference (e.g. ``observed_ground_truth``) to numbers such as
    ``accuracy_mm``, ``completeness_mm``, ``chamfer_mm`` and ``fscore@1mm``; each row is
    ``{"compared with": reference, <name>: value, ...}`` (counters such as ``n_samples`` left out).
    Returns ``[]`` when the report has no metrics (e.g. a video without ground truth).
    """
    metrics = report.get("metrics")
    if not isinstance(metrics, dict):
        return []
    rows = []
    for ref, vals in metrics.items():
        if not isinstance(vals, dict):
            continue
        row = {"compared with": str(ref).replace("_", " ")}
        row.update({k: float(v) for k, v in vals.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("n_")})
        rows.append(row)
    return rows


def drop_shared_faces(mesh, other, rel_tol: float = 1e-6):
    """``mesh`` without the triangles whose centroid coincides with a triangle centroid of ``other``.

    The tolerance is ``rel_tol`` times the diagonal of ``mesh``'s bounding box.  Returns ``mesh``
    itself when nothing is shared.
    """
    from scipy.spatial import cKDTree

    if other is None or len(other.faces) == 0 or len(mesh.faces) == 0:
        return mesh
    tol = rel_tol * float(np.linalg.norm(mesh.extents)) + 1e-12
    dist, _ = cKDTree(np.asarray(other.triangles_center)).query(np.asarray(mesh.triangles_center), k=1)
    keep = dist > tol
    if keep.all():
        return mesh
    out = mesh.submesh([np.nonzero(keep)[0]], append=True) if keep.any() else None
    if out is None:
        import trimesh

        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int), process=False)
    return out


def mesh_figure(mesh, unobserved=None, trajectory_xyz: Optional[np.ndarray] = None,
                max_faces: int = DEFAULT_MAX_FACES, height: int = 600, surface_opacity: float = 0.7):
    """A plotly figure: the surface (pink), unobserved regions (blue), the camera path (orange line).

    Surface triangles that coincide with unobserved ones are left out of the surface trace (no z-fighting);
    the surface is drawn translucent so the camera path inside the colon stays visible.  Each mesh is
    decimated to ``max_faces`` triangles first.  Axes are in mm with equal aspect.
    Trace names: ``surface``, ``unobserved``, ``camera path``.
    """
    import plotly.graph_objects as go

    traces = []

    def mesh3d(m, name, color, opacity):
        m = decimate_mesh(m, max_faces)
        v = np.asarray(m.vertices)
        f = np.asarray(m.faces)
        return go.Mesh3d(x=v[:, 0], y=v[:, 1], z=v[:, 2], i=f[:, 0], j=f[:, 1], k=f[:, 2], name=name,
                         color=color, opacity=opacity, flatshading=False, showlegend=True,
                         lighting=dict(ambient=0.45, diffuse=0.8, specular=0.2, roughness=0.6),
                         hovertemplate="%{x:.1f}, %{y:.1f}, %{z:.1f} mm<extra>" + name + "</extra>")

    has_unobserved = unobserved is not None and len(unobserved.faces) > 0
    surface = drop_shared_faces(mesh, unobserved) if has_unobserved else mesh
    traces.append(mesh3d(surface, "surface", "#e8b4a8", surface_opacity))
    if has_unobserved:
        traces.append(mesh3d(unobserved, "unobserved", "#1f5fff", 1.0))
    if trajectory_xyz is not None and len(trajectory_xyz):
        t = np.asarray(trajectory_xyz)
        traces.append(go.Scatter3d(x=t[:, 0], y=t[:, 1], z=t[:, 2], mode="lines", name="camera path",
                                   line=dict(color="#ff7f0e", width=6)))
    fig = go.Figure(traces)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=0, b=0), legend=dict(x=0, y=1),
                      scene=dict(aspectmode="data", xaxis_title="x (mm)", yaxis_title="y (mm)",
                                 zaxis_title="z (mm)"))
    return fig


# --------------------------------------------------------------------------------------------
# New video: uploads and the reconstruct subprocess
# --------------------------------------------------------------------------------------------
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def check_upload(name: str, size_bytes: int, max_mb: float = MAX_UPLOAD_MB) -> str:
    """Validate an uploaded video's name and size; return a safe file name.

    Raises
    ------
    UserError
        Unknown file ending, empty file or larger than ``max_mb`` MB.
    """
    base = Path(name).name
    suffix = Path(base).suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise UserError(f"{base}: not a video file; upload one of {', '.join(VIDEO_SUFFIXES)}")
    if size_bytes <= 0:
        raise UserError(f"{base}: the file is empty; upload the complete video")
    if size_bytes > max_mb * 1024 * 1024:
        raise UserError(f"{base}: {size_bytes / 2**20:.0f} MB is larger than the {max_mb:.0f} MB limit; "
                        "cut or re-encode it (e.g. ffmpeg -i IN -t 60 -vf scale=640:-2 OUT.mp4) or enter its path")
    stem = _SAFE_NAME.sub("_", Path(base).stem).strip("._") or "video"
    return stem + suffix


def save_upload(root: str | os.PathLike, name: str, data: bytes, max_mb: float = MAX_UPLOAD_MB) -> Path:
    """Write an uploaded video atomically to ``ROOT/uploads/<safe name>`` and return its path."""
    from colondepth.io import atomic_write_bytes

    safe = check_upload(name, len(data), max_mb)
    dest = safe_path(root, Path("uploads") / safe)
    return atomic_write_bytes(dest, data)


def probe_video(path: str | os.PathLike) -> dict:
    """Check that ``path`` decodes: ``{"frames_checked", "height", "width"}`` of its first frames.

    Raises
    ------
    UserError
        The file cannot be opened or decoded (message from :func:`colondepth.datasets.video.read_video`).
    """
    from colondepth.datasets.video import read_video
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = read_video(path, max_frames=2, fov_mask=False)
    h, w = seq.rgb(0).shape[:2]
    return {"frames_checked": seq.num_frames, "height": int(h), "width": int(w)}


def _video_camera(root: str | os.PathLike, intrinsics, crop) -> tuple[Optional[Path], Optional[tuple[int, ...]]]:
    """A video's intrinsics file (checked, inside ``root``) and crop ``(x, y, w, h)``, each None when not given.

    Raises a one-line :class:`UserError` for an intrinsics file outside the root or invalid, or a malformed
    crop.
    """
    intrinsics = str(intrinsics).strip() if intrinsics is not None else ""
    crop = crop.strip() if isinstance(crop, str) else crop
    k_path = box = None
    if intrinsics:
        from colondepth.datasets.video import load_intrinsics

        k_path = safe_path(root, intrinsics)
        load_intrinsics(k_path)  # a bad file is reported here, in one line
    if crop:
        from colondepth.datasets.video import Crop

        c = Crop.parse(crop)
        box = (int(c.x), int(c.y), int(c.width), int(c.height))
    return k_path, box


def _camera_arguments(k_path: Optional[Path], box: Optional[tuple[int, ...]]) -> list[str]:
    """``--intrinsics FILE`` and ``--crop X Y W H`` of :func:`_video_camera`'s answer (``[]`` for neither)."""
    return (["--intrinsics", str(k_path)] if k_path is not None else []) + \
        (["--crop", *(str(v) for v in box)] if box is not None else [])


def reconstruct_command(root: str | os.PathLike, source: str | os.PathLike, out_name: Optional[str] = None,
                        depth: str = "predicted", poses: Optional[str] = None,
                        checkpoint: Optional[str | os.PathLike] = None,
                        intrinsics: Optional[str | os.PathLike] = None,
                        crop=None) -> tuple[list[str], Path]:
    """The ``colondepth reconstruct`` command line for a video file or sequence folder inside ``root``.

    Returns ``(argv, out_dir)`` with ``out_dir = ROOT/reconstructions/<out_name or source stem>``.
    Ground-truth depth/poses are only offered for sequence folders.  ``intrinsics`` (a YAML/JSON camera
    file inside the root, read by :func:`colondepth.datasets.video.load_intrinsics`) and ``crop``
    (``"X Y W H"`` or four integers) apply to a video only.

    Raises
    ------
    UserError
        ``source`` is outside the root, missing, or neither a video file nor a sequence folder; the
        intrinsics file is outside the root or invalid; the crop is malformed; intrinsics or a crop
        are given for a sequence folder (it carries its own camera).
    """
    src = safe_path(root, source)
    if src.is_dir():
        if not _is_sequence_dir(src):
            raise UserError(f"{source}: not a sequence folder (no meta.yaml + rgb/); pick a seq_* folder or a video")
        flag = "--sequence"
    elif src.is_file():
        if src.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(f"{source}: not a video file; pick one of {', '.join(VIDEO_SUFFIXES)} or a sequence folder")
        flag = "--video"
        if depth == "gt" or poses == "gt":
            raise UserError(f"{source}: a video has no ground truth; use predicted depth and poses")
    else:
        raise UserError(f"{source}: no such file or folder inside the app root")
    intrinsics = str(intrinsics).strip() if intrinsics is not None else ""
    crop = crop.strip() if isinstance(crop, str) else crop
    if (intrinsics or crop) and flag != "--video":
        raise UserError(f"{source}: a sequence folder carries its own camera; intrinsics and crop apply to "
                        "videos only")
    extra = _camera_arguments(*_video_camera(root, intrinsics, crop))
    name = _SAFE_NAME.sub("_", out_name or src.stem).strip("._") or "recon"
    out_dir = safe_path(root, Path("reconstructions") / name)
    argv = [sys.executable, "-m", "colondepth.cli", "reconstruct", flag, str(src), "--out", str(out_dir),
            "--depth", depth]
    if poses:
        argv += ["--poses", poses]
    if checkpoint:
        argv += ["--checkpoint", str(safe_path(root, checkpoint))]
    return argv + extra, out_dir


#: Share of the whole run each stage of ``colondepth reconstruct`` takes in the New-video page's bar
#: (rough timings: predicting and fusing the frames dominates).
RECONSTRUCT_STAGE_WEIGHTS = {"fusion": 0.70, "mesh": 0.10, "coverage": 0.12, "metrics": 0.03, "write": 0.05}


def reconstruct_fraction(event: ProgressEvent) -> float:
    """Fraction (0..1) of a whole ``colondepth reconstruct`` run done when ``event`` arrives.

    The stages of :data:`colondepth.recon.pipeline.RECONSTRUCT_STAGES` follow each other, each weighted
    by :data:`RECONSTRUCT_STAGE_WEIGHTS`; the fraction grows with every event of a run and is 1.0 at its
    last event.

    Raises
    ------
    ValueError
        ``event.stage`` is not a stage of ``colondepth reconstruct``.

    >>> reconstruct_fraction(ProgressEvent("fusion", 5, 10))
    0.35
    >>> reconstruct_fraction(ProgressEvent("write", 8, 8))
    1.0
    """
    from colondepth.recon.pipeline import RECONSTRUCT_STAGES

    if event.stage not in RECONSTRUCT_STAGES:
        raise ValueError(f"progress event: unknown reconstruct stage {event.stage!r}; expected one of "
                         f"{', '.join(RECONSTRUCT_STAGES)}")
    k = RECONSTRUCT_STAGES.index(event.stage)
    before = sum(RECONSTRUCT_STAGE_WEIGHTS[s] for s in RECONSTRUCT_STAGES[:k])
    total = sum(RECONSTRUCT_STAGE_WEIGHTS[s] for s in RECONSTRUCT_STAGES)
    return round(min((before + RECONSTRUCT_STAGE_WEIGHTS[event.stage] * event.fraction) / total, 1.0), 6)


def error_line(output: str) -> Optional[str]:
    """The last ``error: ...`` line of a command's output (the CLI's one-line failure message), or None.

    >>> error_line("step 1\\nerror: --frames 9:9: selects no frame\\n")
    'error: --frames 9:9: selects no frame'
    >>> error_line("all good") is None
    True
    """
    lines = [ln[ln.index("error:"):].strip() for ln in re.split(r"[\r\n]", output) if "error:" in ln]
    return lines[-1] if lines else None


@dataclass
class CommandRun:
    """The outcome of :func:`run_reconstruct` or :func:`run_finetune`.

    Attributes
    ----------
    return_code : int, the command's exit status (0 = success).
    output : str, its standard output and standard error, merged.
    events : list of :class:`colondepth.progress.ProgressEvent`, every progress event passed on, in order
        (those the reconstruct command wrote; the fine-tuning steps read from its ``metrics.jsonl``).
    """

    return_code: int
    output: str
    events: list = field(default_factory=list)


def _follow_command(argv: list[str], poll: Callable[[], None], env: Optional[dict], cwd: Optional[str | os.PathLike],
                    poll_s: float) -> tuple[int, str]:
    """Run ``argv`` to its end, calling ``poll()`` every ``poll_s`` seconds and once more after it ends.

    Standard output and standard error go to a temporary file, returned as text with the exit status, so
    nothing blocks however much the command prints.  When ``poll`` raises (e.g. the page was left), the
    command is stopped and the exception passes on.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="colondepth-run-") as tmp:
        log_path = Path(tmp) / "output.txt"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
            try:
                while proc.poll() is None:
                    poll()
                    time.sleep(poll_s)
                poll()
            finally:
                if proc.poll() is None:  # a callback raised: stop the command
                    proc.kill()
                    proc.wait()
        return proc.returncode, log_path.read_text(encoding="utf-8", errors="replace")


def run_reconstruct(argv: list[str], on_event: Optional[Callable[[ProgressEvent], None]] = None,
                    env: Optional[dict] = None, cwd: Optional[str | os.PathLike] = None,
                    poll_s: float = 0.1) -> CommandRun:
    """Run a ``colondepth reconstruct`` command line and follow its structured progress.

    ``--progress-events FILE`` (a temporary file) and ``--no-progress`` are appended to ``argv``; the
    events the command writes there are passed to ``on_event`` as they appear (checked every
    ``poll_s`` seconds and once more after the command ends).  Standard output and standard error go
    to a temporary file, returned as text, so nothing blocks however much the command prints.

    Raises
    ------
    ValueError
        The command wrote a line that is not a progress event (see
        :func:`colondepth.progress.read_progress_events`).
    """
    import tempfile

    from colondepth.progress import read_progress_events

    with tempfile.TemporaryDirectory(prefix="colondepth-events-") as tmp:
        events_path = Path(tmp) / "progress.jsonl"
        run = CommandRun(return_code=-1, output="")
        offset = 0

        def drain() -> None:
            nonlocal offset
            new, offset = read_progress_events(events_path, offset)
            for ev in new:
                run.events.append(ev)
                if on_event is not None:
                    on_event(ev)

        run.return_code, run.output = _follow_command(
            list(argv) + ["--progress-events", str(events_path), "--no-progress"], drain, env, cwd, poll_s)
    return run


# --------------------------------------------------------------------------------------------
# New video: fine-tuning on the video first (the finetune subprocess)
# --------------------------------------------------------------------------------------------
#: Optimizer steps the New-video page proposes for fine-tuning on one video.
DEFAULT_FINETUNE_STEPS = 300
#: Name of the progress events :func:`run_finetune` passes on (``done``: optimizer steps logged so far).
FINETUNE_STAGE = "finetune"


def finetuned_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The model bundle a finished ``colondepth finetune`` run leaves: ``RUN/checkpoints/final.pt``."""
    return Path(run_dir) / "checkpoints" / "final.pt"


def finetune_finished(run_dir: str | os.PathLike) -> bool:
    """Whether the fine-tuning run in ``run_dir`` has finished (its ``checkpoints/final.pt`` exists)."""
    return finetuned_checkpoint(run_dir).is_file()


def _finetune_settings(stage: dict) -> dict:
    """What makes two fine-tuning runs the same for the page: model, video, camera, steps."""
    budget = stage.get("budget") if isinstance(stage.get("budget"), dict) else {}
    sources = stage.get("sources") if isinstance(stage.get("sources"), list) else []
    crop = stage.get("crop")
    return {"init_from": stage.get("init_from"),
            "sources": [s.get("path") if isinstance(s, dict) else None for s in sources],
            "crop": [int(v) for v in crop] if isinstance(crop, list) else None,
            "intrinsics": stage.get("intrinsics"),
            "steps": budget.get("steps")}


def _recorded_finetune_settings(run_dir: Path) -> Optional[dict]:
    """The settings of the run in ``run_dir`` (its ``finetune.curriculum.yaml``), None when unreadable."""
    import yaml

    try:
        cur = yaml.safe_load((run_dir / "finetune.curriculum.yaml").read_text())
        stage = cur["stages"][0]
        return _finetune_settings(stage) if isinstance(stage, dict) else None
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return None


def _finetune_run_dir(root: Path, stem: str, settings: dict) -> Path:
    """``ROOT/runs/<stem>_finetune`` (then ``_2``, ``_3`` ...): the first folder holding a run with the same
    ``settings``, else the first that does not exist (a folder holding anything else is never reused)."""
    base = f"{stem}_finetune"
    k = 1
    while True:
        run_dir = safe_path(root, Path("runs") / (base if k == 1 else f"{base}_{k}"))
        if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
            return run_dir
        if _recorded_finetune_settings(run_dir) == settings:
            return run_dir
        k += 1


def finetune_command(root: str | os.PathLike, source: str | os.PathLike, steps: int = DEFAULT_FINETUNE_STEPS,
                     checkpoint: Optional[str | os.PathLike] = None,
                     intrinsics: Optional[str | os.PathLike] = None, crop=None) -> tuple[list[str], Path]:
    """The ``colondepth finetune`` command line that adapts a model to one video inside ``root``.

    Returns ``(argv, run_dir)``: ``argv`` runs ``colondepth finetune --init CKPT --video VIDEO [--intrinsics
    FILE] [--crop X Y W H] --out RUN --steps N --no-progress``, starting from ``checkpoint`` (a ``.pt`` file
    inside the root) or the installed default model.  ``run_dir`` is ``ROOT/runs/<video stem>_finetune``;
    when that folder holds a run with other settings (model, video, crop, intrinsics or steps) or something
    else, the next free ``_2``, ``_3`` ... is used, so no earlier run is overwritten.  A folder whose run has
    the same settings is taken again: finished (:func:`finetune_finished`), its weights are reused; started
    (``checkpoints/last.pt``), ``--resume`` is added so the command continues it.  The fine-tuned bundle
    (depth and pose networks) is :func:`finetuned_checkpoint` ``(run_dir)``.  ``intrinsics`` and ``crop``
    follow :func:`reconstruct_command`.

    Raises
    ------
    UserError
        ``source`` is outside the root, missing, a folder (sequence folders carry ground truth and are not
        fine-tuned on here) or not a video file; ``steps`` is not a positive whole number; ``checkpoint`` is
        outside the root or missing, or there is no default model; the intrinsics file is outside the root
        or invalid; the crop is malformed.
    """
    src = safe_path(root, source)
    if src.is_dir():
        kind = "a sequence folder" if _is_sequence_dir(src) else "a folder"
        raise UserError(f"{source}: {kind}, not a video file; fine-tuning here learns from a video "
                        f"({', '.join(VIDEO_SUFFIXES)})")
    if not src.is_file():
        raise UserError(f"{source}: no such video file inside the app root")
    if src.suffix.lower() not in VIDEO_SUFFIXES:
        raise UserError(f"{source}: not a video file; fine-tuning takes one of {', '.join(VIDEO_SUFFIXES)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise UserError(f"fine-tuning steps {steps!r}: must be a whole number of optimizer steps (e.g. "
                        f"{DEFAULT_FINETUNE_STEPS})")
    if steps < 1:
        raise UserError(f"fine-tuning steps {steps}: must be a positive number of optimizer steps (e.g. "
                        f"{DEFAULT_FINETUNE_STEPS})")
    if checkpoint:
        init = safe_path(root, checkpoint)
        if not init.is_file():
            raise UserError(f"{checkpoint}: checkpoint not found inside the app root; pick a .pt file of a "
                            "training run")
    else:
        from colondepth.resources import default_model_path

        init = default_model_path().resolve()
        if not init.is_file():
            raise UserError(f"{init}: the default model is not installed; pick a checkpoint of a training run "
                            "to fine-tune")
    k_path, box = _video_camera(root, intrinsics, crop)
    camera = _camera_arguments(k_path, box)
    settings = _finetune_settings({"init_from": str(init), "sources": [{"path": str(src)}],
                                   "budget": {"steps": int(steps)}, "crop": list(box) if box else None,
                                   "intrinsics": str(k_path) if k_path is not None else None})
    stem = _SAFE_NAME.sub("_", src.stem).strip("._") or "video"
    run_dir = _finetune_run_dir(Path(root).resolve(), stem, settings)
    argv = [sys.executable, "-m", "colondepth.cli", "finetune", "--init", str(init), "--video", str(src),
            *camera, "--out", str(run_dir), "--steps", str(int(steps)), "--no-progress"]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        argv.append("--resume")
    return argv, run_dir


def finetune_step(run_dir: str | os.PathLike) -> int:
    """The last optimizer step ``RUN/metrics.jsonl`` records (0 before the first record or without the file).

    Training records (``{"type": "train", "step": ...}``, written every few steps) and the run's end
    record (``global_step``) count; a half-written last line (the run is writing it) is left out.

    Raises
    ------
    UserError
        A line other than the last is not a JSON object (see :func:`read_metrics`).
    """
    if not (Path(run_dir) / "metrics.jsonl").is_file():
        return 0
    step = 0
    for rec in read_metrics(run_dir):
        kind = rec.get("type", "train")
        value = rec.get("step") if kind == "train" else rec.get("global_step") if kind == "run_end" else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            step = max(step, int(value))
    return step


def finetune_fraction(run_dir: str | os.PathLike, steps: int) -> float:
    """Fraction (0..1) of a ``steps``-step fine-tuning run that ``RUN/metrics.jsonl`` reports done.

    ``finetune_step(run_dir) / steps``, at most 1.

    Raises
    ------
    ValueError
        ``steps`` is less than 1.
    """
    if steps < 1:
        raise ValueError(f"steps {steps}: a fine-tuning run has at least one step")
    return min(finetune_step(run_dir) / steps, 1.0)


def run_finetune(argv: list[str], run_dir: str | os.PathLike, steps: int,
                 on_event: Optional[Callable[[ProgressEvent], None]] = None, env: Optional[dict] = None,
                 cwd: Optional[str | os.PathLike] = None, poll_s: float = 0.2) -> CommandRun:
    """Run a ``colondepth finetune`` command line (see :func:`finetune_command`) and follow its progress.

    The command logs training records to ``RUN/metrics.jsonl`` every few steps; the file is read every
    ``poll_s`` seconds and once more after the command ends, and each time the logged step changes
    ``on_event`` gets ``ProgressEvent("finetune", step, steps, "step k/N")`` (a resumed run starts at the
    step it had reached).  Standard output and standard error are merged and returned as text with the
    exit status, as :func:`run_reconstruct` does; a non-zero status means the run failed, whatever the
    events said.

    Raises
    ------
    ValueError
        ``steps`` is less than 1.
    UserError
        ``metrics.jsonl`` has a bad line before its last (the command is stopped).
    """
    if steps < 1:
        raise ValueError(f"steps {steps}: a fine-tuning run has at least one step")
    run = CommandRun(return_code=-1, output="")
    last = [None]

    def check() -> None:
        step = min(finetune_step(run_dir), steps)
        if step != last[0]:
            last[0] = step
            ev = ProgressEvent(FINETUNE_STAGE, step, steps, f"step {step}/{steps}")
            run.events.append(ev)
            if on_event is not None:
                on_event(ev)

    run.return_code, run.output = _follow_command(argv, check, env, cwd, poll_s)
    return run
