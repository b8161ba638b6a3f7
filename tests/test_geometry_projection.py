"""Back-projection and projection against closed-form scenes (a tilted plane, an off-axis tilted
cylinder seen from inside), with an asymmetric K so that any axis flip or transposition shows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colondepth.conventions import ImageSize
from colondepth.geometry.projection import (
    backproject_depth,
    depth_to_disp,
    depth_to_range,
    disp_to_depth,
    pixel_grid,
    pixel_rays,
    project_points,
    range_to_depth,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64
SIZE = ImageSize(height=24, width=40)  # non-square, so a swapped H/W fails
FX, FY, CX, CY = 30.0, 34.0, 17.3, 13.6  # fx != fy and an off-centre principal point


def _K(batch: int = 1, dtype=F64) -> torch.Tensor:
    K = torch.tensor([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]], dtype=dtype)
    return K.expand(batch, 3, 3).clone()


def _rays_by_hand(size: ImageSize) -> np.ndarray:
    """(H, W, 3) rays (x, y, 1) written out from the pinhole model, independent of the module."""
    v, u = np.mgrid[0:size.height, 0:size.width].astype(np.float64)
    return np.stack([(u - CX) / FX, (v - CY) / FY, np.ones_like(u)], axis=-1)


def _plane_depth() -> tuple[np.ndarray, np.ndarray, float]:
    """Plane n.p = d, tilted in x and y; its z-depth at every pixel in closed form."""
    n = np.array([0.3, -0.2, 1.0])
    n = n / np.linalg.norm(n)
    d = 80.0
    depth = d / (_rays_by_hand(SIZE) @ n)
    assert depth.min() > 0
    return depth, n, d


def _cylinder_depth() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Camera inside a cylinder of radius r whose axis is tilted and does not pass through the camera.

    Returns the z-depth, the axis point c, the unit axis direction a, and r.  Pixels whose ray runs
    almost along the axis (farther than 2000 mm) are marked invalid (0).
    """
    c = np.array([3.0, -2.0, 0.0])
    a = np.array([0.2, -0.1, 1.0])
    a = a / np.linalg.norm(a)
    r = 12.0
    rays = _rays_by_hand(SIZE)  # point = t * ray, so t is the z-depth
    perp = rays - (rays @ a)[..., None] * a  # ray component orthogonal to the axis
    b = -c + (c @ a) * a  # (0 - c) orthogonal to the axis
    qa = (perp * perp).sum(-1)
    qb = 2.0 * (perp @ b)
    qc = b @ b - r * r
    assert qc < 0  # camera inside the tube
    t = (-qb + np.sqrt(qb * qb - 4.0 * qa * qc)) / (2.0 * qa)
    depth = np.where(t < 2000.0, t, 0.0)
    assert (depth > 0).mean() > 0.95
    return depth, c, a, r


def test_pixel_grid_centres_at_integers():
    g = pixel_grid(SIZE, dtype=F64)
    assert g.shape == (24, 40, 2)
    assert g[0, 0].tolist() == [0.0, 0.0]
    assert g[5, 7].tolist() == [7.0, 5.0]  # grid[v, u] = (u, v)
    assert g[-1, -1].tolist() == [39.0, 23.0]


def test_opencv_axes_right_and_down():
    K = _K()
    pts = torch.tensor([[[10.0, 0.0, 100.0], [0.0, 10.0, 100.0], [0.0, 0.0, 50.0]]], dtype=F64)
    uv, z = project_points(pts, K)
    np.testing.assert_allclose(uv[0].numpy(), [[CX + 3.0, CY], [CX, CY + 3.4], [CX, CY]], atol=1e-12)
    np.testing.assert_allclose(z[0].numpy(), [100.0, 100.0, 50.0])


def test_tilted_plane_round_trip():
    depth, n, d = _plane_depth()
    depth_t = torch.from_numpy(depth)[None, None].repeat(2, 1, 1, 1)
    pts = backproject_depth(depth_t, _K(2))
    assert pts.shape == (2, 3, 24, 40)
    p = pts[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(p @ n, d, rtol=1e-12)  # every point lies on the plane
    np.testing.assert_allclose(p[..., 2], depth, rtol=1e-12)  # z of the point is the depth
    # The pixel right of the principal point sees positive X, the pixel below sees positive Y.
    assert p[13, 30, 0] > 0 and p[13, 2, 0] < 0 and p[23, 17, 1] > 0 and p[0, 17, 1] < 0
    uv, z = project_points(pts.flatten(2).transpose(1, 2), _K(2))
    np.testing.assert_allclose(uv[0].reshape(24, 40, 2).numpy(), pixel_grid(SIZE, dtype=F64).numpy(), atol=1e-10)
    np.testing.assert_allclose(z[1].reshape(24, 40).numpy(), depth, rtol=1e-12)


def test_off_axis_cylinder_round_trip():
    depth, c, a, r = _cylinder_depth()
    pts = backproject_depth(torch.from_numpy(depth)[None, None], _K())
    p = pts[0].permute(1, 2, 0).numpy()
    valid = depth > 0
    w = p - c
    dist_to_axis = np.linalg.norm(w - (w @ a)[..., None] * a, axis=-1)
    np.testing.assert_allclose(dist_to_axis[valid], r, rtol=1e-9)
    assert np.abs(dist_to_axis[valid] - r).max() < 1e-8
    # The depth map is not symmetric: the axis is off-centre, so opposite corners differ.
    assert abs(depth[0, 0] - depth[-1, -1]) > 1.0 and abs(depth[0, -1] - depth[-1, 0]) > 1.0
    uv, z = project_points(pts.flatten(2).transpose(1, 2), _K())
    grid = pixel_grid(SIZE, dtype=F64).reshape(-1, 2).numpy()
    vf = valid.reshape(-1)
    np.testing.assert_allclose(uv[0].numpy()[vf], grid[vf], atol=1e-9)
    np.testing.assert_allclose(z[0].numpy()[vf], depth.reshape(-1)[vf], rtol=1e-12)


def test_zero_depth_backprojects_to_origin():
    depth = torch.zeros(1, 1, 4, 5, dtype=F64)
    assert backproject_depth(depth, _K()).abs().max() == 0


def test_points_behind_camera_report_negative_z_and_finite_uv():
    pts = torch.tensor([[[1.0, 2.0, -10.0], [1.0, 2.0, 0.0]]], dtype=F64)
    uv, z = project_points(pts, _K())
    assert z[0, 0] == -10.0 and z[0, 1] == 0.0
    assert torch.isfinite(uv).all()


def test_range_and_depth():
    depth, _, _, _ = _cylinder_depth()
    depth_t = torch.from_numpy(depth)[None, None]
    rng = depth_to_range(depth_t, _K())
    expected = depth * np.linalg.norm(_rays_by_hand(SIZE), axis=-1)
    np.testing.assert_allclose(rng[0, 0].numpy(), expected, rtol=1e-12)
    assert (rng[0, 0].numpy() >= depth).all()
    # At the principal point (not a pixel centre here) range == depth; check a hand-made K with integer cx, cy.
    K = torch.tensor([[50.0, 0, 2.0], [0, 50.0, 1.0], [0, 0, 1.0]], dtype=F64)
    d = torch.full((1, 1, 3, 5), 40.0, dtype=F64)
    r = depth_to_range(d, K)
    assert r[0, 0, 1, 2] == 40.0
    np.testing.assert_allclose(r[0, 0, 1, 4].item(), 40.0 * math.hypot(1.0, 2.0 / 50.0), rtol=1e-14)
    np.testing.assert_allclose(range_to_depth(rng, _K()).numpy(), depth_t.numpy(), rtol=1e-12)


def test_disp():
    depth = torch.tensor([0.0, 2.0, 50.0, -1.0], dtype=F64)
    disp = depth_to_disp(depth)
    assert disp.tolist() == [0.0, 0.5, 0.02, 0.0]
    d = torch.tensor([0.0, 4.0], dtype=F64, requires_grad=True)
    depth_to_disp(d).sum().backward()
    assert d.grad.tolist() == [0.0, -1.0 / 16.0]  # finite at the invalid zero
    np.testing.assert_allclose(disp_to_depth(disp).numpy(), [0.0, 2.0, 50.0, 0.0], rtol=1e-6)


def test_pixel_rays_match_hand_rays():
    rays = pixel_rays(_K(), SIZE)
    assert rays.shape == (1, 3, 24, 40)
    np.testing.assert_allclose(rays[0].permute(1, 2, 0).numpy(), _rays_by_hand(SIZE), atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_device_and_shared_K(device, dtype):
    depth = torch.full((3, 1, 6, 8), 10.0, dtype=dtype, device=device)
    K = _K(dtype=torch.float64)[0]  # a shared (3, 3) float64 K is cast to the input
    pts = backproject_depth(depth, K)
    assert pts.shape == (3, 3, 6, 8) and pts.dtype == dtype and pts.device.type == device
    uv, z = project_points(pts.flatten(2).transpose(1, 2), K)
    assert uv.shape == (3, 48, 2) and z.shape == (3, 48) and uv.dtype == dtype and uv.device.type == device
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(uv[2].reshape(6, 8, 2).cpu().numpy(),
                               pixel_grid(ImageSize(6, 8), dtype=torch.float64).numpy(), atol=tol)
    g = pixel_grid(ImageSize(6, 8), device=device, dtype=dtype)
    assert g.dtype == dtype and g.device.type == device


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="depth_mm must have shape"):
        backproject_depth(torch.ones(2, 4, 5), _K())
    with pytest.raises(ValueError, match="K must have shape"):
        backproject_depth(torch.ones(2, 1, 4, 5), torch.eye(4))
    with pytest.raises(ValueError, match="batch size"):
        backproject_depth(torch.ones(2, 1, 4, 5), _K(3))
    with pytest.raises(ValueError, match="points_cam must have shape"):
        project_points(torch.ones(2, 5, 2), _K())
    with pytest.raises(TypeError, match="ImageSize"):
        pixel_grid((4, 5))


def test_gradcheck_backproject_and_project():
    g = torch.Generator().manual_seed(0)
    depth = (torch.rand(2, 1, 3, 4, generator=g, dtype=F64) * 50 + 10).requires_grad_(True)
    K = _K(2).requires_grad_(True)
    assert torch.autograd.gradcheck(backproject_depth, (depth, K))
    pts = (torch.randn(2, 5, 3, generator=g, dtype=F64) * 5 + torch.tensor([0, 0, 40.0], dtype=F64))
    pts.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, k: project_points(p, k)[0], (pts, K))
    assert torch.autograd.gradcheck(depth_to_range, (depth, K))


def test_skewed_K_round_trip():
    K = torch.tensor([[[30.0, 2.0, 17.3], [0.0, 34.0, 13.6], [0.0, 0.0, 1.0]]], dtype=F64)
    depth, _, _ = _plane_depth()
    pts = backproject_depth(torch.from_numpy(depth)[None, None], K)
    # pixel (u, v) = K (X/Z, Y/Z, 1) by hand
    p = pts[0].permute(1, 2, 0).numpy()
    u = 30.0 * p[..., 0] / p[..., 2] + 2.0 * p[..., 1] / p[..., 2] + 17.3
    v = 34.0 * p[..., 1] / p[..., 2] + 13.6
    grid = pixel_grid(SIZE, dtype=F64).numpy()
    np.testing.assert_allclose(np.stack([u, v], -1), grid, atol=1e-10)
    uv, _ = project_points(pts.flatten(2).transpose(1, 2), K)
    np.testing.assert_allclose(uv[0].reshape(24, 40, 2).numpy(), grid, atol=1e-10)


def test_half_precision_backprojection():
    depth = torch.full((1, 1, 4, 6), 20.0, dtype=torch.float16)
    pts = backproject_depth(depth, _K(dtype=torch.float32))
    assert pts.dtype == torch.float16
    np.testing.assert_allclose(pts[0, 0, 0, 0].item(), 20.0 * (0 - CX) / FX, rtol=1e-3)


# ------------------------------------------------------------------------------------------------
# numpy helpers: the pixel-rounding rule and the numpy projection, and range -> z-depth in numpy
# ------------------------------------------------------------------------------------------------

def test_pixel_index_rounds_half_up_everywhere():
    from colondepth.geometry.projection import pixel_index

    coords = np.array([-0.5, -0.25, 0.0, 0.49999, 0.5, 1.5, 2.5, 3.5, 4.5, 7.499, 7.5])
    # np.round would give 2 for 2.5 and 4 for 4.5 (half to even); every pixel here covers [i - 0.5, i + 0.5)
    assert pixel_index(coords).tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 7, 8]
    assert pixel_index(coords).dtype == np.int64
    assert pixel_index(np.float32([2.5, -1.5])).tolist() == [3, -1]


def test_project_points_np_matches_torch_and_keeps_dtype():
    from colondepth.geometry.projection import project_points_np

    rng = np.random.default_rng(3)
    pts = np.stack([rng.uniform(-20, 20, 50), rng.uniform(-20, 20, 50), rng.uniform(5, 80, 50)], axis=1)
    K = _K()[0].numpy().copy()
    K[0, 1] = 0.7  # with skew
    uv, z = project_points_np(pts, K)
    uv_t, z_t = project_points(torch.from_numpy(pts)[None], torch.from_numpy(K))
    np.testing.assert_allclose(uv, uv_t[0].numpy(), rtol=1e-12)
    np.testing.assert_array_equal(z, z_t[0].numpy())
    # hand-computed: (10, -4, 20) -> u = 30 * 0.5 + 0.7 * -0.2 + 17.3 = 32.16, v = 34 * -0.2 + 13.6 = 6.8
    uv1, z1 = project_points_np(np.array([[10.0, -4.0, 20.0]]), K)
    np.testing.assert_allclose(uv1, [[32.16, 6.8]], rtol=1e-12)
    assert z1.tolist() == [20.0]
    uv32, _ = project_points_np(pts.astype(np.float32), K)
    assert uv32.dtype == np.float32
    np.testing.assert_allclose(uv32, uv, atol=1e-4)


def test_range_to_z_depth_numpy_matches_torch_range_to_depth():
    from colondepth.eval.baselines import range_to_z_depth as from_baselines
    from colondepth.geometry.camera import PinholeIntrinsics, range_to_z_depth

    assert from_baselines is range_to_z_depth  # one implementation, still importable from the old place
    intr = PinholeIntrinsics(fx=FX, fy=FY, cx=CX, cy=CY, size=SIZE)
    rng = np.random.default_rng(0).uniform(5.0, 90.0, SIZE.as_hw())
    z_np = range_to_z_depth(rng, intr)
    z_t = range_to_depth(torch.from_numpy(rng)[None, None], _K())[0, 0].numpy()
    np.testing.assert_allclose(z_np, z_t, rtol=1e-12)
    # by hand at pixel (u, v) = (0, 0): z = r / sqrt(1 + (CX / FX)^2 + (CY / FY)^2)
    np.testing.assert_allclose(z_np[0, 0], rng[0, 0] / math.sqrt(1 + (CX / FX) ** 2 + (CY / FY) ** 2), rtol=1e-12)
