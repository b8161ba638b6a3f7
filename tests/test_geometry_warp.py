"""Image sampling and view synthesis with known answers: identity, pure x-translation (sign and size
fx * tx / Z), rotation-only (depth independent), out-of-view and behind-camera invalidity, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.geometry.pose import make_pose, pose_from_axis_angle_translation, relative_pose
from colondepth.geometry.warp import pixel_to_grid_sample_coords, sample_image, warp_source_to_target

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64
H, W = 12, 16
# Powers of two keep the back-projection / projection arithmetic exact in binary floating point.
FX, FY, CX, CY = 32.0, 32.0, 7.5, 5.5


def _K(batch: int = 1, dtype=F64) -> torch.Tensor:
    return torch.tensor([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]], dtype=dtype).expand(batch, 3, 3).clone()


def _translation(tx: float, ty: float = 0.0, tz: float = 0.0, batch: int = 1) -> torch.Tensor:
    return make_pose(torch.eye(3, dtype=F64), torch.tensor([tx, ty, tz], dtype=F64)).expand(batch, 4, 4).clone()


def _image(batch: int = 2, channels: int = 3, seed: int = 0, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, H, W, generator=g, dtype=dtype)


# -- sample_image ------------------------------------------------------------------------------------
def test_grid_normalisation_formula():
    uv = torch.tensor([[-0.5, -0.5], [W - 0.5, H - 0.5], [0.0, 0.0]], dtype=F64)
    g = pixel_to_grid_sample_coords(uv, H, W)
    np.testing.assert_allclose(g.numpy(), [[-1, -1], [1, 1], [1 / W - 1, 1 / H - 1]], atol=1e-15)


def test_sample_image_at_known_coordinates():
    img = _image(batch=1, channels=1)
    uv = torch.tensor([[[[3.0, 2.0], [3.5, 2.0], [3.0, 4.25], [0.0, 0.0], [W - 1.0, H - 1.0],
                         [-0.5, 2.0], [W - 0.9, 2.0], [float("nan"), 1.0], [-1e12, 1e12],
                         [-0.01, 2.0], [-5e-4, 2.0]]]], dtype=F64)
    out, inside = sample_image(img, uv)
    i = img[0, 0]
    expected = [i[2, 3], 0.5 * (i[2, 3] + i[2, 4]), 0.75 * i[4, 3] + 0.25 * i[5, 3], i[0, 0], i[H - 1, W - 1],
                0.5 * i[2, 0], 0.9 * i[2, W - 1], 0.0, 0.0, 0.99 * i[2, 0], (1 - 5e-4) * i[2, 0]]
    np.testing.assert_allclose(out[0, 0, 0].numpy(), torch.stack([torch.as_tensor(e, dtype=F64) for e in expected]).numpy(),
                               atol=1e-12)
    assert inside[0, 0, 0].tolist() == [True, True, True, True, True, False, False, False, False, False, True]


def test_sample_image_nearest():
    img = _image(batch=1, channels=2)
    uv = torch.tensor([[[[1.4, 2.6], [-0.4, 0.0], [W - 0.6, 0.0], [W - 0.4, 0.0]]]], dtype=F64)
    out, inside = sample_image(img, uv, mode="nearest")
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), img[0, :, 3, 1].numpy())
    np.testing.assert_allclose(out[0, :, 0, 1].numpy(), img[0, :, 0, 0].numpy())
    np.testing.assert_allclose(out[0, :, 0, 2].numpy(), img[0, :, 0, W - 1].numpy())
    assert inside[0, 0, 0].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="mode"):
        sample_image(img, uv, mode="bicubic")


# -- warp_source_to_target ---------------------------------------------------------------------------
def test_identity_pose_reproduces_image():
    src = _image(dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(2, 1, H, W, generator=g) * 100 + 5
    eye = torch.eye(4).expand(2, 4, 4)
    warped, valid = warp_source_to_target(src, depth, eye, _K(dtype=torch.float32))
    assert valid.all()  # border pixels too: round-off at u = 0 or W - 1 does not make them invalid
    interior = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(warped[interior].numpy(), src[interior].numpy(), atol=2e-6)
    np.testing.assert_allclose(warped.numpy(), src.numpy(), atol=1e-4)


def test_pure_x_translation_shifts_columns_by_fx_tx_over_z():
    src = _image()
    Z, tx = 64.0, 6.0
    shift = FX * tx / Z  # = 3 px: P_src = P_tgt + (tx, 0, 0), so u_src = u_tgt + fx tx / Z
    assert shift == 3.0
    depth = torch.full((2, 1, H, W), Z, dtype=F64)
    warped, valid = warp_source_to_target(src, depth, _translation(tx, batch=2), _K())
    s = int(shift)
    np.testing.assert_allclose(warped[..., : W - s].numpy(), src[..., s:].numpy(), atol=1e-12)
    assert valid[..., : W - s].all() and not valid[..., W - s:].any()
    assert (warped[..., W - s:] == 0).all()


def test_half_pixel_translation_interpolates():
    src = _image()
    Z, tx = 64.0, 5.0  # 2.5 px
    warped, valid = warp_source_to_target(src, torch.full((2, 1, H, W), Z, dtype=F64), _translation(tx, batch=2), _K())
    expected = 0.5 * (src[..., 2:W - 1] + src[..., 3:])
    np.testing.assert_allclose(warped[..., : W - 3].numpy(), expected.numpy(), atol=1e-12)
    assert valid[..., : W - 3].all() and not valid[..., W - 3:].any()


def test_camera_moving_right_sees_content_move_left():
    # Target camera at the world origin, source camera 6 mm to the right (+X): a point straight ahead
    # of the target appears left of it in the source image, u_src = u_tgt - fx * 6 / Z.
    world_from_tgt = torch.eye(4, dtype=F64)[None]
    world_from_src = _translation(6.0)
    src_from_tgt = relative_pose(world_from_src, world_from_tgt)
    src = _image(batch=1)
    warped, valid = warp_source_to_target(src, torch.full((1, 1, H, W), 64.0, dtype=F64), src_from_tgt, _K())
    np.testing.assert_allclose(warped[..., 3:].numpy(), src[..., : W - 3].numpy(), atol=1e-12)
    assert valid[..., 3:].all() and not valid[..., :3].any()


def test_y_translation_shifts_rows_down():
    src = _image(batch=1)
    warped, valid = warp_source_to_target(src, torch.full((1, 1, H, W), 64.0, dtype=F64), _translation(0.0, 4.0), _K())
    np.testing.assert_allclose(warped[..., : H - 2, :].numpy(), src[..., 2:, :].numpy(), atol=1e-12)
    assert valid[..., : H - 2, :].all() and not valid[..., H - 2:, :].any()


def test_rotation_only_warp_does_not_depend_on_depth():
    src = _image()
    pose = pose_from_axis_angle_translation(torch.tensor([[0.03, -0.05, 0.1, 0, 0, 0]], dtype=F64).expand(2, 6))
    g = torch.Generator().manual_seed(2)
    depth_a = torch.full((2, 1, H, W), 50.0, dtype=F64)
    depth_b = torch.rand(2, 1, H, W, generator=g, dtype=F64) * 500 + 1
    wa, va = warp_source_to_target(src, depth_a, pose, _K())
    wb, vb = warp_source_to_target(src, depth_b, pose, _K())
    assert torch.equal(va, vb)
    assert 0.3 < va.double().mean() < 0.99  # the rotation moves some pixels out of view
    np.testing.assert_allclose(wa.numpy(), wb.numpy(), atol=1e-10)
    # ... and translation does depend on depth.
    pose_t = pose.clone()
    pose_t[:, 0, 3] = 3.0
    assert (warp_source_to_target(src, depth_a, pose_t, _K())[0]
            - warp_source_to_target(src, depth_b, pose_t, _K())[0]).abs().max() > 0.1


def test_out_of_view_and_behind_camera_are_invalid():
    src = _image(batch=1)
    depth = torch.full((1, 1, H, W), 64.0, dtype=F64)
    warped, valid = warp_source_to_target(src, depth, _translation(1000.0), _K())
    assert not valid.any() and (warped == 0).all()
    # Half a turn about Y: (X, Y, Z) -> (-X, Y, -Z).  The projection of the mirrored point lands on the
    # same pixel, inside the image, but the point is behind the source camera.
    half_turn = pose_from_axis_angle_translation(torch.tensor([[0.0, math.pi, 0.0, 0.0, 0.0, 0.0]], dtype=F64))
    warped, valid = warp_source_to_target(src, depth, half_turn, _K())
    assert not valid.any() and (warped == 0).all()
    # Moving the source camera past the surface: everything behind it.
    warped, valid = warp_source_to_target(src, depth, _translation(0.0, 0.0, -100.0), _K())
    assert not valid.any()


def test_invalid_target_depth_is_invalid():
    src = _image(batch=1)
    depth = torch.full((1, 1, H, W), 64.0, dtype=F64)
    depth[0, 0, 3, 4] = 0.0
    depth[0, 0, 5, 6] = float("nan")
    depth[0, 0, 7, 8] = -3.0
    warped, valid = warp_source_to_target(src, depth, torch.eye(4, dtype=F64)[None], _K())
    assert not valid[0, 0, 3, 4] and not valid[0, 0, 5, 6] and not valid[0, 0, 7, 8]
    assert valid.sum() == H * W - 3
    assert torch.isfinite(warped).all()


def test_source_at_other_resolution_uses_K_source():
    # A source image that is an affine ramp in its own pixel coordinates: bilinear sampling is exact.
    intr = PinholeIntrinsics(fx=FX, fy=FY, cx=CX, cy=CY, size=ImageSize(H, W))
    small = intr.resized(ImageSize(H // 2, W // 2))
    vs, us = torch.meshgrid(torch.arange(H // 2, dtype=F64), torch.arange(W // 2, dtype=F64), indexing="ij")
    src = (0.7 * us - 0.3 * vs + 2.0)[None, None]
    depth = torch.full((1, 1, H, W), 40.0, dtype=F64)
    warped, valid = warp_source_to_target(src, depth, torch.eye(4, dtype=F64)[None], intr.K_tensor(dtype=F64),
                                          K_source=small.K_tensor(dtype=F64))
    v, u = torch.meshgrid(torch.arange(H, dtype=F64), torch.arange(W, dtype=F64), indexing="ij")
    u_s, v_s = (u + 0.5) / 2 - 0.5, (v + 0.5) / 2 - 0.5  # the resize mapping of camera.resized
    expected = 0.7 * u_s - 0.3 * v_s + 2.0
    inner = valid[0, 0]
    assert inner[1:-1, 1:-1].all() and not inner[0].any()  # row 0 maps to v_s = -0.25: needs padding
    np.testing.assert_allclose(warped[0, 0][inner].numpy(), expected[inner].numpy(), atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_device(device, dtype):
    src = torch.rand(3, 2, H, W, dtype=dtype, device=device)
    depth = torch.full((3, 1, H, W), 30.0, dtype=dtype, device=device)
    pose = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)  # cast to the image's dtype/device
    warped, valid = warp_source_to_target(src, depth, pose.to(device), _K(dtype=dtype).to(device))
    assert warped.shape == (3, 2, H, W) and warped.dtype == dtype and warped.device.type == device
    assert valid.shape == (3, 1, H, W) and valid.dtype == torch.bool and valid.device.type == device


def test_bad_shapes_raise():
    src = _image(batch=2)
    depth = torch.ones(2, 1, H, W, dtype=F64)
    with pytest.raises(ValueError, match="src_from_tgt"):
        warp_source_to_target(src, depth, torch.eye(4, dtype=F64)[None], _K())
    with pytest.raises(ValueError, match="target_depth_mm"):
        warp_source_to_target(src, depth[:, 0], torch.eye(4, dtype=F64).expand(2, 4, 4), _K())
    with pytest.raises(ValueError, match="uv must have shape"):
        sample_image(src, torch.zeros(2, 4, 4, 3, dtype=F64))


def test_gradcheck_sample_and_warp():
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 2, 5, 6, generator=g, dtype=F64, requires_grad=True)
    uv = (torch.rand(1, 3, 4, 2, generator=g, dtype=F64) * torch.tensor([4.0, 3.0], dtype=F64) + 0.3)
    uv.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, c: sample_image(i, c)[0], (img, uv))

    K = torch.tensor([[[6.0, 0.0, 2.7], [0.0, 6.5, 2.2], [0.0, 0.0, 1.0]]], dtype=F64)
    depth = (torch.rand(1, 1, 5, 6, generator=g, dtype=F64) * 20 + 30).requires_grad_(True)
    vec6 = torch.tensor([[0.01, -0.02, 0.015, 0.37, -0.21, 0.5]], dtype=F64, requires_grad=True)

    def warp(i, d, v, k):
        return warp_source_to_target(i, d, pose_from_axis_angle_translation(v), k)[0]

    _, valid = warp_source_to_target(img, depth, pose_from_axis_angle_translation(vec6), K)
    assert valid.sum() >= 12  # the check covers real, in-view pixels
    assert torch.autograd.gradcheck(warp, (img, depth, vec6, K.clone().requires_grad_(True)))
