"""DepthNet: shapes, depth range, preprocessing at any resolution, and learning a real shading -> depth map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import test_train_scenes as sfs_scenes
from colondepth.losses.supervised import SupervisedLossWeights, supervised_loss
from colondepth.models.depth_net import DepthNet, DepthNetConfig, build_depth_net, sigmoid_to_depth
from colondepth.train.steps import batch_depth_errors

TINY = dict(input_height=32, input_width=32, encoder_channels=[8, 12, 16], decoder_channels=[8, 8, 12], num_scales=3)


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize(
    "cfg, hw, scales",
    [
        (dict(TINY), (32, 32), 3),
        (dict(TINY, input_height=64, input_width=32), (64, 32), 3),
        (dict(TINY, num_scales=1, norm="group"), (32, 32), 1),
        (dict(input_height=64, input_width=96), (64, 96), 4),  # default channels (5 levels)
    ],
)
def test_forward_shapes(cfg, hw, scales):
    net = DepthNet(DepthNetConfig(**cfg))
    out = net(torch.randn(2, 3, *hw))
    assert len(out) == scales
    for i, d in enumerate(out):
        assert d.shape == (2, 1, hw[0] // 2 ** i, hw[1] // 2 ** i)


def test_depth_within_range():
    net = DepthNet(DepthNetConfig(**TINY, min_depth_mm=2.0, max_depth_mm=80.0))
    with torch.no_grad():
        for d in net(10.0 * torch.randn(2, 3, 32, 32)):
            assert d.min().item() >= 2.0 - 1e-4 and d.max().item() <= 80.0 + 1e-3


def test_sigmoid_to_depth_linear_in_disparity():
    s = torch.tensor([0.0, 0.5, 1.0])
    d = sigmoid_to_depth(s, 2.0, 100.0)
    assert d[0].item() == pytest.approx(100.0)
    assert d[2].item() == pytest.approx(2.0)
    assert (1.0 / d[1]).item() == pytest.approx(0.5 * (1 / 2.0 + 1 / 100.0))


def test_predict_depth_any_resolution_matches_manual_letterbox_pipeline():
    """A 45x70 frame into a 32x32 network: scaled by 32/70 to 21x32 (aspect kept), padded 5 rows above."""
    net = DepthNet(DepthNetConfig(**TINY)).eval()
    rgb = torch.rand(1, 3, 45, 70)
    depth = net.predict_depth(rgb)
    assert depth.shape == (1, 1, 45, 70)
    x = torch.nn.functional.interpolate(rgb, size=(21, 32), mode="bilinear", align_corners=False, antialias=True)
    x = torch.nn.functional.pad(x, (0, 0, 5, 6))
    x = (x - torch.tensor(net.config.mean).view(1, 3, 1, 1)) / torch.tensor(net.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = net(x)[0][..., 5:26, :]
        ref = torch.nn.functional.interpolate(out, size=(45, 70), mode="bilinear", align_corners=False)
    assert torch.allclose(depth, ref, atol=1e-5)
    # at the input size no resizing happens
    assert net.predict_depth(torch.rand(3, 3, 32, 32)).shape == (3, 1, 32, 32)


def test_predict_depth_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        DepthNet(DepthNetConfig(**TINY)).predict_depth(torch.rand(1, 4, 32, 32))


@pytest.mark.parametrize("bad", [dict(input_height=30), dict(min_depth_mm=5.0, max_depth_mm=5.0),
                                 dict(num_scales=4), dict(decoder_channels=[8, 8]), dict(norm="layer")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        DepthNetConfig(**{**TINY, **bad})


def test_config_dict_round_trip():
    cfg = DepthNetConfig(**TINY, max_depth_mm=90.0)
    net = build_depth_net(cfg.to_dict())
    assert net.config == cfg


def test_overfits_a_handful_of_frames():
    """Shading carries depth: the net must fit 4 analytic frames (2 planes, 2 tubes) to < 8 % abs rel."""
    rng = np.random.default_rng(0)
    frames = [sfs_scenes.plane_frame(32, 32, rng)[0] for _ in range(2)]
    frames += [sfs_scenes.tube_frame(32, 32, rng)[0] for _ in range(2)]
    rgb = torch.from_numpy(np.stack([f[0] for f in frames])).permute(0, 3, 1, 2).float() / 255.0
    gt = torch.from_numpy(np.stack([f[1] for f in frames]))[:, None]
    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(**TINY, max_depth_mm=200.0))
    before = batch_depth_errors(pred_mm=net.eval().predict_depth(rgb), gt_mm=gt)["abs_rel"]
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    weights = SupervisedLossWeights()
    for _ in range(150):
        loss, _ = supervised_loss(net(net.normalise(rgb)), gt, weights, 1.0, 200.0, gt > 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = batch_depth_errors(pred_mm=net.eval().predict_depth(rgb), gt_mm=gt)
    assert before > 0.3
    assert after["abs_rel"] < 0.08
    assert after["delta1"] > 0.95
