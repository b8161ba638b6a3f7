"""Colon geometry: a tube around a smooth 3D centreline -> trimesh (world frame, millimetres).

The surface is a field ``r(s, theta)`` over arc length ``s`` along the centreline and angle
``theta`` around it: a slowly varying radius, the triangular tendency of the three taeniae,
semilunar haustral folds between them, outward bulges, inward polyps and debris lumps, and flat
fluid levels on the gravity side (world +Y points down).  Both ends are closed by domes (the far
end can be left open).

Winding: for a ring basis ``(N1, N2)`` with tangent ``T = N1 x N2`` and ``theta`` turning from
``N1`` to ``N2``, the triangle ``(ring i col j, ring i+1 col j, ring i col j+1)`` has its normal
pointing *into* the lumen, towards the camera; no ``invert()`` is needed (and none is used,
because trimesh keeps stale cached normals after it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from colondepth.errors import UserError
from colondepth.synth.noise import smooth_noise_1d, wrap_angle
from colondepth.synth.recipe import Recipe

#: Step of the centreline integration, mm.
CENTRELINE_STEP_MM = 0.5
#: World direction of gravity (fluid settles towards +Y).
GRAVITY_DOWN = np.array([0.0, 1.0, 0.0])


@dataclass
class Centreline:
    """Arc-length sampled centreline with a rotation-minimising frame.

    ``s_mm (n,)`` increasing arc length; ``points``, ``tangent``, ``normal1``, ``normal2`` are
    ``(n, 3)`` in the world frame with ``tangent = normal1 x normal2``.
    """

    s_mm: np.ndarray
    points: np.ndarray
    tangent: np.ndarray
    normal1: np.ndarray
    normal2: np.ndarray

    def frame_at(self, s_mm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Interpolated ``(point, tangent, normal1, normal2)``, each ``(k, 3)``, at arc lengths ``(k,)``."""
        s = np.clip(np.atleast_1d(np.asarray(s_mm, dtype=np.float64)), self.s_mm[0], self.s_mm[-1])
        out = []
        for arr in (self.points, self.tangent, self.normal1, self.normal2):
            out.append(np.stack([np.interp(s, self.s_mm, arr[:, k]) for k in range(3)], axis=-1))
        p, t, n1, _ = out
        t = t / np.linalg.norm(t, axis=-1, keepdims=True)
        n1 = n1 - np.sum(n1 * t, axis=-1, keepdims=True) * t
        n1 = n1 / np.linalg.norm(n1, axis=-1, keepdims=True)
        n2 = np.cross(t, n1)
        return p, t, n1, n2


@dataclass
class ColonGeometry:
    """A generated colon.

    Attributes
    ----------
    centreline : Centreline
    length_mm : float
        Arc length of the body (between the two domes); the body spans ``s in [0, length_mm]``.
    ring_s_mm : (n,) float64
        Arc length of every vertex ring (caps included; cap rings lie outside ``[0, length_mm]``).
    theta : (m,) float64
        Ring angles ``2 pi j / m``.
    radius_mm : (n, m) float64
        Distance from the centreline to the wall per ring and angle.
    mesh : trimesh.Trimesh
        Welded ground-truth surface, world frame, mm, faces wound towards the lumen.
    render_vertices, render_normals : (V, 3) float32 ; render_uv : (V, 2) float32 ; render_faces : (F, 3) int
        The same surface with the texture seam split (for the renderer); normals point inward.
    uv_s_range : (float, float)
        Arc lengths mapped to texture ``u = 0`` and ``u = 1``.
    fluid_mask : (n, m) float64
        1 where the wall is replaced by a fluid level.
    debris : list of (s_mm, theta, radius_mm)
    """

    centreline: Centreline
    length_mm: float
    ring_s_mm: np.ndarray
    theta: np.ndarray
    radius_mm: np.ndarray
    mesh: trimesh.Trimesh
    render_vertices: np.ndarray
    render_normals: np.ndarray
    render_uv: np.ndarray
    render_faces: np.ndarray
    uv_s_range: tuple[float, float]
    fluid_mask: np.ndarray
    debris: list = field(default_factory=list)

    @property
    def body(self) -> np.ndarray:
        """Boolean ``(n,)`` mask of the rings inside ``[0, length_mm]``."""
        return (self.ring_s_mm >= -1e-9) & (self.ring_s_mm <= self.length_mm + 1e-9)

    def min_radius_mm(self, s_mm, half_window_mm: float) -> np.ndarray:
        """``(k,)`` smallest wall distance over all angles of the body rings within ``s +- half_window``."""
        s = np.atleast_1d(np.asarray(s_mm, dtype=np.float64))
        body = self.body
        ring_s = self.ring_s_mm[body]
        ring_min = self.radius_mm[body].min(axis=1)
        out = np.empty_like(s)
        for i, si in enumerate(s):
            sel = np.abs(ring_s - si) <= half_window_mm
            out[i] = ring_min[sel].min() if sel.any() else np.interp(si, ring_s, ring_min)
        return out


# ----------------------------------------------------------------------------------------------
# centreline
# ----------------------------------------------------------------------------------------------
def build_centreline(rng: np.random.Generator, recipe: Recipe, s_lo: float, s_hi: float,
                     max_curvature: float) -> Centreline:
    """Integrate a curvature field into an arc-length centreline starting at the origin along +Z.

    Curvature (1/mm) = tortuous smooth noise + Gaussian flexure pulses, confined to the body
    ``[0, length]`` (the domes are straight) and clipped to ``max_curvature`` so the tube never
    folds onto itself locally.  The frame is transported by the same rotations (no twist).
    """
    c = recipe.centreline
    h = CENTRELINE_STEP_MM
    n = int(math.ceil((s_hi - s_lo) / h)) + 1
    s = s_lo + h * np.arange(n)
    length = float(c.length_mm)

    k_rms = math.radians(float(c.bend_deg_per_100mm)) / 100.0
    sigma = float(c.bend_wavelength_mm) / 4.0 / h
    k1 = k_rms * smooth_noise_1d(rng, n, sigma)
    k2 = k_rms * smooth_noise_1d(rng, n, sigma)
    nf = int(c.flexures)
    for i in range(nf):
        centre = length * (i + 0.5 + rng.uniform(-0.15, 0.15)) / nf
        phi = rng.uniform(0.0, 2.0 * math.pi)
        fsig = float(c.flexure_length_mm) / 4.0
        amp = math.radians(float(c.flexure_angle_deg)) / (fsig * math.sqrt(2.0 * math.pi))
        g = amp * np.exp(-0.5 * ((s - centre) / fsig) ** 2)
        k1 += g * math.cos(phi)
        k2 += g * math.sin(phi)
    # Straight near and beyond the ends (domes) so caps are not bent.
    taper = np.clip(np.minimum(s, length - s) / max(5.0, 0.05 * length), 0.0, 1.0)
    k1 *= taper
    k2 *= taper
    mag = np.hypot(k1, k2)
    scale = np.where(mag > max_curvature, max_curvature / np.maximum(mag, 1e-12), 1.0)
    k1 *= scale
    k2 *= scale

    T = np.zeros((n, 3))
    N1 = np.zeros((n, 3))
    N2 = np.zeros((n, 3))
    T[0], N1[0], N2[0] = (0, 0, 1), (1, 0, 0), (0, 1, 0)
    for i in range(n - 1):
        kvec = k1[i] * N1[i] + k2[i] * N2[i]
        rot = Rotation.from_rotvec(np.cross(T[i], kvec) * h)
        T[i + 1], N1[i + 1], N2[i + 1] = rot.apply(np.stack([T[i], N1[i], N2[i]]))
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    P = np.zeros((n, 3))
    P[1:] = np.cumsum(0.5 * h * (T[1:] + T[:-1]), axis=0)
    # Put s = 0 at the origin.
    P -= np.array([np.interp(0.0, s, P[:, k]) for k in range(3)])
    return Centreline(s_mm=s, points=P, tangent=T, normal1=N1, normal2=N2)


def _self_clearance_ok(cl: Centreline, clearance_mm: float) -> bool:
    """True if points farther apart than ``pi * clearance`` along the curve stay ``2 clearance`` apart."""
    step = max(1, int(round(2.0 / CENTRELINE_STEP_MM)))
    pts, s = cl.points[::step], cl.s_mm[::step]
    pairs = cKDTree(pts).query_pairs(2.0 * clearance_mm, output_type="ndarray")
    if len(pairs) == 0:
        return True
    return bool(np.all(np.abs(s[pairs[:, 0]] - s[pairs[:, 1]]) < math.pi * clearance_mm))


# ----------------------------------------------------------------------------------------------
# radius field
# ----------------------------------------------------------------------------------------------
def _bump(ds, dtheta, radius_ref, sigma, power=2.0):
    d = np.sqrt(ds ** 2 + (radius_ref * dtheta) ** 2) / sigma
    return np.exp(-0.5 * d ** power)


def radius_field(rng: np.random.Generator, recipe: Recipe, s: np.ndarray, theta: np.ndarray,
                 frames: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list]:
    """Wall distance ``(len(s), len(theta))`` mm, fluid mask of the same shape, and debris list.

    ``frames = (tangent, normal1, normal2)`` at ``s``, each ``(len(s), 3)``, for the gravity side.
    """
    lum, folds, bumps, fluid = recipe.lumen, recipe.folds, recipe.bumps, recipe.fluid
    length = float(recipe.centreline.length_mm)
    R0 = float(lum.radius_mm)
    S, TH = np.meshgrid(s, theta, indexing="ij")

    # Slow radius variation along the tube.
    h = 1.0
    grid = np.arange(-20.0, length + 20.0 + h, h)
    var = smooth_noise_1d(rng, len(grid), float(lum.variation_wavelength_mm) / 4.0 / h)
    R = R0 * (1.0 + float(lum.variation) * np.clip(np.interp(s, grid, var), -2.5, 2.5))
    R = np.maximum(R, 0.3 * R0)

    theta0 = rng.uniform(0.0, 2.0 * math.pi)
    tri = 1.0 + float(lum.taeniae_depth) * np.cos(3.0 * (TH - theta0))
    r = R[:, None] * tri

    # Haustral folds: one row of folds per sector between two taeniae.
    fold = np.zeros_like(r)
    depth = float(folds.depth)
    spacing = float(folds.spacing_mm)
    sig = float(folds.width_mm) / 2.0
    cont = float(folds.continuity)
    nfold = int(math.floor(length / spacing)) + 2
    for sector in range(3):
        centre = theta0 + 2.0 * math.pi * sector / 3.0
        dth = wrap_angle(TH - centre)
        w = np.where(np.abs(dth) <= math.pi / 3.0, cont + (1.0 - cont) * np.cos(1.5 * dth) ** 2, 0.0)
        offset = spacing * 0.5 + float(folds.stagger_mm) * (sector - 1)
        for k in range(nfold):
            sk = offset + k * spacing + rng.uniform(-0.15, 0.15) * spacing
            dk = depth * rng.uniform(0.6, 1.0)
            if not (0.5 * spacing <= sk <= length - 0.5 * spacing) or dk <= 0:
                continue
            fold = np.maximum(fold, w * dk * np.exp(-0.5 * ((S - sk) / sig) ** 2))
    r = r * (1.0 - fold)

    def place(count):
        out = []
        for _ in range(int(count)):
            out.append((rng.uniform(0.15 * length, 0.95 * length), rng.uniform(0.0, 2.0 * math.pi)))
        return out

    for sb, tb in place(bumps.bulges):
        r = r + float(bumps.bulge_height_mm) * _bump(S - sb, wrap_angle(TH - tb), R0, float(bumps.bulge_radius_mm))
    for sp, tp in place(bumps.polyps):
        r = r - float(bumps.polyp_height_mm) * _bump(S - sp, wrap_angle(TH - tp), R0,
                                                      float(bumps.polyp_radius_mm), power=3.0)
    debris = []
    for sd, td in place(bumps.debris):
        rad = float(bumps.debris_radius_mm) * rng.uniform(0.6, 1.2)
        r = r - 0.6 * rad * _bump(S - sd, wrap_angle(TH - td), R0, rad)
        debris.append((sd, td, rad))
    r = np.maximum(r, 0.2 * R0)

    # Fluid pools: a flat level on the gravity side.
    fluid_mask = np.zeros_like(r)
    T, N1, N2 = frames
    g = GRAVITY_DOWN[None, :] - np.sum(GRAVITY_DOWN[None, :] * T, axis=1, keepdims=True) * T
    gnorm = np.linalg.norm(g, axis=1)
    down = (np.cos(TH) * np.sum(N1 * g, axis=1)[:, None] + np.sin(TH) * np.sum(N2 * g, axis=1)[:, None])
    down = down / np.maximum(gnorm[:, None], 1e-9)
    for sp, _ in place(fluid.pools):
        half = float(fluid.length_mm) / 2.0
        x = np.clip(1.0 - np.abs(s - sp) / half, 0.0, 1.0)
        taper = np.sin(0.5 * math.pi * np.clip(2.0 * x, 0.0, 1.0)) ** 2  # 0 at the pool ends
        level = R * (1.0 - float(fluid.depth_fraction) * taper)  # distance of the level from the axis
        active = (taper[:, None] > 0) & (gnorm[:, None] > 0.3) & (down > 1e-3)
        clipped = np.where(active, level[:, None] / np.maximum(down, 1e-3), np.inf)
        wet = clipped < r
        r = np.where(wet, clipped, r)
        fluid_mask = np.maximum(fluid_mask, wet.astype(np.float64))
    return r, fluid_mask, debris


# ----------------------------------------------------------------------------------------------
# mesh
# ----------------------------------------------------------------------------------------------
def _grid_faces(n_rings: int, n_cols: int, wrap: bool) -> np.ndarray:
    """Two inward-facing triangles per quad of an ``n_rings x n_cols`` vertex grid (row-major)."""
    i, j = np.meshgrid(np.arange(n_rings - 1), np.arange(n_cols if wrap else n_cols - 1), indexing="ij")
    i, j = i.ravel(), j.ravel()
    jn = (j + 1) % n_cols if wrap else j + 1
    a, b = i * n_cols + j, (i + 1) * n_cols + j
    c, d = i * n_cols + jn, (i + 1) * n_cols + jn
    return np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])


def build_colon(recipe: Recipe, rng: np.random.Generator, max_tries: int = 30) -> ColonGeometry:
    """Build the colon for one *sampled* recipe (no ranges left; see ``sample_recipe``).

    Returns a :class:`ColonGeometry` whose ``mesh`` is watertight when ``ends.far_end == 'blind'``.
    Raises UserError if the recipe cannot produce a non-self-intersecting tube.
    """
    length = float(recipe.centreline.length_mm)
    R0 = float(recipe.lumen.radius_mm)
    r_out = R0 * (1.0 + 2.5 * float(recipe.lumen.variation)) * (1.0 + float(recipe.lumen.taeniae_depth))
    if int(recipe.bumps.bulges) > 0:
        r_out += float(recipe.bumps.bulge_height_mm)
    cap_start = recipe.ends.cap_ratio * R0 * 1.3
    cap_end = recipe.ends.cap_ratio * R0 * 1.3
    s_lo, s_hi = -cap_start - 2.0, length + cap_end + 2.0
    for _ in range(max_tries):
        cl = build_centreline(rng, recipe, s_lo, s_hi, max_curvature=0.8 / r_out)
        if _self_clearance_ok(cl, 1.1 * r_out):
            break
    else:
        raise UserError(
            f"recipe level {recipe.level}: the centreline keeps crossing itself; lower "
            "centreline.flexure_angle_deg / centreline.bend_deg_per_100mm or raise centreline.length_mm"
        )

    m = int(recipe.mesh.segments)
    theta = 2.0 * math.pi * np.arange(m) / m
    nb = int(math.ceil(length / recipe.mesh.ring_spacing_mm)) + 1
    s_body = np.linspace(0.0, length, nb)
    _, T, N1, N2 = cl.frame_at(s_body)
    r_body, fluid_body, debris = radius_field(rng, recipe, s_body, theta, (T, N1, N2))

    # Domes: rings at s = -c sin(a) with radius r_end cos(a), then a pole.
    nc = max(3, m // 8)
    alphas = (np.arange(1, nc) * (0.5 * math.pi / nc))
    c0 = recipe.ends.cap_ratio * float(r_body[0].mean())
    c1 = recipe.ends.cap_ratio * float(r_body[-1].mean())
    blind = recipe.ends.far_end == "blind"
    s_start = -c0 * np.sin(alphas[::-1])
    r_start = r_body[0][None, :] * np.cos(alphas[::-1])[:, None]
    rings_s = [s_start, s_body]
    rings_r = [r_start, r_body]
    rings_f = [np.zeros_like(r_start), fluid_body]
    if blind:
        rings_s.append(length + c1 * np.sin(alphas))
        rings_r.append(r_body[-1][None, :] * np.cos(alphas)[:, None])
        rings_f.append(np.zeros((len(alphas), m)))
    ring_s = np.concatenate(rings_s)
    radius = np.concatenate(rings_r)
    fluid = np.concatenate(rings_f)
    n = len(ring_s)

    P, T, N1, N2 = cl.frame_at(ring_s)
    dirs = np.cos(theta)[None, :, None] * N1[:, None, :] + np.sin(theta)[None, :, None] * N2[:, None, :]
    grid = P[:, None, :] + radius[:, :, None] * dirs  # (n, m, 3)
    pole0 = cl.frame_at(-c0)[0][0]
    pole1 = cl.frame_at(length + c1)[0][0]

    # Welded ground-truth mesh.
    verts = [grid.reshape(-1, 3), pole0[None]]
    faces = [_grid_faces(n, m, wrap=True)]
    j = np.arange(m)
    jn = (j + 1) % m
    p0 = n * m
    faces.append(np.stack([np.full(m, p0), j, jn], 1))
    if blind:
        p1 = n * m + 1
        verts.append(pole1[None])
        faces.append(np.stack([(n - 1) * m + j, np.full(m, p1), (n - 1) * m + jn], 1))
    mesh = trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=False)
    welded_normals = np.asarray(mesh.vertex_normals)

    # Render mesh: the seam column duplicated (u, v texture coordinates), one pole copy per column.
    s0, s1 = float(s_lo), float(s_hi)
    cols = m + 1
    rgrid = np.concatenate([grid, grid[:, :1]], axis=1).reshape(-1, 3)
    ridx = (np.arange(n)[:, None] * m + (np.arange(cols) % m)[None, :]).reshape(-1)
    u = np.repeat((ring_s - s0) / (s1 - s0), cols)
    v = np.tile(np.arange(cols) / m, n)
    rverts = [rgrid]
    rmap = [ridx]
    ruv = [np.stack([u, v], 1)]
    rfaces = [_grid_faces(n, cols, wrap=False)]
    jj = np.arange(m)
    base = n * cols
    rverts.append(np.repeat(pole0[None], m, 0))
    rmap.append(np.full(m, p0))
    ruv.append(np.stack([np.full(m, (-c0 - s0) / (s1 - s0)), (jj + 0.5) / m], 1))
    rfaces.append(np.stack([base + jj, jj, jj + 1], 1))
    if blind:
        base2 = base + m
        rverts.append(np.repeat(pole1[None], m, 0))
        rmap.append(np.full(m, n * m + 1))
        ruv.append(np.stack([np.full(m, (length + c1 - s0) / (s1 - s0)), (jj + 0.5) / m], 1))
        rfaces.append(np.stack([(n - 1) * cols + jj, base2 + jj, (n - 1) * cols + jj + 1], 1))
    rmap = np.concatenate(rmap)
    return ColonGeometry(
        centreline=cl,
        length_mm=length,
        ring_s_mm=ring_s,
        theta=theta,
        radius_mm=radius,
        mesh=mesh,
        render_vertices=np.concatenate(rverts).astype(np.float32),
        render_normals=welded_normals[rmap].astype(np.float32),
        render_uv=np.concatenate(ruv).astype(np.float32),
        render_faces=np.concatenate(rfaces).astype(np.int64),
        uv_s_range=(s0, s1),
        fluid_mask=fluid,
        debris=debris,
    )
