"""Depth metrics and alignment on analytic cases (monodepth2 definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from colondepth.eval.alignment import ALIGN_MODES, align_depth, median_scale
from colondepth.eval.depth_metrics import (
    DEPTH_METRICS,
    LOWER_IS_BETTER,
    PRED_FLOOR_MM,
    depth_errors,
    frame_depth_metrics,
    silog,
    mean_metrics,
    valid_depth_mask,
)


def _ramp_gt():
    """A 6x8 tilted-plane-like depth map in mm with a few invalid pixels (0, nan, inf)."""
    v, u = np.mgrid[0:6, 0:8]
    gt = (20.0 + 3.0 * u + 1.5 * v).astype(np.float32)
    gt[0, 0] = 0.0
    gt[1, 2] = np.nan
    gt[5, 7] = np.inf
    return gt


class TestDepthErrors:
    def test_identical_gives_zero_errors_and_full_accuracy(self):
        gt = np.array([5.0, 12.5, 40.0, 80.0])
        e = depth_errors(gt_mm=gt, pred_mm=gt.copy())
        for name in ("abs_rel", "sq_rel", "rmse", "rmse_log"):
            assert e[name] == 0.0
        for name in ("delta1", "delta2", "delta3"):
            assert e[name] == 1.0

    def test_hand_computed_three_pixels(self):
        # gt = [1, 2, 4], pred = 2 everywhere: diffs -1, 0, 2; ratios 2, 1, 2.
        e = depth_errors(gt_mm=np.array([1.0, 2.0, 4.0]), pred_mm=np.array([2.0, 2.0, 2.0]))
        assert e["abs_rel"] == pytest.approx((1 / 1 + 0 / 2 + 2 / 4) / 3)  # 0.5
        assert e["sq_rel"] == pytest.approx((1 / 1 + 0 / 2 + 4 / 4) / 3)  # 2/3
        assert e["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
        assert e["rmse_log"] == pytest.approx(math.log(2) * math.sqrt(2 / 3))
        assert e["delta1"] == e["delta2"] == e["delta3"] == pytest.approx(1 / 3)

    def test_hand_computed_thresholds_separate(self):
        # gt = 10 mm, pred/gt ratios 1, 1.2, 1.5, 1.9, 2.5: thresholds 1.25, 1.5625, 1.953125.
        gt = np.full(5, 10.0)
        pred = np.array([10.0, 12.0, 15.0, 19.0, 25.0])
        e = depth_errors(gt_mm=gt, pred_mm=pred)
        assert e["delta1"] == pytest.approx(2 / 5)
        assert e["delta2"] == pytest.approx(3 / 5)
        assert e["delta3"] == pytest.approx(4 / 5)
        assert e["abs_rel"] == pytest.approx((0 + 2 + 5 + 9 + 15) / 10 / 5)  # 0.62
        assert e["sq_rel"] == pytest.approx((0 + 4 + 25 + 81 + 225) / 10 / 5)  # 6.7 mm
        assert e["rmse"] == pytest.approx(math.sqrt(335 / 5))  # sqrt(67) mm
        logs = np.log([1.0, 1.2, 1.5, 1.9, 2.5])
        assert e["rmse_log"] == pytest.approx(math.sqrt(np.mean(logs**2)))

    def test_ratio_threshold_is_symmetric(self):
        # Over- and under-estimation by the same factor count the same in δ and rmse_log.
        gt = np.array([10.0, 10.0])
        over = depth_errors(gt_mm=gt, pred_mm=np.array([13.0, 13.0]))
        under = depth_errors(gt_mm=gt, pred_mm=np.array([10.0 / 1.3, 10.0 / 1.3]))
        assert over["delta1"] == under["delta1"] == 0.0
        assert over["delta2"] == under["delta2"] == 1.0
        assert over["rmse_log"] == pytest.approx(under["rmse_log"])
        # abs_rel is not symmetric: +30 % vs -23.08 %.
        assert over["abs_rel"] == pytest.approx(0.3)
        assert under["abs_rel"] == pytest.approx(1 - 1 / 1.3)

    def test_rejects_non_positive_or_empty(self):
        with pytest.raises(ValueError, match="positive"):
            depth_errors(gt_mm=np.array([1.0]), pred_mm=np.array([0.0]))
        with pytest.raises(ValueError, match="at least one"):
            depth_errors(gt_mm=np.array([]), pred_mm=np.array([]))
        with pytest.raises(ValueError, match="same number"):
            depth_errors(gt_mm=np.array([1.0, 2.0]), pred_mm=np.array([1.0]))


    def test_arguments_are_keyword_only(self):
        # gt and pred swapped by position would silently change abs_rel (0.5 vs 0.583); it is refused
        with pytest.raises(TypeError):
            depth_errors(np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0]))
        swapped = depth_errors(gt_mm=np.array([2.0, 2.0, 2.0]), pred_mm=np.array([1.0, 2.0, 4.0]))
        assert swapped["abs_rel"] == pytest.approx((1 / 2 + 0 + 2 / 2) / 3)  # 0.5, by gt = 2

    def test_torch_tensors_give_the_numpy_numbers(self):
        torch = pytest.importorskip("torch")
        gt = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
        pred = np.array([10.0, 12.0, 15.0, 19.0, 25.0])
        e_t = depth_errors(gt_mm=torch.tensor(gt, dtype=torch.float32), pred_mm=torch.tensor(pred)[None])
        assert e_t == pytest.approx(depth_errors(gt_mm=gt, pred_mm=pred), rel=1e-12)
        assert e_t["abs_rel"] == pytest.approx(0.62)


class TestSilog:
    def test_zero_for_a_scaled_prediction(self):
        gt = np.array([5.0, 12.5, 40.0])
        assert silog(gt_mm=gt, pred_mm=3.7 * gt) == pytest.approx(0.0, abs=1e-9)

    def test_hand_computed(self):
        # ln(p / g) = [0, 1]: variance 1/4, so 100 * sqrt(1/4) = 50
        assert silog(gt_mm=np.array([1.0, 1.0]), pred_mm=np.array([1.0, math.e])) == pytest.approx(50.0)
        # ln(p / g) = [ln 2, -ln 2, 0]: variance (2/3) ln(2)^2
        value = silog(gt_mm=np.array([10.0, 10.0, 10.0]), pred_mm=np.array([20.0, 5.0, 10.0]))
        assert value == pytest.approx(100 * math.log(2) * math.sqrt(2 / 3))


class TestValidMask:
    def test_excludes_zero_nan_inf(self):
        gt = _ramp_gt()
        valid = valid_depth_mask(gt)
        assert valid.sum() == gt.size - 3
        assert not valid[0, 0] and not valid[1, 2] and not valid[5, 7]

    def test_range_and_fov(self):
        gt = np.array([[5.0, 10.0, 20.0, 30.0]])
        assert valid_depth_mask(gt, min_mm=10.0, max_mm=20.0).tolist() == [[False, True, True, False]]
        fov = np.array([[True, True, False, True]])
        assert valid_depth_mask(gt, fov_mask=fov).tolist() == [[True, True, False, True]]
        with pytest.raises(ValueError, match="fov_mask shape"):
            valid_depth_mask(gt, fov_mask=np.ones((2, 2), bool))


class TestAlignment:
    def test_median_scale_value(self):
        assert median_scale(np.array([1.0, 2.0, 9.0]), np.array([4.0, 6.0, 100.0])) == pytest.approx(3.0)

    def test_median_alignment_removes_global_scale(self):
        gt = np.array([3.0, 7.0, 11.0, 40.0])
        aligned, s = align_depth(0.01 * gt, gt, "median")
        assert s == pytest.approx(100.0)
        np.testing.assert_allclose(aligned, gt)

    def test_none_is_identity(self):
        pred = np.array([1.0, 2.0])
        aligned, s = align_depth(pred, np.array([5.0, 5.0]), "none")
        assert s == 1.0
        np.testing.assert_array_equal(aligned, pred)

    def test_bad_inputs(self):
        assert ALIGN_MODES == ("median", "none")
        with pytest.raises(ValueError, match="unknown alignment"):
            align_depth(np.ones(2), np.ones(2), "mean")
        with pytest.raises(ValueError, match="positive median"):
            median_scale(np.array([-1.0, -2.0, 3.0]), np.ones(3))


class TestFrameMetrics:
    def test_pred_equals_gt(self):
        gt = _ramp_gt()
        for align in ALIGN_MODES:
            r = frame_depth_metrics(gt.copy(), gt, align=align)
            assert r.num_valid == gt.size - 3
            assert r.scale == pytest.approx(1.0)
            assert r.metrics["abs_rel"] == 0.0 and r.metrics["rmse"] == 0.0
            assert r.metrics["delta1"] == 1.0

    def test_twice_gt(self):
        gt = _ramp_gt()
        pred = 2.0 * np.nan_to_num(gt, nan=1.0, posinf=1.0)
        unaligned = frame_depth_metrics(pred, gt, align="none")
        assert unaligned.metrics["abs_rel"] == pytest.approx(1.0)
        assert unaligned.metrics["rmse_log"] == pytest.approx(math.log(2))
        assert unaligned.metrics["delta3"] == 0.0  # ratio 2 > 1.953
        aligned = frame_depth_metrics(pred, gt, align="median")
        assert aligned.scale == pytest.approx(0.5)
        assert aligned.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-7)
        assert aligned.metrics["delta1"] == 1.0

    def test_invalid_pixels_are_ignored(self):
        gt = np.array([[0.0, 10.0], [20.0, 0.0]])
        pred = np.array([[1e6, 10.0], [20.0, -5.0]])  # garbage where gt is invalid
        r = frame_depth_metrics(pred, gt, align="none")
        assert r.num_valid == 2
        assert r.metrics["abs_rel"] == 0.0

    def test_fov_mask_and_range(self):
        gt = np.array([[10.0, 20.0, 30.0, 200.0]])
        pred = np.array([[10.0, 20.0, 60.0, 1.0]])
        fov = np.array([[True, True, False, True]])
        r = frame_depth_metrics(pred, gt, align="none", fov_mask=fov, max_mm=100.0)
        assert r.num_valid == 2 and r.metrics["abs_rel"] == 0.0

    def test_prediction_is_clamped_to_range(self):
        # monodepth2 order: align, then clamp the prediction to [min, max].
        gt = np.array([[10.0, 50.0]])
        pred = np.array([[1.0, 500.0]])
        r = frame_depth_metrics(pred, gt, align="none", min_mm=5.0, max_mm=100.0)
        # pred -> [5, 100]: abs_rel = (5/10 + 50/50) / 2 = 0.75
        assert r.metrics["abs_rel"] == pytest.approx(0.75)

    def test_non_positive_prediction_floored_without_range(self):
        gt = np.array([[10.0]])
        r = frame_depth_metrics(np.array([[-3.0]]), gt, align="none")
        assert r.metrics["abs_rel"] == pytest.approx((10.0 - PRED_FLOOR_MM) / 10.0)
        assert np.isfinite(r.metrics["rmse_log"])

    def test_no_valid_pixels_returns_none(self):
        assert frame_depth_metrics(np.ones((2, 2)), np.zeros((2, 2))) is None

    def test_errors(self):
        with pytest.raises(ValueError, match="resize first"):
            frame_depth_metrics(np.ones((2, 3)), np.ones((3, 2)))
        with pytest.raises(ValueError, match="non-finite"):
            frame_depth_metrics(np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))
        with pytest.raises(ValueError, match="min < max"):
            frame_depth_metrics(np.ones((1, 1)), np.ones((1, 1)), min_mm=5.0, max_mm=5.0)


def test_mean_metrics_is_frame_average():
    a = {name: 1.0 for name in DEPTH_METRICS}
    b = {name: 4.0 for name in DEPTH_METRICS}
    m = mean_metrics([a, b, b])
    assert all(v == pytest.approx(3.0) for v in m.values())
    with pytest.raises(ValueError):
        mean_metrics([])


def test_lower_is_better_flags():
    assert [n for n in DEPTH_METRICS if LOWER_IS_BETTER[n]] == ["abs_rel", "sq_rel", "rmse", "rmse_log"]


class TestTrainingValidationUsesTheseMetrics:
    """Training logs its validation errors through :func:`depth_errors` under its own (unchanged) names."""

    def test_batch_depth_errors_names_and_numbers(self):
        torch = pytest.importorskip("torch")
        from colondepth.train.steps import batch_depth_errors

        # (B, 1, H, W) = (1, 1, 2, 3): pixel 0 invalid (gt 0), pixel 5 masked out by `valid`
        gt = torch.tensor([[[[0.0, 10.0, 10.0], [10.0, 10.0, 10.0]]]])
        pred = torch.tensor([[[[7.0, 10.0, 12.0], [15.0, 19.0, 99.0]]]])
        valid = torch.ones_like(gt, dtype=torch.bool)
        valid[..., 1, 2] = False
        e = batch_depth_errors(pred_mm=pred, gt_mm=gt, valid=valid)
        assert set(e) == {"abs_rel", "rmse_mm", "delta1", "silog"}
        # the four scored pixels: gt 10, pred 10, 12, 15, 19
        assert e["abs_rel"] == pytest.approx((0 + 2 + 5 + 9) / 10 / 4)  # 0.4
        assert e["rmse_mm"] == pytest.approx(math.sqrt((0 + 4 + 25 + 81) / 4))
        assert e["delta1"] == pytest.approx(2 / 4)
        logs = np.log([1.0, 1.2, 1.5, 1.9])
        assert e["silog"] == pytest.approx(100 * np.std(logs))
        ref = depth_errors(gt_mm=np.full(4, 10.0), pred_mm=np.array([10.0, 12.0, 15.0, 19.0]))
        assert (e["abs_rel"], e["rmse_mm"], e["delta1"]) == pytest.approx((ref["abs_rel"], ref["rmse"], ref["delta1"]))

    def test_batch_depth_errors_nan_without_valid_pixels_or_finite_prediction(self):
        torch = pytest.importorskip("torch")
        from colondepth.train.steps import batch_depth_errors

        e = batch_depth_errors(pred_mm=torch.ones(1, 1, 2, 2), gt_mm=torch.zeros(1, 1, 2, 2))
        assert all(math.isnan(v) for v in e.values())
        e = batch_depth_errors(pred_mm=torch.full((1, 1, 2, 2), float("nan")), gt_mm=torch.ones(1, 1, 2, 2))
        assert all(math.isnan(v) for v in e.values())
        with pytest.raises(TypeError):  # keyword-only: pred and gt cannot be swapped by position
            batch_depth_errors(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))

    def test_self_supervised_frame_abs_rel(self):
        torch = pytest.importorskip("torch")
        from colondepth.train.selfsup import _frame_abs_rel

        gt = torch.tensor([10.0, 20.0, 40.0])
        raw, scaled = _frame_abs_rel(gt_mm=gt, pred_mm=2.0 * gt)
        assert raw == pytest.approx(1.0) and scaled == pytest.approx(0.0, abs=1e-12)
        # pred [10, 10, 10]: abs_rel (0 + 0.5 + 0.75) / 3; median scale 20 / 10 -> [20, 20, 20]: (1 + 0 + 0.5) / 3
        raw, scaled = _frame_abs_rel(gt_mm=gt, pred_mm=torch.full((3,), 10.0))
        assert raw == pytest.approx(1.25 / 3) and scaled == pytest.approx(1.5 / 3)
        assert all(math.isnan(v) for v in _frame_abs_rel(gt_mm=gt, pred_mm=torch.tensor([1.0, float("nan"), 2.0])))
