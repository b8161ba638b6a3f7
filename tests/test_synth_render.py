"""Renderer conventions pinned against closed forms: pixel centres (cx + 0.5), OpenCV poses, mm depth."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.synth.render import Material, SceneRenderer, world_from_cam_gl


def _rot(axis, deg):
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.radians(deg) * np.asarray(axis, float)).as_matrix()


def _plane_mesh(normal_world, point_world, half=400.0):
    """A square facing along -normal_world (towards a viewer on the normal's negative side)."""
    n = np.asarray(normal_world, float) / np.linalg.norm(normal_world)
    a = np.cross(n, [0.3, 1.0, 0.2])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    c = np.asarray(point_world, float)
    v = np.array([c - half * a - half * b, c + half * a - half * b, c + half * a + half * b, c - half * a + half * b])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    fn = np.cross(v[1] - v[0], v[2] - v[0])
    if fn @ n > 0:  # wind towards the viewer (normal opposite to n)
        faces = faces[:, ::-1]
    return v, faces


@pytest.fixture(scope="module")
def tilted_plane_render():
    size = ImageSize(48, 64)
    # Off-centre principal point and unequal focal lengths: a symmetric set-up would hide flips.
    K = PinholeIntrinsics(fx=40.0, fy=44.0, cx=27.3, cy=21.6, size=size)
    world_from_cam = np.eye(4)
    world_from_cam[:3, :3] = _rot([0.2, 1.0, 0.1], 25.0) @ _rot([1, 0, 0], -10.0)
    world_from_cam[:3, 3] = [5.0, -3.0, 2.0]
    # Plane in the camera frame: n_cam . X = d with a tilted normal.
    n_cam = np.array([0.6, 0.7, 1.0])
    n_cam /= np.linalg.norm(n_cam)
    d = 30.0
    R, t = world_from_cam[:3, :3], world_from_cam[:3, 3]
    v, f = _plane_mesh(R @ n_cam, R @ (d * n_cam) + t)
    with SceneRenderer(K, znear_mm=1.0, zfar_mm=500.0) as r:
        r.set_mesh(v, f, material=Material(base_color=(0.5, 0.5, 0.5)))
        _, depth = r.render(world_from_cam, depth_only=True)
    u, vv = np.meshgrid(np.arange(size.width), np.arange(size.height))
    ray = np.stack([(u - K.cx) / K.fx, (vv - K.cy) / K.fy, np.ones_like(u, dtype=float)], -1)
    closed_form = d / (ray @ n_cam)
    return depth, closed_form, K, n_cam, d


def test_tilted_plane_depth_matches_closed_form(tilted_plane_render):
    depth, closed_form, *_ = tilted_plane_render
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    rel = np.abs(depth - closed_form) / closed_form
    assert (depth > 0).all()
    assert float(np.median(rel)) < 1e-4
    assert float(rel.max()) < 5e-4


def test_half_pixel_shift_would_be_detected(tilted_plane_render):
    """The check above is sensitive to the cx + 0.5 convention: half a pixel moves depth measurably."""
    depth, _, K, n_cam, d = tilted_plane_render
    u, v = np.meshgrid(np.arange(64), np.arange(48))
    ray = np.stack([(u - K.cx + 0.5) / K.fx, (v - K.cy + 0.5) / K.fy, np.ones_like(u, dtype=float)], -1)
    wrong = d / (ray @ n_cam)
    assert float(np.median(np.abs(depth - wrong) / wrong)) > 1e-3


def test_world_from_cam_gl_flips_y_and_z():
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    gl = world_from_cam_gl(pose)
    # The GL camera looks down its -Z: that is the OpenCV +Z in the world.
    assert np.allclose(-gl[:3, 2], pose[:3, 2]) and np.allclose(-gl[:3, 1], pose[:3, 1])
    assert np.allclose(gl[:3, 3], [1, 2, 3])


def test_flat_render_returns_albedo_and_no_surface_is_zero_depth():
    size = ImageSize(16, 16)
    K = PinholeIntrinsics.from_fov(size, 60.0)
    v, f = _plane_mesh([0, 0, 1], [0, 0, 50], half=10.0)  # small square: background around it
    with SceneRenderer(K, znear_mm=1.0, zfar_mm=500.0) as r:
        r.set_mesh(v, f, material=Material(base_color=(0.2, 0.6, 0.8)))
        rgb, depth = r.render(np.eye(4), flat=True)
    centre = rgb[8, 8]
    assert rgb.dtype == np.uint8
    assert np.abs(centre.astype(int) - np.round(np.array([0.2, 0.6, 0.8]) * 255)).max() <= 1
    assert depth[8, 8] == pytest.approx(50.0, rel=1e-4)
    assert depth[0, 0] == 0.0 and (rgb[0, 0] == 0).all()


def test_missing_opengl_gives_user_error_naming_packages():
    code = (
        "from colondepth.synth.render import SceneRenderer\n"
        "from colondepth.geometry.camera import PinholeIntrinsics\n"
        "from colondepth.conventions import ImageSize\n"
        "from colondepth.errors import UserError\n"
        "try:\n"
        "    SceneRenderer(PinholeIntrinsics.from_fov(ImageSize(8, 8), 90), 1, 10)\n"
        "except UserError as e:\n"
        "    print(e)\n"
    )
    env = {"PYOPENGL_PLATFORM": "no-such-platform", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "libosmesa6" in out.stdout and "libgl1-mesa-dri" in out.stdout
    assert out.stdout.count("\n") == 1


def test_point_light_at_the_lens_falls_off_with_inverse_square():
    from colondepth.synth.appearance import decode_render
    from colondepth.synth.render import Light

    size = ImageSize(9, 9)
    K = PinholeIntrinsics.from_fov(size, 20.0)
    centre = []
    for dist in (20.0, 40.0):
        v, f = _plane_mesh([0, 0, 1], [0, 0, dist], half=50.0)
        with SceneRenderer(K, znear_mm=1.0, zfar_mm=500.0) as r:
            r.set_mesh(v, f, normals=np.tile([0.0, 0.0, -1.0], (4, 1)),
                       material=Material(base_color=(0.6, 0.6, 0.6), roughness=1.0))
            r.set_light(Light(kind="point", intensity=1200.0))
            rgb, _ = r.render(np.eye(4))
        centre.append(float(decode_render(rgb)[4, 4].mean()))
    assert 0.05 < centre[1] < centre[0] < 0.9  # neither dark nor saturated
    assert centre[0] / centre[1] == pytest.approx(4.0, rel=0.06)
