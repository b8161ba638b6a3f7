"""Rigid poses and rotation parametrisations (torch, differentiable, any leading batch dims).

Convention
    A pose is a ``(..., 4, 4)`` homogeneous matrix acting on column vectors and named
    ``b_from_a``: it maps a point expressed in frame ``a`` to frame ``b``,
    ``p_b = R p_a + t``.  Compose right to left, ``c_from_a = compose_pose(c_from_b, b_from_a)``.
    Translations are millimetres.  A trajectory is ``world_from_cam``; the pose network predicts
    ``src_from_tgt``.

    Axis-angle vectors are ``axis * angle`` in radians; ``+theta`` about ``+z`` maps ``x`` to ``y``
    (right-hand rule).  Quaternions are ``(x, y, z, w)``, scalar last, as in TUM ``poses.txt`` and
    SciPy; :func:`matrix_to_quaternion` returns ``w >= 0``.  kornia's conversions, used inside,
    take ``(w, x, y, z)``: the reordering happens only in this module.

>>> import math, torch
>>> R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
>>> [round(float(x), 6) + 0.0 for x in R @ torch.tensor([1.0, 0.0, 0.0])]
[0.0, 1.0, 0.0]
"""

from __future__ import annotations

import torch
from kornia.geometry import conversions as _kc

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "make_pose",
    "pose_from_axis_angle_translation",
    "pose_from_translation_quaternion",
    "pose_to_translation_quaternion",
    "compose_pose",
    "invert_pose",
    "relative_pose",
    "transform_points",
    "rotation_angle",
]


def _check_last(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    n = len(shape)
    if x.dim() < n or tuple(x.shape[-n:]) != shape:
        dims = ", ".join(str(s) for s in shape)
        raise ValueError(f"{name} must have shape (..., {dims}), got {tuple(x.shape)}")


# -- rotations ------------------------------------------------------------------------------------
def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrix from an axis-angle (Rodrigues) vector.

    Parameters
    ----------
    axis_angle : (..., 3) float tensor, ``axis * angle`` in radians.

    Returns
    -------
    (..., 3, 3) rotation matrix; differentiable, including at the zero rotation.
    """
    _check_last(axis_angle, (3,), "axis_angle")
    return _kc.axis_angle_to_rotation_matrix(axis_angle)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Axis-angle vector ``(..., 3)`` (radians, angle in ``[0, pi]``) of rotation matrices ``(..., 3, 3)``.

    At exactly ``pi`` the two opposite vectors describe the same rotation; either may be returned.
    """
    _check_last(R, (3, 3), "R")
    return _kc.rotation_matrix_to_axis_angle(R)


def quaternion_to_matrix(q_xyzw: torch.Tensor) -> torch.Tensor:
    """Rotation matrix ``(..., 3, 3)`` from quaternions ``(..., 4)`` in ``(x, y, z, w)`` order (TUM, SciPy).

    The quaternion is normalised first, so any non-zero scale gives the same matrix.
    """
    _check_last(q_xyzw, (4,), "q_xyzw")
    q_wxyz = torch.cat([q_xyzw[..., 3:4], q_xyzw[..., 0:3]], dim=-1)
    return _kc.quaternion_to_rotation_matrix(q_wxyz)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` in ``(x, y, z, w)`` order with ``w >= 0`` from rotations ``(..., 3, 3)``."""
    _check_last(R, (3, 3), "R")
    q_wxyz = _kc.rotation_matrix_to_quaternion(R)
    q_xyzw = torch.cat([q_wxyz[..., 1:4], q_wxyz[..., 0:1]], dim=-1)
    # q and -q are the same rotation: pick the representative with a non-negative scalar part.
    return torch.where(q_xyzw[..., 3:4] < 0, -q_xyzw, q_xyzw)


def rotation_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation angle ``(...)`` in radians, in ``[0, pi]``, of rotation matrices ``(..., 3, 3)``."""
    return torch.linalg.vector_norm(matrix_to_axis_angle(R), dim=-1)


# -- poses ----------------------------------------------------------------------------------------
def make_pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Homogeneous pose ``(..., 4, 4)`` from a rotation ``(..., 3, 3)`` and a translation ``(..., 3)`` (mm).

    Leading dims broadcast; the result has ``p_b = R p_a + t``.
    """
    _check_last(R, (3, 3), "R")
    _check_last(t, (3,), "t")
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    R = R.expand(*batch, 3, 3)
    t = t.to(dtype=R.dtype).expand(*batch, 3)
    top = torch.cat([R, t.unsqueeze(-1)], dim=-1)  # (..., 3, 4)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=R.dtype, device=R.device).expand(*batch, 1, 4)
    return torch.cat([top, bottom], dim=-2)


def pose_from_axis_angle_translation(vec6: torch.Tensor) -> torch.Tensor:
    """Pose ``(..., 4, 4)`` from ``(..., 6)`` = ``[ax, ay, az, tx, ty, tz]`` (radians, mm).

    This is the pose network's output parametrisation: ``p_b = R(a) p_a + t`` (rotate, then translate).
    """
    _check_last(vec6, (6,), "vec6")
    return make_pose(axis_angle_to_matrix(vec6[..., :3]), vec6[..., 3:])


def pose_from_translation_quaternion(t: torch.Tensor, q_xyzw: torch.Tensor) -> torch.Tensor:
    """Pose ``(..., 4, 4)`` from a TUM line's ``tx ty tz`` ``(..., 3)`` and ``qx qy qz qw`` ``(..., 4)``."""
    return make_pose(quaternion_to_matrix(q_xyzw), t)


def pose_to_translation_quaternion(b_from_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t (..., 3), q_xyzw (..., 4))`` of a pose, the TUM ``tx ty tz qx qy qz qw`` fields (``qw >= 0``)."""
    _check_last(b_from_a, (4, 4), "b_from_a")
    return b_from_a[..., :3, 3], matrix_to_quaternion(b_from_a[..., :3, :3])


def compose_pose(c_from_b: torch.Tensor, b_from_a: torch.Tensor) -> torch.Tensor:
    """``c_from_a = c_from_b @ b_from_a`` for poses ``(..., 4, 4)`` (leading dims broadcast)."""
    _check_last(c_from_b, (4, 4), "c_from_b")
    _check_last(b_from_a, (4, 4), "b_from_a")
    return c_from_b @ b_from_a


def invert_pose(b_from_a: torch.Tensor) -> torch.Tensor:
    """``a_from_b`` of a rigid pose ``(..., 4, 4)`` in closed form: ``[R^T | -R^T t]``.

    The rotation block must be orthonormal (a rigid transform); no general matrix inverse is taken.
    """
    _check_last(b_from_a, (4, 4), "b_from_a")
    R = b_from_a[..., :3, :3]
    t = b_from_a[..., :3, 3]
    Rt = R.transpose(-1, -2)
    return make_pose(Rt, -(Rt @ t.unsqueeze(-1)).squeeze(-1))


def relative_pose(world_from_b: torch.Tensor, world_from_a: torch.Tensor) -> torch.Tensor:
    """``b_from_a = invert_pose(world_from_b) @ world_from_a`` from two camera poses ``(..., 4, 4)``.

    With ground-truth trajectories, ``src_from_tgt = relative_pose(world_from_src, world_from_tgt)``.
    """
    return compose_pose(invert_pose(world_from_b), world_from_a)


def transform_points(b_from_a: torch.Tensor, points_a: torch.Tensor) -> torch.Tensor:
    """Apply a pose to points: ``points_b = R points_a + t``.

    Parameters
    ----------
    b_from_a : (B, 4, 4) pose (any leading dims ``(..., 4, 4)``).
    points_a : (B, N, 3) points in frame ``a``, mm (leading dims ``(...)`` matching the pose's).

    Returns
    -------
    (B, N, 3) points in frame ``b``, mm.
    """
    _check_last(b_from_a, (4, 4), "b_from_a")
    _check_last(points_a, (3,), "points_a")
    if points_a.dim() < 2:
        raise ValueError(f"points_a must have shape (..., N, 3), got {tuple(points_a.shape)}")
    R = b_from_a[..., :3, :3]
    t = b_from_a[..., :3, 3]
    return points_a @ R.transpose(-1, -2) + t.unsqueeze(-2)
