"""Camera trajectories inside the colon: ``world_from_cam (F, 4, 4)``, OpenCV camera, mm.

The camera moves along the centreline (forward and, for a recipe-set fraction of the time,
backward), with slow speed changes, lateral wander, view jitter, roll about the view axis and
episodes of looking at the wall.  It always looks towards the far end (as an endoscope tip does
during insertion and withdrawal) and its optical centre stays within
``safe_radius_fraction * r_min(s)`` of the centreline, where ``r_min`` is the smallest wall
distance of the rings within half a radius — so it never leaves the tube or crosses a fold.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from colondepth.synth.colon import ColonGeometry
from colondepth.synth.noise import smooth_noise_1d
from colondepth.synth.recipe import Recipe


def _rotate(vectors: np.ndarray, axes: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotate ``(F, 3)`` vectors about unit ``(F, 3)`` axes by ``(F,)`` radians."""
    return Rotation.from_rotvec(axes * angles[:, None]).apply(vectors)


def make_trajectory(recipe: Recipe, geom: ColonGeometry, frames: int, rng: np.random.Generator) -> dict:
    """Sample a trajectory for one sampled recipe.

    Returns a dict with ``world_from_cam (F, 4, 4)``, ``s_mm (F,)`` arc length of the nearest
    centreline point, ``offset_mm (F,)`` distance from the centreline and ``limit_mm (F,)`` the
    allowed offset (``safe_radius_fraction * r_min``).
    """
    tr = recipe.trajectory
    F = int(frames)
    length = geom.length_mm
    R0 = float(recipe.lumen.radius_mm)
    corr = float(tr.smoothness_frames)

    # Arc length: signed speed with slow changes and backward episodes.
    speed = float(tr.speed_mm_per_frame) * np.clip(
        1.0 + float(tr.speed_change) * smooth_noise_1d(rng, F, corr), 0.1, 3.0)
    bf = float(tr.backward_fraction)
    direction_noise = smooth_noise_1d(rng, F, 2.0 * corr)
    if bf <= 0:
        sign = np.ones(F)
    elif bf >= 1:
        sign = -np.ones(F)
    else:
        # Threshold at the sequence's own quantile: exactly that fraction of frames starts backward.
        sign = np.where(direction_noise < np.quantile(direction_noise, bf), -1.0, 1.0)
    lo = min(0.75 * R0, 0.25 * length)
    hi = max(length - 2.0 * R0, lo + 1.0)
    s = np.empty(F)
    s[0] = float(np.clip(tr.start_mm, lo, hi))
    for t in range(1, F):
        nxt = s[t - 1] + sign[t] * speed[t]
        if nxt > hi or nxt < lo:  # reflect at the ends of the usable stretch
            sign[t:] *= -1.0
            nxt = s[t - 1] + sign[t] * speed[t]
        s[t] = float(np.clip(nxt, lo, hi))

    centre, T, N1, N2 = geom.centreline.frame_at(s)
    limit = float(tr.safe_radius_fraction) * geom.min_radius_mm(s, half_window_mm=0.5 * R0)

    # Lateral wander in the normal plane, clipped to the safe radius.
    a = smooth_noise_1d(rng, F, corr)
    b = smooth_noise_1d(rng, F, corr)
    lat = float(tr.lateral) * limit / 2.0
    offset = (a * lat)[:, None] * N1 + (b * lat)[:, None] * N2
    dist = np.linalg.norm(offset, axis=1)
    over = dist > limit
    offset[over] *= (limit[over] / dist[over])[:, None]
    position = centre + offset

    # View direction: towards the centreline ahead, then jitter and wall looks.
    ahead, _, _, _ = geom.centreline.frame_at(np.minimum(s + 1.5 * R0, length))
    view = ahead - position
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    j = math.radians(float(tr.jitter_deg))
    for normal in (N1, N2):
        axis = np.cross(view, normal)
        axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-9)
        view = _rotate(view, axis, j * smooth_noise_1d(rng, F, corr / 2.0))
    wf = float(tr.wall_look_fraction)
    episode = smooth_noise_1d(rng, F, corr)
    psi = rng.uniform(0.0, 2.0 * math.pi)
    if wf > 0:
        thr = float(np.quantile(episode, 1.0 - wf))  # this fraction of frames tilts more than half-way
        weight = np.clip((episode - thr) / 0.5 + 0.5, 0.0, 1.0)
        weight = weight * weight * (3 - 2 * weight)  # smoothstep in and out of an episode
        wall = math.cos(psi) * N1 + math.sin(psi) * N2
        axis = np.cross(view, wall)
        axis /= np.maximum(np.linalg.norm(axis, axis=1, keepdims=True), 1e-9)
        view = _rotate(view, axis, weight * math.radians(float(tr.wall_look_deg)))

    # Camera axes: +Z = view, +Y (down) from the transported normal N2, then roll about +Z.
    y = N2 - np.sum(N2 * view, axis=1, keepdims=True) * view
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    roll = math.radians(float(tr.roll_deg)) * smooth_noise_1d(rng, F, corr)
    y = _rotate(y, view, roll)
    x = np.cross(y, view)
    world_from_cam = np.tile(np.eye(4), (F, 1, 1))
    world_from_cam[:, :3, 0] = x
    world_from_cam[:, :3, 1] = y
    world_from_cam[:, :3, 2] = view
    world_from_cam[:, :3, 3] = position
    return {
        "world_from_cam": world_from_cam,
        "s_mm": s,
        "offset_mm": np.linalg.norm(offset, axis=1),
        "limit_mm": limit,
    }
