"""Pinhole intrinsics that stay consistent under resize and crop.

Convention: pixel centres at integer coordinates (see :mod:`colondepth.conventions`).  Under a
resize by factors ``(s_x, s_y)`` the continuous image edge ``-0.5`` maps to ``-0.5``, so
``cx' = (cx + 0.5) * s_x - 0.5``; focal lengths scale by the same factors.  A crop at
``(x0, y0)`` shifts the principal point: ``cx' = cx - x0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from colondepth.conventions import ImageSize


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Pinhole camera intrinsics in pixels (OpenCV convention, pixel centres at integers).

    Attributes: ``fx, fy`` focal lengths (px); ``cx, cy`` principal point (px); ``size`` the
    :class:`ImageSize` the numbers refer to.

    >>> k = PinholeIntrinsics(fx=100.0, fy=100.0, cx=63.5, cy=63.5, size=ImageSize(128, 128))
    >>> k2 = k.resized(ImageSize(64, 64))
    >>> (k2.fx, k2.cx)
    (50.0, 31.5)
    >>> k.cropped(x0=10, y0=20, size=ImageSize(50, 60)).cx
    53.5
    """

    fx: float
    fy: float
    cx: float
    cy: float
    size: ImageSize

    def __post_init__(self) -> None:
        for name in ("fx", "fy", "cx", "cy"):
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"intrinsics {name} must be finite, got {v}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"intrinsics focal lengths must be positive, got fx={self.fx} fy={self.fy}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_fov(cls, size: ImageSize, fov_x_deg: float) -> "PinholeIntrinsics":
        """Square pixels, principal point at the image centre, horizontal field of view in degrees."""
        if not 0.0 < fov_x_deg < 180.0:
            raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_x_deg}")
        fx = (size.width / 2.0) / math.tan(math.radians(fov_x_deg) / 2.0)
        return cls(fx=fx, fy=fx, cx=(size.width - 1) / 2.0, cy=(size.height - 1) / 2.0, size=size)

    @classmethod
    def from_matrix(cls, K: np.ndarray, size: ImageSize) -> "PinholeIntrinsics":
        """From a 3x3 matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (skew must be 0)."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {K.shape}")
        if abs(K[0, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9 or abs(K[2, 0]) > 1e-9 or abs(K[2, 1]) > 1e-9 \
                or abs(K[2, 2] - 1.0) > 1e-9:
            raise ValueError(f"K must be [[fx,0,cx],[0,fy,cy],[0,0,1]], got {K.tolist()}")
        return cls(fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]), size=size)

    # -- views --------------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def K_tensor(self, device=None, dtype=None):
        """(3, 3) torch tensor of :attr:`K` on ``device`` (default CPU) and ``dtype`` (default float32)."""
        import torch

        return torch.as_tensor(self.K, dtype=dtype or torch.float32, device=device)

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan((self.size.width / 2.0) / self.fx))

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2.0 * math.atan((self.size.height / 2.0) / self.fy))

    # -- transforms ---------------------------------------------------------------------------
    def resized(self, new_size: ImageSize) -> "PinholeIntrinsics":
        """Intrinsics of the same camera after resizing the image to ``new_size``."""
        sx = new_size.width / self.size.width
        sy = new_size.height / self.size.height
        return PinholeIntrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            size=new_size,
        )

    def cropped(self, x0: int, y0: int, size: ImageSize) -> "PinholeIntrinsics":
        """Intrinsics after keeping the window ``[x0, x0 + width) x [y0, y0 + height)``."""
        if x0 < 0 or y0 < 0 or x0 + size.width > self.size.width or y0 + size.height > self.size.height:
            raise ValueError(
                f"crop x={x0} y={y0} {size} lies outside the {self.size} image"
            )
        return replace(self, cx=self.cx - x0, cy=self.cy - y0, size=size)

    def to_dict(self) -> dict:
        return {
            "width": int(self.size.width),
            "height": int(self.size.height),
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PinholeIntrinsics":
        return cls(
            fx=float(d["fx"]), fy=float(d["fy"]), cx=float(d["cx"]), cy=float(d["cy"]),
            size=ImageSize(int(d["height"]), int(d["width"])),
        )
