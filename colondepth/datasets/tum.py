"""TUM trajectory files: one line per pose, ``t tx ty tz qx qy qz qw``.

The pose on each line is ``world_from_cam`` (OpenCV camera, millimetres in ColonDepth datasets);
the quaternion is scalar-last ``(x, y, z, w)`` as scipy's ``Rotation.as_quat`` returns it, and is
written with ``qw >= 0`` so a pose has exactly one text form.  Lines starting with ``#`` are comments.
Readable by ``evo`` (``evo_traj tum poses.txt``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from colondepth.errors import UserError
from colondepth.io import atomic_write_text


def poses_to_tum_lines(timestamps: np.ndarray, world_from_cam: np.ndarray) -> list[str]:
    """Format ``(N,)`` seconds and ``(N, 4, 4)`` poses as TUM lines (6 decimals for t and mm, 9 for q).

    >>> poses_to_tum_lines(np.array([0.5]), np.eye(4)[None])
    ['0.500000 0.000000 0.000000 0.000000 0.000000000 0.000000000 0.000000000 1.000000000']
    """
    t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    P = np.asarray(world_from_cam, dtype=np.float64)
    if P.ndim != 3 or P.shape[1:] != (4, 4) or len(P) != len(t):
        raise ValueError(f"need (N,) timestamps and (N, 4, 4) poses, got {t.shape} and {P.shape}")
    q = Rotation.from_matrix(P[:, :3, :3]).as_quat()  # (x, y, z, w)
    q = np.where(q[:, 3:4] < 0, -q, q)
    q = q + 0.0  # turn -0.0 into 0.0 so the text is unique
    xyz = P[:, :3, 3] + 0.0
    return [
        f"{ti:.6f} {x:.6f} {y:.6f} {z:.6f} {qx:.9f} {qy:.9f} {qz:.9f} {qw:.9f}"
        for ti, (x, y, z), (qx, qy, qz, qw) in zip(t, xyz, q)
    ]


def write_tum(path: str | Path, timestamps: np.ndarray, world_from_cam: np.ndarray) -> Path:
    """Write a TUM file atomically; see :func:`poses_to_tum_lines`."""
    lines = poses_to_tum_lines(timestamps, world_from_cam)
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM file -> ``(timestamps (N,) float64, world_from_cam (N, 4, 4) float64)``.

    Raises UserError naming the file and line for anything that is not 8 numbers with a unit-norm
    (within 1e-3) quaternion.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: pose file not found; the sequence is incomplete, regenerate it")
    ts, rows = [], []
    for lineno, line in enumerate(p.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            vals = [float(x) for x in parts]
        except ValueError:
            vals = []
        if len(vals) != 8:
            raise UserError(f"{p}:{lineno}: expected 8 numbers 't tx ty tz qx qy qz qw', got {line[:80]!r}")
        if not np.all(np.isfinite(vals)):
            raise UserError(f"{p}:{lineno}: pose has a NaN or infinite value ({line[:80]!r}); the file is corrupt, "
                            f"regenerate or re-export it")
        q = np.asarray(vals[4:])
        if abs(np.linalg.norm(q) - 1.0) > 1e-3:
            raise UserError(f"{p}:{lineno}: quaternion norm {np.linalg.norm(q):.4f} is not 1; the file is corrupt")
        ts.append(vals[0])
        rows.append(vals[1:])
    if not rows:
        raise UserError(f"{p}: no poses in the file; the sequence is incomplete, regenerate it")
    arr = np.asarray(rows)
    poses = np.tile(np.eye(4), (len(arr), 1, 1))
    poses[:, :3, :3] = Rotation.from_quat(arr[:, 3:]).as_matrix()
    poses[:, :3, 3] = arr[:, :3]
    return np.asarray(ts), poses
