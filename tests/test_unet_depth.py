"""The MONAI BasicUNet depth network: shapes, ray and physics channels, aspect-preserving inference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.models.depth_net import (
    DepthNetConfig, UNetDepthNet, build_depth_net, letterbox, network_input, physics_prior_channel,
    pinhole_ray_channels,
)

SMALL = dict(arch="basic_unet", features=[4, 4, 8, 8, 16, 4], input_height=32, input_width=32,
             inputs=["rays", "physics"], min_depth_mm=1.0, max_depth_mm=100.0)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_depth_net(DepthNetConfig(**SMALL)).eval()


def test_build_dispatches_on_arch_and_counts_input_channels(net):
    assert isinstance(net, UNetDepthNet)
    assert net.config.in_channels == 6 and net.config.num_scales == 1
    assert DepthNetConfig(**dict(SMALL, inputs=[])).in_channels == 3
    with pytest.raises(ValueError, match="multiples of 16"):
        DepthNetConfig(**dict(SMALL, input_height=40))
    with pytest.raises(ValueError, match="unknown"):
        DepthNetConfig(**dict(SMALL, inputs=["depth"]))


def test_forward_is_depth_in_range_at_the_input_size(net):
    x = network_input(net, torch.rand(2, 3, 48, 64))
    assert x.shape == (2, 6, 48, 64)
    with torch.no_grad():
        (d,) = net(x)
    assert d.shape == (2, 1, 48, 64)
    assert float(d.min()) >= 1.0 and float(d.max()) <= 100.0


def test_ray_channels_closed_form():
    K = torch.tensor([[50.0, 0, 20.0], [0, 40.0, 10.0], [0, 0, 1]])
    r = pinhole_ray_channels(K, 21, 41)
    # pixel (u=40, v=0): ray (20/50, -10/40, 1) normalised
    x, y = 0.4, -0.25
    n = math.sqrt(1 + x * x + y * y)
    assert float(r[0, 0, 0, 40]) == pytest.approx(x / n, abs=1e-6)
    assert float(r[0, 1, 0, 40]) == pytest.approx(y / n, abs=1e-6)
    assert float(r[0, 0, 10, 20]) == 0.0 and float(r[0, 1, 10, 20]) == 0.0  # principal point


def test_physics_channel_is_half_log_inverse_luminance_minus_median():
    rgb = torch.full((1, 3, 16, 16), 0.5)
    rgb[..., 8:] = 0.25  # right half darker: farther under the inverse-square light
    p = physics_prior_channel(rgb)
    far, near = float(p[0, 0, 8, 14]), float(p[0, 0, 8, 1])
    # log(1/sqrt(I)) difference = 0.5 * log(I_near / I_far) = 0.5 * 2.2 * log(2)
    assert far - near == pytest.approx(0.5 * 2.2 * math.log(2.0), rel=1e-4)
    assert float(p.flatten().median()) == pytest.approx(0.0, abs=1e-6)


def test_letterbox_keeps_aspect_and_moves_the_principal_point(net):
    rgb = torch.rand(1, 3, 27, 48)  # 16:9
    k = PinholeIntrinsics(fx=30.0, fy=30.0, cx=23.5, cy=13.0, size=ImageSize(27, 48))
    x, (top, left, nh, nw) = letterbox(net, rgb, k)
    assert (nh, nw) == (32, 57) and x.shape[-2:] == (32, 64)  # short side 32, width padded to 64
    assert nw / nh == pytest.approx(48 / 27, rel=0.02)
    assert (top, left) == (0, 3)
    # the ray channel is zero at the principal point moved to the padded grid
    kr = k.resized(ImageSize(nh, nw))
    u, v = kr.cx + left, kr.cy + top
    assert abs(float(x[0, 3, round(v), round(u)])) < 0.02
    depth = net.predict_depth(rgb, intrinsics=k)
    assert depth.shape == (1, 1, 27, 48)


def test_intrinsics_change_the_prediction_only_through_the_rays(net):
    rgb = torch.rand(1, 3, 32, 32)
    narrow = PinholeIntrinsics.from_fov(ImageSize(32, 32), 60.0)
    wide = PinholeIntrinsics.from_fov(ImageSize(32, 32), 150.0)
    a, b = net.predict_depth(rgb, intrinsics=narrow), net.predict_depth(rgb, intrinsics=wide)
    assert not torch.allclose(a, b)
    guess = PinholeIntrinsics.from_fov(ImageSize(32, 32), net.config.default_fov_deg)
    assert torch.allclose(net.predict_depth(rgb), net.predict_depth(rgb, intrinsics=guess))


def test_training_frames_carry_intrinsics_that_follow_flips_and_zoom(tmp_path):
    from colondepth.synth.generate import generate_dataset
    from colondepth.train.config import Augment
    from colondepth.train.data import FrameRef, SupervisedFrames
    from colondepth.datasets.synthetic import open_sequence

    ds = generate_dataset("synth/L1_straight.yaml", tmp_path / "d", sequences=1, frames=1, size=(40, 40),
                          seed=0, progress=False, video=False)
    seq = open_sequence(ds / "seq_00000")
    frames = [FrameRef(seq, 0)]
    plain = SupervisedFrames(frames, (32, 32))[0]
    k = seq.intrinsics.resized(ImageSize(32, 32))
    assert torch.allclose(plain["K"], torch.tensor(k.K, dtype=torch.float32))
    flip = SupervisedFrames(frames, (32, 32), seed=0, augment=Augment(hflip=True, vflip=False))
    for epoch in range(6):  # some epoch flips
        flip.epoch = epoch
        item = flip[0]
        if torch.equal(item["rgb"], plain["rgb"].flip(-1)):
            assert float(item["K"][0, 2]) == pytest.approx(31 - k.cx)
            break
    else:
        pytest.fail("no flip in 6 epochs")
    zoom = SupervisedFrames(frames, (32, 32), seed=1, augment=Augment(hflip=False, vflip=False, zoom=(2.0, 2.0)))[0]
    assert float(zoom["K"][0, 0]) == pytest.approx(2.0 * k.fx, rel=0.05)  # half the frame -> twice the focal


def test_flip_average_is_the_geometric_mean_of_the_mirrored_prediction():
    """A fake model whose depth is 10 + column: the mirrored pass gives 10 + (W - 1 - column)."""
    from colondepth.infer.predictor import DepthPredictor

    class Ramp(torch.nn.Module):
        def predict_depth(self, x, intrinsics=None):
            w = x.shape[-1]
            return (10.0 + torch.arange(w, dtype=torch.float32)).expand(x.shape[0], 1, x.shape[-2], w).clone()

    rgb = np.zeros((2, 3, 5, 3), np.uint8)
    single = DepthPredictor(Ramp(), {}, device="cpu").predict_batch(rgb)
    assert np.allclose(single[0, 0], [10, 11, 12, 13, 14])
    both = DepthPredictor(Ramp(), {"inference": {"flip_average": True}}, device="cpu").predict_batch(rgb)
    assert np.allclose(both[0, 0], np.sqrt(np.array([10, 11, 12, 13, 14]) * np.array([14, 13, 12, 11, 10])))
    off = DepthPredictor(Ramp(), {"inference": {"flip_average": True}}, device="cpu", flip_average=False)
    assert np.allclose(off.predict_batch(rgb), single)


def test_albedo_field_is_smooth_log_normal_and_seeded():
    from colondepth.train.config import Augment
    from colondepth.train.data import albedo_field, augment_photometric

    fields = np.stack([albedo_field((64, 80), np.random.default_rng(s), 0.3, 4) for s in range(200)])
    assert fields.shape == (200, 64, 80, 3) and fields.dtype == np.float32 and (fields > 0).all()
    log_lum = np.log(fields).mean(-1)
    # the luminance log-gain has about the stated spread (cubic interpolation shrinks it a little) ...
    assert 0.15 < float(log_lum.std()) < 0.4 and abs(float(log_lum.mean())) < 0.05
    # ... and is smooth: neighbouring pixels differ by a small fraction of that
    assert float(np.abs(np.diff(log_lum, axis=2)).mean()) < 0.03
    again = albedo_field((64, 80), np.random.default_rng(3), 0.3, 4)
    assert np.array_equal(again, fields[3])
    # off: augment_photometric draws nothing for it, so earlier configurations keep their exact samples
    img = np.full((16, 16, 3), 0.5, np.float32)
    plain = Augment(gain=(0.8, 1.2))
    a = augment_photometric(img, np.random.default_rng(7), plain)
    b = augment_photometric(img, np.random.default_rng(7), plain)
    assert np.array_equal(a, b)
    varied = augment_photometric(img, np.random.default_rng(7), Augment(gain=(0.8, 1.2), albedo_std=0.5))
    assert float(varied.std()) > 0.01 and float(a.std()) == 0.0


def test_dispnet_takes_the_extra_input_channels_too():
    """``inputs`` works for both architectures: the DispNet's first convolution reads every channel of
    ``network_input`` (it used to expect RGB only and failed at the first training step)."""
    from colondepth.models.depth_net import DepthNet, DepthNetConfig, network_input

    net = DepthNet(DepthNetConfig(input_height=32, input_width=32, encoder_channels=[4, 8], decoder_channels=[4, 4],
                                  num_scales=2, inputs=["rays", "physics"]))
    x = network_input(net, torch.rand(2, 3, 32, 32))
    assert x.shape[1] == 6 and net.encoder[0][0][0].in_channels == 6
    assert [tuple(d.shape) for d in net(x)] == [(2, 1, 32, 32), (2, 1, 16, 16)]


def test_grey_frames_keep_the_linear_luminance_and_the_physics_channel():
    from colondepth.models.depth_net import grey_frames, linear_luminance_t

    torch.manual_seed(1)
    rgb = torch.rand(2, 3, 8, 8)
    g = grey_frames(rgb)
    assert g.shape == rgb.shape
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    assert torch.allclose(linear_luminance_t(g), linear_luminance_t(rgb), atol=1e-6)
    assert torch.allclose(physics_prior_channel(g), physics_prior_channel(rgb), atol=1e-5)
    # a neutral grey stays itself; pure green is brighter than pure blue (Rec. 709 weights, gamma 2.2)
    assert torch.allclose(grey_frames(torch.full((1, 3, 1, 1), 0.6)), torch.full((1, 3, 1, 1), 0.6), atol=1e-6)
    green, blue = torch.zeros(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    green[:, 1], blue[:, 2] = 1.0, 1.0
    assert float(grey_frames(green)[0, 0]) == pytest.approx(0.7152 ** (1 / 2.2), rel=1e-5)
    assert float(grey_frames(blue)[0, 0]) == pytest.approx(0.0722 ** (1 / 2.2), rel=1e-5)


def test_a_grey_model_sees_a_colour_frame_as_its_grey_twin(net):
    from colondepth.models.depth_net import grey_frames

    grey_net = build_depth_net(DepthNetConfig(**dict(SMALL, colour="grey"))).eval()
    grey_net.load_state_dict(net.state_dict())
    torch.manual_seed(2)
    rgb = torch.rand(1, 3, 32, 32)
    K = torch.tensor([[20.0, 0, 15.5], [0, 20.0, 15.5], [0, 0, 1]])
    assert torch.allclose(network_input(grey_net, rgb, K), network_input(net, grey_frames(rgb), K), atol=1e-6)
    # a frame recoloured to its own luminance gives the grey model the same input, the colour model not
    same_lum = grey_frames(rgb)
    assert torch.allclose(network_input(grey_net, same_lum, K), network_input(grey_net, rgb, K), atol=1e-6)
    assert not torch.allclose(network_input(net, same_lum, K), network_input(net, rgb, K), atol=1e-3)
    with pytest.raises(ValueError, match="colour must be one of rgb, grey"):
        DepthNetConfig(**dict(SMALL, colour="hsv"))
