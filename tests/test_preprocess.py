"""The camera layer and the one frame -> network-grid transform (colondepth.geometry.letterbox).

Analytic cases: letterbox layouts of known sizes, a projected 3D point that lands on the scaled pixel
after a resize or letterbox with the scaled intrinsics, a linear ramp that bilinear resampling keeps on
the same continuous coordinates as the intrinsics rule, numpy/torch (and kornia) parity of projection,
back-projection and range <-> depth.  Integration: a synthetic frame through the supervised and
self-supervised training datasets gives exactly the predictor's network input, and the pose network's
input of a non-square frame keeps its aspect ratio.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.geometry.letterbox import (InputGrid, Letterbox, letterbox_layout, pad_to_multiple, resize_image,
                                           resize_image_np)
from colondepth.geometry.projection import (backproject_depth, backproject_depth_np, depth_to_range,
                                            depth_to_range_np, pixel_rays, pixel_rays_np, project_points,
                                            project_points_np, range_to_depth, range_to_depth_np)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# an off-centre camera (principal point away from the image centre hides no flips)
K_FRAME = PinholeIntrinsics(fx=61.0, fy=58.0, cx=52.3, cy=31.7, size=ImageSize(72, 120))


# -- layouts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame, target, fit, multiple, resized, padded, top, left", [
    ((270, 480), (128, 128), "short_side", 16, (128, 228), (128, 240), 0, 6),
    ((480, 270), (128, 128), "short_side", 32, (228, 128), (256, 128), 14, 0),
    ((72, 120), (64, 64), "inside", 1, (38, 64), (64, 64), 13, 0),
    ((100, 100), (64, 64), "inside", 1, (64, 64), (64, 64), 0, 0),
    ((96, 128), (48, 48), "short_side", 16, (48, 64), (48, 64), 0, 0),
])
def test_letterbox_layouts(frame, target, fit, multiple, resized, padded, top, left):
    box = letterbox_layout(ImageSize(*frame), ImageSize(*target), fit, multiple)
    assert (box.resized.as_hw(), box.padded.as_hw(), box.top, box.left) == (resized, padded, top, left)
    # the aspect ratio is kept up to the rounding to whole pixels
    assert box.resized.width / box.resized.height == pytest.approx(frame[1] / frame[0], rel=1.0 / min(resized))


def test_letterbox_rejects_bad_input():
    with pytest.raises(ValueError, match="fit must be one of"):
        letterbox_layout(ImageSize(10, 10), ImageSize(8, 8), "stretch")
    with pytest.raises(ValueError, match="does not fit"):
        Letterbox(ImageSize(10, 10), ImageSize(8, 8), ImageSize(8, 8), 1, 0)
    box = letterbox_layout(ImageSize(10, 20), ImageSize(8, 8))
    with pytest.raises(ValueError, match="letterbox for"):
        box.apply(torch.zeros(1, 3, 20, 10))
    with pytest.raises(ValueError, match="intrinsics are for"):
        box.intrinsics(K_FRAME)
    with pytest.raises(ValueError, match="resampling kind"):
        resize_image(torch.zeros(1, 1, 4, 4), ImageSize(2, 2), "cubic")


# -- resize with intrinsics ------------------------------------------------------------------------
@pytest.mark.parametrize("new", [(36, 60), (144, 240), (50, 70)])
def test_projection_after_resize_is_the_scaled_pixel(new):
    """Project P with K, resize the image, project with the resized K: the same point of the image, i.e.
    ``u' = (u + 0.5) s_x - 0.5`` (pixel centres at integers)."""
    P = torch.tensor([[[7.0, -4.0, 31.0], [-12.0, 9.0, 55.0]]], dtype=torch.float64)
    uv, _ = project_points(P, torch.from_numpy(K_FRAME.K))
    k2 = K_FRAME.resized(ImageSize(*new))
    uv2, _ = project_points(P, torch.from_numpy(k2.K))
    s = torch.tensor([new[1] / 120.0, new[0] / 72.0], dtype=torch.float64)
    torch.testing.assert_close(uv2, (uv + 0.5) * s - 0.5, rtol=0, atol=1e-9)


def test_projection_after_letterbox_is_the_scaled_and_shifted_pixel():
    box = letterbox_layout(K_FRAME.size, ImageSize(64, 64), "inside")  # 72x120 -> 38x64 at row 13
    P = np.array([[7.0, -4.0, 31.0], [-12.0, 9.0, 55.0]])
    uv, _ = project_points_np(P, K_FRAME.K)
    uv2, _ = project_points_np(P, box.intrinsics(K_FRAME).K)
    s = np.array([64 / 120, 38 / 72])
    np.testing.assert_allclose(uv2, (uv + 0.5) * s - 0.5 + np.array([box.left, box.top]), atol=1e-9)


@pytest.mark.parametrize("kind", ["image", "dense"])
@pytest.mark.parametrize("new", [(36, 60), (144, 240)])
def test_resampling_follows_the_intrinsics_rule(kind, new):
    """A linear ramp ``I(u, v) = 2 u - 3 v + 1`` resized: interior pixel ``(u', v')`` holds ``I`` at the
    source coordinate ``(u' + 0.5) / s - 0.5``, the inverse of the intrinsics rule (a shifted rule would be
    off by ``2 * 0.5 / s`` grey levels)."""
    v, u = np.mgrid[0:72, 0:120].astype(np.float32)
    img = 2.0 * u - 3.0 * v + 1.0
    out = resize_image_np(img, ImageSize(*new), kind)
    vv, uu = np.mgrid[0:new[0], 0:new[1]].astype(np.float64)
    su, sv = new[1] / 120.0, new[0] / 72.0
    expect = 2.0 * ((uu + 0.5) / su - 0.5) - 3.0 * ((vv + 0.5) / sv - 0.5) + 1.0
    m = 4  # away from the clamped border
    np.testing.assert_allclose(out[m:-m, m:-m], expect[m:-m, m:-m], atol=2e-3)


def test_nearest_keeps_values_and_picks_the_nearest_centre():
    depth = np.array([[0.0, 10.0, 20.0, 30.0]], np.float32)  # 0 = invalid: never blended
    np.testing.assert_array_equal(resize_image_np(depth, ImageSize(1, 2), "nearest"), [[10.0, 30.0]])
    mask = np.array([[True, False, True, True]])
    out = resize_image_np(mask, ImageSize(1, 8), "nearest")
    assert out.dtype == bool and out.tolist() == [[True, True, False, False, True, True, True, True]]


def test_numpy_and_torch_resampling_agree():
    rng = np.random.default_rng(0)
    img = rng.random((45, 70, 3)).astype(np.float32)
    for kind in ("image", "dense", "nearest"):
        t = resize_image(torch.from_numpy(img).permute(2, 0, 1)[None], ImageSize(30, 47), kind)[0].permute(1, 2, 0)
        np.testing.assert_array_equal(resize_image_np(img, ImageSize(30, 47), kind), t.numpy())


def test_pad_to_multiple_keeps_the_origin():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 4) and torch.equal(y[..., :2, :3], x) and float(y.abs().sum()) == float(x.sum())


# -- numpy / torch / kornia parity of the camera operations ----------------------------------------
def test_numpy_torch_parity_of_camera_operations():
    rng = np.random.default_rng(1)
    K = K_FRAME.K
    depth = rng.uniform(5.0, 80.0, K_FRAME.size.as_hw())
    Kt = torch.from_numpy(K)
    dt = torch.from_numpy(depth)[None, None]
    np.testing.assert_allclose(pixel_rays_np(K, K_FRAME.size), pixel_rays(Kt, K_FRAME.size)[0].permute(1, 2, 0).numpy(),
                               rtol=0, atol=1e-12)
    pts_np = backproject_depth_np(depth, K)
    np.testing.assert_allclose(pts_np, backproject_depth(dt, Kt)[0].permute(1, 2, 0).numpy(), rtol=1e-12)
    rng_np = depth_to_range_np(depth, K)
    np.testing.assert_allclose(rng_np, depth_to_range(dt, Kt)[0, 0].numpy(), rtol=1e-12)
    np.testing.assert_allclose(rng_np, np.linalg.norm(pts_np, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(range_to_depth_np(rng_np, K), depth, rtol=1e-12)
    np.testing.assert_allclose(range_to_depth(torch.from_numpy(rng_np)[None, None], Kt)[0, 0].numpy(), depth, rtol=1e-12)
    # back-projected points project back onto their own pixel centres
    uv, z = project_points_np(pts_np.reshape(-1, 3), K)
    vv, uu = np.mgrid[0:72, 0:120]
    np.testing.assert_allclose(uv, np.stack([uu.ravel(), vv.ravel()], 1), atol=1e-9)
    uv_t, _ = project_points(torch.from_numpy(pts_np.reshape(1, -1, 3)), Kt)
    np.testing.assert_allclose(uv_t[0].numpy(), uv, atol=1e-12)


def test_torch_camera_operations_match_kornia():
    kornia = pytest.importorskip("kornia")
    rng = np.random.default_rng(2)
    Kt = torch.from_numpy(K_FRAME.K)
    depth = torch.from_numpy(rng.uniform(5.0, 80.0, K_FRAME.size.as_hw()))
    ours = backproject_depth(depth[None, None], Kt)[0]
    theirs = kornia.geometry.depth.depth_to_3d_v2(depth[None], Kt[None])[0].permute(2, 0, 1)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    P = torch.tensor([[7.0, -4.0, 31.0], [-12.0, 9.0, 55.0]], dtype=torch.float64)
    torch.testing.assert_close(project_points(P[None], Kt)[0][0], kornia.geometry.camera.project_points(P, Kt),
                               rtol=1e-12, atol=1e-12)


# -- training and inference see identical tensors --------------------------------------------------
def _sequence(hw, seed=0, n=3, disk=False):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n,) + tuple(hw) + (3,), dtype=np.uint8)
    if disk:  # one bright disk on black: its shape shows any stretching
        frames[:] = 0
        v, u = np.mgrid[0:hw[0], 0:hw[1]]
        frames[:, (u - hw[1] / 2 + 0.5) ** 2 + (v - hw[0] / 2 + 0.5) ** 2 <= (0.4 * hw[0]) ** 2] = 255
    depth = rng.uniform(5.0, 60.0, (n,) + tuple(hw)).astype(np.float32)
    k = PinholeIntrinsics(fx=0.8 * hw[1], fy=0.8 * hw[1], cx=0.45 * hw[1], cy=0.55 * hw[0], size=ImageSize(*hw))
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n)
    return Sequence(name="synthetic", intrinsics=k, num_frames=n, load_rgb=lambda i: frames[i],
                    load_depth_mm=lambda i: depth[i], world_from_cam=poses)


def _small_unet(input_hw=(32, 32)):
    from colondepth.models.depth_net import DepthNetConfig, build_depth_net

    torch.manual_seed(0)
    cfg = DepthNetConfig(arch="basic_unet", input_height=input_hw[0], input_width=input_hw[1],
                         features=[4, 4, 8, 8, 8, 4], inputs=["rays", "physics"])
    return build_depth_net(cfg).eval()


def _predictor_input(net, rgb_uint8, intrinsics):
    """The tensor the predictor's depth network is run on for one frame (recorded at ``forward``)."""
    from colondepth.infer.predictor import DepthPredictor

    seen = []
    forward = net.forward
    net.forward = lambda x, num_outputs=None: (seen.append(x.clone()), forward(x, num_outputs))[1]
    try:
        DepthPredictor(net, {"depth_range_mm": [1, 200]}, device="cpu", crop_to_view=False,
                       flip_average=False).predict(rgb_uint8, intrinsics=intrinsics)
    finally:
        del net.forward
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("hw", [(40, 40), (36, 60)])
def test_supervised_training_frame_is_the_predictor_input(hw):
    """Without augmentation a frame becomes its centre crop at the input's aspect ratio (the whole frame when
    it has that aspect ratio), then exactly the predictor's input for that crop."""
    from colondepth.train.data import FrameRef, SupervisedFrames

    net = _small_unet()
    seq = _sequence(hw)
    item = SupervisedFrames([FrameRef(seq, 1)], (32, 32))[0]
    x_train = net.normalise(item["rgb"][None], item["K"][None])
    s = min(hw)
    y0, x0 = (hw[0] - s) // 2, (hw[1] - s) // 2
    crop = np.ascontiguousarray(seq.rgb(1)[y0:y0 + s, x0:x0 + s])
    x_pred = _predictor_input(net, crop, seq.intrinsics.cropped(x0, y0, ImageSize(s, s)))
    torch.testing.assert_close(x_train, x_pred, rtol=0, atol=0)


@pytest.mark.parametrize("hw", [(36, 60), (60, 36), (48, 48)])
def test_selfsupervised_training_frame_is_the_predictor_input(hw):
    """The whole frame, non-square too: the self-supervised dataset letterboxes exactly as the predictor."""
    from colondepth.datasets.clips import SnippetDataset, sequence_snippets

    net = _small_unet()
    seq = _sequence(hw)
    ds = SnippetDataset([seq], sequence_snippets([seq], length=3), net.config.input_grid)
    item = ds[0]
    x_train = net.normalise(item["target"][None], item["K"][None])
    x_pred = _predictor_input(net, seq.rgb(1), seq.intrinsics)
    torch.testing.assert_close(x_train, x_pred, rtol=0, atol=0)
    box = net.config.input_grid.layout(ImageSize(*hw))
    assert torch.equal(item["fov_mask"], box.inside()[0])  # the padding is outside the field of view
    assert float(item["depth_mm"][~item["fov_mask"]].abs().sum()) == 0.0


def test_snippets_of_several_frame_sizes_share_one_grid():
    from colondepth.datasets.clips import SnippetDataset, sequence_snippets

    seqs = [_sequence((36, 60)), _sequence((40, 40), seed=1)]
    ds = SnippetDataset(seqs, sequence_snippets(seqs, length=3), InputGrid(ImageSize(32, 32), "short_side", 16))
    a, b = ds[0], ds[1]
    assert a["target"].shape == b["target"].shape == (3, 32, 64)
    # the square frame is centred on the wider grid; its camera moves with it
    assert torch.equal(b["fov_mask"][0].any(0), torch.arange(64).ge(16) & torch.arange(64).lt(48))
    assert float(b["K"][0, 2]) == pytest.approx(seqs[1].intrinsics.resized(ImageSize(32, 32)).cx + 16)


# -- the pose network's input ------------------------------------------------------------------------
def test_pose_input_of_a_non_square_frame_is_letterboxed_not_stretched(monkeypatch):
    """A disk in a 36x60 frame stays a disk in what the pose network sees, and that input is the
    self-supervised training dataset's frame."""
    import colondepth.recon.poses as poses
    from colondepth.datasets.clips import SnippetDataset, sequence_snippets
    from colondepth.models.pose_net import PoseNet, PoseNetConfig

    grid = _small_unet().config.input_grid  # short side 32, multiples of 16
    seq = _sequence((36, 60), disk=True)
    seen = []

    class Recording(PoseNet):
        def forward(self, target, sources):
            seen.append(target.clone())
            return super().forward(target, sources)

    pose_net = Recording(PoseNetConfig(num_sources=2, channels=(8, 8), num_mask_scales=0)).eval()
    monkeypatch.setattr(poses, "pose_network", lambda checkpoint: (pose_net, None, grid, "test"))
    poses.load_pose_estimator("any", device="cpu")(seq.rgb(0), seq.rgb(1), seq.rgb(2))
    x = seen[0][0]
    assert x.shape == (3, 32, 64)  # 36x60 -> 32x53, padded to 32x64
    lit = x[0] > 0.5
    rows, cols = lit.any(1).nonzero(), lit.any(0).nonzero()
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert abs(height - width) <= 1
    assert height == pytest.approx(0.8 * 32, abs=2.5)  # diameter 0.8 * 36 px scaled by 32 / 36 (edges thresholded)
    ds = SnippetDataset([seq], sequence_snippets([seq], length=3), grid)
    torch.testing.assert_close(x, ds[0]["target"], rtol=0, atol=0)
    # squashed into 32x32 (what the pose path did before) the disk would be about half as wide as tall
    squashed = resize_image(torch.from_numpy(seq.rgb(1)).permute(2, 0, 1)[None].float() / 255, ImageSize(32, 32))
    sq = squashed[0, 0] > 0.5
    assert int(sq.any(0).sum()) < 0.7 * int(sq.any(1).sum())


# -- the lit view box is a property of each frame, not of its batch ----------------------------------
def _bordered(hw, box, seed):
    """A random frame black outside ``box`` = (y0, x0, h, w)."""
    rng = np.random.default_rng(seed)
    f = np.zeros(tuple(hw) + (3,), np.uint8)
    y0, x0, h, w = box
    f[y0:y0 + h, x0:x0 + w] = rng.integers(40, 256, (h, w, 3), dtype=np.uint8)
    return f


def test_predictor_view_box_is_per_frame():
    """A frame's depth is the same alone and in a batch whose other frame has a different lit box; inside its
    own box it equals the prediction on the crop itself, outside it repeats the border."""
    from colondepth.infer.predictor import DepthPredictor, view_box

    net = _small_unet()
    pred = DepthPredictor(net, {"depth_range_mm": [1, 200]}, device="cpu", flip_average=False, batch_size=8)
    a = _bordered((48, 64), (4, 10, 40, 44), seed=1)
    b = _bordered((48, 64), (0, 0, 48, 30), seed=2)  # a narrow lit region on the left
    assert view_box(a[None]) != view_box(b[None])
    alone = pred.predict(a)
    both = pred.predict_batch(np.stack([b, a, b]))
    np.testing.assert_allclose(both[1], alone, rtol=1e-5)  # batch size changes float summation order only
    np.testing.assert_allclose(both[0], both[2], rtol=1e-5)
    np.testing.assert_allclose(both[0], pred.predict(b), rtol=1e-5)
    y0, x0, h, w = view_box(a[None])
    k = PinholeIntrinsics(fx=50.0, fy=50.0, cx=31.5, cy=23.5, size=ImageSize(48, 64))
    alone = pred.predict(a, intrinsics=k)  # the camera follows the crop
    crop_depth = pred.predict_batch(np.ascontiguousarray(a[None, y0:y0 + h, x0:x0 + w]), view=None,
                                    intrinsics=k.cropped(x0, y0, ImageSize(h, w)))[0]
    np.testing.assert_allclose(alone[y0:y0 + h, x0:x0 + w], crop_depth, rtol=1e-6)
    np.testing.assert_allclose(alone[:y0, x0:x0 + w], np.broadcast_to(crop_depth[0], (y0, w)), rtol=1e-6)


def test_predictor_fixed_view_box_and_errors():
    from colondepth.errors import UserError
    from colondepth.infer.predictor import DepthPredictor

    net = _small_unet()
    pred = DepthPredictor(net, {"depth_range_mm": [1, 200]}, device="cpu", flip_average=False)
    a = _bordered((48, 64), (4, 10, 40, 44), seed=1)
    k = PinholeIntrinsics(fx=50.0, fy=50.0, cx=31.5, cy=23.5, size=ImageSize(48, 64))
    fixed = pred.predict_batch(a[None], view=(4, 10, 40, 44), intrinsics=k)[0]
    direct = pred.predict_batch(np.ascontiguousarray(a[None, 4:44, 10:54]), view=None,
                                intrinsics=k.cropped(10, 4, ImageSize(40, 44)))[0]
    np.testing.assert_allclose(fixed[4:44, 10:54], direct, rtol=1e-6)
    with pytest.raises(UserError, match="does not fit 64x48"):
        pred.predict_batch(a[None], view=(10, 10, 40, 44))
    with pytest.raises(ValueError, match="view must be"):
        pred.predict_batch(a[None], view="video")


def test_video_view_is_one_box_for_the_whole_video_and_evaluate_passes_it():
    """video_view pools frames spread over a sequence; evaluate_sequences hands each sequence's view to
    predict_batch, so every frame of a video is cropped alike."""
    from colondepth.eval.evaluate import evaluate_sequences
    from colondepth.infer.predictor import DepthPredictor, view_box

    net = _small_unet()
    pred = DepthPredictor(net, {"depth_range_mm": [1, 200]}, device="cpu", flip_average=False)
    frames = [_bordered((48, 64), (4, 10, 40, 44), seed=1), _bordered((48, 64), (4, 14, 40, 36), seed=2)]
    seq = Sequence(name="v", intrinsics=PinholeIntrinsics(fx=50.0, fy=50.0, cx=31.5, cy=23.5, size=ImageSize(48, 64)),
                   num_frames=2, load_rgb=lambda i: frames[i], load_depth_mm=lambda i: np.full((48, 64), 30.0, np.float32),
                   world_from_cam=np.tile(np.eye(4), (2, 1, 1)))
    box = pred.video_view(seq)
    assert box == view_box(np.stack(frames)) and box != view_box(frames[1][None])
    assert DepthPredictor(net, {"depth_range_mm": [1, 200]}, device="cpu", crop_to_view=False).video_view(seq) is None
    seen = []

    def predict_batch(rgbs, intrinsics=None, view="frame"):
        seen.append(view)
        return pred.predict_batch(rgbs, intrinsics=intrinsics, view=view)

    evaluate_sequences([seq], predict_batch, batch_size=1, progress=False, cameras=[seq.intrinsics], views=[box])
    assert seen == [box, box]
    with pytest.raises(ValueError, match="views has 2 entries"):
        evaluate_sequences([seq], predict_batch, progress=False, views=[box, box])
