"""Supervised relative-pose loss (synthetic video with exact poses).

Poses are ``src_from_tgt`` (..., 4, 4): target-camera points (OpenCV, mm) to the source camera's frame.
"""

from __future__ import annotations

import torch

__all__ = ["relative_pose_loss"]


def relative_pose_loss(pred: torch.Tensor, gt: torch.Tensor, rotation_mm: float = 20.0) -> torch.Tensor:
    """Mean over poses of ``|t_pred - t_gt|_1 + rotation_mm * ||R_pred - R_gt||_F / sqrt(2)`` (mm).

    ``pred``, ``gt``: (..., 4, 4) rigid transforms, translations in mm.  ``||R_pred - R_gt||_F / sqrt(2)`` is
    ``2 sin(theta / 2)`` for the angle ``theta`` between the rotations (about ``theta`` for small angles,
    smooth at 0 unlike the angle itself), so the rotation term is roughly how far a rotation error of
    ``theta`` moves a point ``rotation_mm`` from the camera: both terms are millimetres of displacement.
    """
    if pred.shape != gt.shape or pred.shape[-2:] != (4, 4):
        raise ValueError(f"pred and gt must both be (..., 4, 4), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    gt = gt.to(pred.dtype)
    t_err = (pred[..., :3, 3] - gt[..., :3, 3]).abs().sum(-1)
    r_err = (pred[..., :3, :3] - gt[..., :3, :3]).flatten(-2).norm(dim=-1) / (2.0 ** 0.5)
    return (t_err + float(rotation_mm) * r_err).mean()
