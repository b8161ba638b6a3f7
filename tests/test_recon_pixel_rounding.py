"""Fusion and coverage put a point at an exact half-pixel position into the same pixel.

Camera: 10x10 pixels, fx = fy = 8 px, principal point (4.5, 4.5), identity pose.  A voxel centre at
``(x, y, 8)`` mm (1 mm voxels) projects to ``u = x + 4.5``, ``v = y + 4.5``: exactly half a pixel for every
integer voxel, so it lies on the border of two pixels.  The project's rule (pixel centres at integers,
:func:`colondepth.geometry.projection.pixel_index`) assigns it pixel ``floor(u + 0.5) = x + 5``; ``np.round``
(half to even) would assign ``x + 4`` for odd ``x`` and so disagree on every other voxel.
"""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.recon.coverage import points_observed_in_frame
from colondepth.recon.fusion import TSDFVolume

N = 10
Z = 8.0
INTR = PinholeIntrinsics(fx=8.0, fy=8.0, cx=4.5, cy=4.5, size=ImageSize(N, N))
XS = [-3, -2, -1, 0, 1, 2, 3]  # voxel x (mm): u = x + 4.5, pixel column x + 5 (2..8, away from the border)


def _column(x: int) -> int:
    return x + 5


def _fusion_tsdf_at(x: int, depth: np.ndarray) -> tuple[float, float]:
    vol = TSDFVolume(voxel_mm=1.0, with_color=False)
    vol.integrate(depth, INTR, np.eye(4))
    dense = vol.to_dense(with_color=False)
    i, j, k = np.array([x, 0, int(Z)]) - dense.index_origin
    return float(dense.tsdf[i, j, k]), float(dense.weight[i, j, k])


@pytest.mark.parametrize("x", XS)
def test_fusion_uses_the_round_half_up_pixel(x):
    # depth 8 mm exactly at column x + 5 and 0.25 mm per column away from it: the voxel (x, 0, 8) gets
    # TSDF 0 only from that column; from the neighbour np.round picks it would get about -+0.25 / 4 mm
    u = np.arange(N, dtype=np.float64)
    depth = np.tile(Z + 0.25 * (u - _column(x)), (N, 1)).astype(np.float32)
    tsdf, weight = _fusion_tsdf_at(x, depth)
    assert weight > 0
    assert abs(tsdf) < 1e-6


@pytest.mark.parametrize("x", XS)
def test_coverage_uses_the_same_pixel_as_fusion(x):
    # a flat wall at 8 mm; only one pixel of the frame is valid: a point is observed iff it falls in it
    depth = np.full((N, N), Z, dtype=np.float32)
    point = np.array([[float(x), 0.0, Z]])  # v = 4.5 -> row 5
    for col in range(N):
        for row in (4, 5):
            valid = np.zeros((N, N), dtype=bool)
            valid[row, col] = True
            seen = points_observed_in_frame(point, depth, np.eye(4), INTR, valid=valid)[0]
            assert seen == (col == _column(x) and row == 5), (col, row)


def test_np_round_would_disagree_here():
    """The scene really is at the half-pixel tie for which the two old roundings differed."""
    u = np.array(XS, dtype=np.float64) + 4.5
    from colondepth.geometry.projection import pixel_index

    assert pixel_index(u).tolist() == [_column(x) for x in XS] == [2, 3, 4, 5, 6, 7, 8]
    assert np.round(u).astype(int).tolist() == [2, 2, 4, 4, 6, 6, 8]
