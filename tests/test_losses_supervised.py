"""Supervised depth losses on analytic cases."""

from __future__ import annotations

import math

import pytest
import torch

from colondepth.losses.supervised import (
    SupervisedLossWeights,
    gradient_matching_loss,
    l1_loss,
    silog_loss,
    supervised_loss,
    valid_mask,
)


def _plane_depth(b=2, h=16, w=20):
    """Tilted-plane depth maps (mm), different per image."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    maps = [20.0 + 1.5 * u + 0.7 * v * (i + 1) for i in range(b)]
    return torch.stack(maps)[:, None]


class TestValidMask:
    def test_values(self):
        gt = torch.tensor([0.0, -1.0, 3.0, float("nan"), float("inf")])
        assert valid_mask(gt).tolist() == [False, False, True, False, False]

    def test_combines_with_given_mask(self):
        gt = torch.tensor([1.0, 2.0, 3.0])
        assert valid_mask(gt, torch.tensor([True, False, True])).tolist() == [True, False, True]


class TestSilog:
    def test_zero_for_identical(self):
        gt = _plane_depth()
        assert silog_loss(gt, gt, lam=0.5).item() == pytest.approx(0.0, abs=1e-12)

    def test_scale_invariant_with_lambda_one(self):
        gt = _plane_depth()
        pred = gt * torch.exp(0.05 * torch.randn_like(gt, generator=torch.Generator().manual_seed(0)))
        a = silog_loss(pred, gt, lam=1.0)
        b = silog_loss(3.7 * pred, gt, lam=1.0)
        assert a.item() > 1e-4
        assert b.item() == pytest.approx(a.item(), rel=1e-9)
        # a pure scale error has zero loss with lambda = 1
        assert silog_loss(2.0 * gt, gt, lam=1.0).item() == pytest.approx(0.0, abs=1e-12)

    def test_pure_scale_with_lambda_zero_is_log_squared(self):
        gt = _plane_depth()
        assert silog_loss(2.0 * gt, gt, lam=0.0).item() == pytest.approx(math.log(2.0) ** 2, rel=1e-9)
        # lambda = 0.5: (1 - 0.5) * log(2)^2
        assert silog_loss(2.0 * gt, gt, lam=0.5).item() == pytest.approx(0.5 * math.log(2.0) ** 2, rel=1e-9)

    def test_masking_ignores_invalid_pixels(self):
        gt = _plane_depth()
        pred = gt.clone()
        gt_holes = gt.clone()
        gt_holes[:, :, :4] = 0.0  # invalid ground truth
        gt_holes[:, :, 5, 5] = float("nan")
        pred[:, :, :4] = 1e5  # garbage where gt is invalid
        pred[:, :, 5, 5] = float("nan")
        loss = silog_loss(pred, gt_holes, lam=0.85)
        assert loss.item() == pytest.approx(0.0, abs=1e-12)
        # an explicit valid mask removes pixels too
        valid = torch.ones_like(gt, dtype=torch.bool)
        valid[:, :, 8:] = False
        pred2 = gt.clone()
        pred2[:, :, 8:] *= 5.0
        assert silog_loss(pred2, gt, valid, lam=0.0).item() == pytest.approx(0.0, abs=1e-12)

    def test_gradient_finite_with_invalid_pixels(self):
        gt = _plane_depth().float()
        gt[:, :, :3] = 0.0
        pred = (gt.clamp(min=1.0) * 1.1).requires_grad_(True)
        silog_loss(pred, gt).backward()
        assert torch.isfinite(pred.grad).all()
        assert pred.grad[:, :, :3].abs().max().item() == 0.0

    def test_empty_mask_gives_zero(self):
        gt = torch.zeros(2, 1, 4, 4)
        pred = torch.ones(2, 1, 4, 4, requires_grad=True)
        loss = silog_loss(pred, gt)
        loss.backward()
        assert loss.item() == 0.0

    def test_bad_lambda(self):
        with pytest.raises(ValueError):
            silog_loss(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), lam=1.5)


class TestL1:
    def test_depth_space(self):
        gt = torch.full((1, 1, 4, 4), 10.0)
        assert l1_loss(gt + 2.0, gt, space="depth", ref_mm=4.0).item() == pytest.approx(0.5)

    def test_inverse_depth_space(self):
        gt = torch.full((1, 1, 4, 4), 10.0)
        pred = torch.full((1, 1, 4, 4), 20.0)
        # |1/20 - 1/10| * ref
        assert l1_loss(pred, gt, space="inverse_depth", ref_mm=2.0).item() == pytest.approx(0.1)

    def test_masked(self):
        gt = torch.tensor([[[[10.0, 0.0]]]])
        pred = torch.tensor([[[[10.0, 99.0]]]])
        assert l1_loss(pred, gt).item() == 0.0
        assert l1_loss(pred, gt, space="inverse_depth").item() == 0.0


class TestGradientMatching:
    def test_zero_for_constant_log_offset(self):
        gt = _plane_depth()
        assert gradient_matching_loss(2.5 * gt, gt, scales=3).item() == pytest.approx(0.0, abs=1e-12)

    def test_positive_for_shape_error(self):
        gt = _plane_depth()
        pred = gt.clone()
        pred[:, :, :, 10:] *= 1.5  # a step in log space at column 10
        loss = gradient_matching_loss(pred, gt, scales=1)
        # one horizontal pair per row sees |log 1.5|; pairs: H*(W-1) horizontal + (H-1)*W vertical
        h, w = gt.shape[-2:]
        expected = h * math.log(1.5) / (h * (w - 1) + (h - 1) * w)
        assert loss.item() == pytest.approx(expected, rel=1e-9)

    def test_invalid_pairs_ignored(self):
        gt = _plane_depth()
        pred = gt.clone()
        pred[:, :, :, 10:] *= 1.5
        gt_holes = gt.clone()
        gt_holes[:, :, :, 10] = 0.0  # removes every pair that crosses the step
        assert gradient_matching_loss(pred, gt_holes, scales=2).item() == pytest.approx(0.0, abs=1e-12)


def test_supervised_loss_combines_scales():
    gt = _plane_depth().float()
    preds = [gt.clone(), torch.nn.functional.avg_pool2d(gt, 2)]
    total, parts = supervised_loss(preds, gt, SupervisedLossWeights(), 1.0, 150.0)
    assert parts["silog"] == pytest.approx(0.0, abs=1e-7)
    assert parts["l1"] == pytest.approx(0.0, abs=1e-7)
    assert 0.0 < total.item() < 0.05  # only the upsampled coarse scale differs a little
    w = SupervisedLossWeights(silog_weight=1.0, silog_lambda=0.0, l1_weight=0.0, grad_weight=0.0)
    total2, _ = supervised_loss([2.0 * gt], gt, w, 1.0, 150.0)
    assert total2.item() == pytest.approx(math.log(2.0) ** 2, rel=1e-5)
