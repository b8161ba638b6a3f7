"""Recipes: every shipped level validates; bad values fail with the key path; ranges are sampled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from colondepth.errors import UserError
from colondepth.synth.recipe import load_recipe, recipe_from_dict, sample_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "synth").glob("*.yaml"))


def test_at_least_five_levels_in_order():
    levels = [load_recipe(p).level for p in RECIPES]
    assert levels == [f"L{i}" for i in range(1, len(RECIPES) + 1)]
    assert len(levels) >= 5


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_validates_and_samples(path):
    r = load_recipe(path)
    s = sample_recipe(r, np.random.default_rng(0))
    assert 100 <= s.camera.fov_deg <= 140
    assert isinstance(s.lumen.radius_mm, float)


@pytest.mark.parametrize(
    "data, key",
    [
        ({"level": "L1", "folds": {"depth": 2.0}}, "folds.depth"),
        ({"level": "L1", "folds": {"depht": 0.2}}, "folds.depht"),
        ({"level": "L1", "lumen": {"radius_mm": [20, 10]}}, "lumen.radius_mm"),
        ({"level": "L1", "camera": {"fov_mask": "square"}}, "camera.fov_mask"),
        ({"level": "X1"}, "level"),
        ({"level": "L1", "camera": {"zfar_mm": 1000, "depth_scale_mm": 0.01}}, "camera"),
    ],
)
def test_bad_recipe_names_key_path(tmp_path, data, key):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: invalid recipe at {key}")
    assert "\n" not in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("level: [L1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(p)


def test_ranges_are_sampled_deterministically_and_in_bounds():
    r = recipe_from_dict({"level": "L2", "lumen": {"radius_mm": [10, 20]}, "bumps": {"polyps": [1, 3]}})
    a = [sample_recipe(r, np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    draws = [sample_recipe(r, np.random.default_rng(i)) for i in range(200)]
    radii = np.array([d.lumen.radius_mm for d in draws])
    polyps = {d.bumps.polyps for d in draws}
    assert radii.min() >= 10 and radii.max() <= 20 and radii.std() > 2
    assert polyps == {1, 2, 3}


def test_adding_a_range_does_not_shift_other_draws():
    base = recipe_from_dict({"level": "L2", "lumen": {"radius_mm": [10, 20]}, "folds": {"depth": 0.3}})
    more = recipe_from_dict({"level": "L2", "lumen": {"radius_mm": [10, 20]}, "folds": {"depth": [0.2, 0.4]}})
    a = sample_recipe(base, np.random.default_rng(3))
    b = sample_recipe(more, np.random.default_rng(3))
    assert a.lumen.radius_mm == b.lumen.radius_mm
    assert a.trajectory == b.trajectory


def test_with_size():
    r = recipe_from_dict({"level": "L1"}).with_size(48, 64)
    assert (r.camera.height, r.camera.width) == (48, 64)


def test_docs_list_every_recipe_key():
    from colondepth.synth.recipe import recipe_reference_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "synth.md").read_text()
    for line in recipe_reference_markdown().splitlines()[2:]:
        assert line in docs, f"docs/synth.md is missing or outdated for: {line}"
