"""What the review app shows, found and loaded under one root folder (no Streamlit here).

The app (``apps/review.py``, started by ``colondepth app``) browses a single *root* folder and
never reads outside it.  This module holds the pure, testable parts:

- path safety: :func:`resolve_root`, :func:`safe_path` (symlinks are resolved before the check);
- discovery: :func:`find_datasets`, :func:`find_runs`, :func:`find_prediction_dirs`,
  :func:`find_reconstructions`;
- loading: :func:`load_sequences`, :func:`read_metrics`, :func:`read_curriculum`,
  :func:`load_prediction`, :func:`load_reconstruction`;
- pictures: :func:`colorize`, :func:`colorbar_image`, :func:`depth_display_range`,
  :func:`depth_error_mm`, :func:`mesh_figure`, :func:`decimate_mesh`, :func:`export_mesh_bytes`;
- the New-video page: :func:`check_upload`, :func:`save_upload`, :func:`probe_video`,
  :func:`reconstruct_command`, :func:`parse_progress`, :func:`run_with_progress`.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from colondepth.errors import UserError

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


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read YAML ({type(exc).__name__}); rewrite or regenerate the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a YAML mapping at the top level; regenerate the file")
    return data


def _read_sequence_dir(seq_dir: Path):
    """Read one sequence folder of the dataset layout (DESIGN §3) without the package reader."""
    import imageio.v3 as iio

    from colondepth.conventions import ImageSize
    from colondepth.datasets.base import Sequence
    from colondepth.geometry.camera import PinholeIntrinsics

    meta_path = seq_dir / "meta.yaml"
    meta = _read_yaml(meta_path)
    try:
        size = ImageSize(int(meta["height"]), int(meta["width"]))
        k = PinholeIntrinsics(float(meta["fx"]), float(meta["fy"]), float(meta["cx"]), float(meta["cy"]), size)
        scale = float(meta.get("depth_scale_mm", 1.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{meta_path}: missing or bad key ({exc}); "
                        "regenerate the dataset with 'colondepth synth'") from None
    rgb_paths = sorted((seq_dir / "rgb").glob("*.png"))
    depth_dir = seq_dir / "depth"
    depth_paths = [depth_dir / p.name for p in rgb_paths]
    has_depth = bool(rgb_paths) and all(p.is_file() for p in depth_paths)

    def load_rgb(i: int) -> np.ndarray:
        img = iio.imread(rgb_paths[i])
        return np.ascontiguousarray(img[..., :3]).astype(np.uint8)

    def load_depth(i: int) -> np.ndarray:
        return iio.imread(depth_paths[i]).astype(np.float32) * np.float32(scale)

    world_from_cam = timestamps = None
    if (seq_dir / "poses.txt").is_file():
        from colondepth.datasets.tum import read_tum

        timestamps, world_from_cam = read_tum(seq_dir / "poses.txt")
        if len(world_from_cam) != len(rgb_paths):
            world_from_cam = timestamps = None
    mesh = seq_dir / "mesh.ply"
    return Sequence(
        name=seq_dir.name,
        intrinsics=k,
        num_frames=len(rgb_paths),
        load_rgb=load_rgb,
        load_depth_mm=load_depth if has_depth else None,
        world_from_cam=world_from_cam,
        timestamps=timestamps,
        level=meta.get("level"),
        mesh_path=mesh if mesh.is_file() else None,
        extra={"fps": float(meta.get("fps", 10.0)), "path": seq_dir, "frame_stems": [p.stem for p in rgb_paths]},
    )


def load_sequences(dataset: DatasetInfo) -> list:
    """The sequences of ``dataset`` as :class:`colondepth.datasets.base.Sequence` objects.

    Uses the package reader ``colondepth.datasets.synthetic.read_sequences`` when it is installed,
    and reads the folders directly otherwise.  ``extra["path"]`` is the sequence folder and
    ``extra["fps"]`` its frame rate (from ``meta.yaml``, default 10).
    """
    try:
        from colondepth.datasets.synthetic import read_sequences
    except ModuleNotFoundError:
        read_sequences = None
    if read_sequences is not None:
        seqs = list(read_sequences(dataset.path))
        by_name = {d.name: d for d in dataset.sequence_dirs}
        for seq in seqs:
            d = seq.extra.get("path") or by_name.get(seq.name)
            if d is None and len(dataset.sequence_dirs) == 1:
                d = dataset.sequence_dirs[0]
            seq.extra["path"] = d
            if d is not None and "frame_stems" not in seq.extra:
                seq.extra["frame_stems"] = [f.stem for f in sorted((Path(d) / "rgb").glob("*.png"))]
            if "fps" not in seq.extra:
                meta = Path(d) / "meta.yaml" if d is not None else None
                seq.extra["fps"] = float(_read_yaml(meta).get("fps", 10.0)) if meta and meta.is_file() else 10.0
        return sorted(seqs, key=lambda s: s.name)
    return [_read_sequence_dir(d) for d in dataset.sequence_dirs]


def frame_stem(seq, i: int) -> str:
    """File stem of frame ``i`` (``000012``), as prediction files are named ``<stem>_depth.npy``."""
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


def resize_depth(depth_mm: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a depth map to ``(height, width)`` (keeps 0 = invalid intact)."""
    d = np.asarray(depth_mm)
    if d.shape == tuple(size_hw):
        return d
    h, w = size_hw
    rows = np.minimum(((np.arange(h) + 0.5) * d.shape[0] / h).astype(int), d.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * d.shape[1] / w).astype(int), d.shape[1] - 1)
    return d[rows][:, cols]


def depth_error_mm(pred_mm: np.ndarray, gt_mm: np.ndarray,
                   align: str = "median") -> tuple[np.ndarray, np.ndarray, float]:
    """Per-pixel absolute error ``|s * pred - gt|`` in mm after alignment.

    Returns
    -------
    error_mm : (H, W) float32, NaN where the ground truth is invalid
    valid : (H, W) bool
    scale : float, the alignment scale ``s`` (1.0 for ``align="none"`` or no valid pixel)
    """
    from colondepth.eval.alignment import align_depth
    from colondepth.eval.depth_metrics import valid_depth_mask

    gt = np.asarray(gt_mm, np.float64)
    pred = np.asarray(pred_mm, np.float64)
    valid = valid_depth_mask(gt) & np.isfinite(pred) & (pred > 0)
    err = np.full(gt.shape, np.nan, np.float32)
    if not valid.any():
        return err, valid, 1.0
    aligned, scale = align_depth(pred[valid], gt[valid], align)
    err[valid] = np.abs(aligned - gt[valid]).astype(np.float32)
    return err, valid, float(scale)


def frame_metrics(pred_mm: np.ndarray, gt_mm: np.ndarray, align: str = "median") -> Optional[dict]:
    """Depth metrics of one frame (:mod:`colondepth.eval.depth_metrics`), ``None`` without valid pixels.

    The prediction is resized (nearest) to the ground truth's size first.  Adds ``scale`` (the
    alignment factor) and ``num_valid``.
    """
    from colondepth.eval.depth_metrics import frame_depth_metrics

    pred = resize_depth(pred_mm, np.asarray(gt_mm).shape)
    res = frame_depth_metrics(pred, gt_mm, align=align)
    if res is None:
        return None
    return {**res.metrics, "scale": res.scale, "num_valid": res.num_valid}


def sequence_metrics(pairs: Iterable[tuple[np.ndarray, np.ndarray]], align: str = "median") -> Optional[dict]:
    """Frame-averaged metrics over ``(pred_mm, gt_mm)`` pairs; ``None`` when no frame had valid pixels.

    Adds ``frames``: the number of frames averaged.
    """
    from colondepth.eval.depth_metrics import mean_metrics

    rows = [m for m in (frame_metrics(p, g, align) for p, g in pairs) if m is not None]
    if not rows:
        return None
    return {**mean_metrics(rows), "frames": len(rows)}


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
    path = Path(run_dir) / "config.resolved.yaml"
    if not path.is_file():
        return []
    cfg = _read_yaml(path)
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
    extra: list[str] = []
    intrinsics = str(intrinsics).strip() if intrinsics is not None else ""
    crop = crop.strip() if isinstance(crop, str) else crop
    if (intrinsics or crop) and flag != "--video":
        raise UserError(f"{source}: a sequence folder carries its own camera; intrinsics and crop apply to "
                        "videos only")
    if intrinsics:
        from colondepth.datasets.video import load_intrinsics

        k_path = safe_path(root, intrinsics)
        load_intrinsics(k_path)  # a bad file is reported here, in one line
        extra += ["--intrinsics", str(k_path)]
    if crop:
        from colondepth.datasets.video import Crop

        c = Crop.parse(crop)
        extra += ["--crop", str(c.x), str(c.y), str(c.width), str(c.height)]
    name = _SAFE_NAME.sub("_", out_name or src.stem).strip("._") or "recon"
    out_dir = safe_path(root, Path("reconstructions") / name)
    argv = [sys.executable, "-m", "colondepth.cli", "reconstruct", flag, str(src), "--out", str(out_dir),
            "--depth", depth]
    if poses:
        argv += ["--poses", poses]
    if checkpoint:
        argv += ["--checkpoint", str(safe_path(root, checkpoint))]
    return argv + extra, out_dir


_PCT = re.compile(r"(\d{1,3})%\|")
_FRAC = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")


def parse_progress(text: str) -> Optional[float]:
    """Fraction done (0..1) from the last tqdm progress line in ``text``, or ``None``.

    >>> parse_progress("fusing:  42%|####      | 21/50 [00:01<00:02]")
    0.42
    >>> parse_progress("hello") is None
    True
    """
    last = None
    for chunk in re.split(r"[\r\n]", text):
        m = _FRAC.search(chunk)
        if m and int(m.group(2)) > 0:
            last = min(int(m.group(1)) / int(m.group(2)), 1.0)
            continue
        m = _PCT.search(chunk)
        if m:
            last = min(int(m.group(1)) / 100.0, 1.0)
    return last


def run_with_progress(argv: list[str], on_progress: Callable[[float, str], None],
                      env: Optional[dict] = None, cwd: Optional[str | os.PathLike] = None) -> tuple[int, str]:
    """Run ``argv``, calling ``on_progress(fraction, last_line)`` as its tqdm output advances.

    stdout and stderr are merged.  Returns ``(return_code, output)`` with the whole output text.
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    assert proc.stdout is not None
    buf = bytearray()
    pending = ""
    fraction = 0.0
    try:
        while True:
            chunk = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            buf += chunk
            pending += chunk.decode("utf-8", "replace")
            parts = re.split(r"[\r\n]", pending)
            pending = parts[-1]
            done = [p for p in parts[:-1] if p.strip()]
            if done:
                f = parse_progress("\n".join(done))
                if f is not None:
                    fraction = f
                on_progress(fraction, done[-1].strip())
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, buf.decode("utf-8", "replace")
