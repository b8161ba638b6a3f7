"""Coverage without ground truth (colondepth.recon.lumen) on analytic tubes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from colondepth.errors import UserError
from colondepth.recon.coverage import compute_coverage
from colondepth.recon.lumen import fit_lumen, lumen_coverage, nearest_on_polyline, oracle_segment_faces
from test_recon_analytic import look_pose, small_intrinsics, tube_depth, tube_mesh

R = 10.0


def _axis_cameras(n=21, z1=40.0, offset=(0.0, 0.0)):
    zs = np.linspace(0.0, z1, n)
    return np.stack([look_pose([offset[0], offset[1], z], [0.0, 0.0, 1.0], up_hint=(0.0, 1.0, 0.0)) for z in zs])


def _frames(intr, poses, z_range=(-60.0, 120.0)):
    return [(tube_depth(intr, p, R, z_range=z_range), p) for p in poses]


def _surface_points(intr, frames):
    pts = []
    h, w = intr.size.as_hw()
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    for d, p in frames:
        ok = d > 0
        pc = np.stack([(u - intr.cx) / intr.fx * d, (v - intr.cy) / intr.fy * d, d], -1)[ok]
        pts.append(pc @ p[:3, :3].T + p[:3, 3])
    return np.concatenate(pts)


def test_nearest_on_polyline_is_exact():
    line = np.array([[0.0, 0, 0], [10.0, 0, 0], [10.0, 10.0, 0]])
    s, c = nearest_on_polyline(np.array([[3.0, 2.0, 0], [12.0, 4.0, 1.0], [-5.0, 1.0, 0]]), line)
    np.testing.assert_allclose(s, [3.0, 14.0, 0.0])
    np.testing.assert_allclose(c, [[3.0, 0, 0], [10.0, 4.0, 0], [0.0, 0, 0]])


def test_fit_lumen_recovers_a_straight_tube_radius_and_axis():
    intr = small_intrinsics(48, fov_deg=90.0, shift=(0.0, 0.0))
    poses = _axis_cameras()
    frames = _frames(intr, poses)
    lum = fit_lumen(poses[:, :3, 3], _surface_points(intr, frames), step_mm=1.0)
    assert lum.path_length_mm == pytest.approx(40.0)
    np.testing.assert_allclose(lum.centre[:, :2], 0.0, atol=1e-9)
    np.testing.assert_allclose(np.abs(lum.tangent[:, 2]), 1.0, atol=1e-9)
    # every sector of the travelled part is near the true radius (measured or interpolated)
    assert np.abs(lum.radius[lum.travelled] - R).max() < 0.25
    frame_dots = np.einsum("ij,ij->i", lum.normal, lum.tangent)
    np.testing.assert_allclose(frame_dots, 0.0, atol=1e-9)


def test_expected_wall_does_not_fold_at_a_sharp_bend():
    """A camera path bending on a quarter circle of radius 8 mm inside a torus-like tube of radius 12 mm: the
    inner wall cannot be 12 mm from the centreline, and unclipped rings would cross there.  After the fit every
    wall vertex moves forward along the path from one ring to the next, and the outside of the bend keeps the
    measured radius."""
    from colondepth.recon.lumen import clip_to_curvature

    bend_r, tube_r = 8.0, 12.0
    a = np.linspace(0.0, np.pi / 2, 60)
    path = np.stack([bend_r * (1 - np.cos(a)), np.zeros_like(a), bend_r * np.sin(a)], axis=1)
    path = np.concatenate([np.stack([np.zeros(20), np.zeros(20), np.linspace(-20, 0, 20, endpoint=False)], 1),
                           path, np.stack([np.linspace(bend_r, bend_r + 20, 20)[1:], np.zeros(19),
                                           np.full(19, bend_r)], 1)])
    rng = np.random.default_rng(0)
    pts = []
    for c, t in zip(path[1:], np.diff(path, axis=0)):
        t = t / np.linalg.norm(t)
        n = np.cross(t, [0.0, 1.0, 0.0]); n /= np.linalg.norm(n)
        b = np.cross(t, n)
        th = rng.uniform(0, 2 * np.pi, 40)
        pts.append(c + tube_r * (np.cos(th)[:, None] * n + np.sin(th)[:, None] * b))
    lum = fit_lumen(path, np.concatenate(pts), step_mm=0.5, smooth_mm=1.0, window_mm=1.0)
    wall = lum.wall_mesh()
    A = lum.num_sectors
    V = wall.vertices.reshape(-1, A, 3)
    ks = np.flatnonzero(lum.travelled)
    steps = np.einsum("kaj,kj->ka", V[1:] - V[:-1], lum.tangent[ks[:-1]])
    assert steps.min() > 0.0  # no ring crosses its neighbour
    assert np.median(lum.radius[ks]) == pytest.approx(tube_r, rel=0.1)  # only the inside of the bend is cut
    # the clip is exactly the radius of curvature on the inside and leaves a straight tube alone
    straight = np.tile(np.eye(3)[None], (5, 1, 1))
    r = np.full((5, 8), 5.0)
    centre = np.stack([np.zeros(5), np.zeros(5), np.arange(5.0)], 1)
    np.testing.assert_array_equal(clip_to_curvature(r, centre, straight[:, 2], straight[:, 0], straight[:, 1],
                                                    1.0), r)


def test_lumen_coverage_matches_the_analytic_answer_and_the_oracle():
    """Cameras on the axis looking forward: the wall beside the first camera, outside its view, is unseen.

    With a 90 degree square view, the first camera sees the wall from z = R / tan(a) on, a between 45
    degrees (sides) and 54.7 degrees (corners): z from 7.1 to 10 mm.  Every later camera sees farther
    ahead, so the unseen band is the first 7.1-10 mm of the 40 mm segment: observed fraction about
    1 - 8.6 / 40 = 0.79.  The ground-truth oracle on the true mesh says the same.
    """
    intr = small_intrinsics(48, fov_deg=90.0, shift=(0.0, 0.0))
    poses = _axis_cameras()
    frames = _frames(intr, poses)
    lum = fit_lumen(poses[:, :3, 3], _surface_points(intr, frames), step_mm=1.0)
    cov = lumen_coverage(lum, frames, intr, max_depth_mm=100.0)
    assert 0.74 < cov.observed_fraction < 0.84
    face_z = cov.wall.triangles_center[:, 2]
    assert not cov.face_observed[face_z < 6.5].any()
    assert cov.face_observed[face_z > 11.0].mean() > 0.97
    per_cm = cov.per_cm()
    assert [round(b["from_mm"]) for b in per_cm] == [0, 10, 20, 30]
    assert per_cm[0]["observed_fraction"] < 0.3 and per_cm[2]["observed_fraction"] > 0.97
    # oracle: the true mesh faces of the travelled segment, seen by some frame with true depth
    mesh = tube_mesh(R, -20.0, 80.0, n_theta=72, dz=0.5)
    seg = oracle_segment_faces(mesh, poses[:, :3, 3])
    zc = mesh.triangles_center[:, 2]
    assert seg[(zc > 0.5) & (zc < 39.5)].all() and not seg[(zc < -0.5) | (zc > 40.5)].any()
    gt = compute_coverage(mesh, frames, intr, max_depth_mm=100.0)
    area = mesh.area_faces
    oracle = area[seg & gt.face_observed].sum() / area[seg].sum()
    assert abs(cov.observed_fraction - oracle) < 0.03
    d = cov.to_dict()
    assert d["observed_fraction"] == pytest.approx(cov.observed_fraction, abs=1e-6)
    assert d["centreline_length_mm"] == pytest.approx(40.0)
    un = cov.unobserved_mesh()
    assert un.area == pytest.approx(d["unobserved_area_mm2"], rel=1e-3)


def test_a_hole_the_frames_never_saw_is_reported():
    """Mask out a wedge of every frame: the wall behind it is never seen and is counted as unobserved."""
    intr = small_intrinsics(48, fov_deg=90.0, shift=(0.0, 0.0))
    poses = _axis_cameras()
    h, w = intr.size.as_hw()
    v, u = np.mgrid[0:h, 0:w]
    valid = ~((u > intr.cx) & (v > intr.cy))  # one quadrant of every frame is blind
    frames = [(np.where(valid, d, 0.0), p, valid) for d, p in _frames(intr, poses)]
    lum = fit_lumen(poses[:, :3, 3], _surface_points(intr, [(f[0], f[1]) for f in frames]))
    assert 0.6 < lum.measured[lum.travelled].mean() < 0.9  # the blind quadrant's sectors were interpolated
    assert np.abs(lum.radius[lum.travelled] - R).max() < 0.3
    cov = lumen_coverage(lum, frames, intr)
    full = lumen_coverage(lum, [(f[0], f[1]) for f in _frames(intr, poses)], intr)
    assert full.observed_fraction - cov.observed_fraction == pytest.approx(0.25 * full.observed_fraction, abs=0.05)


def test_oracle_excludes_a_wall_behind_another_wall():
    inner = tube_mesh(R, -20.0, 60.0, n_theta=48, dz=1.0)
    outer = tube_mesh(R + 5.0, -20.0, 60.0, n_theta=48, dz=1.0)  # a neighbouring loop behind the wall
    both = trimesh.util.concatenate([inner, outer])
    seg = oracle_segment_faces(both, _axis_cameras()[:, :3, 3])
    n_in = len(inner.faces)
    zc = both.triangles_center[:, 2]
    mid = (zc > 1.0) & (zc < 39.0)
    assert seg[:n_in][mid[:n_in]].all()
    assert not seg[n_in:].any()


def test_fit_lumen_errors():
    pts = np.random.default_rng(0).normal(size=(500, 3))
    with pytest.raises(UserError, match="camera path is 0.50 mm long"):
        fit_lumen(np.array([[0.0, 0, 0], [0.0, 0, 0.5]]), pts)
    with pytest.raises(UserError, match="surface points"):
        fit_lumen(np.array([[0.0, 0, 0], [0.0, 0, 20.0]]), pts[:10])
    with pytest.raises(UserError, match="finite"):
        fit_lumen(np.array([[0.0, 0, 0], [0.0, 0, np.nan]]), pts)
    with pytest.raises(UserError, match="within 5 mm"):
        fit_lumen(np.array([[100.0, 0, 0], [100.0, 0, 20.0]]), pts, max_radius_mm=5.0)
