"""The in-memory sequence type every reader produces (synthetic datasets, SimCol3D, C3VD, video).

A reader converts its on-disk layout to these conventions once (OpenCV camera frame, millimetres,
``world_from_cam`` poses, z-depth with 0 = invalid); everything downstream sees only this type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from colondepth.geometry.camera import PinholeIntrinsics


@dataclass
class Sequence:
    """A sequence of frames from one camera, with optional ground truth.

    Attributes
    ----------
    name : str
        Human-readable name (e.g. ``seq_00003`` or ``SyntheticColon_I/S1``).
    intrinsics : PinholeIntrinsics
        Pixels, OpenCV convention, for the frames as returned by :meth:`rgb`.
    num_frames : int
    load_rgb : callable ``i -> (H, W, 3) uint8`` RGB.
    load_depth_mm : callable ``i -> (H, W) float32`` z-depth in mm, 0 where invalid; ``None`` when
        the source has no ground-truth depth.
    world_from_cam : ``(N, 4, 4) float64`` or ``None``; camera-to-world, OpenCV camera, mm.
    timestamps : ``(N,) float64`` seconds.
    level : str or None
        Synthetic complexity level (e.g. ``L3``) for per-level metrics.
    mesh_path : Path or None
        Ground-truth surface (world frame, mm) when known.
    fov_mask : ``(H, W) bool`` or None
        True inside the endoscope's field of view.
    """

    name: str
    intrinsics: PinholeIntrinsics
    num_frames: int
    load_rgb: Callable[[int], np.ndarray]
    load_depth_mm: Optional[Callable[[int], np.ndarray]] = None
    world_from_cam: Optional[np.ndarray] = None
    timestamps: Optional[np.ndarray] = None
    level: Optional[str] = None
    mesh_path: Optional[Path] = None
    fov_mask: Optional[np.ndarray] = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.num_frames

    def _check(self, i: int) -> int:
        if not -self.num_frames <= i < self.num_frames:
            raise IndexError(f"{self.name}: frame {i} out of range (0..{self.num_frames - 1})")
        return i % self.num_frames

    @property
    def has_depth(self) -> bool:
        return self.load_depth_mm is not None

    @property
    def has_poses(self) -> bool:
        return self.world_from_cam is not None

    def rgb(self, i: int) -> np.ndarray:
        """Frame ``i`` as ``(H, W, 3) uint8`` RGB."""
        return self.load_rgb(self._check(i))

    def depth_mm(self, i: int) -> np.ndarray:
        """Ground-truth z-depth of frame ``i``, ``(H, W) float32`` mm, 0 = invalid."""
        if self.load_depth_mm is None:
            from colondepth.errors import UserError

            raise UserError(f"{self.name}: has no ground-truth depth; use predicted depth instead")
        return self.load_depth_mm(self._check(i))
