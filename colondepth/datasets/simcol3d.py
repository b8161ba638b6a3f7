"""Reader for SimCol3D (synthetic colonoscopy rendered in Unity), as distributed.

Layout read (``path`` may be the dataset root, one ``SyntheticColon_*`` folder or one ``Frames_S*`` folder)::

    SyntheticColon_I/cam.txt                               nine numbers, see below
    SyntheticColon_I/Frames_S1/FrameBuffer_0000.png        RGBA uint8 (alpha ignored)
    SyntheticColon_I/Frames_S1/Depth_0000.png              uint16 z-depth, depth_cm = value / 255 / 256 * 20
    SyntheticColon_I/SavedPosition_S1.txt                  tx ty tz per line, cm, Unity world
    SyntheticColon_I/SavedRotationQuaternion_S1.txt        qx qy qz qw per line, Unity camera-to-world

Conversions (each one pinned by ``tests/test_simcol3d.py``)
    Depth
        ``depth_mm = value / 65280 * 200`` (``value / 255 / 256 * 20`` cm); 0 is invalid.
    Poses
        Unity is left-handed: camera looks along +Z with +Y up and +X right.  Conjugating the
        camera-to-world matrix ``P`` (Unity) with ``S = diag(1, -1, 1, 1)``,
        ``world_from_cam = S @ P @ S``, flips Y in the world (making it right-handed) *and* in the
        camera, whose axes become +X right, +Y down, +Z forward: exactly the OpenCV camera.  No further
        axis change is needed.  Translations are multiplied by 10 (cm -> mm).
    Intrinsics
        ``cam.txt`` holds ``a 0 b 0 c d 0 0 1``.  SimCol3D's own tools do *not* read this as a row-major
        ``K``: ``fx = a``, ``fy = b``, ``cx = c``, ``cy = d`` (for the 475 px frames: fx = fy = 227.60416,
        cx = cy = 237.5).  Re-projecting frame depth into other frames with the converted poses gives a
        median relative depth error of 1.45 % with this reading (the floor set by 0.78 mm depth steps) and
        1.96 % with the row-major reading (fx = a, cx = b, fy = c, cy = d).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics

#: Unity's left-handed frames -> right-handed OpenCV frames: ``world_from_cam = S @ P_unity @ S``.
UNITY_FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])

#: ``depth_mm = value * DEPTH_MM_PER_UNIT`` (= 20 cm / 255 / 256 per unit).
DEPTH_MM_PER_UNIT = 200.0 / (255.0 * 256.0)

CM_TO_MM = 10.0


def read_cam_txt(path, size: ImageSize) -> PinholeIntrinsics:
    """Intrinsics from SimCol3D's ``cam.txt`` (nine numbers ``fx 0 fy 0 cx cy 0 0 1``, see module doc)."""
    p = Path(path)
    try:
        v = np.loadtxt(p, dtype=np.float64).ravel()
    except (OSError, ValueError) as exc:
        raise UserError(f"{p}: cannot read SimCol3D cam.txt ({exc}); it must hold nine numbers") from None
    if v.size != 9:
        raise UserError(f"{p}: SimCol3D cam.txt must hold nine numbers, found {v.size}")
    if v[1] != 0 or v[3] != 0 or v[6] != 0 or v[7] != 0 or v[8] != 1:
        raise UserError(f"{p}: unexpected SimCol3D cam.txt layout {v.tolist()}; expected 'fx 0 fy 0 cx cy 0 0 1'")
    return PinholeIntrinsics(fx=float(v[0]), fy=float(v[2]), cx=float(v[4]), cy=float(v[5]), size=size)


def unity_to_world_from_cam(position_cm: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """OpenCV ``world_from_cam`` ``(N, 4, 4)`` mm from Unity camera-to-world positions ``(N, 3)`` cm and
    rotations ``(N, 4)`` (qx qy qz qw, left-handed)."""
    from scipy.spatial.transform import Rotation

    position_cm = np.asarray(position_cm, dtype=np.float64).reshape(-1, 3)
    quat_xyzw = np.asarray(quat_xyzw, dtype=np.float64).reshape(-1, 4)
    n = len(position_cm)
    P = np.tile(np.eye(4), (n, 1, 1))
    P[:, :3, :3] = Rotation.from_quat(quat_xyzw).as_matrix()
    P[:, :3, 3] = position_cm * CM_TO_MM
    return UNITY_FLIP_Y @ P @ UNITY_FLIP_Y


def depth_png_to_mm(value: np.ndarray) -> np.ndarray:
    """``(H, W) uint16`` SimCol3D depth -> ``(H, W) float32`` z-depth mm (0 stays 0 = invalid)."""
    return (np.asarray(value).astype(np.float64) * DEPTH_MM_PER_UNIT).astype(np.float32)


def _frame_index(p: Path) -> int:
    m = re.search(r"(\d+)$", p.stem)
    return int(m.group(1)) if m else -1


def _read_one(frames_dir: Path) -> Sequence:
    import imageio.v3 as iio

    colon_dir = frames_dir.parent
    tag = frames_dir.name[len("Frames_"):]  # e.g. "S1", "B12", "O3"
    rgb_files = sorted(frames_dir.glob("FrameBuffer_*.png"), key=_frame_index)
    if not rgb_files:
        raise UserError(f"{frames_dir}: no FrameBuffer_*.png frames; pass a SimCol3D folder")
    depth_files = [frames_dir / f.name.replace("FrameBuffer_", "Depth_") for f in rgb_files]
    has_depth = all(f.is_file() for f in depth_files)
    first = iio.imread(rgb_files[0])
    size = ImageSize(first.shape[0], first.shape[1])

    cam = colon_dir / "cam.txt"
    if not cam.is_file():
        raise UserError(f"{cam}: SimCol3D intrinsics not found; keep cam.txt next to the Frames_* folders")
    intrinsics = read_cam_txt(cam, size)

    world_from_cam = None
    pos_f = colon_dir / f"SavedPosition_{tag}.txt"
    rot_f = colon_dir / f"SavedRotationQuaternion_{tag}.txt"
    if pos_f.is_file() and rot_f.is_file():
        pos = np.loadtxt(pos_f, dtype=np.float64, ndmin=2)
        rot = np.loadtxt(rot_f, dtype=np.float64, ndmin=2)
        if pos.shape[1] != 3 or rot.shape[1] != 4:
            raise UserError(f"{pos_f}: expected 'tx ty tz' lines and {rot_f.name} 'qx qy qz qw' lines")
        n_pose = min(len(pos), len(rot))
        if n_pose < len(rgb_files):
            raise UserError(f"{pos_f}: {n_pose} poses for {len(rgb_files)} frames; the pose files are truncated")
        world_from_cam = unity_to_world_from_cam(pos[: len(rgb_files)], rot[: len(rgb_files)])

    def load_rgb(i: int, _f=rgb_files) -> np.ndarray:
        img = iio.imread(_f[i])
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        return np.ascontiguousarray(img)

    def load_depth_mm(i: int, _f=depth_files) -> np.ndarray:
        d = iio.imread(_f[i])
        if d.dtype != np.uint16:
            raise UserError(f"{_f[i]}: SimCol3D depth must be 16-bit PNG, got {d.dtype}")
        return depth_png_to_mm(d)

    return Sequence(
        name=f"{colon_dir.name}/{tag}",
        intrinsics=intrinsics,
        num_frames=len(rgb_files),
        load_rgb=load_rgb,
        load_depth_mm=load_depth_mm if has_depth else None,
        world_from_cam=world_from_cam,
        timestamps=np.arange(len(rgb_files), dtype=np.float64),
        extra={"source": str(frames_dir), "format": "simcol3d"},
    )


def read_sequences(path) -> list[Sequence]:
    """All SimCol3D sequences under ``path`` (root, ``SyntheticColon_*`` or ``Frames_*`` folder), sorted."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: SimCol3D folder not found; pass the folder holding SyntheticColon_* or Frames_*")
    if p.name.startswith("Frames_"):
        dirs = [p]
    else:
        dirs = sorted(d for d in p.rglob("Frames_*") if d.is_dir())
    return [_read_one(d) for d in dirs]
