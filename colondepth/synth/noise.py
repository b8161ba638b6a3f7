"""Seeded smooth random processes shared by the geometry, appearance and trajectory code."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d


def smooth_noise_1d(rng: np.random.Generator, n: int, sigma_samples: float) -> np.ndarray:
    """``(n,) float64`` stationary Gaussian noise with unit standard deviation.

    White noise filtered by a Gaussian of ``sigma_samples`` samples (its correlation length) and
    rescaled by the filter's theoretical gain, so the std is 1 in expectation for any ``n``.

    >>> x = smooth_noise_1d(np.random.default_rng(0), 20000, 5.0)
    >>> bool(abs(x.std() - 1.0) < 0.1)
    True
    """
    sigma = max(float(sigma_samples), 1e-6)
    pad = int(math.ceil(4 * sigma)) + 1
    white = rng.standard_normal(n + 2 * pad)
    if sigma < 0.3:
        return white[pad:pad + n]
    smooth = gaussian_filter1d(white, sigma, mode="wrap")[pad:pad + n]
    gain = 1.0 / math.sqrt(2.0 * math.sqrt(math.pi) * sigma)
    return smooth / gain


def smooth_noise_2d(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float],
                    wrap_axis0: bool = True) -> np.ndarray:
    """``shape`` float64 Gaussian-filtered noise with unit std; axis 0 wraps around (the tube angle).

    ``sigma`` is the filter width in samples along (axis 0, axis 1).
    """
    white = rng.standard_normal(shape)
    modes = ("wrap" if wrap_axis0 else "reflect", "reflect")
    smooth = gaussian_filter(white, sigma=sigma, mode=modes)
    s0, s1 = (max(float(s), 1e-6) for s in sigma)
    gain = 1.0 / math.sqrt(4.0 * math.pi * s0 * s1)
    return smooth / gain


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles wrapped into ``[-pi, pi)``."""
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi
