"""C3VD reader on tiny generated fixtures (tests/fixtures/c3vd/make_fixtures.py): depth scale and
invalid values, column-major poses (checked by re-projecting the analytic plane), intrinsics."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from colondepth.datasets import c3vd
from colondepth.datasets.registry import open_sequences
from colondepth.datasets.video import IntrinsicsGuessWarning
from colondepth.errors import UserError

FIX = Path(__file__).resolve().parent / "fixtures" / "c3vd"


@pytest.fixture(scope="module")
def seq():
    seqs = c3vd.read_sequences(FIX)
    assert [s.name for s in seqs] == ["seq_plane"]
    return seqs[0]


def test_layout_and_intrinsics(seq):
    assert seq.num_frames == 3
    k = seq.intrinsics
    assert (k.fx, k.fy, k.cx, k.cy, k.size.as_hw()) == (18.0, 19.0, 9.5, 7.0, (16, 20))
    assert seq.rgb(1).shape == (16, 20, 3) and seq.rgb(1).dtype == np.uint8


def test_depth_scale_and_invalid_values(seq):
    import imageio.v3 as iio

    raw = iio.imread(FIX / "seq_plane" / "0001_depth.tiff")
    d = seq.depth_mm(1)
    assert d[0, 0] == 0.0 and d[-1, -1] == 0.0  # 0 and 65535 mark invalid
    assert d[5, 7] == pytest.approx(raw[5, 7] / 65535 * 100, rel=1e-6)
    assert (d > 0).sum() == d.size - 2


def test_poses_are_column_major_world_from_cam(seq):
    T = seq.world_from_cam
    assert T.shape == (3, 4, 4)
    np.testing.assert_allclose(T[1, :3, 3], [2.0, -1.0, 3.0])  # translation column (mm)
    np.testing.assert_allclose(T[:, 3], np.tile([0, 0, 0, 1.0], (3, 1)))
    # re-project frame 0's depth into frame 2 and compare with frame 2's depth (a tilted plane)
    K = seq.intrinsics.K
    d0, d2 = seq.depth_mm(0).astype(np.float64), seq.depth_mm(2).astype(np.float64)
    v, u = np.mgrid[:16, :20]
    m = d0 > 0
    z = d0[m]
    pts = np.stack([(u[m] - K[0, 2]) / K[0, 0] * z, (v[m] - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)])
    p2 = np.linalg.solve(T[2], T[0]) @ pts
    u2, v2 = K[0, 0] * p2[0] / p2[2] + K[0, 2], K[1, 1] * p2[1] / p2[2] + K[1, 2]
    inside = (u2 > 0) & (u2 < 19) & (v2 > 0) & (v2 < 15)
    assert inside.sum() > 60
    from scipy.ndimage import map_coordinates

    d2_at = map_coordinates(d2, [v2[inside], u2[inside]], order=1)
    ok = d2_at > 0
    rel = np.abs(d2_at[ok] - p2[2][inside][ok]) / d2_at[ok]
    assert np.median(rel) < 2e-3  # a plane's depth is bilinear-exact up to 1/z curvature and uint16 steps
    # the row-major reading is rejected outright (translation lands in the bottom row)
    line = (FIX / "seq_plane" / "pose.txt").read_text().splitlines()[1]
    assert not np.allclose(np.array(line.split(","), float).reshape(4, 4)[3], [0, 0, 0, 1])


def test_registry_format(seq):
    seqs = open_sequences(FIX / "seq_plane", "c3vd")
    assert seqs[0].num_frames == 3


def test_errors_and_guessed_intrinsics(tmp_path):
    d = tmp_path / "seqx"
    shutil.copytree(FIX / "seq_plane", d)
    (d / "intrinsics.yaml").unlink()
    with pytest.warns(IntrinsicsGuessWarning):
        s = c3vd.read_sequences(d)[0]
    assert s.intrinsics.fov_x_deg == pytest.approx(140.0)
    (d / "pose.txt").write_text("1,2,3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntrinsicsGuessWarning)
        with pytest.raises(UserError, match=r"pose.txt:1: 3 values"):
            c3vd.read_sequences(d)
    row_major = np.eye(4)
    row_major[:3, 3] = [1, 2, 3]
    (d / "pose.txt").write_text("\n".join([",".join(map(str, row_major.ravel()))] * 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntrinsicsGuessWarning)
        with pytest.raises(UserError, match="not 0 0 0 1"):
            c3vd.read_sequences(d)
    with pytest.raises(UserError, match="C3VD folder not found"):
        c3vd.read_sequences(tmp_path / "nope")
