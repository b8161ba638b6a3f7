"""Reference depth estimators that any learned model must beat.

Physics baseline (inverse-square light at the lens)
    In colonoscopy the only light source sits next to the lens.  A Lambertian surface point at
    range ``r`` with albedo ``a`` and incidence angle ``θ`` appears with linear intensity
    ``I = k · a · cos θ / r²``.  Assuming constant albedo and ``cos θ = 1`` gives
    ``r = sqrt(k a) / sqrt(I)``: range is proportional to ``1 / sqrt(I)``.  The estimate is
    therefore known only up to one scale factor per frame, so it is scored with per-frame median
    alignment (``colondepth evaluate`` always does so and says so in its table).  Steps:

    1. pixel values -> linear intensity with a display gamma (``I_lin = (v / 255) ** gamma``;
       pyrender writes ``I_lin ** (1 / 2.2)``, and video cameras apply a similar curve);
    2. Rec. 709 luminance of the linear RGB;
    3. a small Gaussian blur (sigma in pixels) against noise and texture;
    4. clip dark pixels at ``min_luminance`` (they would otherwise get an unbounded depth);
    5. ``range ∝ 1 / sqrt(luminance)``; with intrinsics, range is converted to z-depth along the
       ray of each pixel: ``z = range / sqrt(1 + ((u - cx) / fx)² + ((v - cy) / fy)²)``
       (:func:`colondepth.geometry.camera.range_to_z_depth`).

Constant baseline
    Every pixel gets the same depth: the median ground-truth depth of the *training* set
    (:func:`dataset_median_depth_mm`) for metric evaluation; with median alignment any constant
    gives the same numbers (the per-frame median of the ground truth).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import Intrinsics
from colondepth.geometry.camera import range_to_z_depth  # the geometry layer owns it; still importable from here

#: Rec. 709 / sRGB luminance weights of linear R, G, B.
REC709_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])

#: Default display gamma undone before the luminance is taken (pyrender encodes with 1/2.2).
DEFAULT_GAMMA = 2.2

#: Default floor of the linear luminance (in [0, 1]); 1e-3 is a pixel value of about 11/255.
DEFAULT_MIN_LUMINANCE = 1e-3

#: Default Gaussian blur of the luminance, pixels.
DEFAULT_SMOOTH_SIGMA_PX = 1.0


def linear_luminance(rgb: np.ndarray, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Linear Rec. 709 luminance of an RGB image.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 or float
        uint8 in [0, 255], or float already scaled to [0, 1]; gamma-encoded.
    gamma : float
        Decoding exponent: linear = encoded ** gamma (1.0 if the image is already linear).

    Returns
    -------
    (H, W) float64 in [0, 1].

    >>> float(linear_luminance(np.full((1, 1, 3), 255, np.uint8))[0, 0])
    1.0
    """
    img = np.asarray(rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got shape {img.shape}")
    if img.dtype == np.uint8:
        encoded = img.astype(np.float64) / 255.0
    else:
        encoded = np.clip(img.astype(np.float64), 0.0, 1.0)
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    return (encoded**gamma) @ REC709_WEIGHTS


def physics_depth_mm(
    rgb: np.ndarray,
    intrinsics: Optional[Intrinsics] = None,
    *,
    gamma: float = DEFAULT_GAMMA,
    min_luminance: float = DEFAULT_MIN_LUMINANCE,
    smooth_sigma_px: float = DEFAULT_SMOOTH_SIGMA_PX,
    scale: float = 1.0,
) -> np.ndarray:
    """Inverse-square-light depth: ``range = scale / sqrt(luminance)``, as z-depth if intrinsics are given.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 or float in [0, 1]
        Gamma-encoded RGB frame.
    intrinsics : PinholeIntrinsics or FisheyeIntrinsics, optional
        When given, the range along each ray is converted to z-depth (the convention of
        ``depth_mm``).  Without it the result is range (ray length).
    gamma, min_luminance, smooth_sigma_px : float
        See the module docstring; ``smooth_sigma_px = 0`` disables the blur.
    scale : float
        ``sqrt(k · albedo)`` in mm; unknown in practice, hence median alignment.

    Returns
    -------
    (H, W) float32, positive; millimetres only if ``scale`` is calibrated.
    """
    if min_luminance <= 0:
        raise ValueError(f"min_luminance must be positive, got {min_luminance}")
    lum = linear_luminance(rgb, gamma)
    if smooth_sigma_px > 0:
        from scipy.ndimage import gaussian_filter

        lum = gaussian_filter(lum, sigma=float(smooth_sigma_px), mode="nearest")
    range_est = float(scale) / np.sqrt(np.maximum(lum, float(min_luminance)))
    if intrinsics is not None:
        range_est = range_to_z_depth(range_est, intrinsics)
    return range_est.astype(np.float32)


def constant_depth_mm(size: ImageSize, value_mm: float) -> np.ndarray:
    """A ``(H, W) float32`` map filled with ``value_mm`` (> 0).

    >>> constant_depth_mm(ImageSize(1, 2), 30.0).tolist()
    [[30.0, 30.0]]
    """
    if not np.isfinite(value_mm) or value_mm <= 0:
        raise ValueError(f"constant depth must be positive, got {value_mm} mm")
    return np.full(size.as_hw(), float(value_mm), dtype=np.float32)


def dataset_median_depth_mm(
    depth_maps: Iterable[np.ndarray],
    *,
    min_mm: Optional[float] = None,
    max_mm: Optional[float] = None,
    max_values_per_frame: int = 20000,
) -> float:
    """Median ground-truth depth over many frames (valid pixels only), mm.

    Parameters
    ----------
    depth_maps : iterable of (H, W) float
        Ground-truth z-depth maps in mm, 0 = invalid (e.g. every frame of the training set).
    min_mm, max_mm : float, optional
        Range of depths that count, as in :func:`colondepth.eval.depth_metrics.valid_depth_mask`.
    max_values_per_frame : int
        Valid pixels of a frame are subsampled with an even stride to at most this many, so
        memory stays bounded on large sets (the median of a strided sample).

    >>> dataset_median_depth_mm([np.array([[0.0, 10.0, 20.0]]), np.array([[30.0, 40.0]])])
    25.0
    """
    from colondepth.eval.depth_metrics import valid_depth_mask

    chunks = []
    for depth in depth_maps:
        d = np.asarray(depth)
        values = d[valid_depth_mask(d, min_mm=min_mm, max_mm=max_mm)]
        if values.size > max_values_per_frame:
            stride = int(np.ceil(values.size / max_values_per_frame))
            values = values[::stride]
        chunks.append(values.astype(np.float32))
    if not chunks or sum(c.size for c in chunks) == 0:
        raise ValueError("no valid ground-truth depth to take a median of")
    return float(np.median(np.concatenate(chunks)))
