"""Pure, differentiable camera geometry.

- :mod:`colondepth.geometry.camera`: :class:`PinholeIntrinsics`, ray directions and range -> z-depth (numpy).
- :mod:`colondepth.geometry.pose`: rotations and ``b_from_a`` poses (torch).
- :mod:`colondepth.geometry.projection`: back-projection and projection of depth (torch), range <-> z-depth
  (torch), and the numpy projection and pixel-rounding helpers used by fusion and coverage.
- :mod:`colondepth.geometry.warp`: image sampling and view synthesis, the only ``grid_sample`` user.
- :mod:`colondepth.geometry.letterbox`: image resizing and letterboxing (aspect kept, zero padding) with the
  matching intrinsics: the one frame -> network grid transform of training and inference.

Names are re-exported lazily, so ``import colondepth.geometry.camera`` does not import torch:
``from colondepth.geometry import invert_pose`` works and imports torch only then.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "camera": ("PinholeIntrinsics", "range_to_z_depth"),
    "pose": (
        "axis_angle_to_matrix", "matrix_to_axis_angle", "quaternion_to_matrix", "matrix_to_quaternion",
        "make_pose", "pose_from_axis_angle_translation", "pose_from_translation_quaternion",
        "pose_to_translation_quaternion", "compose_pose", "invert_pose", "relative_pose",
        "transform_points", "rotation_angle",
    ),
    "projection": (
        "pixel_grid", "pixel_rays", "backproject_depth", "project_points", "depth_to_range",
        "range_to_depth", "depth_to_disp", "disp_to_depth", "pixel_index", "project_points_np",
        "pixel_rays_np", "backproject_depth_np", "depth_to_range_np", "range_to_depth_np",
    ),
    "warp": ("sample_image", "warp_source_to_target", "pixel_to_grid_sample_coords"),
    "letterbox": ("Letterbox", "InputGrid", "letterbox_layout", "resize_image", "resize_image_np",
                  "pad_to_multiple"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'colondepth.geometry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"colondepth.geometry.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
