"""Reader for real endoscopy frames with structure-from-motion poses and sparse depth (the sinus SfM layout).

Layout read (``path`` is the folder holding ``meta.yaml``)::

    meta.yaml               width, height, fx, fy, cx, cy (px, pinhole, OpenCV, pixel centres at integers), fps
    rgb/NNNNNN.jpg          uint8 RGB frames (already undistorted)
    mask.png                255 inside the circular field of view (optional)
    poses.txt               TUM ``t tx ty tz qx qy qz qw``, world_from_cam, SfM units (optional)
    sparse/NNNNNN.npz       arrays ``u``, ``v`` (px), ``z`` (z-depth, SfM units), ``point_id``: the SfM
                            points triangulated from that frame

Depth and translations are in SfM units (an arbitrary global scale), not millimetres: compare predicted
depth with ``z`` only after scale alignment (e.g. per-frame median scaling).  The frames have no dense
ground truth, so the returned :class:`~colondepth.datasets.base.Sequence` has ``has_depth == False``;
the sparse points of frame ``i`` come from :func:`sparse_points`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics

FORMAT = "sinus_sfm"

_FIX = "pass the folder that holds meta.yaml, rgb/ and sparse/ (e.g. ../shared/data/sinus_sfm_sample)"


@dataclass(frozen=True)
class SparsePoints:
    """The SfM points one frame saw.

    Attributes
    ----------
    u, v : (n,) float64
        Pixel coordinates (column, row; pixel centres at integers) in the frame as returned by
        :meth:`Sequence.rgb`.
    z : (n,) float64
        z-depth along the camera's +Z axis, SfM units (scale-free), all > 0.
    point_id : (n,) int64
        Index of the point in the reconstruction (``points.ply``).
    """

    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    point_id: np.ndarray

    def __len__(self) -> int:
        return int(self.z.size)


def read_meta_intrinsics(path) -> tuple[PinholeIntrinsics, float]:
    """``(intrinsics, fps)`` from ``meta.yaml`` (keys width, height, fx, fy, cx, cy; fps optional)."""
    from colondepth.io import load_yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: not found; {_FIX}")
    meta = load_yaml(p)
    if not isinstance(meta, dict):
        raise UserError(f"{p}: expected a mapping with width, height, fx, fy, cx, cy")
    missing = [k for k in ("width", "height", "fx", "fy", "cx", "cy") if k not in meta]
    if missing:
        raise UserError(f"{p}: missing key(s) {', '.join(missing)}; meta.yaml needs width, height, fx, fy, cx, cy")
    try:
        k = PinholeIntrinsics(fx=float(meta["fx"]), fy=float(meta["fy"]), cx=float(meta["cx"]), cy=float(meta["cy"]),
                              size=ImageSize(int(meta["height"]), int(meta["width"])))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{p}: invalid intrinsics ({exc})") from None
    return k, float(meta.get("fps", 30.0))


def _read_rgb(path: Path, size: ImageSize) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"{path}: not a readable image")
    if img.shape[:2] != size.as_hw():
        raise UserError(f"{path}: image is {img.shape[0]}x{img.shape[1]} but meta.yaml says "
                        f"{size.height}x{size.width}")
    return np.ascontiguousarray(img[..., ::-1])


def _read_sparse(path: Path) -> SparsePoints:
    if not path.is_file():
        raise UserError(f"{path}: sparse points of this frame not found; {_FIX}")
    with np.load(path) as d:
        missing = [k for k in ("u", "v", "z") if k not in d.files]
        if missing:
            raise UserError(f"{path}: missing array(s) {', '.join(missing)}; expected u, v, z (and point_id)")
        u = np.asarray(d["u"], dtype=np.float64).ravel()
        v = np.asarray(d["v"], dtype=np.float64).ravel()
        z = np.asarray(d["z"], dtype=np.float64).ravel()
        pid = np.asarray(d["point_id"], dtype=np.int64).ravel() if "point_id" in d.files else np.arange(z.size)
    if not (u.size == v.size == z.size == pid.size):
        raise UserError(f"{path}: u, v, z and point_id have different lengths")
    keep = np.isfinite(u) & np.isfinite(v) & np.isfinite(z) & (z > 0)
    return SparsePoints(u=u[keep], v=v[keep], z=z[keep], point_id=pid[keep])


def read_sequence(path) -> Sequence:
    """Open the folder ``path`` as one :class:`Sequence` (frames lazily loaded, no dense depth).

    ``seq.extra["sparse_files"]`` lists the ``sparse/*.npz`` file of every frame (read them with
    :func:`sparse_points`); ``seq.fov_mask`` is ``mask.png > 0`` when present; ``seq.world_from_cam``
    holds the SfM trajectory (SfM units) when ``poses.txt`` is present.
    """
    d = Path(path)
    if not d.is_dir():
        raise UserError(f"{d}: folder not found; {_FIX}")
    intrinsics, fps = read_meta_intrinsics(d / "meta.yaml")
    size = intrinsics.size
    rgb_files = sorted((d / "rgb").glob("*.jpg")) + sorted((d / "rgb").glob("*.png"))
    if not rgb_files:
        raise UserError(f"{d / 'rgb'}: no .jpg or .png frames; {_FIX}")
    sparse_files = [d / "sparse" / f"{f.stem}.npz" for f in rgb_files]
    if not (d / "sparse").is_dir():
        raise UserError(f"{d / 'sparse'}: folder not found; {_FIX}")

    fov = None
    mask_path = d / "mask.png"
    if mask_path.is_file():
        import cv2

        m = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if m is None or m.shape != size.as_hw():
            raise UserError(f"{mask_path}: unreadable or not {size.height}x{size.width}")
        fov = m > 0

    world_from_cam = timestamps = None
    if (d / "poses.txt").is_file():
        from colondepth.datasets.tum import read_tum

        timestamps, world_from_cam = read_tum(d / "poses.txt")
        if len(world_from_cam) != len(rgb_files):
            raise UserError(f"{d / 'poses.txt'}: {len(world_from_cam)} poses for {len(rgb_files)} frames")
    if timestamps is None:
        timestamps = np.arange(len(rgb_files), dtype=np.float64) / fps

    def load_rgb(i: int, _f=rgb_files) -> np.ndarray:
        return _read_rgb(_f[i], size)

    return Sequence(
        name=d.name,
        intrinsics=intrinsics,
        num_frames=len(rgb_files),
        load_rgb=load_rgb,
        load_depth_mm=None,
        world_from_cam=world_from_cam,
        timestamps=timestamps,
        fov_mask=fov,
        extra={"format": FORMAT, "source": str(d), "sparse_files": sparse_files, "depth_unit": "SfM units"},
    )


def read_sequences(path) -> list[Sequence]:
    """``[read_sequence(path)]`` (the layout holds one sequence per folder)."""
    return [read_sequence(path)]


def sparse_points(seq: Sequence, i: int) -> SparsePoints:
    """The SfM points of frame ``i`` of a sequence opened by :func:`read_sequence`."""
    files = seq.extra.get("sparse_files") if seq.extra else None
    if files is None:
        raise UserError(f"{seq.name}: has no sparse SfM points (open it with colondepth.datasets.sinus_sfm)")
    return _read_sparse(files[seq._check(i)])


def write_sequence(root, rgbs, points, intrinsics: PinholeIntrinsics, world_from_cam=None, mask=None):
    """Write frames and their sparse points in this layout (for tests and for converting other SfM data).

    Parameters
    ----------
    root : folder to create (must not exist)
    rgbs : sequence of (H, W, 3) uint8 RGB frames (written as lossless ``rgb/NNNNNN.png``)
    points : sequence of ``(u, v, z)`` arrays per frame (px, px, z-depth in SfM units)
    intrinsics : PinholeIntrinsics of the frames
    world_from_cam : (N, 4, 4) float, optional; written as ``poses.txt`` (TUM)
    mask : (H, W) bool, optional; written as ``mask.png``
    """
    import cv2
    import yaml

    root = Path(root)
    (root / "rgb").mkdir(parents=True)
    (root / "sparse").mkdir()
    k = intrinsics
    meta = dict(width=int(k.size.width), height=int(k.size.height), fx=float(k.fx), fy=float(k.fy),
                cx=float(k.cx), cy=float(k.cy), fps=30.0, frames=len(rgbs))
    (root / "meta.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    for i, (rgb, (u, v, z)) in enumerate(zip(rgbs, points)):
        cv2.imwrite(str(root / "rgb" / f"{i:06d}.png"), np.ascontiguousarray(np.asarray(rgb)[..., ::-1]))
        np.savez(root / "sparse" / f"{i:06d}.npz", u=np.asarray(u, np.float32), v=np.asarray(v, np.float32),
                 z=np.asarray(z, np.float32), point_id=np.arange(len(z), dtype=np.int32))
    if mask is not None:
        cv2.imwrite(str(root / "mask.png"), np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8))
    if world_from_cam is not None:
        from colondepth.datasets.tum import write_tum

        write_tum(root / "poses.txt", np.arange(len(rgbs), dtype=np.float64) / 30.0, np.asarray(world_from_cam))
    return root
