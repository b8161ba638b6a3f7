"""Reader for C3VD (Colonoscopy 3D Video Dataset, phantom colon with registered ground truth).

Layout read (``path`` may be the dataset root or one sequence folder)::

    <sequence>/0000_color.png      RGB uint8 (undistorted frames)
    <sequence>/0000_depth.tiff     uint16 z-depth: depth_mm = value / 65535 * 100; 0 and 65535 are invalid
    <sequence>/pose.txt            one line per frame, 16 numbers (comma or space separated): the 4x4
                                   world_from_cam matrix in millimetres, listed COLUMN-major (C3VD v1)
    <sequence>/intrinsics.yaml     optional (or .json, here or in a parent folder): fx fy cx cy width height

Conventions: C3VD's camera frame is OpenCV's (+X right, +Y down, +Z forward) and its poses are
camera-to-world in millimetres, so the only conversion is the column-major reading
(``M = values.reshape(4, 4).T``).  A reading error would show as a bottom row other than
``0 0 0 1``, which the reader refuses.  C3VD ships fisheye calibrations; the undistorted frames need
pinhole intrinsics: without an ``intrinsics.yaml`` they are guessed from a field of view, with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics

#: ``depth_mm = value * DEPTH_MM_PER_UNIT``; 0 and :data:`DEPTH_INVALID_HIGH` mark no measurement.
DEPTH_MM_PER_UNIT = 100.0 / 65535.0
DEPTH_INVALID_HIGH = 65535

_COLOR_RE = re.compile(r"^(\d+)_color\.png$")


def depth_tiff_to_mm(value: np.ndarray) -> np.ndarray:
    """``(H, W) uint16`` C3VD depth -> ``(H, W) float32`` z-depth in mm with 0 where invalid (0 or 65535)."""
    v = np.asarray(value)
    out = v.astype(np.float64) * DEPTH_MM_PER_UNIT
    out[(v == 0) | (v == DEPTH_INVALID_HIGH)] = 0.0
    return out.astype(np.float32)


def read_pose_txt(path) -> np.ndarray:
    """``(N, 4, 4) float64`` world_from_cam (mm) from a C3VD ``pose.txt`` (16 column-major values a line)."""
    p = Path(path)
    rows = []
    for ln, line in enumerate(p.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            vals = [float(x) for x in line.replace(",", " ").split()]
        except ValueError:
            raise UserError(f"{p}:{ln}: non-numeric pose value; each line must hold 16 numbers") from None
        if len(vals) != 16:
            raise UserError(f"{p}:{ln}: {len(vals)} values; each line must hold the 16 numbers of a 4x4 pose")
        M = np.asarray(vals, dtype=np.float64).reshape(4, 4).T  # column-major on disk
        if not np.allclose(M[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
            raise UserError(f"{p}:{ln}: bottom row {M[3].tolist()} is not 0 0 0 1; expected column-major 4x4 poses")
        rows.append(M)
    if not rows:
        raise UserError(f"{p}: empty pose file")
    return np.stack(rows)


def _find_intrinsics(folder: Path) -> Optional[Path]:
    for d in (folder, *folder.parents[:2]):
        for name in ("intrinsics.yaml", "intrinsics.yml", "intrinsics.json"):
            if (d / name).is_file():
                return d / name
    return None


def _read_one(folder: Path, intrinsics: Optional[PinholeIntrinsics]) -> Sequence:
    import imageio.v3 as iio

    from colondepth.datasets.video import guess_intrinsics, load_intrinsics

    entries = sorted(
        (int(m.group(1)), f) for f in folder.iterdir() if (m := _COLOR_RE.match(f.name))
    )
    ids = [i for i, _ in entries]
    color = [f for _, f in entries]
    depth = [folder / f"{i:04d}_depth.tiff" for i in ids]
    has_depth = all(d.is_file() for d in depth)
    first = iio.imread(color[0])
    size = ImageSize(first.shape[0], first.shape[1])
    if intrinsics is None:
        kfile = _find_intrinsics(folder)
        intrinsics = load_intrinsics(kfile) if kfile else guess_intrinsics(size, source=str(folder))
        if not isinstance(intrinsics, PinholeIntrinsics):
            raise UserError(f"{kfile}: model: {intrinsics.model}; C3VD's colour frames are already undistorted, "
                            "so give the pinhole intrinsics of those frames (width height fx fy cx cy)")
    if intrinsics.size != size:
        intrinsics = intrinsics.resized(size)
    world_from_cam = None
    if (folder / "pose.txt").is_file():
        poses = read_pose_txt(folder / "pose.txt")
        if len(poses) < len(color):
            raise UserError(f"{folder / 'pose.txt'}: {len(poses)} poses for {len(color)} frames; the file is truncated")
        world_from_cam = poses[ids] if max(ids) < len(poses) else poses[: len(color)]

    def load_rgb(i: int, _f=color) -> np.ndarray:
        img = iio.imread(_f[i])
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return np.ascontiguousarray(img[..., :3])

    def load_depth_mm(i: int, _f=depth) -> np.ndarray:
        d = iio.imread(_f[i])
        if d.dtype != np.uint16:
            raise UserError(f"{_f[i]}: C3VD depth must be a 16-bit TIFF, got {d.dtype}")
        return depth_tiff_to_mm(d)

    return Sequence(
        name=folder.name,
        intrinsics=intrinsics,
        num_frames=len(color),
        load_rgb=load_rgb,
        load_depth_mm=load_depth_mm if has_depth else None,
        world_from_cam=world_from_cam,
        timestamps=np.asarray(ids, dtype=np.float64),
        extra={"source": str(folder), "format": "c3vd"},
    )


def read_sequences(path, intrinsics: Optional[PinholeIntrinsics] = None) -> list[Sequence]:
    """Every C3VD sequence (a folder holding ``NNNN_color.png``) under ``path``, sorted by name."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: C3VD folder not found; pass a folder holding NNNN_color.png frames or their parent")
    folders = sorted({f.parent for f in p.rglob("*_color.png") if _COLOR_RE.match(f.name)})
    return [_read_one(f, intrinsics) for f in folders]
