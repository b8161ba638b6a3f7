"""Generator recipes: one YAML file per complexity level, validated by pydantic.

A recipe value is either a number or a range ``[lo, hi]``; ranges are sampled once per sequence
from that sequence's seed (:func:`sample_recipe`), so a level describes a *family* of colons.
Lengths are millimetres, angles degrees, colours linear RGB in ``[0, 1]``.

Errors name the key path (``folds.depth``) and the file, as one line:

>>> from colondepth.errors import UserError
>>> try:
...     recipe_from_dict({"level": "L1", "folds": {"depth": 2.0}}, source="x.yaml")
... except UserError as exc:
...     print(str(exc).split(";")[0])
x.yaml: invalid recipe at folds.depth: Value error, range values must lie in [0, 0.9], got 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Tuple, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from colondepth.errors import UserError

#: A float recipe value: a constant or a closed range ``[lo, hi]`` sampled uniformly per sequence.
Range = Union[float, Tuple[float, float]]
#: An integer recipe value: a constant or a closed range ``[lo, hi]`` sampled uniformly per sequence.
IntRange = Union[int, Tuple[int, int]]


def _check_range(value: Any, lo: float, hi: float) -> Any:
    vals = list(value) if isinstance(value, (tuple, list)) else [value]
    for v in vals:
        if not (lo <= float(v) <= hi):
            raise ValueError(f"range values must lie in [{lo:g}, {hi:g}], got {v:g}")
    if len(vals) == 2 and vals[0] > vals[1]:
        raise ValueError(f"a range [lo, hi] needs lo <= hi, got [{vals[0]:g}, {vals[1]:g}]")
    return value


def _bounded(lo: float, hi: float):
    """A field validator that checks every value of a Range lies in ``[lo, hi]``."""

    def check(cls, value):  # noqa: ANN001 - pydantic validator signature
        return _check_range(value, lo, hi)

    return classmethod(check)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class CameraRecipe(_Strict):
    """Pinhole camera and image format."""

    width: int = Field(128, gt=7, le=4096, description="image width in pixels")
    height: int = Field(128, gt=7, le=4096, description="image height in pixels")
    fov_deg: Range = Field(120.0, description="horizontal field of view in degrees (100-140 is typical)")
    fps: float = Field(30.0, gt=0, description="frame rate written to meta.yaml and video.mp4")
    znear_mm: float = Field(0.5, gt=0, description="near clip plane, mm")
    zfar_mm: float = Field(600.0, gt=0, description="far clip plane, mm; must fit the depth PNG range")
    depth_scale_mm: float = Field(0.01, gt=0, description="depth_mm = png_value * depth_scale_mm")
    fov_mask: Literal["none", "circle", "octagon"] = Field("none", description="endoscope field-of-view mask")
    fov_mask_radius: float = Field(1.0, gt=0.2, le=2.0, description="mask radius / half the image diagonal")

    _fov = field_validator("fov_deg")(_bounded(30.0, 170.0))

    @model_validator(mode="after")
    def _depth_fits(self):
        if self.zfar_mm <= self.znear_mm:
            raise ValueError(f"zfar_mm ({self.zfar_mm}) must exceed znear_mm ({self.znear_mm})")
        if self.zfar_mm / self.depth_scale_mm > 65535:
            raise ValueError(
                f"zfar_mm / depth_scale_mm = {self.zfar_mm / self.depth_scale_mm:.0f} exceeds the uint16 "
                "range 65535; raise depth_scale_mm or lower zfar_mm"
            )
        return self


class CentrelineRecipe(_Strict):
    """The smooth 3D curve the colon follows."""

    length_mm: Range = Field(200.0, description="arc length of the tube between its two ends")
    bend_deg_per_100mm: Range = Field(0.0, description="RMS turning of the centreline (tortuosity)")
    bend_wavelength_mm: Range = Field(80.0, description="correlation length of the tortuous bends")
    flexures: IntRange = Field(0, description="number of sharp flexures (e.g. splenic, hepatic)")
    flexure_angle_deg: Range = Field(70.0, description="total turn of one flexure")
    flexure_length_mm: Range = Field(40.0, description="arc length over which a flexure turns")

    _len = field_validator("length_mm")(_bounded(30.0, 2000.0))
    _bend = field_validator("bend_deg_per_100mm")(_bounded(0.0, 360.0))
    _bwl = field_validator("bend_wavelength_mm")(_bounded(5.0, 1000.0))
    _flex = field_validator("flexures")(_bounded(0, 8))
    _fang = field_validator("flexure_angle_deg")(_bounded(0.0, 180.0))
    _flen = field_validator("flexure_length_mm")(_bounded(5.0, 500.0))


class LumenRecipe(_Strict):
    """Cross-section of the tube."""

    radius_mm: Range = Field(20.0, description="mean lumen radius")
    variation: Range = Field(0.0, description="relative slow radius variation along the tube")
    variation_wavelength_mm: Range = Field(60.0, description="correlation length of the radius variation")
    taeniae_depth: Range = Field(0.0, description="triangular tendency from the three taeniae (fraction of r)")

    _r = field_validator("radius_mm")(_bounded(2.0, 100.0))
    _v = field_validator("variation")(_bounded(0.0, 0.5))
    _vw = field_validator("variation_wavelength_mm")(_bounded(5.0, 1000.0))
    _t = field_validator("taeniae_depth")(_bounded(0.0, 0.3))


class FoldsRecipe(_Strict):
    """Haustral (semilunar) folds: periodic constrictions between the taeniae."""

    depth: Range = Field(0.0, description="fold height as a fraction of the local radius (0 = no folds)")
    spacing_mm: Range = Field(25.0, description="distance between consecutive folds along the tube")
    width_mm: Range = Field(4.0, description="fold thickness along the tube (Gaussian sigma x 2)")
    stagger_mm: Range = Field(0.0, description="offset between the folds of the three sectors")
    continuity: Range = Field(0.3, description="fold height at the taeniae relative to mid-sector (1 = rings)")

    _d = field_validator("depth")(_bounded(0.0, 0.9))
    _s = field_validator("spacing_mm")(_bounded(3.0, 500.0))
    _w = field_validator("width_mm")(_bounded(0.5, 100.0))
    _st = field_validator("stagger_mm")(_bounded(0.0, 100.0))
    _c = field_validator("continuity")(_bounded(0.0, 1.0))


class BumpsRecipe(_Strict):
    """Local outward bulges, inward polyp-like bumps and small debris lumps."""

    bulges: IntRange = Field(0, description="number of outward bulges")
    bulge_height_mm: Range = Field(4.0, description="outward height of a bulge")
    bulge_radius_mm: Range = Field(8.0, description="Gaussian radius of a bulge on the wall")
    polyps: IntRange = Field(0, description="number of polyp-like inward bumps")
    polyp_height_mm: Range = Field(4.0, description="height of a polyp into the lumen")
    polyp_radius_mm: Range = Field(3.0, description="Gaussian radius of a polyp")
    debris: IntRange = Field(0, description="number of small debris lumps (brownish, shown in the texture)")
    debris_radius_mm: Range = Field(1.5, description="Gaussian radius of a debris lump")

    _n = field_validator("bulges", "polyps", "debris")(_bounded(0, 200))
    _h = field_validator("bulge_height_mm", "polyp_height_mm")(_bounded(0.0, 30.0))
    _r = field_validator("bulge_radius_mm", "polyp_radius_mm", "debris_radius_mm")(_bounded(0.3, 50.0))


class FluidRecipe(_Strict):
    """Fluid pools: the lumen is filled to a flat level on the gravity side (world +Y is down)."""

    pools: IntRange = Field(0, description="number of fluid pools")
    depth_fraction: Range = Field(0.3, description="pool depth as a fraction of the radius")
    length_mm: Range = Field(30.0, description="pool length along the tube")
    color_rgb: Tuple[float, float, float] = Field((0.75, 0.6, 0.25), description="fluid albedo")
    roughness: float = Field(0.1, ge=0.0, le=1.0, description="fluid roughness (low = glossy)")

    _n = field_validator("pools")(_bounded(0, 20))
    _d = field_validator("depth_fraction")(_bounded(0.0, 0.6))
    _l = field_validator("length_mm")(_bounded(2.0, 500.0))


class EndsRecipe(_Strict):
    """How the tube ends. The near end is always closed by a dome behind the start."""

    far_end: Literal["blind", "open"] = Field("blind", description="'blind' dome, or 'open' (no surface: depth 0)")
    cap_ratio: float = Field(0.8, gt=0.05, le=2.0, description="dome height / end radius")


class MeshRecipe(_Strict):
    """Tessellation: triangle count drives render time."""

    ring_spacing_mm: float = Field(1.5, gt=0.1, le=20.0, description="distance between vertex rings")
    segments: int = Field(48, ge=8, le=512, description="vertices around each ring")


class AppearanceRecipe(_Strict):
    """Procedural mucosa texture and material."""

    albedo_rgb: Tuple[float, float, float] = Field((0.85, 0.45, 0.38), description="mean mucosa albedo")
    color_variation: Range = Field(0.0, description="std of the slow multiplicative colour variation")
    color_scale_mm: Range = Field(10.0, description="correlation length of the colour variation")
    vessel_contrast: Range = Field(0.0, description="darkening by the vessel network (0 = none)")
    vessel_scale_mm: Range = Field(4.0, description="mesh size of the vessel network")
    vessel_width: Range = Field(0.08, description="vessel width relative to the network noise")
    vessel_rgb: Tuple[float, float, float] = Field((0.45, 0.08, 0.1), description="vessel colour")
    debris_rgb: Tuple[float, float, float] = Field((0.45, 0.32, 0.12), description="debris colour")
    texture_px_per_mm: float = Field(3.0, gt=0.2, le=20.0, description="texture resolution on the wall")
    roughness: Range = Field(0.8, description="mucosa roughness (low = wet, sharp specular highlights)")
    metallic: Range = Field(0.0, description="metallic factor (0 for tissue)")
    flat_shading: bool = Field(False, description="unlit render of the albedo (photometric tests)")

    _cv = field_validator("color_variation")(_bounded(0.0, 1.0))
    _cs = field_validator("color_scale_mm", "vessel_scale_mm")(_bounded(0.2, 200.0))
    _vc = field_validator("vessel_contrast")(_bounded(0.0, 1.0))
    _vw = field_validator("vessel_width")(_bounded(0.005, 1.0))
    _ro = field_validator("roughness", "metallic")(_bounded(0.0, 1.0))

    @field_validator("albedo_rgb", "vessel_rgb", "debris_rgb")
    @classmethod
    def _rgb(cls, v):
        if not all(0.0 <= c <= 1.0 for c in v):
            raise ValueError(f"colours are linear RGB in [0, 1], got {list(v)}")
        return v


class LightRecipe(_Strict):
    """The light at the lens and the camera response."""

    kind: Literal["point", "spot"] = Field("point", description="light type, placed at the optical centre")
    intensity: Range = Field(3000.0, description="light intensity (inverse-square falloff in mm)")
    spot_angle_deg: float = Field(70.0, gt=1.0, lt=90.0, description="outer cone half-angle of a spot light")
    ambient: float = Field(0.0, ge=0.0, le=1.0, description="ambient light level")
    exposure: Range = Field(1.0, description="multiplies linear radiance before the gamma curve")
    gamma: float = Field(2.2, gt=0.2, le=5.0, description="output gamma (display encoding)")
    vignetting: Range = Field(0.0, description="brightness loss at the image corners (fraction)")
    noise_std: Range = Field(0.0, description="sensor noise std in [0, 1] intensity units")
    motion_blur_samples: int = Field(1, ge=1, le=16, description="renders averaged per frame (1 = none)")
    motion_blur_shutter: float = Field(0.5, ge=0.0, le=1.0, description="exposure time / frame interval")
    headroom: float = Field(4.0, ge=1.0, le=64.0, description="linear radiance the render keeps above 1 before "
                            "exposure, vignetting and the sensor clip (renders at intensity / headroom)")

    _i = field_validator("intensity")(_bounded(0.0, 1e9))
    _e = field_validator("exposure")(_bounded(0.0, 100.0))
    _v = field_validator("vignetting")(_bounded(0.0, 1.0))
    _n = field_validator("noise_std")(_bounded(0.0, 0.5))


class TrajectoryRecipe(_Strict):
    """Camera motion along the centreline."""

    start_mm: Range = Field(20.0, description="arc length of the first camera position")
    speed_mm_per_frame: Range = Field(1.0, description="mean speed along the centreline")
    speed_change: Range = Field(0.0, description="relative std of the slow speed changes")
    backward_fraction: Range = Field(0.0, description="fraction of frames moving back (withdrawal)")
    lateral: Range = Field(0.3, description="lateral wander as a fraction of the safe radius")
    jitter_deg: Range = Field(0.0, description="std of the view-direction jitter")
    roll_deg: Range = Field(0.0, description="std of the roll about the view axis")
    wall_look_fraction: Range = Field(0.0, description="fraction of frames spent looking at the wall")
    wall_look_deg: Range = Field(50.0, description="view tilt towards the wall in those episodes")
    smoothness_frames: float = Field(12.0, gt=0.0, le=1000.0, description="correlation time of the motion")
    safe_radius_fraction: float = Field(0.5, gt=0.0, lt=0.9, description="camera stays within this fraction "
                                        "of the local minimum radius from the centreline")

    _st = field_validator("start_mm")(_bounded(0.0, 2000.0))
    _sp = field_validator("speed_mm_per_frame")(_bounded(0.0, 50.0))
    _sc = field_validator("speed_change", "backward_fraction", "lateral", "wall_look_fraction")(_bounded(0.0, 1.0))
    _j = field_validator("jitter_deg", "roll_deg")(_bounded(0.0, 90.0))
    _w = field_validator("wall_look_deg")(_bounded(0.0, 85.0))


class RandomisationRecipe(_Strict):
    """What varies between real endoscopes and cases, drawn per sequence (ranges) and per frame.

    Off unless ``enabled``.  When on, the per-sequence values below *replace* the level's own
    camera, light and appearance values; the level keeps its geometry (lumen, folds, fluid, ...).
    ``camera.fov_deg`` is replaced by ``fov_deg``; ``light.gamma`` by ``gamma``; ``appearance.roughness``
    by ``roughness``; ``trajectory.safe_radius_fraction``, ``lateral``, ``wall_look_fraction``,
    ``wall_look_deg`` and ``speed_mm_per_frame`` by the values of the same name (near-wall views, views
    straight at the wall, slow withdrawal).
    See docs/synth.md (randomisation) for a gallery.
    """

    enabled: bool = Field(False, description="apply this block (off: the level renders as written)")
    fov_deg: Range = Field((80.0, 150.0), description="horizontal field of view of the pinhole camera")
    fov_masks: list[Literal["none", "circle", "octagon"]] = Field(
        ["none", "circle", "octagon"], description="field-of-view mask kinds, one drawn per sequence")
    fov_mask_radius: Range = Field((0.8, 1.05), description="mask radius / half the image diagonal")
    light_guides: IntRange = Field((1, 2), description="number of light guides beside the lens")
    light_offset_mm: Range = Field((1.0, 5.0), description="distance of each light guide from the lens")
    spot_coverage: Range = Field((0.85, 1.3), description="outer cone half-angle of the light guides / half the "
                                 "diagonal field of view (below 1: the image corners fall outside the cone)")
    spot_softness: Range = Field((0.1, 0.9), description="inner / outer cone angle of the spot profile")
    intensity_scale: Range = Field((0.5, 2.0), description="multiplies the level's light intensity")
    gamma: Range = Field((1.8, 2.6), description="camera response exponent (display = linear ** (1/gamma))")
    white_balance: Range = Field((0.0, 0.12), description="std of the log per-channel gains of the camera")
    albedo_jitter: Range = Field((0.0, 0.25), description="std of the log per-channel mucosa albedo change")
    vessel_contrast: Range = Field((0.0, 0.7), description="vessel network contrast (texture)")
    roughness: Range = Field((0.2, 0.8), description="mucosa roughness (low = wet, sharp highlights)")
    safe_radius_fraction: Range = Field((0.4, 0.85), description="how close the camera may come to the wall "
                                        "(fraction of the local radius)")
    lateral: Range = Field((0.3, 1.0), description="lateral wander as a fraction of the safe radius")
    wall_look_fraction: Range = Field((0.0, 0.4), description="fraction of frames looking at the wall")
    wall_look_deg: Range = Field((30.0, 85.0), description="view tilt towards the wall (85 = straight at it)")
    speed_mm_per_frame: Range = Field((0.15, 3.0), description="mean speed (0.17-1 mm/frame is a 5-30 mm/s "
                                      "withdrawal at 30 fps)")
    auto_gain: Range = Field((0.0, 1.0), description="strength of the per-frame auto-exposure towards "
                             "auto_gain_target (0 = fixed exposure)")
    auto_gain_target: Range = Field((0.15, 0.45), description="mean linear intensity auto-exposure aims at")
    exposure_jitter: Range = Field((0.0, 0.25), description="std of the slow per-frame log exposure changes")
    noise_std: Range = Field((0.0, 0.03), description="sensor noise std in [0, 1] intensity units")
    blur_sigma_px: Range = Field((0.0, 1.2), description="Gaussian defocus blur, pixels")
    jpeg_quality: IntRange = Field((35, 100), description="video-compression stand-in: JPEG quality "
                                   "(100 = no compression)")

    _fov = field_validator("fov_deg")(_bounded(30.0, 160.0))
    _mr = field_validator("fov_mask_radius")(_bounded(0.2, 2.0))
    _lg = field_validator("light_guides")(_bounded(1, 4))
    _lo = field_validator("light_offset_mm")(_bounded(0.0, 20.0))
    _sa = field_validator("spot_coverage")(_bounded(0.1, 3.0))
    _ss = field_validator("spot_softness", "auto_gain", "roughness", "vessel_contrast")(_bounded(0.0, 1.0))
    _is = field_validator("intensity_scale")(_bounded(0.01, 100.0))
    _g = field_validator("gamma")(_bounded(0.5, 4.0))
    _wb = field_validator("white_balance", "albedo_jitter", "exposure_jitter")(_bounded(0.0, 1.0))
    _sr = field_validator("safe_radius_fraction")(_bounded(0.05, 0.89))
    _lat = field_validator("lateral", "wall_look_fraction")(_bounded(0.0, 1.0))
    _wd = field_validator("wall_look_deg")(_bounded(0.0, 85.0))
    _sp = field_validator("speed_mm_per_frame")(_bounded(0.0, 50.0))
    _at = field_validator("auto_gain_target")(_bounded(0.01, 1.0))
    _n = field_validator("noise_std")(_bounded(0.0, 0.5))
    _b = field_validator("blur_sigma_px")(_bounded(0.0, 10.0))
    _j = field_validator("jpeg_quality")(_bounded(5, 100))

    @field_validator("fov_masks")
    @classmethod
    def _masks(cls, v):
        if not v:
            raise ValueError("fov_masks needs at least one kind (none, circle, octagon)")
        return v


class Recipe(_Strict):
    """A complete generator recipe (one complexity level)."""

    level: str = Field(..., pattern=r"^L[0-9]+$", description="complexity level name, e.g. L3")
    description: str = Field("", description="one line shown in docs and dataset.yaml")
    camera: CameraRecipe = CameraRecipe()
    centreline: CentrelineRecipe = CentrelineRecipe()
    lumen: LumenRecipe = LumenRecipe()
    folds: FoldsRecipe = FoldsRecipe()
    bumps: BumpsRecipe = BumpsRecipe()
    fluid: FluidRecipe = FluidRecipe()
    ends: EndsRecipe = EndsRecipe()
    mesh: MeshRecipe = MeshRecipe()
    appearance: AppearanceRecipe = AppearanceRecipe()
    light: LightRecipe = LightRecipe()
    trajectory: TrajectoryRecipe = TrajectoryRecipe()
    randomisation: RandomisationRecipe = RandomisationRecipe()

    def with_size(self, height: int, width: int) -> "Recipe":
        """A copy with the image size replaced (``--size H W``)."""
        return self.model_copy(update={"camera": self.camera.model_copy(update={"height": height, "width": width})})


def _format_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("tuple[", "float", "int")))
        parts.append(f"{loc or '<root>'}: {err['msg']}")
    return f"{source}: invalid recipe at " + "; ".join(parts) + "; fix the value (see docs/synth.md, recipe keys)"


def recipe_from_dict(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a mapping into a :class:`Recipe`; raise a one-line UserError naming the key path."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: a recipe must be a YAML mapping with at least 'level'; got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(exc, source)) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file (e.g. ``synth/L3_haustra.yaml``)."""
    from colondepth.io import load_yaml

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a recipe file; pass --recipe with one of synth/*.yaml")
    if not p.is_file():
        raise UserError(f"{p}: recipe file not found; pass --recipe with one of synth/*.yaml")
    data = load_yaml(p)
    return recipe_from_dict(data, source=str(p))


def as_recipe(recipe: "Recipe | str | Path | dict") -> Recipe:
    """Accept a :class:`Recipe`, a path to a YAML file or a mapping."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return recipe_from_dict(recipe)
    return load_recipe(recipe)


def _is_range(annotation: Any) -> Optional[type]:
    if annotation == Range:
        return float
    if annotation == IntRange:
        return int
    return None


def sample_recipe(recipe: Recipe, rng: np.random.Generator) -> Recipe:
    """Return a copy of ``recipe`` where every range ``[lo, hi]`` is replaced by one sample.

    Fields are visited in declaration order, so the draw sequence depends only on the recipe.
    Integer ranges are sampled inclusively.

    >>> r = recipe_from_dict({"level": "L1", "lumen": {"radius_mm": [10, 20]}})
    >>> s = sample_recipe(r, np.random.default_rng(0))
    >>> 10 <= s.lumen.radius_mm <= 20
    True
    """

    def walk(model: BaseModel) -> BaseModel:
        update = {}
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                update[name] = walk(value)
                continue
            kind = _is_range(field.annotation)
            if kind is None:
                continue
            if isinstance(value, (tuple, list)):
                lo, hi = value
                update[name] = int(rng.integers(lo, hi + 1)) if kind is int else float(rng.uniform(lo, hi))
            else:
                # Draw anyway so adding a range to one key does not shift the others.
                rng.uniform()
        return model.model_copy(update=update)

    return walk(recipe)


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain-YAML-friendly dict of a recipe (tuples become lists)."""
    return recipe.model_dump(mode="json")


__all__ = [
    "Range", "IntRange", "Recipe", "CameraRecipe", "CentrelineRecipe", "LumenRecipe", "FoldsRecipe",
    "BumpsRecipe", "FluidRecipe", "EndsRecipe", "MeshRecipe", "AppearanceRecipe", "LightRecipe",
    "TrajectoryRecipe", "RandomisationRecipe", "load_recipe", "recipe_from_dict", "as_recipe", "sample_recipe", "recipe_to_dict",
]


def recipe_reference_markdown() -> str:
    """A markdown table of every recipe key with its default and description (for docs/synth.md)."""
    from pydantic.fields import PydanticUndefined

    lines = ["| key | default | range? | meaning |", "|---|---|---|---|"]
    for section, field in Recipe.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            for name, f in sub.model_fields.items():
                kind = "yes" if _is_range(f.annotation) else ""
                default = f.default
                if isinstance(default, tuple):
                    default = list(default)
                lines.append(f"| `{section}.{name}` | `{default}` | {kind} | {f.description or ''} |")
        else:
            default = "required" if field.default is PydanticUndefined else f"`{field.default!r}`"
            lines.append(f"| `{section}` | {default} |  | {field.description or ''} |")
    return "\n".join(lines)
