"""Two-frame and fused inference on ordered frames (colondepth.infer.two_frame): the adaptive baseline, the
confidences, the fusion rule and the streaming order, analytically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.infer import two_frame as tf


def _line(n, step=1.0):
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = np.arange(n) * step
    return poses


def test_partner_gives_the_trained_parallax_ratio():
    poses = {i: p for i, p in enumerate(_line(12))}
    assert tf.choose_partner(5, poses, median_depth_mm=10.0, max_gap=6, ratio=0.2) == (3, 2.0)  # |t| = 2 mm
    j, t = tf.choose_partner(5, poses, 30.0, max_gap=6, ratio=0.2)  # wants 6 mm: 6 frames away
    assert abs(j - 5) == 6 and t == 6.0
    j, t = tf.choose_partner(5, poses, 30.0, max_gap=3, ratio=0.2)  # capped by max_gap
    assert abs(j - 5) == 3 and t == 3.0
    still = {i: np.eye(4) for i in range(5)}
    assert tf.choose_partner(2, still, 10.0) == (None, 0.0)


def test_focus_of_expansion_confidence():
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    fwd = np.eye(4)
    fwd[2, 3] = -2.0  # partner_from_target: the partner is 2 mm ahead (target points move to z - 2)
    c = tf.foe_confidence(K, fwd, (48, 64))
    assert c.shape == (48, 64) and c[23, 31] < 0.01 and c[0, 0] > 0.9  # no parallax at the focus
    side = np.eye(4)
    side[0, 3] = 1.0
    assert np.all(tf.foe_confidence(K, side, (48, 64)) == 1.0)


def test_photometric_confidence_is_one_for_a_consistent_pair():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    K = np.array([[20.0, 0, 11.5], [0, 20.0, 9.5], [0, 0, 1]])
    conf = tf.photometric_confidence(img, img, np.full((20, 24), 30.0), np.eye(4), K)
    assert np.allclose(conf, 1.0, atol=1e-4)
    other = 255 - img
    assert tf.photometric_confidence(img, other, np.full((20, 24), 30.0), np.eye(4), K).mean() < 0.05


def test_fusion_weights_and_scale():
    sfs = np.full((4, 4), 20.0, np.float32)
    sfs[0] = 40.0
    two = 2.0 * sfs
    two[1, 1] = 2.0 * 20.0 * 1.5  # the two-frame depth sees a bump there
    w0 = np.zeros((4, 4), np.float32)
    assert np.allclose(tf.fuse_depths(sfs, two, w0), sfs)  # no confidence: shading alone
    w1 = np.ones((4, 4), np.float32)
    fused = tf.fuse_depths(sfs, two, w1)  # aligned to the shading median (x 0.5), then the geometric mean
    assert fused[0, 0] == pytest.approx(40.0) and fused[1, 1] == pytest.approx(20.0 * np.sqrt(1.5))


class _Echo(torch.nn.Module):
    """A two-frame 'network' whose depth is the displacement it is given (D0 = 1): checks the scaling path."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))

    def predict_depth(self, t, p, disp, intrinsics=None):
        return disp.view(-1, 1, 1, 1).expand(t.shape[0], 1, t.shape[-2], t.shape[-1]) * 10.0


def test_stream_order_partners_and_pose_estimator():
    n = 10
    frames = [np.full((12, 16, 3), 10 * i, np.uint8) for i in range(n)]
    K = PinholeIntrinsics(fx=10.0, fy=10.0, cx=7.5, cy=5.5, size=ImageSize(12, 16))
    sfs = lambda rgbs: np.full(rgbs.shape[:3], 10.0, np.float32)  # noqa: E731
    out = list(tf.iter_depths(iter(frames), "two-frame", sfs, _Echo(), K, world_from_cam=_line(n), max_gap=4))
    assert [o.index for o in out] == list(range(n))
    assert all(o.displacement_mm == 2.0 and abs(o.partner - o.index) == 2 for o in out)
    assert all(np.allclose(o.depth, 20.0) for o in out)  # the network's output times |t| / D0
    # the same motion from a pose estimator (prev_from_cur: the current camera 1 mm further along z)
    step = np.eye(4)
    step[2, 3] = 1.0
    est = lambda prev, cur, nxt=None: step  # noqa: E731
    out2 = list(tf.iter_depths(iter(frames), "two-frame", sfs, _Echo(), K, pose_estimator=est, max_gap=4))
    assert [(o.partner, o.displacement_mm) for o in out2] == [(o.partner, o.displacement_mm) for o in out]
    fused = list(tf.iter_depths(iter(frames), "fused", sfs, _Echo(), K, world_from_cam=_line(n), max_gap=4))
    assert all(np.all(np.isfinite(o.depth)) and o.confidence.shape == (12, 16) for o in fused)
    plain = list(tf.iter_depths(iter(frames), "sfs", sfs))
    assert [o.partner for o in plain] == [None] * n and [o.index for o in plain] == list(range(n))
    # the shading depth is predicted in batches; the batch size changes nothing else
    calls = []

    def counted(rgbs):
        calls.append(len(rgbs))
        return np.stack([np.full(r.shape[:2], 5.0 + r[0, 0, 0] / 10, np.float32) for r in rgbs])

    for bs in (1, 3):
        calls.clear()
        res = list(tf.iter_depths(iter(frames), "fused", counted, _Echo(), K, world_from_cam=_line(n), max_gap=4,
                                  batch_size=bs))
        assert sum(calls) == n and max(calls) == bs
        if bs == 1:
            first = res
    assert [(o.index, o.partner) for o in res] == [(o.index, o.partner) for o in first]
    assert all(np.array_equal(a.depth, b.depth) for a, b in zip(first, res))
    with pytest.raises(ValueError, match="needs a two-frame network"):
        list(tf.iter_depths(iter(frames), "fused", sfs))


@pytest.fixture(scope="module")
def tube_bundle(tmp_path_factory):
    """A tube video (folder of frames, 1.5 mm per frame) and a tiny bundle with depth, pose and two-frame nets."""
    from conftest import write_tiny_bundle
    from test_finetune import write_tube_video

    root = tmp_path_factory.mktemp("tf_predict")
    video = write_tube_video(root / "frames", 8)
    return video, write_tiny_bundle(root / "full.pt"), write_tiny_bundle(root / "sfs.pt", two_frame=False)


def test_predict_methods_on_a_video_folder(tube_bundle, tmp_path, capsys):
    from colondepth import cli

    video, full, sfs_only = tube_bundle
    maps = {}
    for method in ("sfs", "two-frame", "fused"):
        out = tmp_path / method
        code = cli.main(["predict", "--checkpoint", str(full), "--input", str(video), "--out", str(out),
                         "--intrinsics", str(video.parent / "k.yaml"), "--method", method, "--no-png"])
        assert code == 0, capsys.readouterr().err
        files = sorted(out.glob("*_depth.npy"))
        assert len(files) == 8
        maps[method] = np.stack([np.load(f) for f in files])
        assert maps[method].shape == (8, 64, 64) and np.isfinite(maps[method]).all() and (maps[method] > 0).all()
    assert not np.allclose(maps["fused"], maps["sfs"]) and not np.allclose(maps["two-frame"], maps["sfs"])
    # fused depth stays between the two (a weighted geometric mean, two-frame rescaled to the shading median)
    assert np.median(maps["fused"]) == pytest.approx(np.median(maps["sfs"]), rel=0.3)
    # one image: sfs with a note; a model without a two-frame network: a one-line error
    one = sorted(video.glob("*.png"))[0]
    assert cli.main(["predict", "--checkpoint", str(full), "--input", str(one), "--out", str(tmp_path / "one"),
                     "--method", "fused"]) == 0
    assert "single image" in capsys.readouterr().err
    assert cli.main(["predict", "--checkpoint", str(sfs_only), "--input", str(video), "--out", str(tmp_path / "x"),
                     "--method", "fused"]) == 2
    err = capsys.readouterr().err
    assert "has no two-frame network" in err and not (tmp_path / "x").exists()
