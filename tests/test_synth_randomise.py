"""The recipe's randomisation block, the roughness-texture packing, render headroom and light guides."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.conventions import ImageSize
from colondepth.geometry.camera import PinholeIntrinsics
from colondepth.synth.recipe import recipe_from_dict, sample_recipe
from colondepth.synth.render import Light, Material, SceneRenderer
from tests.test_synth_render import _plane_mesh


def _plane_render(material=None, light=None, size=ImageSize(9, 9), dist=30.0, uv=False):
    K = PinholeIntrinsics.from_fov(size, 20.0)
    v, f = _plane_mesh([0, 0, 1], [0, 0, dist], half=50.0)
    with SceneRenderer(K, znear_mm=1.0, zfar_mm=500.0) as r:
        r.set_mesh(v, f, normals=np.tile([0.0, 0.0, -1.0], (4, 1)),
                   uv=np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float) if uv else None,
                   material=material or Material(base_color=(0.6, 0.6, 0.6), roughness=1.0))
        r.set_light(light or Light(kind="point", intensity=1200.0))
        rgb, depth = r.render(np.eye(4))
    return rgb, depth


def test_roughness_texture_renders_like_the_same_uniform_roughness():
    """A roughness map of constant 0.9 (metallic 0) must render like roughness 0.9 without a map:
    pyrender reads roughness from R and metallic from G, and the packing must follow it."""
    albedo = np.full((4, 4, 3), 150, np.uint8)
    uniform, _ = _plane_render(Material(albedo_srgb8=albedo, roughness=0.9, metallic=0.0), uv=True)
    mapped, _ = _plane_render(Material(albedo_srgb8=albedo, roughness=0.9, metallic=0.0,
                                       roughness_map=np.full((4, 4), 0.9)), uv=True)
    assert np.abs(uniform.astype(int) - mapped.astype(int)).max() <= 2
    glossy, _ = _plane_render(Material(albedo_srgb8=albedo, roughness=0.9, metallic=0.0,
                                       roughness_map=np.full((4, 4), 0.1)), uv=True)
    assert np.abs(glossy.astype(int) - uniform.astype(int)).max() > 10  # the map is used


def test_headroom_keeps_highlights_saturated_after_vignetting():
    """Radiance 2x over the sensor's range stays white at a vignetted pixel (no grey plateau)."""
    from colondepth.synth.appearance import camera_response, decode_render

    bright = np.full((3, 3, 3), 255, np.uint8)  # a render at intensity / 4 that is saturated ...
    half = np.full((3, 3, 3), round(255 * 0.5 ** (1 / 2.2)), np.uint8)  # ... and one at 0.5 -> radiance 2.0
    gain = np.full((3, 3), 0.7, np.float32)
    out = camera_response(decode_render(half, 4.0), exposure=1.0, gamma=2.2, gain=gain, noise_std=0, rng=None)
    assert out.min() == 255  # 2.0 * 0.7 = 1.4 > 1: saturated
    out1 = camera_response(decode_render(half, 1.0), exposure=1.0, gamma=2.2, gain=gain, noise_std=0, rng=None)
    assert out1.max() == round(255 * 0.35 ** (1 / 2.2))  # without headroom the same pixel is 0.5 * 0.7
    assert decode_render(bright, 4.0).max() == pytest.approx(4.0)


def test_two_offset_light_guides_light_a_plane_like_one_at_the_lens_far_away():
    size = ImageSize(9, 9)
    one, _ = _plane_render(light=Light(kind="point", intensity=1200.0), dist=60.0, size=size)
    two, _ = _plane_render(light=Light(kind="point", intensity=1200.0,
                                       offsets_mm=((3.0, 0.0, 0.0), (-3.0, 0.0, 0.0))), dist=60.0, size=size)
    # (60^2 / (60^2 + 3^2)) -> 0.25 % dimmer at the centre: equal to within 8-bit rounding
    assert abs(int(one[4, 4, 1]) - int(two[4, 4, 1])) <= 2
    # near the plane a single light guide to the right lights the right half more
    side, _ = _plane_render(light=Light(kind="point", intensity=400.0, offsets_mm=((5.0, 0.0, 0.0),)), dist=8.0)
    assert side[4, 7].mean() > side[4, 1].mean() + 5


def _random_recipe(enabled=True):
    return recipe_from_dict({"level": "L3", "randomisation": {"enabled": enabled}})


def test_randomisation_off_leaves_the_sampled_recipe_unchanged():
    from colondepth.synth.randomise import SequenceLook, apply_randomisation

    p = sample_recipe(_random_recipe(False), np.random.default_rng(0))
    q, look = apply_randomisation(p, np.random.default_rng(1))
    assert q == p
    neutral = SequenceLook()
    assert np.array_equal(look.light_offsets_mm, np.zeros((1, 3))) and np.array_equal(look.white_balance, np.ones(3))
    assert (look.auto_gain, look.exposure_jitter, look.blur_sigma_px, look.jpeg_quality) == (
        neutral.auto_gain, neutral.exposure_jitter, neutral.blur_sigma_px, 100)


def test_randomisation_on_replaces_camera_light_and_appearance_within_ranges():
    from colondepth.synth.randomise import apply_randomisation

    fovs, guides, offsets = [], [], []
    for seed in range(12):
        p = sample_recipe(_random_recipe(), np.random.default_rng(seed))
        q, look = apply_randomisation(p, np.random.default_rng(100 + seed))
        fovs.append(q.camera.fov_deg)
        guides.append(len(look.light_offsets_mm))
        offsets.append(np.linalg.norm(look.light_offsets_mm[:, :2], axis=1))
        assert q.light.kind == "spot" and 20.0 <= q.light.spot_angle_deg <= 89.0
        assert 1.8 <= q.light.gamma <= 2.6
        assert q.camera.fov_mask in ("none", "circle", "octagon")
        assert look.white_balance[1] == pytest.approx(1.0)
        assert 0.4 <= q.trajectory.safe_radius_fraction <= 0.85
    assert 80.0 <= min(fovs) and max(fovs) <= 150.0 and max(fovs) - min(fovs) > 20.0
    assert set(guides) == {1, 2}
    flat = np.concatenate(offsets)
    assert flat.min() >= 0.8 * 1.0 - 1e-9 and flat.max() <= 1.2 * 5.0 + 1e-9


def test_auto_exposure_and_frame_exposures():
    from colondepth.synth.randomise import SequenceLook, auto_exposure, frame_exposures

    lin = np.full((4, 4, 3), 0.05, np.float32)
    look = SequenceLook(auto_gain=0.5, auto_gain_target=0.2)
    # exposure ** 0.5 * (0.2 / 0.05) ** 0.5 = 1 * 2
    assert auto_exposure(lin, 1.0, look, None, None) == pytest.approx(2.0, rel=1e-5)
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    lin[2:] = 10.0  # outside the mask: ignored
    assert auto_exposure(lin, 1.0, look, mask, None) == pytest.approx(2.0, rel=1e-5)
    e = frame_exposures(1.0, SequenceLook(exposure_jitter=0.2), 400, 10.0, np.random.default_rng(0))
    assert e.shape == (400,) and 0.1 < np.log(e).std() < 0.3


def test_randomised_sequences_are_deterministic_and_record_their_look(tmp_path):
    import yaml

    from colondepth.synth.generate import generate_dataset

    a = generate_dataset("synth/L1_straight.yaml", tmp_path / "a", sequences=1, frames=2, size=(32, 32),
                         seed=3, progress=False, video=False, randomise=True)
    b = generate_dataset("synth/L1_straight.yaml", tmp_path / "b", sequences=1, frames=2, size=(32, 32),
                         seed=3, progress=False, video=False, randomise=True)
    for name in ("rgb/000001.png", "depth/000001.png"):
        assert (a / "seq_00000" / name).read_bytes() == (b / "seq_00000" / name).read_bytes()
    meta = yaml.safe_load((a / "seq_00000" / "meta.yaml").read_text())
    assert meta["params"]["randomisation"]["enabled"] is True
    assert 1 <= len(meta["look"]["light_offsets_mm"]) <= 2
    from colondepth.datasets.synthetic import open_sequence

    assert open_sequence(a / "seq_00000").rgb(1).shape == (32, 32, 3)
