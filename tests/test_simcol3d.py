"""SimCol3D reader: intrinsics reading, depth scale and the Unity -> OpenCV pose conversion, proven by
re-projecting depth between frames of the shared sample."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.datasets import simcol3d
from colondepth.datasets.registry import open_sequences
from colondepth.errors import UserError


def reprojection_error(depth_i, depth_j, K, world_from_i, world_from_j):
    """Median |z_ij - depth_j| / depth_j of frame i's depth points seen in frame j (nearest pixel)."""
    H, W = depth_i.shape
    v, u = np.mgrid[:H, :W]
    m = depth_i > 0
    z = depth_i[m]
    pts = np.stack([(u[m] - K[0, 2]) / K[0, 0] * z, (v[m] - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)])
    j_from_i = np.linalg.solve(world_from_j, world_from_i)
    pj = j_from_i @ pts
    front = pj[2] > 1.0
    uj = np.round(K[0, 0] * pj[0] / np.where(front, pj[2], 1) + K[0, 2]).astype(int)
    vj = np.round(K[1, 1] * pj[1] / np.where(front, pj[2], 1) + K[1, 2]).astype(int)
    ok = front & (uj >= 0) & (uj < W) & (vj >= 0) & (vj < H)
    dj = depth_j[vj[ok], uj[ok]]
    good = dj > 0
    assert good.sum() > 1000, "too few overlapping pixels to judge"
    return float(np.median(np.abs(pj[2][ok][good] - dj[good]) / dj[good]))


@pytest.fixture(scope="module")
def seq(shared_data):
    seqs = simcol3d.read_sequences(shared_data / "simcol3d_sample")
    assert len(seqs) == 1
    return seqs[0]


def test_intrinsics_and_layout(seq):
    k = seq.intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == (227.60416, 227.60416, 237.5, 237.5)
    assert k.size.as_hw() == (475, 475)
    assert seq.num_frames == 10 and seq.name == "SyntheticColon_I/S1"
    assert seq.rgb(0).shape == (475, 475, 3) and seq.rgb(0).dtype == np.uint8
    assert seq.world_from_cam.shape == (10, 4, 4)
    R = seq.world_from_cam[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.tile(np.eye(3), (10, 1, 1)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)  # right-handed after conversion


def test_depth_scale(seq, shared_data):
    import imageio.v3 as iio

    raw = iio.imread(shared_data / "simcol3d_sample/SyntheticColon_I/Frames_S1/Depth_0000.png")
    d = seq.depth_mm(0)
    assert d.dtype == np.float32
    v = int(raw[100, 200])
    assert d[100, 200] == pytest.approx(v / 255 / 256 * 20 * 10, rel=1e-6)
    assert 2.0 < float(np.median(d)) < 200.0


def test_poses_reproject_depth_between_frames(seq):
    K = seq.intrinsics.K
    D = [seq.depth_mm(i).astype(np.float64) for i in range(seq.num_frames)]
    T = seq.world_from_cam
    errs = [reprojection_error(D[i], D[j], K, T[i], T[j]) for i, j in [(0, 9), (9, 0), (0, 4), (5, 9)]]
    assert max(errs) < 0.025, errs  # floor from 0.78 mm depth steps: ~1.5 %
    # the conversion matters: the raw left-handed pose, or the row-major K, is clearly worse
    S = simcol3d.UNITY_FLIP_Y
    raw = S @ T @ S
    bad_pose = [reprojection_error(D[i], D[j], K, raw[i], raw[j]) for i, j in [(0, 9), (9, 0)]]
    assert min(bad_pose) > 0.1, bad_pose
    K_row_major = np.array([[227.60416, 0, 227.60416], [0, 237.5, 237.5], [0, 0, 1]])
    bad_k = np.mean([reprojection_error(D[i], D[j], K_row_major, T[i], T[j]) for i, j in [(0, 9), (9, 0), (0, 4), (5, 9)]])
    assert bad_k > 1.2 * np.mean(errs)


def test_camera_looks_forward_along_motion(seq):
    # the endoscope advances: the displacement between frames points along the camera's +Z (OpenCV)
    T = seq.world_from_cam
    step_world = T[9, :3, 3] - T[0, :3, 3]
    step_cam0 = T[0, :3, :3].T @ step_world
    assert step_cam0[2] > 0.8 * np.linalg.norm(step_cam0)


def test_registry_and_errors(shared_data, tmp_path):
    seqs = open_sequences(shared_data / "simcol3d_sample" / "SyntheticColon_I", "simcol3d")
    assert [s.name for s in seqs] == ["SyntheticColon_I/S1"]
    with pytest.raises(UserError, match="SimCol3D folder not found"):
        simcol3d.read_sequences(tmp_path / "missing")
    bad = tmp_path / "cam.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(UserError, match="nine numbers"):
        simcol3d.read_cam_txt(bad, seqs[0].intrinsics.size)
