"""PinholeIntrinsics: resize and crop keep projections consistent, from_fov, and bad values raise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics

INTR = PinholeIntrinsics(fx=120.0, fy=110.0, cx=70.3, cy=45.8, size=ImageSize(height=96, width=144))
POINTS = np.array([[3.0, -2.0, 40.0], [-11.0, 7.5, 55.0], [0.0, 0.0, 20.0], [14.0, 9.0, 31.0]])


def _project(intr: PinholeIntrinsics, points: np.ndarray) -> np.ndarray:
    p = points @ intr.K.T
    return p[:, :2] / p[:, 2:3]


@pytest.mark.parametrize("new_size", [ImageSize(48, 72), ImageSize(64, 64), ImageSize(200, 300), ImageSize(37, 91)])
def test_resize_keeps_projections_consistent(new_size):
    sx = new_size.width / INTR.size.width
    sy = new_size.height / INTR.size.height
    uv = _project(INTR, POINTS)
    # A resize maps the continuous image [-0.5, W - 0.5] onto [-0.5, W' - 0.5].
    mapped = np.stack([(uv[:, 0] + 0.5) * sx - 0.5, (uv[:, 1] + 0.5) * sy - 0.5], axis=-1)
    k2 = INTR.resized(new_size)
    assert k2.size == new_size
    np.testing.assert_allclose(_project(k2, POINTS), mapped, atol=1e-10)
    np.testing.assert_allclose(k2.fov_x_deg, INTR.fov_x_deg, rtol=1e-12)  # the same camera
    back = k2.resized(INTR.size)
    np.testing.assert_allclose([back.fx, back.fy, back.cx, back.cy], [INTR.fx, INTR.fy, INTR.cx, INTR.cy], atol=1e-10)


def test_resize_matches_torch_interpolate_convention():
    # An image that is an affine ramp in u: a half-size bilinear resize (align_corners=False) must put the
    # value of source coordinate (u' + 0.5) * 2 - 0.5 at new pixel u', the mapping resized() assumes.
    H, W = 8, 12
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    img = (3.0 * u + 0.5 * v)[None, None]
    small = torch.nn.functional.interpolate(img, size=(H // 2, W // 2), mode="bilinear", align_corners=False)
    k = PinholeIntrinsics(fx=10.0, fy=10.0, cx=5.5, cy=3.5, size=ImageSize(H, W)).resized(ImageSize(H // 2, W // 2))
    assert (k.cx, k.cy) == (2.5, 1.5)  # the image centre stays the image centre
    v2, u2 = torch.meshgrid(torch.arange(H // 2, dtype=torch.float64), torch.arange(W // 2, dtype=torch.float64),
                            indexing="ij")
    expected = 3.0 * ((u2 + 0.5) * 2 - 0.5) + 0.5 * ((v2 + 0.5) * 2 - 0.5)
    np.testing.assert_allclose(small[0, 0].numpy(), expected.numpy(), atol=1e-12)


def test_crop_shifts_principal_point_and_projections():
    k2 = INTR.cropped(x0=10, y0=20, size=ImageSize(50, 60))
    assert (k2.fx, k2.fy, k2.cx, k2.cy) == (INTR.fx, INTR.fy, INTR.cx - 10, INTR.cy - 20)
    assert k2.size == ImageSize(50, 60)
    np.testing.assert_allclose(_project(k2, POINTS), _project(INTR, POINTS) - [10.0, 20.0], atol=1e-12)


def test_from_fov():
    k = PinholeIntrinsics.from_fov(ImageSize(height=60, width=80), fov_x_deg=90.0)
    assert k.fx == pytest.approx(40.0) and k.fy == pytest.approx(40.0)
    assert (k.cx, k.cy) == (39.5, 29.5)
    assert k.fov_x_deg == pytest.approx(90.0)
    assert k.fov_y_deg == pytest.approx(math.degrees(2 * math.atan(30.0 / 40.0)))
    # A point on the right edge of the field of view projects to the right image edge u = W - 0.5.
    uv = _project(k, np.array([[math.tan(math.radians(45.0)) * 10.0, 0.0, 10.0]]))
    np.testing.assert_allclose(uv[0], [79.5, 29.5], atol=1e-12)


def test_matrix_and_dict_round_trip():
    K = INTR.K
    assert K.shape == (3, 3) and K[0, 0] == 120.0 and K[1, 2] == 45.8 and K[2, 2] == 1.0
    assert PinholeIntrinsics.from_matrix(K, INTR.size) == INTR
    assert PinholeIntrinsics.from_dict(INTR.to_dict()) == INTR
    Kt = INTR.K_tensor(dtype=torch.float64)
    assert Kt.dtype == torch.float64 and Kt.device.type == "cpu" and torch.equal(Kt, torch.from_numpy(K))
    assert INTR.K_tensor().dtype == torch.float32


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PinholeIntrinsics(0.0, 1.0, 1.0, 1.0, ImageSize(4, 4)), "focal"),
        (lambda: PinholeIntrinsics(1.0, -2.0, 1.0, 1.0, ImageSize(4, 4)), "focal"),
        (lambda: PinholeIntrinsics(1.0, 1.0, float("nan"), 1.0, ImageSize(4, 4)), "finite"),
        (lambda: PinholeIntrinsics(float("inf"), 1.0, 1.0, 1.0, ImageSize(4, 4)), "finite"),
        (lambda: PinholeIntrinsics.from_fov(ImageSize(4, 4), 0.0), "field of view"),
        (lambda: PinholeIntrinsics.from_fov(ImageSize(4, 4), 180.0), "field of view"),
        (lambda: PinholeIntrinsics.from_matrix(np.eye(4), ImageSize(4, 4)), "3x3"),
        (lambda: PinholeIntrinsics.from_matrix(np.array([[1.0, 0.1, 0], [0, 1, 0], [0, 0, 1]]), ImageSize(4, 4)),
         "fx,0,cx"),
        (lambda: INTR.cropped(x0=100, y0=0, size=ImageSize(10, 50)), "outside"),
        (lambda: INTR.cropped(x0=-1, y0=0, size=ImageSize(10, 10)), "outside"),
        (lambda: ImageSize(0, 10), "positive"),
        (lambda: ImageSize(10.5, 10), "integer"),
    ],
)
def test_bad_values_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
