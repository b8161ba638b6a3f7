"""Analytic scenes for the reconstruction tests (a tube seen from inside), and checks of the scenes.

The other ``test_recon*`` files import the builders from here.
"""

from __future__ import annotations

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics


def look_pose(position, forward, up_hint=(0.0, 0.0, 1.0)) -> np.ndarray:
    """``world_from_cam`` (4, 4) of an OpenCV camera at ``position`` looking along ``forward``."""
    f = np.asarray(forward, float)
    f = f / np.linalg.norm(f)
    x = np.cross(f, np.asarray(up_hint, float))
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(f, [1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(f, x)  # +Y down = forward x right
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, f], axis=1)
    T[:3, 3] = position
    return T


def tube_depth(intr: PinholeIntrinsics, world_from_cam: np.ndarray, radius: float,
               z_range=(-np.inf, np.inf)) -> np.ndarray:
    """Closed-form z-depth (H, W) mm of the inside of a tube ``x^2 + y^2 = radius^2`` (axis = world Z).

    Pixels whose hit lies outside ``z_range`` (world z, mm) or that miss get 0.
    """
    h, w = intr.size.as_hw()
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
    R, c = world_from_cam[:3, :3], world_from_cam[:3, 3]
    d = rays_cam @ R.T  # world direction with cam-z component 1
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = 2 * (c[0] * d[..., 0] + c[1] * d[..., 1])
    c0 = c[0] ** 2 + c[1] ** 2 - radius ** 2
    assert c0 < 0, "camera must be inside the tube"
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b + np.sqrt(b * b - 4 * a * c0)) / (2 * a)
    t = np.where(a > 1e-12, t, 0.0)
    hit_z = c[2] + t * d[..., 2]
    t = np.where((hit_z >= z_range[0]) & (hit_z <= z_range[1]) & (t > 0), t, 0.0)
    return t.astype(np.float32)


def small_intrinsics(size: int = 48, fov_deg: float = 90.0, shift=(1.3, -0.7)) -> PinholeIntrinsics:
    """Square intrinsics with a slightly off-centre principal point (asymmetric on purpose)."""
    k = PinholeIntrinsics.from_fov(ImageSize(size, size), fov_deg)
    return PinholeIntrinsics(fx=k.fx, fy=k.fx * 1.05, cx=k.cx + shift[0], cy=k.cy + shift[1], size=k.size)


def tube_poses(n: int, radius: float, length: float = 30.0) -> np.ndarray:
    """``n`` off-axis, tilted cameras moving along the tube (N, 4, 4)."""
    poses = []
    for i in range(n):
        s = i / max(n - 1, 1)
        pos = np.array([0.3 * radius * np.cos(2.1 * s), -0.25 * radius * np.sin(1.7 * s + 0.4), length * s])
        fwd = np.array([0.35 * np.sin(3.0 * s + 0.2), 0.25 * np.cos(2.0 * s), 1.0])
        poses.append(look_pose(pos, fwd, up_hint=(0.3, 1.0, 0.1)))
    return np.stack(poses)


def test_tube_depth_hits_the_tube():
    intr = small_intrinsics()
    pose = tube_poses(3, 10.0)[1]
    depth = tube_depth(intr, pose, 10.0)
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w]
    ok = depth > 0
    pts_cam = np.stack([(u - intr.cx) / intr.fx * depth, (v - intr.cy) / intr.fy * depth, depth], -1)[ok]
    pts_w = pts_cam @ pose[:3, :3].T + pose[:3, 3]
    assert ok.mean() > 0.9
    np.testing.assert_allclose(np.hypot(pts_w[:, 0], pts_w[:, 1]), 10.0, atol=1e-6)


def test_look_pose_is_rigid_and_looks_forward():
    T = look_pose([1.0, 2.0, 3.0], [0.0, 1.0, 1.0])
    R = T[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) > 0
    np.testing.assert_allclose(R[:, 2], np.array([0.0, 1.0, 1.0]) / np.sqrt(2), atol=1e-12)


def tube_mesh(radius: float, z0: float, z1: float, n_theta: int = 96, dz: float = 0.5):
    """Open tube ``x^2 + y^2 = radius^2``, ``z0 <= z <= z1`` (world mm) as a trimesh, no caps."""
    import trimesh

    th = np.linspace(0, 2 * np.pi, n_theta, endpoint=False)
    zs = np.linspace(z0, z1, int(round((z1 - z0) / dz)) + 1)
    zz, tt = np.meshgrid(zs, th, indexing="ij")
    verts = np.stack([radius * np.cos(tt), radius * np.sin(tt), zz], -1).reshape(-1, 3)
    nz = len(zs)
    i = np.arange(nz - 1)[:, None] * n_theta + np.arange(n_theta)[None]
    j = np.arange(nz - 1)[:, None] * n_theta + (np.arange(n_theta)[None] + 1) % n_theta
    a, b, c, d = i, j, i + n_theta, j + n_theta
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([b, d, c], -1).reshape(-1, 3)])
    return trimesh.Trimesh(verts, faces, process=False)


def test_tube_mesh_area():
    m = tube_mesh(10.0, 0.0, 20.0)
    assert abs(m.area - 2 * np.pi * 10.0 * 20.0) / m.area < 1e-3
