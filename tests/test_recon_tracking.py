"""Tracking against the model (colondepth.recon.tracking) in an analytic room: the camera looks into the corner
of a box (three planes) with two balls in it, closed-form depth.  The planes constrain the rigid motion; the
balls' curved surfaces make a depth scale observable too (against planes alone a scale about the camera centre
is the same as a translation)."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.recon.tracking import ModelTracker, TrackingConfig, similarity_point_to_plane
from test_recon_analytic import look_pose, small_intrinsics

#: planes n . x = d of the room's corner (world, mm): floor y = 20, back wall z = 60, side wall x = 25
PLANES = [(np.array([0.0, 1.0, 0.0]), 20.0), (np.array([0.0, 0.0, 1.0]), 60.0), (np.array([1.0, 0.0, 0.0]), 25.0)]
#: balls (centre, radius) in the room (world, mm)
BALLS = [(np.array([6.0, 12.0, 42.0]), 8.0), (np.array([-6.0, 2.0, 50.0]), 6.0)]


def corner_depth(intr, world_from_cam):
    """(H, W) z-depth (mm) of the nearest of the three planes along each pixel's ray (0 where none is hit)."""
    h, w = intr.size.as_hw()
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)  # z = 1
    R, c = world_from_cam[:3, :3], world_from_cam[:3, 3]
    d = rays @ R.T
    best = np.full((h, w), np.inf)
    for n, off in PLANES:
        den = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = (off - c @ n) / den
        best = np.where((lam > 0) & (lam < best), lam, best)
    for centre, r in BALLS:  # |c + lam d - centre|^2 = r^2, nearest root
        oc = c - centre
        a = np.einsum("hwj,hwj->hw", d, d)
        b = 2 * d @ oc
        disc = b * b - 4 * a * (oc @ oc - r * r)
        with np.errstate(invalid="ignore"):
            lam = (-b - np.sqrt(disc)) / (2 * a)
        best = np.where((disc > 0) & (lam > 0) & (lam < best), lam, best)
    return np.where(np.isfinite(best), best, 0.0).astype(np.float32)


def _poses(n=12):
    return np.stack([look_pose([-5.0 + 0.8 * k, -4.0 + 0.3 * k, 0.5 * k], [0.35, 0.25, 1.0], up_hint=(0.0, -1.0, 0.0))
                     for k in range(n)])


def _perturbed(T, dt=(1.2, -0.8, 0.9), deg=2.0):
    from scipy.spatial.transform import Rotation

    P = T.copy()
    P[:3, :3] = Rotation.from_rotvec(np.radians(deg) * np.array([0.3, 1.0, -0.2]) / np.linalg.norm([0.3, 1.0, -0.2])
                                     ).as_matrix() @ T[:3, :3]
    P[:3, 3] += dt
    return P


def test_similarity_step_recovers_a_small_motion_and_scale():
    rng = np.random.default_rng(0)
    q = rng.uniform(-20, 20, (400, 3))
    n = rng.normal(size=(400, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    c = np.array([1.0, 2.0, -3.0])
    s_true = 1.03
    p = c + (q - c) / s_true + np.array([0.05, -0.02, 0.03])  # the frame's points: a bit off and too small
    T, sig = similarity_point_to_plane(p, q, n, c)  # one Gauss-Newton step: 1 % of the error is left
    p2 = np.exp(sig) * (p - c) @ T[:3, :3].T + c + (T[:3, 3] - (c - T[:3, :3] @ c))
    before = np.abs(np.einsum("ij,ij->i", n, p - q)).max()
    assert np.abs(np.einsum("ij,ij->i", n, p2 - q)).max() < 0.03 * before
    assert np.exp(sig) == pytest.approx(s_true, rel=2e-3)
    T6, sig6 = similarity_point_to_plane(p, q, n, c, estimate_scale=False)
    assert sig6 == 0.0 and np.allclose(T6[:3, :3] @ T6[:3, :3].T, np.eye(3))


def test_degeneracy_aware_step_keeps_the_guess_along_the_axis_of_a_tube():
    """A tube (radius 10 mm around the z axis) constrains x, y and the rotations about x and y, not the motion
    along z; five points of an end cap (normal z) pull 3 mm along z.  The plain step follows the cap; the
    degeneracy-aware step corrects the lateral offset alike and leaves z where the guess put it."""
    rng = np.random.default_rng(1)
    th, z = rng.uniform(0, 2 * np.pi, 2000), rng.uniform(5, 60, 2000)
    q = np.stack([10 * np.cos(th), 10 * np.sin(th), z], 1)
    n = -np.stack([np.cos(th), np.sin(th), np.zeros_like(th)], 1)
    cap_q = np.column_stack([rng.uniform(-3, 3, (5, 2)), np.full(5, 70.0)])
    cap_p = cap_q + [0.0, 0.0, 3.0]
    off = np.array([0.5, -0.3, 0.0])
    p = np.concatenate([q + off, cap_p])
    Q = np.concatenate([q, cap_q])
    N = np.concatenate([n, np.tile([0.0, 0.0, -1.0], (5, 1))])
    c = np.zeros(3)
    for ratio, dz in ((0.0, -3.0), (0.03, 0.0)):
        T, _ = similarity_point_to_plane(p, Q, N, c, estimate_scale=False, degeneracy_ratio=ratio)
        assert T[:2, 3] == pytest.approx(-off[:2], abs=0.02), ratio
        assert T[2, 3] == pytest.approx(dz, abs=0.05), ratio
    T, sig = similarity_point_to_plane(p, Q, N, c, degeneracy_ratio=0.03)  # with the depth scale as well
    assert T[:2, 3] == pytest.approx(-off[:2], abs=0.05) and abs(T[2, 3]) < 0.05 and abs(sig) < 0.01


def test_tracker_corrects_a_wrong_pose_guess_and_a_wrong_depth_scale():
    intr = small_intrinsics(64, fov_deg=90.0)
    G = _poses()
    tr = ModelTracker(intr, TrackingConfig(scale_prior=0.0, keyframe_translation_mm=1.0))
    r0 = tr.track(corner_depth(intr, G[0]), G[0])
    assert r0.status == "first" and r0.keyframe
    for k in range(1, len(G)):
        depth = corner_depth(intr, G[k]) * (1.08 if k == 5 else 1.0)  # one frame's depth 8 % too far
        r = tr.track(depth, _perturbed(G[k]))
        assert r.status == "tracked"
        assert np.linalg.norm(r.world_from_cam[:3, 3] - G[k][:3, 3]) < 0.3, k
        assert r.scale == pytest.approx(1 / 1.08 if k == 5 else 1.0, abs=0.02), k
    assert tr.segments == [{"first": 0, "last": len(G) - 1, "reason": "start"}]
    assert 2 <= len(tr.keyframes) <= tr.cfg.model_keyframes


def test_a_lost_frame_starts_a_new_segment():
    intr = small_intrinsics(64, fov_deg=90.0)
    G = _poses(6)
    tr = ModelTracker(intr, TrackingConfig(max_correction_mm=5.0))
    for k in range(3):
        tr.track(corner_depth(intr, G[k]), G[k])
    far = G[3].copy()
    far[:3, 3] += [40.0, 0.0, 0.0]  # a cut: the guess is nowhere near the model
    r = tr.track(corner_depth(intr, G[3]), far)
    assert r.status == "lost" and np.allclose(r.world_from_cam, far) and r.scale == 1.0
    r = tr.track(corner_depth(intr, G[4]), far @ np.linalg.inv(G[3]) @ G[4])  # tracked in the new segment
    assert r.status == "tracked"
    assert [g["first"] for g in tr.segments] == [0, 3] and tr.segments[0]["last"] == 2
    assert tr.segments[1]["last"] == 4 and tr.segments[1]["reason"].startswith("lost")
    # the constant-velocity alternative wins when the first guess is far off but the other is close
    tr2 = ModelTracker(intr, TrackingConfig())
    tr2.track(corner_depth(intr, G[0]), G[0])
    r = tr2.track(corner_depth(intr, G[1]), far, other_guesses=(_perturbed(G[1]),))
    assert r.status == "tracked" and np.linalg.norm(r.world_from_cam[:3, 3] - G[1][:3, 3]) < 0.15


def test_reconstruction_records_segments_and_fuses_them_apart(tmp_path):
    """Predicted depth and poses through reconstruct_sequence; from frame 4 on the video shows the room from
    another direction (a cut) while the pose estimator knows nothing of it: that frame starts a second segment,
    report.json records both and the mesh holds both volumes."""
    import json

    from colondepth.datasets.base import Sequence
    from colondepth.recon.pipeline import ReconstructionConfig, reconstruct_sequence

    intr = small_intrinsics(64, fov_deg=90.0)
    G = _poses(8)
    frames = [np.full((64, 64, 3), k, np.uint8) for k in range(len(G))]  # the frame index, for the fakes
    seq = Sequence(name="room", intrinsics=intr, num_frames=len(G), load_rgb=lambda i: frames[i])

    seen = [G[k] if k < 4 else look_pose(G[k][:3, 3], [0.9, 0.6, 0.3], up_hint=(0.0, -1.0, 0.0))
            for k in range(len(G))]  # what the camera shows: after the cut, the side wall and the floor

    class Depth:
        def predict(self, rgb, **kw):
            return corner_depth(intr, seen[int(rgb[0, 0, 0])])

    def estimator(prev, cur, nxt=None):
        a, b = int(prev[0, 0, 0]), int(cur[0, 0, 0])
        return np.linalg.inv(G[a]) @ G[b]

    cfg = ReconstructionConfig(depth="predicted", poses="predicted", voxel_mm=1.0, max_depth_mm=150.0)
    report = reconstruct_sequence(seq, tmp_path / "out", cfg, depth_predictor=Depth(), pose_estimator=estimator,
                                  progress=False)
    tr = report["tracking"]
    assert [(g["first"], g["last"]) for g in tr["segments"]] == [(0, 3), (4, 7)]
    assert tr["segments"][1]["reason"].startswith("lost") and tr["lost_frames"] == 1
    assert any("2 separately fused segments" in w for w in report["warnings"])
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["tracking"]["segments"] == tr["segments"]
    traj = np.loadtxt(tmp_path / "out" / "trajectory.txt")
    assert np.linalg.norm(traj[1, 1:4] - (np.linalg.inv(G[0]) @ G[1])[:3, 3]) < 0.3  # tracked within a segment


# -- the photometric search along the direction the surface leaves open -------------------------------------------


def textured_tube_frame(intr, z_cam: float, radius: float = 10.0, textured: bool = True, far_mm: float = 60.0):
    """``(rgb (H, W, 3) uint8, depth (H, W) mm)`` of a camera on the axis of a tube (radius ``radius`` mm around
    the world z axis) at ``z = z_cam``, looking along +z (world = camera axes).  The wall carries a texture that
    varies along the axis and around it (or none); pixels farther than ``far_mm`` get depth 0."""
    h, w = intr.size.as_hw()
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = (u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy
    rho = np.hypot(x, y)
    depth = np.where(rho > 0, radius / np.maximum(rho, 1e-9), np.inf)
    zw = z_cam + depth
    theta = np.arctan2(y, x)
    tex = 0.55 + (0.18 * np.sin(2 * np.pi * zw / 3.0) * np.cos(5 * theta) + 0.1 * np.sin(2 * np.pi * zw / 1.7 + 3 * theta)
                  if textured else 0.0)
    shade = np.clip(40.0 / np.maximum(depth, 1.0), 0.1, 1.0)  # the light at the lens: smooth, moves with the camera
    grey = np.clip(np.where(np.isfinite(depth), tex * shade, 0.0), 0, 1)
    rgb = np.repeat((grey * 255).round().astype(np.uint8)[..., None], 3, axis=-1)
    return rgb, np.where(depth <= far_mm, depth, 0.0).astype(np.float32)


def test_weak_translation_is_the_axis_of_a_tube_and_none_in_a_corner():
    from colondepth.recon.tracking import weak_translation

    theta = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    tube = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], 1)
    axis = weak_translation(tube, ratio=0.05)
    assert axis is not None and abs(axis[2]) == pytest.approx(1.0, abs=1e-9)
    corner = np.repeat(np.eye(3), 50, axis=0)
    assert weak_translation(corner, ratio=0.05) is None
    assert weak_translation(tube[:2]) is None  # too few normals to say


def test_photometric_search_recovers_forward_motion_in_a_textured_tube_only():
    """The pose guess says the camera moved 0.5 mm along a straight tube, it moved 1.5 mm.  ICP against the
    model cannot tell (every axial position fits the wall); the texture can: with the frames' images the
    tracker ends within 0.1 mm of the truth.  Without images, or in a texture-free tube (where "no motion"
    renders the same image), the guess stays."""
    from colondepth.geometry.camera import PinholeIntrinsics
    from colondepth.conventions import ImageSize

    intr = PinholeIntrinsics.from_fov(ImageSize(96, 96), 100.0)
    guess = np.eye(4)
    guess[2, 3] = 0.5
    results = {}
    for case, textured, with_rgb in (("textured", True, True), ("no images", True, False),
                                     ("texture-free", False, True)):
        tracker = ModelTracker(intr, TrackingConfig(points_per_frame=3000))
        rgb0, d0 = textured_tube_frame(intr, 0.0, textured=textured)
        rgb1, d1 = textured_tube_frame(intr, 1.5, textured=textured)
        tracker.track(d0, np.eye(4), rgb=rgb0 if with_rgb else None)
        r = tracker.track(d1, guess, rgb=rgb1 if with_rgb else None)
        assert r.status == "tracked"
        results[case] = r.world_from_cam[:3, 3]
    assert results["textured"][2] == pytest.approx(1.5, abs=0.1)
    assert results["no images"][2] == pytest.approx(0.5, abs=0.05)
    assert results["texture-free"][2] == pytest.approx(0.5, abs=0.05)
    assert np.abs(results["textured"][:2]).max() < 0.1  # the lateral position stays on the axis
