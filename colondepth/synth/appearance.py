"""Procedural mucosa appearance and the camera response applied after rendering.

Textures live in the tube's ``(theta, s)`` parameter space: row ``i`` of a texture is the angle
``v = theta / 2 pi = (i + 0.5) / rows``, column ``k`` the arc length ``u`` (see
:attr:`colondepth.synth.colon.ColonGeometry.uv_s_range`).  Colours are linear RGB in ``[0, 1]``
until :func:`linear_to_srgb8` encodes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from colondepth.conventions import ImageSize
from colondepth.synth.colon import ColonGeometry
from colondepth.synth.noise import smooth_noise_2d, wrap_angle
from colondepth.synth.recipe import Recipe


@dataclass
class SurfaceTextures:
    """``albedo_srgb8 (rows, cols, 3) uint8`` sRGB-encoded albedo and ``roughness (rows, cols)`` in [0, 1]."""

    albedo_srgb8: np.ndarray
    roughness: np.ndarray


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] -> uint8 sRGB (the exact piecewise sRGB curve).

    >>> linear_to_srgb8(np.array([0.0, 0.0031308, 0.5, 1.0])).tolist()  # 0.5 -> 187.5
    [0, 10, 188, 255]
    """
    x = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return np.round(srgb * 255.0).astype(np.uint8)


def make_textures(recipe: Recipe, geom: ColonGeometry, rng: np.random.Generator) -> SurfaceTextures:
    """Albedo and roughness textures for one sampled recipe and its geometry.

    Layers: base albedo with slow multiplicative colour variation, a two-scale vessel network
    (zero-crossings of band-limited noise, which form connected curvy lines), brownish debris
    spots at the debris lumps and the fluid colour where the wall is a fluid level.
    """
    app = recipe.appearance
    px = float(app.texture_px_per_mm)
    s0, s1 = geom.uv_s_range
    R0 = float(recipe.lumen.radius_mm)
    # Multiples of 4 keep every texture row 4-byte aligned for OpenGL's default unpack alignment.
    cols = 4 * max(4, int(math.ceil((s1 - s0) * px / 4.0)))
    rows = 4 * max(4, int(math.ceil(2.0 * math.pi * R0 * px / 4.0)))
    mm_per_row = 2.0 * math.pi * R0 / rows
    mm_per_col = (s1 - s0) / cols

    albedo = np.ones((rows, cols, 3)) * np.asarray(app.albedo_rgb, dtype=np.float64)
    cs = float(app.color_scale_mm)
    var = float(app.color_variation)
    lum = smooth_noise_2d(rng, (rows, cols), (cs / mm_per_row, cs / mm_per_col))
    hue = smooth_noise_2d(rng, (rows, cols), (cs / mm_per_row, cs / mm_per_col))
    albedo *= np.exp(var * np.clip(lum, -3, 3))[..., None]
    albedo[..., 1] *= np.exp(0.5 * var * np.clip(hue, -3, 3))
    albedo[..., 2] *= np.exp(0.3 * var * np.clip(hue, -3, 3))

    contrast = float(app.vessel_contrast)
    if contrast > 0:
        vs = float(app.vessel_scale_mm)
        width = float(app.vessel_width)
        vessels = np.zeros((rows, cols))
        for scale, weight in ((1.0, 1.0), (0.4, 0.6)):
            sig = (vs * scale / 2.0 / mm_per_row, vs * scale / 2.0 / mm_per_col)
            n = smooth_noise_2d(rng, (rows, cols), sig)
            mask = smooth_noise_2d(rng, (rows, cols), (3 * sig[0], 3 * sig[1])) > -0.3
            vessels = np.maximum(vessels, weight * np.exp(-0.5 * (n / width) ** 2) * mask)
        vcol = np.asarray(app.vessel_rgb, dtype=np.float64)
        a = (contrast * vessels)[..., None]
        albedo = albedo * (1 - a) + vcol * a

    # Parameter-space coordinates of every texel.
    tex_s = s0 + (np.arange(cols) + 0.5) * mm_per_col
    tex_th = (np.arange(rows) + 0.5) / rows * 2.0 * math.pi
    if geom.debris:
        dcol = np.asarray(app.debris_rgb, dtype=np.float64)
        for sd, td, rad in geom.debris:
            ds = tex_s[None, :] - sd
            dth = wrap_angle(tex_th[:, None] - td) * R0
            blob = np.exp(-0.5 * ((ds ** 2 + dth ** 2) / (rad * 1.1) ** 2) ** 1.5)
            albedo = albedo * (1 - blob[..., None]) + dcol * blob[..., None]

    roughness = np.full((rows, cols), float(app.roughness))
    if geom.fluid_mask.any():
        # Ring/column grid of the mesh -> texel grid.
        ring_u = np.interp(tex_s, geom.ring_s_mm, np.arange(len(geom.ring_s_mm)))
        m = geom.fluid_mask.shape[1]
        ring_v = tex_th / (2.0 * math.pi) * m
        fm = np.concatenate([geom.fluid_mask, geom.fluid_mask[:, :1]], axis=1)
        uu, vv = np.meshgrid(ring_u, ring_v)
        wet = map_coordinates(fm, [uu, vv], order=1, mode="nearest")
        fcol = np.asarray(recipe.fluid.color_rgb, dtype=np.float64)
        albedo = albedo * (1 - wet[..., None]) + fcol * wet[..., None]
        roughness = roughness * (1 - wet) + float(recipe.fluid.roughness) * wet
    return SurfaceTextures(albedo_srgb8=linear_to_srgb8(albedo), roughness=np.clip(roughness, 0.0, 1.0))


# ----------------------------------------------------------------------------------------------
# camera response
# ----------------------------------------------------------------------------------------------
def fov_mask(size: ImageSize, kind: str, radius: float) -> np.ndarray | None:
    """``(H, W) bool`` True inside the endoscope's field of view, or None for ``kind == 'none'``.

    ``radius`` is relative to half the image diagonal, measured from the image centre.

    >>> m = fov_mask(ImageSize(8, 8), "circle", 0.7)
    >>> bool(m[4, 4]), bool(m[0, 0])
    (True, False)
    """
    if kind == "none":
        return None
    h, w = size.as_hw()
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    half_diag = 0.5 * math.hypot(w, h)
    dx = np.abs(x - (w - 1) / 2.0) / half_diag
    dy = np.abs(y - (h - 1) / 2.0) / half_diag
    if kind == "circle":
        return np.hypot(dx, dy) <= radius
    if kind == "octagon":
        apothem = radius * math.cos(math.pi / 8.0)
        return np.maximum(np.maximum(dx, dy), (dx + dy) / math.sqrt(2.0)) <= apothem
    raise ValueError(f"unknown fov mask kind {kind!r}")


def vignetting_map(size: ImageSize, strength: float) -> np.ndarray:
    """``(H, W) float64`` gain ``1 - strength * rho^2`` with rho the distance to the centre / half-diagonal."""
    h, w = size.as_hw()
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rho2 = ((x - (w - 1) / 2.0) ** 2 + (y - (h - 1) / 2.0) ** 2) / (0.25 * (w * w + h * h))
    return 1.0 - float(strength) * rho2


#: pyrender's display encoding of a lit render, undone: uint8 -> linear radiance.
_DECODE_22 = np.power(np.arange(256, dtype=np.float64) / 255.0, 2.2).astype(np.float32)


def decode_render(rendered: np.ndarray, headroom: float = 1.0) -> np.ndarray:
    """``(H, W, 3) uint8`` lit render (pyrender encodes with gamma 2.2) -> linear ``float32``.

    A render made at ``intensity / headroom`` is scaled back by ``headroom``, so radiance up to
    ``headroom`` survives pyrender's clip to [0, 1] until the camera applies exposure and vignetting.
    """
    lin = _DECODE_22[rendered]
    return lin * np.float32(headroom) if headroom != 1.0 else lin


def camera_response(linear: np.ndarray, *, exposure: float, gamma: float, gain: np.ndarray | None,
                    noise_std: float, rng: np.random.Generator | None, white_balance: np.ndarray | None = None,
                    blur_sigma_px: float = 0.0, jpeg_quality: int = 100) -> np.ndarray:
    """The camera after the optics: linear radiance -> ``(H, W, 3) uint8``.

    ``linear`` is ``(H, W, 3)`` float32 linear radiance that may exceed 1 (renders keep
    ``light.headroom``; see :func:`decode_render`); ``gain`` an optional ``(H, W)`` vignetting map;
    ``white_balance`` optional ``(3,)`` per-channel gains; ``noise_std`` is in output intensity units.
    In order: exposure, vignetting and white balance in linear light, a Gaussian defocus blur of
    ``blur_sigma_px``, the sensor clip to [0, 1], the gamma curve, noise, 8-bit quantisation and, when
    ``jpeg_quality < 100``, a JPEG round trip as a stand-in for video compression:
    ``round(255 * clip(clip(exposure * gain * wb * linear) ** (1 / gamma) + noise))``.
    Clipping after the gains keeps highlights saturated (never grey plateaus).
    """
    lin = linear * np.float32(exposure)
    if gain is not None:
        lin *= gain[..., None].astype(np.float32)
    if white_balance is not None:
        lin *= np.asarray(white_balance, dtype=np.float32)
    if blur_sigma_px > 0.05:
        import cv2

        lin = cv2.GaussianBlur(lin, (0, 0), float(blur_sigma_px))
    np.clip(lin, 0.0, 1.0, out=lin)
    out = np.power(lin, np.float32(1.0 / float(gamma)))
    if noise_std > 0 and rng is not None:
        out += np.float32(noise_std) * rng.standard_normal(out.shape, dtype=np.float32)
    out *= 255.0
    np.clip(out, 0.0, 255.0, out=out)
    out8 = np.rint(out).astype(np.uint8)
    if jpeg_quality < 100:
        import cv2

        ok, buf = cv2.imencode(".jpg", out8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if ok:
            out8 = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out8
