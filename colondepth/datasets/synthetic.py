"""Reader for ColonDepth's own dataset layout (made by ``colondepth synth``; docs/dataset_format.md).

``read_sequences(path)`` accepts a dataset folder (holding ``dataset.yaml``), a single sequence
folder (holding ``meta.yaml``) or a folder of datasets, and returns
:class:`colondepth.datasets.base.Sequence` objects that load frames lazily.  Hidden folders
(temporary folders of an unfinished run) are never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics

_REGEN = "regenerate it with 'colondepth synth' (a rerun resumes and skips finished sequences)"


class SequenceMeta(BaseModel):
    """Validated ``meta.yaml`` of one sequence; intrinsics in pixels (OpenCV, pixel centres at integers)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["colondepth-synthetic"] = "colondepth-synthetic"
    format_version: int = Field(1, ge=1, le=1)
    width: int = Field(..., gt=0)
    height: int = Field(..., gt=0)
    fx: float = Field(..., gt=0)
    fy: float = Field(..., gt=0)
    cx: float
    cy: float
    depth_scale_mm: float = Field(..., gt=0)
    fps: float = Field(..., gt=0)
    level: Optional[str] = None
    seed: Optional[int] = None
    sequence_index: Optional[int] = None
    num_frames: Optional[int] = Field(None, ge=1)
    znear_mm: Optional[float] = None
    zfar_mm: Optional[float] = None
    fov_mask: Literal["none", "circle", "octagon"] = "none"
    flat_shading: bool = False
    params: dict = Field(default_factory=dict)
    look: dict = Field(default_factory=dict)  # drawn per-sequence randomisation (light guides, white balance...)

    @property
    def intrinsics(self) -> PinholeIntrinsics:
        return PinholeIntrinsics(fx=self.fx, fy=self.fy, cx=self.cx, cy=self.cy,
                                 size=ImageSize(self.height, self.width))


def _read_png(path: Path, want: str, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise UserError(f"{path}: frame missing; the sequence is incomplete, {_REGEN}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserError(f"{path}: not a readable PNG (corrupt file); {_REGEN}")
    if want == "rgb":
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise UserError(f"{path}: expected an 8-bit RGB PNG, got {img.shape} {img.dtype}; {_REGEN}")
        img = img[..., ::-1]
    else:
        if img.ndim != 2 or img.dtype != np.uint16:
            raise UserError(
                f"{path}: expected a 16-bit single-channel depth PNG, got {img.shape} {img.dtype}; {_REGEN}")
    if img.shape[:2] != shape:
        raise UserError(
            f"{path}: image is {img.shape[0]}x{img.shape[1]} but meta.yaml says {shape[0]}x{shape[1]}; {_REGEN}")
    return np.ascontiguousarray(img)


def read_meta(seq_dir: str | Path) -> SequenceMeta:
    """Read and validate ``seq_dir/meta.yaml``; one-line UserError on a missing or corrupt file."""
    from colondepth.io import load_yaml

    path = Path(seq_dir) / "meta.yaml"
    if not path.is_file():
        raise UserError(f"{path}: not found; {Path(seq_dir)} is not a finished sequence folder, {_REGEN}")
    data = load_yaml(path, fix=_REGEN)
    try:
        return SequenceMeta.model_validate(data)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{path}: invalid meta.yaml ({errs}); {_REGEN}") from None


def open_sequence(seq_dir: str | Path) -> Sequence:
    """Open one sequence folder (``meta.yaml``, ``rgb/``, ``depth/``, ``poses.txt``, ``mesh.ply``).

    ``extra`` holds ``meta`` (the validated :class:`SequenceMeta`), ``path`` (the folder) and
    ``frame_stems`` (file stems of the frames in order, e.g. ``"000012"``, as ``colondepth predict`` names
    its ``<stem>_depth.npy`` outputs).
    """
    from colondepth.datasets.tum import read_tum

    d = Path(seq_dir)
    meta = read_meta(d)
    rgb_files = sorted((d / "rgb").glob("*.png"))
    if not rgb_files:
        raise UserError(f"{d / 'rgb'}: no frames; the sequence is incomplete, {_REGEN}")
    n = len(rgb_files)
    if meta.num_frames is not None and meta.num_frames != n:
        raise UserError(f"{d}: meta.yaml says {meta.num_frames} frames but rgb/ holds {n}; {_REGEN}")
    timestamps, poses = read_tum(d / "poses.txt")
    if len(poses) != n:
        raise UserError(f"{d / 'poses.txt'}: {len(poses)} poses for {n} frames; {_REGEN}")
    depth_dir = d / "depth"
    names = [f.name for f in rgb_files]
    shape = (meta.height, meta.width)
    scale = float(meta.depth_scale_mm)

    def load_rgb(i: int) -> np.ndarray:
        return _read_png(d / "rgb" / names[i], "rgb", shape)

    def load_depth_mm(i: int) -> np.ndarray:
        raw = _read_png(depth_dir / names[i], "depth", shape)
        return (raw.astype(np.float32) * np.float32(scale)).astype(np.float32)

    mask = None
    if meta.fov_mask != "none":
        import cv2

        mpath = d / "fov_mask.png"
        m = cv2.imread(str(mpath), cv2.IMREAD_UNCHANGED) if mpath.is_file() else None
        if m is None or m.shape[:2] != shape:
            raise UserError(f"{mpath}: missing or unreadable field-of-view mask; {_REGEN}")
        mask = m > 0
    mesh = d / "mesh.ply"
    return Sequence(
        name=f"{d.parent.name}/{d.name}",  # e.g. "synth_L3/seq_00002"
        intrinsics=meta.intrinsics,
        num_frames=n,
        load_rgb=load_rgb,
        load_depth_mm=load_depth_mm if depth_dir.is_dir() else None,
        world_from_cam=poses,
        timestamps=timestamps,
        level=meta.level,
        mesh_path=mesh if mesh.is_file() else None,
        fov_mask=mask,
        extra={"meta": meta, "path": d, "frame_stems": [f.stem for f in rgb_files]},
    )


def _seq_dirs(dataset_dir: Path) -> list[Path]:
    return sorted(p for p in dataset_dir.glob("seq_*") if p.is_dir() and not p.name.startswith("."))


def read_sequences(path: str | Path) -> list[Sequence]:
    """All finished sequences under ``path`` (a dataset folder, a sequence folder or a folder of datasets)."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such dataset folder; pass a folder made by 'colondepth synth'")
    if (p / "meta.yaml").is_file():
        return [open_sequence(p)]
    if (p / "dataset.yaml").is_file():
        return [open_sequence(s) for s in _seq_dirs(p)]
    datasets = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")
                      and (c / "dataset.yaml").is_file())
    if datasets:
        return [seq for ds in datasets for seq in read_sequences(ds)]
    seqs = _seq_dirs(p)
    if seqs:
        return [open_sequence(s) for s in seqs]
    raise UserError(f"{p}: holds no dataset.yaml, meta.yaml or seq_* folders; pass a folder made by 'colondepth synth'")
