"""Sinus SfM reader (frames, intrinsics, sparse points) and scoring depth at sparse points."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.datasets import sinus_sfm
from colondepth.errors import UserError
from colondepth.eval.depth_metrics import depth_errors
from colondepth.eval.sparse_depth import SparseScores, sample_depth


def test_reader_on_written_layout(tmp_path):
    from colondepth.conventions import ImageSize
    from colondepth.geometry.camera import PinholeIntrinsics

    k = PinholeIntrinsics(fx=30.0, fy=31.0, cx=20.5, cy=11.0, size=ImageSize(24, 40))
    rng = np.random.default_rng(0)
    rgbs = [rng.integers(0, 255, (24, 40, 3), dtype=np.uint8) for _ in range(2)]
    pts = [(np.array([1.0, 2.5]), np.array([3.0, 4.0]), np.array([5.0, 6.0])),
           (np.array([7.0]), np.array([8.0]), np.array([-1.0]))]  # a non-positive depth is dropped
    poses = np.tile(np.eye(4), (2, 1, 1))
    poses[1, :3, 3] = [0, 0, 1]
    root = sinus_sfm.write_sequence(tmp_path / "s", rgbs, pts, k, world_from_cam=poses, mask=np.ones((24, 40), bool))
    seq = sinus_sfm.read_sequence(root)
    assert len(seq) == 2 and not seq.has_depth and seq.has_poses
    assert seq.intrinsics == k
    np.testing.assert_array_equal(seq.rgb(1), rgbs[1])  # RGB order, lossless PNG
    assert seq.fov_mask.shape == (24, 40) and seq.fov_mask.all()
    p0 = sinus_sfm.sparse_points(seq, 0)
    assert p0.u.tolist() == [1.0, 2.5] and p0.z.tolist() == [5.0, 6.0] and len(p0) == 2
    assert len(sinus_sfm.sparse_points(seq, 1)) == 0
    np.testing.assert_allclose(seq.world_from_cam[1][:3, 3], [0, 0, 1])


def test_reader_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="not found"):
        sinus_sfm.read_sequence(tmp_path / "absent")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "meta.yaml").write_text("width: 4\nheight: 4\nfx: 1\n")
    with pytest.raises(UserError, match="missing key"):
        sinus_sfm.read_sequence(tmp_path / "s")


def test_sample_depth_bilinear_and_nearest():
    v, u = np.mgrid[0:5, 0:7].astype(np.float64)
    plane = 2.0 + 0.5 * u + 0.25 * v  # bilinear sampling reproduces an affine map exactly
    uq, vq = np.array([0.0, 3.3, 6.0, 5.75, 10.0]), np.array([0.0, 1.6, 4.0, 0.2, -3.0])
    got = sample_depth(plane, uq, vq)
    np.testing.assert_allclose(got, 2.0 + 0.5 * np.clip(uq, 0, 6) + 0.25 * np.clip(vq, 0, 4))
    near = sample_depth(plane, np.array([3.4, 3.6]), np.array([1.4, 1.6]), mode="nearest")
    np.testing.assert_allclose(near, [2.0 + 1.5 + 0.25, 2.0 + 2.0 + 0.5])
    with pytest.raises(ValueError, match="sampling"):
        sample_depth(plane, uq, vq, mode="cubic")


def test_sparse_scores_median_scaling_and_pooling():
    s = SparseScores()
    gt1, gt2 = np.array([1.0, 2.0, 4.0]), np.array([10.0, 20.0])
    assert s.add(3.0 * gt1, gt1) == pytest.approx(1 / 3)  # exact shape, wrong scale: no error
    s.add(np.array([20.0, 20.0]), gt2)  # scale 15/20: aligned [15, 15]
    out = s.summary()
    assert out["num_frames"] == 2 and out["num_points"] == 5
    pooled = depth_errors(gt_mm=np.r_[gt1, gt2], pred_mm=np.r_[gt1, 15.0, 15.0])
    assert out["pooled"] == pytest.approx(pooled)
    assert out["per_frame_mean"]["abs_rel"] == pytest.approx(depth_errors(gt_mm=gt2, pred_mm=np.array([15.0, 15.0]))["abs_rel"] / 2)
    assert s.add(np.array([1.0]), np.array([0.0])) is None  # no valid point: frame not counted
    assert s.summary()["num_frames"] == 2


def test_shared_sample(shared_data):
    root = shared_data / "sinus_sfm_sample"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    seq = sinus_sfm.read_sequence(root)
    assert len(seq) == 381 and seq.intrinsics.size.as_hw() == (270, 480) and seq.has_poses
    rgb = seq.rgb(0)
    assert rgb.shape == (270, 480, 3) and rgb.dtype == np.uint8
    pts = sinus_sfm.sparse_points(seq, 0)
    assert 100 < len(pts) < 1000 and np.all(pts.z > 0)
    assert np.all((pts.u >= 0) & (pts.u <= 479) & (pts.v >= 0) & (pts.v <= 269))
    assert seq.fov_mask[np.rint(pts.v).astype(int), np.rint(pts.u).astype(int)].all()


def test_score_sparse_frames_batches_methods_and_skips_frames_without_points():
    from types import SimpleNamespace

    from colondepth.eval.sparse_depth import score_sparse_frames

    rng = np.random.default_rng(3)
    depth = [rng.uniform(10, 40, (6, 8)) for _ in range(5)]

    def points_of(i):
        if i == 2:  # a frame whose points were all filtered out
            return SimpleNamespace(u=np.zeros(0), v=np.zeros(0), z=np.zeros(0))
        u, v = np.array([0.0, 3.0, 7.0, 5.0]), np.array([0.0, 2.0, 5.0, 1.0])
        return SimpleNamespace(u=u, v=v, z=depth[i][v.astype(int), u.astype(int)])

    calls = []

    def twice(rgbs):
        calls.append(len(rgbs))
        return np.stack([2 * depth[int(r[0, 0, 0])] for r in rgbs])  # the frame number rides in the image

    rgb_of = lambda i: np.full((6, 8, 3), i, np.uint8)  # noqa: E731
    out = score_sparse_frames(range(5), rgb_of, points_of, {"twice": twice, "ones": lambda r: np.ones(r.shape[:3])},
                              batch_size=2)
    assert calls == [2, 2, 1]
    assert out["twice"].num_frames == 4 and out["twice"].num_points == 16
    assert out["twice"].summary()["pooled"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)  # right up to scale
    assert out["ones"].summary()["pooled"]["abs_rel"] > 0.05


def test_errors_by_view_angle_show_a_positional_prior():
    """A prediction that puts the centre of the view too far and the rim too near (the colon renders' "far
    lumen in the middle") shows up in the view-angle bands: positive mean log error near the axis, negative at
    the rim; without angles there is no breakdown."""
    import numpy as np

    from colondepth.eval.sparse_depth import SparseScores, view_angle_deg

    K = np.array([[100.0, 0.0, 100.0], [0.0, 100.0, 100.0], [0.0, 0.0, 1.0]])
    rng = np.random.default_rng(0)
    u, v = rng.uniform(0, 199, (2, 4000))
    ang = view_angle_deg(u, v, K)
    assert ang.min() >= 0 and ang.max() < 55
    gt = rng.uniform(10.0, 20.0, u.size)
    pred = gt * np.exp(0.2 - 0.01 * ang)  # too far at the centre, too near beyond 20 degrees
    s = SparseScores()
    s.add(pred, gt, ang)
    bands = {tuple(b["deg"]): b for b in s.summary()["by_view_angle"]}
    assert bands[(0.0, 15.0)]["mean_log_error"] > 0.05 and bands[(45.0, 60.0)]["mean_log_error"] < -0.1
    assert sum(b["points"] for b in bands.values()) == u.size
    plain = SparseScores()
    plain.add(pred, gt)
    assert "by_view_angle" not in plain.summary()
