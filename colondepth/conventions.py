"""The one written specification of ColonDepth's frames, pixels, units and pose names.

Every other module imports these names instead of restating a convention.

Camera frame (OpenCV)
    +X right, +Y down, +Z forward (out of the lens, along the viewing direction).
    Only :mod:`colondepth.synth.render` converts to OpenGL (which looks down -Z with +Y up)
    through :data:`CV_FROM_GL` / :data:`GL_FROM_CV`.

Pixels
    ``(u, v) = (column, row)``; ``(0, 0)`` is the *centre* of the top-left pixel, so pixel
    centres sit at integer coordinates and the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
    Image sizes are :class:`ImageSize` ``(height, width)``, never a bare tuple.

Units and depth-like quantities
    Lengths are millimetres everywhere (scene, poses, depth, voxel sizes).
    ``depth_mm``: z-depth along +Z of the camera.  ``range_mm``: Euclidean ray length from the
    optical centre.  ``disp``: ``1 / depth_mm``.  A depth of 0 marks "no surface / invalid"; a
    boolean ``valid`` mask travels with depth wherever it is consumed.

Poses
    4x4 homogeneous matrices acting on column vectors, named ``b_from_a`` (maps points in frame
    ``a`` to frame ``b``).  Compose right to left: ``c_from_a = c_from_b @ b_from_a``.  A trajectory
    is a sequence of ``world_from_cam``; the pose network predicts ``src_from_tgt``.
    Invert with :func:`colondepth.geometry.pose.invert_pose`, never a bare matrix inverse.

On-disk dataset layout: see ``docs/dataset_format.md`` (depth PNGs are uint16 with
``depth_mm = value * depth_scale_mm``; poses.txt is TUM ``t tx ty tz qx qy qz qw`` world_from_cam).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Bumped when any convention above changes; stored in datasets and model cards.
CONVENTIONS_VERSION = "1.0"

#: Length unit of every geometric quantity.
LENGTH_UNIT = "mm"

#: ``cam_cv_from_cam_gl``: flips Y and Z.  It is its own inverse.
#: ``world_from_cam_gl = world_from_cam_cv @ CV_FROM_GL``.
CV_FROM_GL = np.diag([1.0, -1.0, -1.0, 1.0])
GL_FROM_CV = CV_FROM_GL.copy()

#: grid_sample is always called with this value (see colondepth.geometry.warp).
GRID_SAMPLE_ALIGN_CORNERS = False


@dataclass(frozen=True)
class ImageSize:
    """Image size in pixels, always ``(height, width)``.

    >>> ImageSize(height=480, width=640).as_hw()
    (480, 640)
    """

    height: int
    width: int

    def __post_init__(self) -> None:
        if int(self.height) != self.height or int(self.width) != self.width:
            raise ValueError(f"ImageSize needs integer height/width, got {self.height}x{self.width}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"ImageSize needs positive height/width, got {self.height}x{self.width}")

    def as_hw(self) -> tuple[int, int]:
        return (int(self.height), int(self.width))

    @property
    def num_pixels(self) -> int:
        return int(self.height) * int(self.width)

    def __str__(self) -> str:  # e.g. "128x160 (HxW)"
        return f"{self.height}x{self.width} (HxW)"
