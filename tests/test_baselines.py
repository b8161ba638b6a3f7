"""Reference baselines: the inverse-square-light depth is exact where its model holds."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.conventions import ImageSize
from colondepth.eval.baselines import (
    REC709_WEIGHTS,
    constant_depth_mm,
    dataset_median_depth_mm,
    linear_luminance,
    physics_depth_mm,
    range_to_z_depth,
)
from colondepth.eval.depth_metrics import frame_depth_metrics
from colondepth.geometry.camera import PinholeIntrinsics

# Off-centre principal point and a tilted, offset plane: no symmetry hides a flipped axis.
K = PinholeIntrinsics(fx=50.0, fy=55.0, cx=30.2, cy=20.7, size=ImageSize(48, 64))


def _tilted_plane(intr: PinholeIntrinsics = K):
    """z-depth and range (mm) of the plane n . X = d seen by camera ``intr`` (OpenCV frame)."""
    h, w = intr.size.as_hw()
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ray = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], axis=-1)
    n = np.array([0.25, -0.15, 1.0])
    n /= np.linalg.norm(n)
    d = 30.0
    z = d / (ray @ n)
    assert np.all(z > 0)
    return z, z * np.linalg.norm(ray, axis=-1)


def _render_inverse_square(range_mm, k, gamma=2.2):
    """Grey image with linear intensity I = k / r^2, gamma-encoded like pyrender, float in [0, 1]."""
    lin = k / range_mm**2
    assert lin.max() <= 1.0
    enc = lin ** (1.0 / gamma)
    return np.repeat(enc[..., None], 3, axis=-1)


class TestLuminance:
    def test_weights_and_gamma(self):
        img = np.zeros((1, 3, 3), np.uint8)
        img[0, 0] = (255, 0, 0)
        img[0, 1] = (0, 255, 0)
        img[0, 2] = (128, 128, 128)
        lum = linear_luminance(img, gamma=2.2)
        assert lum[0, 0] == pytest.approx(0.2126)
        assert lum[0, 1] == pytest.approx(0.7152)
        assert lum[0, 2] == pytest.approx((128 / 255) ** 2.2)
        assert REC709_WEIGHTS.sum() == pytest.approx(1.0)

    def test_float_input_and_shape_check(self):
        img = np.full((2, 2, 3), 0.5)
        assert linear_luminance(img, gamma=1.0)[0, 0] == pytest.approx(0.5)
        with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
            linear_luminance(np.zeros((2, 2)))


class TestPhysicsBaseline:
    def test_exact_on_inverse_square_scene(self):
        z, r = _tilted_plane()
        k = 0.9 * r.min() ** 2  # brightest pixel at 0.9
        rgb = _render_inverse_square(r, k)
        est = physics_depth_mm(rgb, K, smooth_sigma_px=0.0, min_luminance=1e-9, scale=np.sqrt(k))
        assert est.shape == z.shape and est.dtype == np.float32
        np.testing.assert_allclose(est, z, rtol=1e-5)
        # Unknown scale: median alignment recovers it exactly.
        unscaled = physics_depth_mm(rgb, K, smooth_sigma_px=0.0, min_luminance=1e-9)
        m = frame_depth_metrics(unscaled, z.astype(np.float32), align="median")
        assert m.metrics["abs_rel"] < 1e-5
        assert m.scale == pytest.approx(np.sqrt(k), rel=1e-5)

    def test_without_intrinsics_it_estimates_range(self):
        z, r = _tilted_plane()
        k = 0.9 * r.min() ** 2
        est = physics_depth_mm(_render_inverse_square(r, k), None, smooth_sigma_px=0.0, scale=np.sqrt(k))
        np.testing.assert_allclose(est, r, rtol=1e-5)
        # Range is longer than z-depth off the optical axis: scoring it as z-depth is wrong.
        assert frame_depth_metrics(est, z.astype(np.float32), align="median").metrics["abs_rel"] > 1e-3

    def test_uint8_scene_with_defaults_is_close(self):
        z, r = _tilted_plane()
        k = 0.9 * r.min() ** 2
        rgb = np.round(_render_inverse_square(r, k) * 255).astype(np.uint8)
        est = physics_depth_mm(rgb, K)
        m = frame_depth_metrics(est, z.astype(np.float32), align="median")
        assert m.metrics["abs_rel"] < 2e-3  # 8-bit quantisation only (measured 5e-4)
        assert m.metrics["delta1"] == 1.0

    def test_lambertian_cosine_breaks_it(self):
        # The baseline ignores cos(theta): with I = k cos(theta) / r^2 it is no longer exact.
        z, r = _tilted_plane()
        cos_theta = 30.0 / r  # light at the lens, unit normal n, plane n.X = d: cos = (n.X) / |X| = d / r
        k = 0.9 * (r**2 / cos_theta).min()
        rgb = np.repeat(((k * cos_theta / r**2) ** (1 / 2.2))[..., None], 3, axis=-1)
        est = physics_depth_mm(rgb, K, smooth_sigma_px=0.0)
        assert frame_depth_metrics(est, z.astype(np.float32), align="median").metrics["abs_rel"] > 0.03  # measured 0.048

    def test_dark_pixels_are_clipped(self):
        rgb = np.zeros((4, 5, 3), np.uint8)
        rgb[0, 0] = 255
        est = physics_depth_mm(rgb, None, smooth_sigma_px=0.0, min_luminance=1e-2, scale=2.0)
        assert est[0, 0] == pytest.approx(2.0)
        assert est[3, 4] == pytest.approx(2.0 / np.sqrt(1e-2))
        assert np.all(np.isfinite(est))

    def test_bad_parameters(self):
        with pytest.raises(ValueError, match="min_luminance"):
            physics_depth_mm(np.zeros((2, 2, 3), np.uint8), min_luminance=0.0)
        with pytest.raises(ValueError, match="gamma"):
            linear_luminance(np.zeros((2, 2, 3), np.uint8), gamma=0.0)


def test_range_to_z_depth_resizes_intrinsics():
    z, r = _tilted_plane()
    np.testing.assert_allclose(range_to_z_depth(r, K), z, rtol=1e-12)
    # The same camera at half resolution.
    k_half = K.resized(ImageSize(24, 32))
    z_half, r_half = _tilted_plane(k_half)
    np.testing.assert_allclose(range_to_z_depth(r_half, K), z_half, rtol=1e-12)


class TestConstantBaseline:
    def test_median_aligned_constant_scores_against_gt_median(self):
        gt = np.array([[10.0, 20.0, 40.0]], np.float32)
        for value in (1.0, 123.0):
            m = frame_depth_metrics(constant_depth_mm(ImageSize(1, 3), value), gt, align="median")
            # constant -> median 20: abs_rel = (10/10 + 0 + 20/40) / 3
            assert m.metrics["abs_rel"] == pytest.approx(0.5)
            assert m.metrics["delta1"] == pytest.approx(1 / 3)

    def test_rejects_non_positive(self):
        with pytest.raises(ValueError, match="positive"):
            constant_depth_mm(ImageSize(2, 2), 0.0)

    def test_dataset_median(self):
        maps = [np.array([[0.0, 10.0, 20.0]]), np.array([[30.0, 40.0, np.nan]])]
        assert dataset_median_depth_mm(maps) == pytest.approx(25.0)
        assert dataset_median_depth_mm(maps, max_mm=30.0) == pytest.approx(20.0)
        big = [np.arange(1, 1001, dtype=np.float64)[None, :]]
        assert dataset_median_depth_mm(big, max_values_per_frame=100) == pytest.approx(496.0)
        with pytest.raises(ValueError, match="no valid"):
            dataset_median_depth_mm([np.zeros((2, 2))])
