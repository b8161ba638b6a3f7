"""Multi-frame TSDF fusion in a sparse block volume, and marching cubes to a mesh.

Volume
    Voxel ``g = (i, j, k)`` (integers, unbounded) has its centre at ``g * voxel_mm`` in the world
    frame (mm).  Voxels are stored in cubic blocks of ``block_voxels**3``; block ``b`` holds voxels
    ``b * block_voxels + [0, block_voxels)`` per axis.  A block is allocated only where a depth
    sample's truncation band lands, so memory follows the observed surface, not the trajectory's
    bounding box; ``max_blocks`` caps it with a clear error.

Signed distance
    For a voxel at camera-frame depth ``z`` that projects to pixel ``(u, v)`` (nearest pixel) with
    measured depth ``D``: ``sdf = (D - z) |r| cos(theta)`` (mm), the distance to the tangent plane
    of the observed surface, where ``r = K^-1 [u, v, 1]`` and ``theta`` is the angle between the
    ray and the surface normal estimated from the depth map.  Positive in front of the surface
    (free space, the lumen side), negative behind it (tissue).  Voxels with ``sdf < -trunc_mm``
    are not updated (unknown behind the surface).  The stored value is
    ``tsdf = min(sdf / trunc_mm, 1)`` in ``[-1, 1]``, fused as a weighted running average with the
    observation weight ``w = cos(theta)`` (times an inverse-variance factor and with a wider band for
    uncertain depth: ``depth_sigma_rel`` of :class:`TSDFVolume`): ``T <- (W T + w t) / (W + w)``,
    ``W <- min(W + w, max_weight)``; colours likewise.  Grazing views (``cos(theta) < min_cos``)
    and pixels beside depth discontinuities are skipped: their nearest-pixel depth is unreliable.

Extraction
    Marching cubes (``skimage.measure.marching_cubes``) at level 0 over the observed voxels only
    (a cube is used when all eight corners have ``weight > min_weight``), chunk by chunk with one
    voxel of overlap, so memory stays bounded; duplicate vertices on chunk borders are merged.
    Faces are wound so their normals point towards positive TSDF (free space, the cameras).  A chunk
    on which marching cubes fails is never dropped silently: it is listed in
    :attr:`TSDFVolume.failed_chunks` and reported with a :class:`IncompleteMeshWarning`, and
    ``colondepth reconstruct`` then exits non-zero (see :mod:`colondepth.recon.pipeline`).

Implementation
    Vectorised numpy over all voxels of the blocks a frame touches.  Pixels are back-projected
    through :func:`colondepth.geometry.projection.backproject_depth`; voxels are projected with the
    same pinhole ``K`` by :func:`colondepth.geometry.projection.project_points_np` and assigned the pixel
    :func:`colondepth.geometry.projection.pixel_index` gives (round half up, pixel centres at integers;
    coverage uses the same two functions), the inverse the tests check on analytic tubes.  (Open3D's
    ``ScalableTSDFVolume`` does the same job but is a heavy dependency.)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.recon.pointcloud import check_depth, check_pose


class IncompleteMeshWarning(UserWarning):
    """Marching cubes failed on part of the volume: the extracted mesh has holes there."""


_BITS = 21
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


def _encode(keys: np.ndarray) -> np.ndarray:
    """(N, 3) int64 block keys -> (N,) int64 codes (each key component in [-2^20, 2^20))."""
    k = keys.astype(np.int64) + _OFFSET
    return (k[:, 0] << (2 * _BITS)) | (k[:, 1] << _BITS) | k[:, 2]


def _decode(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_encode`: (N,) int64 codes -> (N, 3) int64 block keys."""
    codes = np.asarray(codes, dtype=np.int64)
    return np.stack([(codes >> (2 * _BITS)) & _MASK, (codes >> _BITS) & _MASK, codes & _MASK], axis=1) - _OFFSET


@dataclass
class DenseTSDF:
    """A dense copy of (part of) a :class:`TSDFVolume`.

    Attributes
    ----------
    tsdf : (X, Y, Z) float32, normalised TSDF in ``[-1, 1]``; 1 where unobserved.
    weight : (X, Y, Z) float32, fused observation weight (0 = unobserved).
    color : (X, Y, Z, 3) float32 RGB in [0, 255] or None.
    index_origin : (3,) int64, global voxel index of element ``[0, 0, 0]``.
    voxel_mm, trunc_mm : float.

    Voxel ``[i, j, k]`` has its centre at world ``voxel_mm * (index_origin + (i, j, k))`` mm:
    see :attr:`affine`.
    """

    tsdf: np.ndarray
    weight: np.ndarray
    color: Optional[np.ndarray]
    index_origin: np.ndarray
    voxel_mm: float
    trunc_mm: float

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) float64 ``world_from_index``: ``[x, y, z, 1]^T = affine @ [i, j, k, 1]^T`` (mm)."""
        A = np.eye(4)
        A[:3, :3] *= self.voxel_mm
        A[:3, 3] = self.voxel_mm * np.asarray(self.index_origin, dtype=np.float64)
        return A

    @property
    def tsdf_mm(self) -> np.ndarray:
        """(X, Y, Z) float32 truncated signed distance in mm; ``+trunc_mm`` where unobserved."""
        return tsdf_in_mm(self.tsdf, self.weight, self.trunc_mm)


def tsdf_in_mm(tsdf: np.ndarray, weight: np.ndarray, trunc_mm: float) -> np.ndarray:
    """Normalised TSDF and weight (same shape) -> float32 signed distance in mm, ``+trunc_mm`` where unobserved
    (weight 0): the one rule behind :attr:`DenseTSDF.tsdf_mm` and :meth:`TSDFVolume.tsdf_mm_slabs`."""
    return np.where(weight > 0, tsdf * np.float32(trunc_mm), np.float32(trunc_mm)).astype(np.float32)


class TSDFVolume:
    """Sparse, block-allocated TSDF volume (world frame, mm).

    Parameters
    ----------
    voxel_mm : float
        Voxel edge length in mm.
    trunc_mm : float, optional
        Truncation distance in mm (default ``4 * voxel_mm``); must be at least one voxel.
    block_voxels : int
        Voxels per block edge (default 4).
    max_blocks : int
        Cap on allocated blocks; exceeding it raises :class:`UserError` (memory per block is
        ``block_voxels**3 * 20`` bytes with colour, ``* 8`` without).
    max_weight : float
        Cap on the fused weight, so late frames can still correct the surface.
    min_depth_mm, max_depth_mm : float
        Working depth range; depth outside it is ignored.
    with_color : bool
        Fuse RGB colours when frames come with them.
    min_cos : float
        Pixels seen at grazing incidence (``cos(theta) < min_cos`` between ray and surface normal,
        normals from the depth map) are ignored; others are weighted by ``cos(theta)``.
    max_rel_jump : float, optional
        Pixels next to a relative depth jump above this (occlusion edges) are ignored.  Default:
        twice the step a surface at the grazing limit makes between neighbouring pixels,
        ``2 tan(acos(min_cos)) / min(fx, fy)`` (about 0.08 at 256 px and 90 degrees).
    depth_sigma_rel : float
        Relative standard deviation of the depth maps (0 for exact depth, the default; about 0.1 for a
        network's depth).  With ``sigma(z) = depth_sigma_rel * z``, a pixel's weight is multiplied by
        ``min(1, (voxel_mm / 2 / sigma(z))**2)`` (inverse variance: near, reliable depth counts more than
        far depth) and its truncation band is ``max(trunc_mm, 2 sigma(z))`` (an error of two standard
        deviations still lands inside the band).

    Example::

        vol = TSDFVolume(voxel_mm=1.0)
        for depth_mm, world_from_cam, rgb in frames:
            vol.integrate(depth_mm, intrinsics, world_from_cam, rgb=rgb)
        mesh = vol.extract_mesh()          # trimesh.Trimesh, world frame, mm
        dense = vol.to_dense()             # DenseTSDF for NIfTI export
    """

    def __init__(
        self,
        voxel_mm: float = 1.0,
        trunc_mm: Optional[float] = None,
        block_voxels: int = 4,
        max_blocks: int = 1_000_000,
        max_weight: float = 64.0,
        min_depth_mm: float = 0.0,
        max_depth_mm: float = float("inf"),
        with_color: bool = True,
        min_cos: float = 0.2,
        max_rel_jump: Optional[float] = None,
        depth_sigma_rel: float = 0.0,
    ):
        if not (voxel_mm > 0 and math.isfinite(voxel_mm)):
            raise UserError(f"voxel size must be a positive number of mm, got {voxel_mm}")
        trunc_mm = 4.0 * voxel_mm if trunc_mm is None else float(trunc_mm)
        if trunc_mm < voxel_mm:
            raise UserError(f"truncation {trunc_mm} mm must be at least one voxel ({voxel_mm} mm)")
        if block_voxels < 2:
            raise UserError(f"block_voxels must be >= 2, got {block_voxels}")
        if not 0 <= min_depth_mm < max_depth_mm:
            raise UserError(f"depth range [{min_depth_mm}, {max_depth_mm}] mm is empty; need 0 <= min < max")
        self.voxel_mm = float(voxel_mm)
        self.trunc_mm = trunc_mm
        self.block_voxels = int(block_voxels)
        self.max_blocks = int(max_blocks)
        self.max_weight = float(max_weight)
        self.min_depth_mm = float(min_depth_mm)
        self.max_depth_mm = float(max_depth_mm)
        self.with_color = bool(with_color)
        self.min_cos = float(min_cos)
        self.max_rel_jump = None if max_rel_jump is None else float(max_rel_jump)
        if not (depth_sigma_rel >= 0 and math.isfinite(depth_sigma_rel)):
            raise UserError(f"depth_sigma_rel {depth_sigma_rel}: the relative depth error must be a number >= 0")
        self.depth_sigma_rel = float(depth_sigma_rel)
        self.frames_integrated = 0
        self.frames_empty = 0
        #: Chunks of the last :meth:`extract_mesh` on which marching cubes failed (their surface is missing):
        #: ``{"chunk": [i, j, k], "world_min_mm": [...], "world_max_mm": [...], "error": "..."}``.
        self.failed_chunks: list[dict] = []
        #: Chunks with a surface crossing that the last :meth:`extract_mesh` ran marching cubes on.
        self.surface_chunks = 0
        nb3 = self.block_voxels ** 3
        self._n = 0
        self._codes = np.zeros(0, dtype=np.int64)  # (cap,) in slot order
        self._keys = np.zeros((0, 3), dtype=np.int64)
        self._sorted_codes = np.zeros(0, dtype=np.int64)
        self._sorted_slots = np.zeros(0, dtype=np.int64)
        self._tsdf = np.ones((0, nb3), dtype=np.float32)
        self._weight = np.zeros((0, nb3), dtype=np.float32)
        self._color = np.zeros((0, nb3, 3), dtype=np.float32)
        b = np.arange(self.block_voxels)
        self._local = np.stack(np.meshgrid(b, b, b, indexing="ij"), axis=-1).reshape(-1, 3)  # (B^3, 3)

    # -- bookkeeping ----------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self._n

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the allocated voxel arrays (including spare capacity)."""
        n = self._tsdf.nbytes + self._weight.nbytes
        if self.with_color:
            n += self._color.nbytes
        return int(n)

    @property
    def used_bytes(self) -> int:
        """Bytes of the voxel arrays that hold allocated blocks (:attr:`memory_bytes` without spare capacity)."""
        per_block = self._tsdf.itemsize * self._tsdf.shape[1] * (2 + (3 if self.with_color else 0))
        return int(self._n * per_block)

    @property
    def block_keys(self) -> np.ndarray:
        """(n, 3) int64 keys of the allocated blocks."""
        return self._keys[: self._n].copy()

    def _lookup(self, codes: np.ndarray) -> np.ndarray:
        """Slots of ``codes`` (N,) int64; -1 where not allocated."""
        if self._n == 0:
            return np.full(len(codes), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_codes, codes), self._n - 1)
        found = self._sorted_codes[pos] == codes
        return np.where(found, self._sorted_slots[pos], -1)

    def _allocate(self, codes: np.ndarray) -> np.ndarray:
        """Allocate blocks for unique ``codes`` (M,); return their slots (M,)."""
        slots = self._lookup(codes)
        new = slots < 0
        n_new = int(new.sum())
        if n_new:
            if self._n + n_new > self.max_blocks:
                raise UserError(
                    f"TSDF volume needs more than {self.max_blocks} blocks of {self.block_voxels}^3 voxels "
                    f"at {self.voxel_mm} mm; use a larger --voxel-mm, fewer frames, or a smaller depth range"
                )
            need = self._n + n_new
            if need > len(self._tsdf):
                cap = max(need, 2 * len(self._tsdf), 256)
                self._tsdf = _grow(self._tsdf, cap, 1.0)
                self._weight = _grow(self._weight, cap, 0.0)
                if self.with_color:
                    self._color = _grow(self._color, cap, 0.0)
                self._codes = _grow(self._codes, cap, 0)
                self._keys = _grow(self._keys, cap, 0)
            self._codes[self._n:need] = codes[new]
            self._keys[self._n:need] = _decode(codes[new])
            slots[new] = np.arange(self._n, need)
            self._n = need
            order = np.argsort(self._codes[: self._n], kind="stable")
            self._sorted_codes = self._codes[: self._n][order]
            self._sorted_slots = order
        return slots

    # -- integration ----------------------------------------------------------------------------
    def integrate(
        self,
        depth_mm: np.ndarray,
        intrinsics: PinholeIntrinsics,
        world_from_cam: np.ndarray,
        rgb: Optional[np.ndarray] = None,
        valid: Optional[np.ndarray] = None,
    ) -> int:
        """Fuse one depth map.

        Parameters
        ----------
        depth_mm : (H, W) float, z-depth in mm, 0 = invalid (NaN/inf/negative raise UserError).
        intrinsics : PinholeIntrinsics of that image size.
        world_from_cam : (4, 4) camera-to-world pose (OpenCV camera, mm).
        rgb : (H, W, 3) uint8, optional colours.
        valid : (H, W) bool, optional extra mask (e.g. field of view).

        Returns
        -------
        Number of voxels updated.  A frame without any usable depth in the working range is counted
        in :attr:`frames_empty` and changes nothing.
        """
        from colondepth.recon.pointcloud import backproject_to_camera

        depth = check_depth(depth_mm, intrinsics)
        T_wc = check_pose(world_from_cam, "world_from_cam")
        mask = (depth > 0) & (depth >= self.min_depth_mm) & (depth <= self.max_depth_mm)
        if valid is not None:
            mask &= np.asarray(valid, dtype=bool)
        if rgb is not None and self.with_color:
            rgb = np.asarray(rgb)
            if rgb.shape[:2] != depth.shape or rgb.ndim != 3:
                raise UserError(f"rgb shape {rgb.shape} does not match depth shape {depth.shape}")
        if not mask.any():
            self.frames_empty += 1
            return 0
        H, W = depth.shape
        D = np.where(mask, depth, 0).astype(np.float32)
        pts = backproject_to_camera(D, intrinsics).astype(np.float32)  # (H, W, 3)
        max_jump = self.max_rel_jump
        if max_jump is None:
            # the depth step between neighbours of a surface seen at the grazing limit, times 2
            max_jump = 2.0 * math.tan(math.acos(self.min_cos)) / min(intrinsics.fx, intrinsics.fy)
        scale, pix_weight = _incidence(pts, mask, self.min_cos, max_jump)
        trunc_pix = np.full(depth.shape, self.trunc_mm, dtype=np.float32)
        if self.depth_sigma_rel > 0:
            sigma = self.depth_sigma_rel * D
            pix_weight = pix_weight * np.minimum(1.0, (0.5 * self.voxel_mm / np.maximum(sigma, 1e-6)) ** 2)
            trunc_pix = np.maximum(trunc_pix, 2.0 * sigma).astype(np.float32)
        use = pix_weight > 0
        if not use.any():
            self.frames_empty += 1
            return 0
        R = T_wc[:3, :3].astype(np.float32)
        t = T_wc[:3, 3].astype(np.float32)

        # 1. blocks touched by the truncation band of the usable pixels; where two pixels span less
        #    than a quarter block, every other pixel (in both directions) is enough
        block_mm = self.voxel_mm * self.block_voxels
        f = min(intrinsics.fx, intrinsics.fy)
        sparse_grid = np.zeros_like(use)
        sparse_grid[::2, ::2] = True
        sel = use & (sparse_grid | (2.0 * pts[..., 2] / f > 0.25 * block_mm))
        P = pts[sel]  # (M, 3)
        tr = trunc_pix[sel][:, None]  # (M, 1) each pixel's truncation band
        z = P[:, 2:3]
        rays = P / z
        n_off = max(2, int(math.ceil(2 * float(tr.max()) / (0.5 * block_mm))) + 1)
        offs = np.linspace(-1.0, 1.0, n_off, dtype=np.float32)
        zs = z + offs[None, :] * tr  # (M, n_off)
        samples = (rays[:, None, :] * zs[..., None])[zs > 0]  # camera frame
        world = _rigid(R, t, samples)
        g = np.floor(world / self.voxel_mm + 0.5).astype(np.int64)
        codes = np.unique(_encode(np.floor_divide(g, self.block_voxels)))
        slots = self._allocate(codes)
        keys = _decode(codes)

        # 2. update every voxel of the touched blocks
        B3 = self.block_voxels ** 3
        from colondepth.geometry.projection import pixel_index, project_points_np

        K = intrinsics.K
        R_cw = R.T  # cam_from_world rotation
        t_cw = -(R_cw @ t)
        Dflat, Wflat, Sflat = D.reshape(-1), pix_weight.reshape(-1), scale.reshape(-1)
        Tflat = trunc_pix.reshape(-1)
        rgb_flat = None
        if rgb is not None and self.with_color:
            rgb_flat = np.ascontiguousarray(rgb[..., :3]).reshape(-1, 3).astype(np.float32)
        tsdf_flat = self._tsdf.reshape(-1)
        w_flat = self._weight.reshape(-1)
        c_flat = self._color.reshape(-1, 3)
        local = self._local.astype(np.float32) * self.voxel_mm
        updated = 0
        chunk = max(1, 1_000_000 // B3)
        for s in range(0, len(slots), chunk):
            sl = slots[s:s + chunk]
            origin = keys[s:s + chunk].astype(np.float32) * block_mm  # (nb, 3) world mm of voxel (0,0,0)
            vw = (origin[:, None, :] + local[None]).reshape(-1, 3)
            vc = _rigid(R_cw, t_cw, vw)
            uv, zc = project_points_np(vc, K)
            front = zc > 1e-6
            ui, vi = pixel_index(uv[:, 0]), pixel_index(uv[:, 1])
            inside = front & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
            idx = np.flatnonzero(inside)
            pix = vi[idx] * W + ui[idx]
            dmeas = Dflat[pix]
            wpix = Wflat[pix]
            sdf = (dmeas - zc[idx]) * Sflat[pix]
            tpix = Tflat[pix]
            ok = (wpix > 0) & (sdf >= -tpix)
            if not ok.any():
                continue
            idx, pix, sdf, w_new = idx[ok], pix[ok], sdf[ok], wpix[ok]
            t_new = np.minimum(sdf / tpix[ok], 1.0)
            flat = sl[idx // B3] * B3 + idx % B3
            w_old = w_flat[flat]
            w_sum = w_old + w_new
            tsdf_flat[flat] = (tsdf_flat[flat] * w_old + t_new * w_new) / w_sum
            if rgb_flat is not None:
                c_flat[flat] = (c_flat[flat] * w_old[:, None] + rgb_flat[pix] * w_new[:, None]) / w_sum[:, None]
            w_flat[flat] = np.minimum(w_sum, self.max_weight)
            updated += len(flat)
        self.frames_integrated += 1
        return updated

    # -- dense views ----------------------------------------------------------------------------
    def _dense_region(self, lo_block: np.ndarray, shape_blocks: np.ndarray, with_color: bool = True):
        """Dense tsdf, weight, colour (or None) of blocks ``lo_block + [0, shape_blocks)``."""
        B = self.block_voxels
        s = [int(x) for x in shape_blocks]
        keys = self._keys[: self._n]
        rel = keys - np.asarray(lo_block, dtype=np.int64)
        sel = np.flatnonzero(((rel >= 0) & (rel < np.asarray(s))).all(axis=1))
        rel = rel[sel]
        shape = (s[0] * B, s[1] * B, s[2] * B)
        tsdf = np.ones((*s, B, B, B), dtype=np.float32)
        weight = np.zeros((*s, B, B, B), dtype=np.float32)
        tsdf[rel[:, 0], rel[:, 1], rel[:, 2]] = self._tsdf[sel].reshape(-1, B, B, B)
        weight[rel[:, 0], rel[:, 1], rel[:, 2]] = self._weight[sel].reshape(-1, B, B, B)
        tsdf = tsdf.transpose(0, 3, 1, 4, 2, 5).reshape(shape)
        weight = weight.transpose(0, 3, 1, 4, 2, 5).reshape(shape)
        color = None
        if self.with_color and with_color:
            color = np.zeros((*s, B, B, B, 3), dtype=np.float32)
            color[rel[:, 0], rel[:, 1], rel[:, 2]] = self._color[sel].reshape(-1, B, B, B, 3)
            color = color.transpose(0, 3, 1, 4, 2, 5, 6).reshape(*shape, 3)
        return tsdf, weight, color

    def bounds_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Global voxel index range ``(lo, hi)`` (inclusive lo, exclusive hi) of the allocated blocks."""
        if self._n == 0:
            raise UserError("the TSDF volume is empty: no frame had valid depth in the working range")
        keys = self.block_keys
        return keys.min(axis=0) * self.block_voxels, (keys.max(axis=0) + 1) * self.block_voxels

    def to_dense(self, max_voxels: int = 64 * 1024 ** 2, with_color: bool = True) -> DenseTSDF:
        """The whole volume as a :class:`DenseTSDF` over the allocated blocks' bounding box.

        Memory is 8 bytes per voxel (20 with colour).  Raises :class:`UserError` when the box has more
        than ``max_voxels`` voxels (default 64 Mi, e.g. 400^3).
        """
        lo, hi = self.bounds_index()
        shape = hi - lo
        if int(np.prod(shape)) > max_voxels:
            raise UserError(
                f"dense TSDF of {shape.tolist()} voxels exceeds the cap of {max_voxels}; "
                "use a larger --voxel-mm or fewer frames"
            )
        B = self.block_voxels
        tsdf, weight, color = self._dense_region(lo // B, shape // B, with_color=with_color)
        return DenseTSDF(tsdf=tsdf, weight=weight, color=color, index_origin=lo.astype(np.int64),
                         voxel_mm=self.voxel_mm, trunc_mm=self.trunc_mm)

    def dense_shape(self) -> tuple[np.ndarray, np.ndarray]:
        """``(index_origin, shape)`` (int64 (3,) each) of the dense grid :meth:`to_dense` and
        :meth:`tsdf_mm_slabs` cover: the allocated blocks' bounding box."""
        lo, hi = self.bounds_index()
        return lo.astype(np.int64), (hi - lo).astype(np.int64)

    def dense_affine(self) -> np.ndarray:
        """(4, 4) ``world_from_index`` of the dense grid (as :attr:`DenseTSDF.affine`)."""
        lo, _ = self.dense_shape()
        A = np.eye(4)
        A[:3, :3] *= self.voxel_mm
        A[:3, 3] = self.voxel_mm * lo.astype(np.float64)
        return A

    def tsdf_mm_slabs(self):
        """The dense grid's signed distance in mm (:func:`tsdf_in_mm`) one block layer at a time along the
        third axis: yields ``(X, Y, block_voxels)`` float32 slabs in order, so a writer never holds more than
        one layer (memory ``8 * X * Y * block_voxels`` bytes, not the whole box)."""
        lo, shape = self.dense_shape()
        B = self.block_voxels
        lo_b, nb = lo // B, shape // B
        keys = self._keys[: self._n]
        order = np.argsort(keys[:, 2], kind="stable")
        zs = keys[order, 2]
        for kz in range(int(nb[2])):
            z = lo_b[2] + kz
            sel = order[np.searchsorted(zs, z, "left"):np.searchsorted(zs, z, "right")]
            tsdf = np.ones((int(nb[0]), int(nb[1]), B, B, B), dtype=np.float32)
            weight = np.zeros_like(tsdf)
            rel = keys[sel] - lo_b
            tsdf[rel[:, 0], rel[:, 1]] = self._tsdf[sel].reshape(-1, B, B, B)
            weight[rel[:, 0], rel[:, 1]] = self._weight[sel].reshape(-1, B, B, B)
            shp = (int(shape[0]), int(shape[1]), B)
            yield tsdf_in_mm(tsdf.transpose(0, 2, 1, 3, 4).reshape(shp), weight.transpose(0, 2, 1, 3, 4).reshape(shp),
                             self.trunc_mm)

    # -- extraction -----------------------------------------------------------------------------
    def extract_mesh(self, min_weight: float = 0.0, chunk_voxels: int = 64, progress: bool = False):
        """Marching-cubes surface (level 0) of the observed voxels, world frame, mm.

        Returns a :class:`trimesh.Trimesh` with vertex colours when colours were fused.  Raises
        :class:`UserError` when the volume holds no surface.  A chunk on which marching cubes fails is
        recorded in :attr:`failed_chunks` and reported with one :class:`IncompleteMeshWarning`; the
        mesh of the other chunks is returned (callers check :attr:`failed_chunks` before calling the
        result complete).
        """
        import trimesh
        from skimage.measure import marching_cubes
        from tqdm import tqdm

        if self._n == 0:
            raise UserError("the TSDF volume is empty: no frame had valid depth in the working range")
        B = self.block_voxels
        C = max(1, int(chunk_voxels) // B)  # blocks per chunk edge
        keys = self._keys[: self._n]
        chunks = np.unique(np.floor_divide(keys, C), axis=0)
        all_v, all_f, all_c = [], [], []
        n_v = 0
        self.failed_chunks, self.surface_chunks = [], 0
        n = C * B + 1
        for ck in tqdm(chunks, desc="marching cubes", unit="chunk", disable=not progress, leave=False):
            lo = ck * C
            tsdf, weight, color = self._dense_region(lo, np.full(3, C + 1))
            tsdf, weight = tsdf[:n, :n, :n], weight[:n, :n, :n]
            obs = weight > min_weight
            if not obs.any():
                continue
            around = tsdf[obs]
            if around.min() >= 0 or around.max() <= 0:
                continue
            c = obs[:-1, :-1, :-1].copy()
            cmin, cmax = tsdf[:-1, :-1, :-1].copy(), tsdf[:-1, :-1, :-1].copy()
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        c &= obs[dx:n - 1 + dx, dy:n - 1 + dy, dz:n - 1 + dz]
                        corner = tsdf[dx:n - 1 + dx, dy:n - 1 + dy, dz:n - 1 + dz]
                        np.minimum(cmin, corner, out=cmin)
                        np.maximum(cmax, corner, out=cmax)
            # only cubes with every corner observed, and only chunks where such a cube has a sign change:
            # marching cubes then finds a surface, so any exception it raises is a real failure
            if not (c & (cmin < 0) & (cmax > 0)).any():
                continue
            cube_ok = np.zeros_like(obs)
            # skimage marks the cube spanning [x, x+1] x [y, y+1] x [z, z+1] with mask[x+1, y+1, z+1]
            # (measured with scikit-image 0.26; the fusion tests fail if this ever changes).
            cube_ok[1:, 1:, 1:] = c
            self.surface_chunks += 1
            try:
                verts, faces, _, _ = marching_cubes(tsdf, level=0.0, mask=cube_ok, allow_degenerate=False)
            except (ValueError, RuntimeError, MemoryError) as exc:
                lo_mm = (lo * B - 0.5) * self.voxel_mm
                self.failed_chunks.append({
                    "chunk": [int(x) for x in ck],
                    "world_min_mm": [round(float(x), 3) for x in lo_mm],
                    "world_max_mm": [round(float(x), 3) for x in lo_mm + n * self.voxel_mm],
                    "error": " ".join(f"{type(exc).__name__}: {exc}".split()),
                })
                continue
            if len(faces) == 0:
                continue
            all_v.append((verts + lo * B) * self.voxel_mm)  # global voxel index -> world mm
            all_f.append(faces + n_v)
            n_v += len(verts)
            if color is not None:
                r = np.clip(np.round(verts).astype(np.int64), 0, n - 1)
                all_c.append(color[r[:, 0], r[:, 1], r[:, 2]])
        if self.failed_chunks:
            warnings.warn(self.incomplete_message(), IncompleteMeshWarning, stacklevel=2)
        if not all_f:
            if self.failed_chunks:
                raise UserError(f"no mesh: {self.incomplete_message()}; rerun with another --voxel-mm")
            raise UserError("the TSDF volume holds no surface (no zero crossing); check depth, poses and --voxel-mm")
        verts = np.concatenate(all_v)
        # With gradient_direction="descent" skimage winds faces so that normals point towards
        # increasing values: towards free space (positive TSDF), as documented above and tested.
        faces = np.concatenate(all_f)
        colors = None
        if all_c and len(all_c) == len(all_v):
            colors = np.clip(np.round(np.concatenate(all_c)), 0, 255).astype(np.uint8)
        mesh = trimesh.Trimesh(vertices=verts, faces=faces, vertex_colors=colors, process=False)
        mesh.merge_vertices(digits_vertex=6)
        mesh.remove_unreferenced_vertices()
        return mesh

    def incomplete_message(self) -> str:
        """One line describing the chunks the last :meth:`extract_mesh` could not mesh ('' if none)."""
        f = self.failed_chunks
        if not f:
            return ""
        lo = np.min([c["world_min_mm"] for c in f], axis=0)
        hi = np.max([c["world_max_mm"] for c in f], axis=0)
        box = "[" + ", ".join(f"{a:.0f}..{b:.0f}" for a, b in zip(lo, hi)) + "] mm"
        return (f"marching cubes failed on {len(f)} of {self.surface_chunks} surface chunks "
                f"({f[0]['error']}); the mesh has holes within world box x, y, z {box}")


def _incidence(pts: np.ndarray, valid: np.ndarray, min_cos: float, max_rel_jump: float):
    """Per-pixel distance scale and observation weight from the depth map's own surface normals.

    Parameters
    ----------
    pts : (H, W, 3) camera-frame points (mm); valid : (H, W) bool.

    Returns
    -------
    scale : (H, W) ``|ray| * cos(theta)``, turning a z-depth difference ``D - z`` along a pixel's ray
        into the distance to the surface's tangent plane (``ray = K^-1 [u, v, 1]``; ``theta`` the
        angle between the ray and the surface normal).
    weight : (H, W) ``cos(theta)``; 0 where the pixel is invalid, a 4-neighbour is invalid or lies
        across a relative depth jump above ``max_rel_jump``, or the view is grazing
        (``cos(theta) < min_cos``).
    """
    z = pts[..., 2]
    ok = np.zeros_like(valid)
    inner = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
    zc = z[1:-1, 1:-1]
    for zn in (z[:-2, 1:-1], z[2:, 1:-1], z[1:-1, :-2], z[1:-1, 2:]):
        inner &= np.abs(zn - zc) <= max_rel_jump * zc
    ok[1:-1, 1:-1] = inner
    du = np.zeros_like(pts)
    dv = np.zeros_like(pts)
    du[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dv[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(du, dv)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    ray = pts / np.maximum(z, 1e-6)[..., None]
    ray_len = np.linalg.norm(ray, axis=-1)
    cos = np.abs((n * ray).sum(-1)) / np.maximum(ray_len, 1e-12)
    weight = np.where(ok & (cos >= min_cos), cos, 0.0).astype(np.float32)
    return (ray_len * cos).astype(np.float32), weight


def _rigid(R: np.ndarray, t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``R p + t`` for ``(N, 3)`` points as three broadcast multiply-adds (avoids a BLAS call per frame)."""
    return p[:, 0:1] * R[:, 0] + p[:, 1:2] * R[:, 1] + p[:, 2:3] * R[:, 2] + t


def _grow(a: np.ndarray, cap: int, fill) -> np.ndarray:
    out = np.full((cap, *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def fuse_frames(
    frames,
    intrinsics: PinholeIntrinsics,
    voxel_mm: float = 1.0,
    trunc_mm: Optional[float] = None,
    progress: bool = True,
    **volume_kwargs,
) -> TSDFVolume:
    """Integrate an iterable of ``(depth_mm, world_from_cam, rgb_or_None)`` into a new volume.

    Raises :class:`UserError` when no frame had valid depth.
    """
    from tqdm import tqdm

    vol = TSDFVolume(voxel_mm=voxel_mm, trunc_mm=trunc_mm, **volume_kwargs)
    for depth, pose, rgb in tqdm(frames, desc="TSDF fusion", unit="frame", disable=not progress):
        vol.integrate(depth, intrinsics, pose, rgb=rgb)
    if vol.frames_integrated == 0:
        raise UserError("no frame had valid depth in the working range; nothing to fuse")
    return vol
