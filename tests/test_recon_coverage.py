"""Coverage of an analytic tube seen from inside, and surface metrics with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from colondepth.errors import UserError
from colondepth.recon.coverage import compute_coverage, points_observed_in_frame, subdivide_to
from colondepth.recon.metrics import surface_metrics
from test_recon_analytic import look_pose, small_intrinsics, tube_depth, tube_mesh

R = 10.0


def _scene():
    intr = small_intrinsics(64, fov_deg=100.0)
    pose = look_pose([1.5, -1.0, 0.0], [0.05, 0.03, 1.0], up_hint=(0.0, 1.0, 0.0))  # off-axis, tilted
    mesh = tube_mesh(R, -40.0, 80.0)
    depth = tube_depth(intr, pose, R, z_range=(-40.0, 80.0))
    return intr, pose, mesh, depth


def test_straight_tube_seen_from_inside():
    intr, pose, mesh, depth = _scene()
    cov = compute_coverage(mesh, [(depth, pose)], intr, min_depth_mm=2.0, max_depth_mm=40.0)
    z = mesh.triangles_center[:, 2]
    # behind the camera: never observed
    assert not cov.face_observed[z < 0].any()
    # beyond the working range (camera z-depth ~ world z here): not observed
    assert not cov.face_observed[z > 45.0].any()
    # the segment in view and in range is observed all around
    seen = (z > 15.0) & (z < 35.0)
    assert cov.face_observed[seen].mean() > 0.98
    # observed fraction is the seen length over the total length (within the fuzzy edges)
    assert 0.2 < cov.observed_fraction < 0.35
    assert cov.observed_area_mm2 == pytest.approx(cov.face_area_mm2[cov.face_observed].sum())
    un = cov.unobserved_mesh(mesh)
    assert len(un.faces) == int((~cov.face_observed).sum())
    assert un.area + cov.observed_mesh(mesh).area == pytest.approx(mesh.area)
    d = cov.to_dict()
    assert d["num_frames"] == 1 and d["max_depth_mm"] == 40.0
    assert d["observed_fraction"] == pytest.approx(cov.observed_fraction, abs=1e-6)


def test_occluded_surface_is_not_observed():
    intr, pose, inner, depth = _scene()
    outer = tube_mesh(R + 3.0, -40.0, 80.0)  # hidden behind the inner wall, in range and in view
    both = trimesh.util.concatenate([inner, outer])
    cov = compute_coverage(both, [(depth, pose)], intr, max_depth_mm=40.0)
    n_in = len(inner.faces)
    assert cov.face_observed[:n_in].sum() > 1000
    assert not cov.face_observed[n_in:].any()
    # without the occlusion test (a huge tolerance) the outer tube would count as seen
    loose = compute_coverage(both, [(depth, pose)], intr, max_depth_mm=40.0, depth_tol_mm=10.0)
    assert loose.face_observed[n_in:].sum() > 1000


def test_valid_mask_and_multiple_frames_accumulate():
    intr, pose, mesh, depth = _scene()
    left = np.zeros(depth.shape, bool)
    left[:, :32] = True
    c_left = compute_coverage(mesh, [(depth, pose, left)], intr, max_depth_mm=40.0)
    c_all = compute_coverage(mesh, [(depth, pose)], intr, max_depth_mm=40.0)
    assert 0.3 < c_left.observed_area_mm2 / c_all.observed_area_mm2 < 0.7
    pose2 = pose.copy()
    pose2[2, 3] += 30.0
    depth2 = tube_depth(intr, pose2, R, z_range=(-40.0, 80.0))
    c_two = compute_coverage(mesh, [(depth, pose), (depth2, pose2)], intr, max_depth_mm=40.0)
    assert c_two.observed_fraction > c_all.observed_fraction + 0.15
    assert c_two.face_view_count.max() == 2


def test_points_observed_respect_the_depth_range():
    intr, pose, mesh, depth = _scene()
    pts = np.array([[0.0, 0.0, 5.0], [R * np.cos(0.3), R * np.sin(0.3), 30.0], [R, 0.0, -5.0]])
    obs = points_observed_in_frame(pts, depth, pose, intr, max_depth_mm=40.0)
    assert obs.tolist() == [False, True, False]  # mid-lumen (free space), on the wall, behind


def test_coverage_errors():
    intr, pose, mesh, depth = _scene()
    with pytest.raises(UserError, match="empty"):
        compute_coverage(trimesh.Trimesh(), [(depth, pose)], intr)
    with pytest.raises(UserError, match="at least one frame"):
        compute_coverage(mesh, [], intr)
    with pytest.raises(UserError, match="depth range"):
        compute_coverage(mesh, [(depth, pose)], intr, min_depth_mm=50.0, max_depth_mm=10.0)
    with pytest.raises(UserError, match="NaN"):
        compute_coverage(mesh, [(np.full_like(depth, np.nan), pose)], intr)


def test_subdivide_to_bounds_edges():
    m = subdivide_to(trimesh.creation.box(extents=[10.0, 10.0, 10.0]), 2.0)
    assert m.edges_unique_length.max() <= 2.0 + 1e-9
    assert m.area == pytest.approx(600.0)


def test_surface_metrics_known_offsets():
    gt = tube_mesh(R, 0.0, 40.0)
    same = surface_metrics(gt, gt, n_samples=20_000)
    assert same["chamfer_mm"] < 0.2 and same["fscore@1mm"] > 0.999  # sampling floor ~0.18 mm at 20k
    bigger = tube_mesh(R + 1.5, 0.0, 40.0)  # every point 1.5 mm away from the ground truth
    m = surface_metrics(bigger, gt, n_samples=20_000)
    assert m["accuracy_mm"] == pytest.approx(1.5, abs=0.05)
    assert m["completeness_mm"] == pytest.approx(1.5, abs=0.05)
    assert m["chamfer_mm"] == pytest.approx(0.5 * (m["accuracy_mm"] + m["completeness_mm"]))
    assert m["fscore@1mm"] < 0.01 and m["fscore@2mm"] > 0.99
    half = tube_mesh(R, 0.0, 20.0)  # accurate but only half complete
    h = surface_metrics(half, gt, n_samples=20_000)
    assert h["accuracy_mm"] < 0.2 and h["recall@1mm"] == pytest.approx(0.5, abs=0.03)
    assert h["completeness_mm"] > 4.0
    with pytest.raises(UserError, match="empty"):
        surface_metrics(trimesh.Trimesh(), gt)


def test_occlusion_only_accepts_points_in_front_of_the_wall_and_refuses_hidden_ones():
    """A point halfway between camera and wall is 'not occluded' but not on the wall; a point behind it is hidden."""
    intr, pose, _, depth = _scene()
    h, w = depth.shape
    v, u = h // 2 + 3, w // 2 - 5
    z = float(depth[v, u])
    ray = np.array([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, 1.0])
    pts_cam = np.stack([ray * 0.5 * z, ray * z, ray * 1.5 * z])  # in front of, on, behind the wall
    pts = pts_cam @ pose[:3, :3].T + pose[:3, 3]
    both = points_observed_in_frame(pts, depth, pose, intr, max_depth_mm=200.0)
    near = points_observed_in_frame(pts, depth, pose, intr, max_depth_mm=200.0, occlusion_only=True)
    assert both.tolist() == [False, True, False]
    assert near.tolist() == [True, True, False]
