"""Per-sequence and per-frame randomisation of what differs between real endoscopes and cases.

A recipe's ``randomisation`` block (:class:`colondepth.synth.recipe.RandomisationRecipe`) is sampled
per sequence with the rest of the recipe (:func:`colondepth.synth.recipe.sample_recipe`); this module
turns the sampled values into the level's camera, light and appearance (:func:`apply_randomisation`)
and draws the few values that are not plain ranges (light-guide positions, white balance, albedo
change, mask kind) from the sequence's own random stream.  Per-frame values (exposure changes,
auto-gain) are drawn by :func:`frame_exposures`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from colondepth.synth.noise import smooth_noise_1d
from colondepth.synth.recipe import Recipe


@dataclass
class SequenceLook:
    """The drawn per-sequence look of one sequence (all neutral when randomisation is off).

    ``light_offsets_mm (n, 3)`` light-guide positions in the OpenCV camera frame (mm, z = 0: in the
    tip's plane); ``white_balance (3,)`` per-channel linear gains; ``spot_softness`` inner / outer
    cone angle; ``auto_gain``, ``auto_gain_target``, ``exposure_jitter``, ``blur_sigma_px``,
    ``jpeg_quality`` as in the recipe.
    """

    light_offsets_mm: np.ndarray = field(default_factory=lambda: np.zeros((1, 3)))
    white_balance: np.ndarray = field(default_factory=lambda: np.ones(3))
    spot_softness: float = 0.5
    auto_gain: float = 0.0
    auto_gain_target: float = 0.3
    exposure_jitter: float = 0.0
    blur_sigma_px: float = 0.0
    jpeg_quality: int = 100

    def to_dict(self) -> dict:
        """Plain numbers for meta.yaml."""
        return {
            "light_offsets_mm": np.round(self.light_offsets_mm, 4).tolist(),
            "white_balance": np.round(self.white_balance, 5).tolist(),
            "spot_softness": float(self.spot_softness),
            "auto_gain": float(self.auto_gain),
            "auto_gain_target": float(self.auto_gain_target),
            "exposure_jitter": float(self.exposure_jitter),
            "blur_sigma_px": float(self.blur_sigma_px),
            "jpeg_quality": int(self.jpeg_quality),
        }


def apply_randomisation(params: Recipe, rng: np.random.Generator) -> tuple[Recipe, SequenceLook]:
    """Replace a *sampled* recipe's camera/light/appearance values by its randomisation block.

    Parameters
    ----------
    params : Recipe
        Output of :func:`sample_recipe` (every range already one number).
    rng : numpy Generator
        The sequence's randomisation stream; not drawn from when the block is off, so a level
        without the block renders exactly as before.

    Returns
    -------
    (params, look): the updated recipe and the drawn :class:`SequenceLook`.
    """
    r = params.randomisation
    if not r.enabled:
        return params, SequenceLook()
    n = int(r.light_guides)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    angles = phase + np.arange(n) * (2.0 * math.pi / n) + rng.uniform(-0.4, 0.4, size=n)
    radius = float(r.light_offset_mm) * rng.uniform(0.8, 1.2, size=n)
    offsets = np.stack([radius * np.cos(angles), radius * np.sin(angles), np.zeros(n)], axis=1)
    wb = np.exp(float(r.white_balance) * rng.standard_normal(3))
    wb /= wb[1]  # the green channel keeps its gain; the exposure carries the overall level
    albedo = np.clip(np.asarray(params.appearance.albedo_rgb) * np.exp(float(r.albedo_jitter) * rng.standard_normal(3)),
                     0.02, 1.0)
    mask = r.fov_masks[int(rng.integers(0, len(r.fov_masks)))]
    # the light guides are made to light the whole view: cone relative to the diagonal half field of view
    h, w = params.camera.height, params.camera.width
    half_diag = math.atan(math.hypot(w, h) / w * math.tan(math.radians(float(r.fov_deg)) / 2.0))
    spot_deg = float(np.clip(math.degrees(half_diag) * float(r.spot_coverage), 20.0, 89.0))
    look = SequenceLook(
        light_offsets_mm=offsets, white_balance=wb, spot_softness=float(r.spot_softness),
        auto_gain=float(r.auto_gain), auto_gain_target=float(r.auto_gain_target),
        exposure_jitter=float(r.exposure_jitter), blur_sigma_px=float(r.blur_sigma_px),
        jpeg_quality=int(r.jpeg_quality),
    )
    upd = params.model_copy(update={
        "camera": params.camera.model_copy(update={
            "fov_deg": float(r.fov_deg), "fov_mask": mask, "fov_mask_radius": float(r.fov_mask_radius)}),
        "light": params.light.model_copy(update={
            "kind": "spot", "spot_angle_deg": spot_deg, "gamma": float(r.gamma),
            "intensity": float(params.light.intensity) * float(r.intensity_scale),
            "noise_std": float(r.noise_std)}),
        "appearance": params.appearance.model_copy(update={
            "albedo_rgb": tuple(float(c) for c in albedo), "roughness": float(r.roughness),
            "vessel_contrast": float(r.vessel_contrast)}),
        "trajectory": params.trajectory.model_copy(update={
            "safe_radius_fraction": float(r.safe_radius_fraction), "lateral": float(r.lateral),
            "wall_look_fraction": float(r.wall_look_fraction), "wall_look_deg": float(r.wall_look_deg),
            "speed_mm_per_frame": float(r.speed_mm_per_frame)}),
    })
    return upd, look


def frame_exposures(base_exposure: float, look: SequenceLook, frames: int, corr_frames: float,
                    rng: np.random.Generator) -> np.ndarray:
    """``(frames,)`` per-frame exposure before auto-gain: ``base * exp(jitter * smooth noise)``.

    >>> frame_exposures(1.5, SequenceLook(), 3, 10.0, np.random.default_rng(0)).tolist()
    [1.5, 1.5, 1.5]
    """
    if look.exposure_jitter <= 0:
        return np.full(int(frames), float(base_exposure))
    return float(base_exposure) * np.exp(look.exposure_jitter * smooth_noise_1d(rng, int(frames), corr_frames))


def auto_exposure(linear: np.ndarray, exposure: float, look: SequenceLook, mask: np.ndarray | None,
                  gain: np.ndarray | None) -> float:
    """Exposure after the camera's auto-gain: ``exposure ** (1 - a) * (target / mean) ** a``.

    ``linear (H, W, 3)`` is the rendered linear radiance, ``mean`` its mean luminance inside the
    field-of-view ``mask`` after the vignetting ``gain``; ``a = look.auto_gain`` (0 leaves ``exposure``).

    >>> lin = np.full((4, 4, 3), 0.1, np.float32)
    >>> round(auto_exposure(lin, 1.0, SequenceLook(auto_gain=1.0, auto_gain_target=0.3), None, None), 4)
    3.0
    """
    a = float(look.auto_gain)
    if a <= 0:
        return float(exposure)
    lum = linear @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    if gain is not None:
        lum = lum * gain
    m = float(lum[mask].mean()) if mask is not None and mask.any() else float(lum.mean())
    auto = float(look.auto_gain_target) / max(m, 1e-4)
    return float(exposure) ** (1.0 - a) * auto ** a
