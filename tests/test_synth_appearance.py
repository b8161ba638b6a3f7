"""Camera response, masks and textures: analytic values."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.conventions import ImageSize
from colondepth.synth.appearance import (
    camera_response, decode_render, fov_mask, linear_to_srgb8, make_textures, vignetting_map,
)
from colondepth.synth.colon import build_colon
from colondepth.synth.recipe import recipe_from_dict, sample_recipe


def test_response_with_unit_exposure_and_gamma_22_is_identity():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, axis=2)
    out = camera_response(decode_render(x), exposure=1.0, gamma=2.2, gain=None, noise_std=0.0, rng=None)
    assert np.abs(out.astype(int) - x).max() <= 1


def test_exposure_and_gamma_closed_form():
    lin = np.full((2, 2, 3), 0.1, np.float32)
    out = camera_response(lin, exposure=2.0, gamma=1.0, gain=None, noise_std=0.0, rng=None)
    assert (out == 51).all()  # 0.2 * 255
    out = camera_response(lin, exposure=1.0, gamma=2.0, gain=np.full((2, 2), 0.9), noise_std=0.0, rng=None)
    assert (out == round(255 * np.sqrt(0.09))).all()


def test_noise_has_the_requested_std():
    lin = np.full((200, 200, 3), 0.25, np.float32)
    out = camera_response(lin, exposure=1.0, gamma=1.0, gain=None, noise_std=0.02, rng=np.random.default_rng(0))
    assert out.std() / 255 == pytest.approx(0.02, rel=0.05)


def test_vignetting_and_masks():
    v = vignetting_map(ImageSize(5, 7), 0.3)
    assert v[2, 3] == pytest.approx(1.0) and v[0, 0] == pytest.approx(1 - 0.3 * (9 + 4) / (0.25 * 74))
    assert fov_mask(ImageSize(8, 8), "none", 1.0) is None
    circle = fov_mask(ImageSize(64, 64), "circle", 0.6)
    octagon = fov_mask(ImageSize(64, 64), "octagon", 0.6)
    # Radius 0.6 x half-diagonal fits inside the image; a regular octagon covers 0.900 of its circumcircle.
    r = 0.6 * 0.5 * np.hypot(64, 64)
    assert circle.sum() == pytest.approx(np.pi * r * r, rel=0.03)
    assert octagon.sum() / circle.sum() == pytest.approx(2 * np.sqrt(2) / np.pi, rel=0.03)


def test_uniform_albedo_texture_is_uniform_and_srgb_encoded():
    r = sample_recipe(recipe_from_dict({"level": "L1", "appearance": {"albedo_rgb": [0.5, 0.25, 0.1]}}),
                      np.random.default_rng(0))
    g = build_colon(r, np.random.default_rng(0))
    tex = make_textures(r, g, np.random.default_rng(0))
    assert tex.albedo_srgb8.shape[1] % 4 == 0  # rows stay 4-byte aligned for OpenGL
    assert (tex.albedo_srgb8 == linear_to_srgb8(np.array([0.5, 0.25, 0.1]))).all()
    assert np.allclose(tex.roughness, r.appearance.roughness)


def test_vessels_darken_part_of_the_wall():
    r = sample_recipe(recipe_from_dict({"level": "L3", "appearance": {"vessel_contrast": 0.6}}),
                      np.random.default_rng(0))
    g = build_colon(r, np.random.default_rng(0))
    tex = make_textures(r, g, np.random.default_rng(0)).albedo_srgb8.astype(float)
    base = linear_to_srgb8(np.asarray(r.appearance.albedo_rgb))
    dark = (tex[..., 1] < base[1] - 20).mean()
    assert 0.02 < dark < 0.4
