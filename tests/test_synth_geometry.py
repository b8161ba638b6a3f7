"""Colon geometry and trajectories: closed inward-facing tubes, analytic radii, camera always inside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from colondepth.synth.colon import build_colon
from colondepth.synth.recipe import load_recipe, recipe_from_dict, sample_recipe
from colondepth.synth.trajectory import make_trajectory

SYNTH = Path(__file__).resolve().parents[1] / "synth"


def _straight(**over):
    data = {"level": "L1", "centreline": {"length_mm": 120}, "lumen": {"radius_mm": 15.0},
            "mesh": {"ring_spacing_mm": 1.0, "segments": 32}}
    for k, v in over.items():
        data.setdefault(k, {}).update(v)
    return recipe_from_dict(data)


def test_straight_tube_is_analytic():
    g = build_colon(_straight(), np.random.default_rng(0))
    body = g.body
    pts, tan, _, _ = g.centreline.frame_at(g.ring_s_mm[body])
    assert np.allclose(pts[:, :2], 0, atol=1e-9) and np.allclose(pts[:, 2], g.ring_s_mm[body], atol=1e-9)
    assert np.allclose(tan, [0, 0, 1], atol=1e-12)
    v = g.mesh.vertices
    zs = v[:, 2]
    inner = (zs > 0.5) & (zs < 119.5)
    assert np.allclose(np.hypot(v[inner, 0], v[inner, 1]), 15.0, atol=1e-6)
    assert g.mesh.bounds[0, 2] < -10 and g.mesh.bounds[1, 2] > 130  # domes close both ends


@pytest.mark.parametrize("level", ["L1_straight", "L3_haustra", "L5_tortuous", "L6_cavity"])
def test_mesh_closed_and_facing_the_lumen(level):
    r = sample_recipe(load_recipe(SYNTH / f"{level}.yaml"), np.random.default_rng(1))
    g = build_colon(r, np.random.default_rng(2))
    m = g.mesh
    assert m.is_watertight and m.is_winding_consistent
    assert m.volume < 0  # normals point inward
    # Every face's normal points towards the centreline point of its ring (domes: towards the dome centre).
    n, mseg = g.radius_mm.shape
    ring_of_vertex = np.minimum(np.arange(len(m.vertices)) // mseg, n - 1)
    vertex_s = g.ring_s_mm[ring_of_vertex]
    vertex_s[n * mseg:] = g.ring_s_mm[[0, -1]][: len(m.vertices) - n * mseg]  # the poles
    face_s = np.clip(vertex_s[m.faces].mean(axis=1), 0.0, g.length_mm)
    target = g.centreline.frame_at(face_s)[0]
    towards = np.einsum("ij,ij->i", m.face_normals, target - m.triangles_center)
    assert np.all(towards > 0)
    # Render mesh: same surface, seam split for texture coordinates.
    assert len(g.render_faces) == len(m.faces)
    assert g.render_uv.min() >= 0 and g.render_uv.max() <= 1
    assert np.allclose(np.linalg.norm(g.render_normals, axis=1), 1, atol=1e-4)


def test_folds_constrict_by_their_depth():
    depth = 0.4
    r = _straight(folds={"depth": depth, "spacing_mm": 20, "width_mm": 4, "continuity": 1.0})
    g = build_colon(r, np.random.default_rng(0))
    rad = g.radius_mm[g.body]
    ring_min = rad.min(axis=1)
    # Each fold has a depth in [0.6, 1] x depth; rings sit within 0.5 mm of the fold centre.
    assert ring_min.min() >= 15 * (1 - depth) - 1e-6
    assert ring_min.min() <= 15 * (1 - 0.6 * depth) + 0.2
    assert ring_min.max() == pytest.approx(15.0, abs=1e-6)  # between folds the wall is untouched
    n_folds = int(np.sum((ring_min[1:-1] < ring_min[:-2]) & (ring_min[1:-1] <= ring_min[2:]) & (ring_min[1:-1] < 14)))
    assert 4 <= n_folds <= 6  # 120 mm / 20 mm spacing, inside the margins


def test_centreline_curvature_is_bounded_and_no_self_contact():
    r = sample_recipe(load_recipe(SYNTH / "L5_tortuous.yaml"), np.random.default_rng(3))
    g = build_colon(r, np.random.default_rng(4))
    cl = g.centreline
    k = np.linalg.norm(np.diff(cl.tangent, axis=0), axis=1) / np.diff(cl.s_mm)
    r_max = g.radius_mm.max()
    assert k.max() * r_max < 1.0
    turn = np.degrees(np.arccos(np.clip(cl.tangent[0] @ cl.tangent[-1], -1, 1)))
    assert turn > 20  # it is actually tortuous
    assert np.allclose(np.einsum("ij,ij->i", cl.tangent, np.cross(cl.normal1, cl.normal2)), 1, atol=1e-9)


@pytest.mark.parametrize("level", ["L4_flexures", "L5_tortuous", "L6_cavity"])
def test_camera_stays_inside_with_clearance(level):
    rec = load_recipe(SYNTH / f"{level}.yaml")
    for seed in (0, 1):
        r = sample_recipe(rec, np.random.default_rng(seed))
        g = build_colon(r, np.random.default_rng(seed + 10))
        traj = make_trajectory(r, g, 40, np.random.default_rng(seed + 20))
        P = traj["world_from_cam"]
        assert np.all(traj["offset_mm"] <= traj["limit_mm"] + 1e-9)
        R = P[:, :3, :3]
        assert np.allclose(np.einsum("fij,fik->fjk", R, R), np.eye(3), atol=1e-9)
        assert np.allclose(np.linalg.det(R), 1.0)
        # From every camera, rays along its +-X, +-Y, +-Z axes all hit a wall that faces the camera,
        # beyond the near plane: the camera is inside the lumen in every frame.
        dirs = np.concatenate([np.eye(3), -np.eye(3)])
        origins = np.repeat(P[:, :3, 3], len(dirs), axis=0)
        rays = np.einsum("fij,dj->fdi", P[:, :3, :3], dirs).reshape(-1, 3)
        locs, ray_idx, tri_idx = g.mesh.ray.intersects_location(origins, rays, multiple_hits=False)
        assert len(np.unique(ray_idx)) == len(origins)
        facing = np.einsum("ij,ij->i", g.mesh.face_normals[tri_idx], rays[ray_idx])
        assert np.all(facing < 0)
        dist = np.linalg.norm(locs - origins[ray_idx], axis=1)
        assert dist.min() > 2.0 * r.camera.znear_mm


def test_open_far_end_leaves_one_boundary_ring():
    r = _straight(ends={"far_end": "open"}, mesh={"segments": 20})
    g = build_colon(r, np.random.default_rng(0))
    assert not g.mesh.is_watertight
    edges = g.mesh.edges_sorted
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    boundary = uniq[counts == 1]
    assert len(boundary) == 20
    assert np.allclose(g.mesh.vertices[boundary.ravel(), 2], 120.0)  # the rim sits at the far end
