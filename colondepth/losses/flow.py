"""Optical flow against rigid flow: the losses and the mask of CoopNet-style co-training (Hariat et al. 2023).

The depth and pose networks explain a frame pair with a *rigid* flow, the image motion a static scene makes
when the camera moves: ``rigid_flow = pi(K (R D(m) K^-1 m + t)) - m`` (:func:`rigid_flow`).  An optical-flow
network (:class:`colondepth.models.flow_net.FlowNet`) learns the pair's actual image motion by its own
photometric loss (:func:`flow_photometric_loss`).  Where the two disagree (:func:`nonrigid_mask`) the scene
did not move rigidly (a deforming wall, fluid, debris, an instrument) and those pixels are left out of the
depth/pose photometric loss.  Flows are ``(B, 2, H, W)`` in px, ``(u, v)``, target -> source.
"""

from __future__ import annotations

import torch

from colondepth.geometry.projection import backproject_depth, pixel_grid, project_points


def rigid_flow(target_depth_mm: torch.Tensor, K: torch.Tensor, src_from_tgt: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` px: where each target pixel's surface point lands in the source, minus the pixel.

    ``target_depth_mm`` (B, 1, H, W) mm, ``K`` (B, 3, 3) or (3, 3) px, ``src_from_tgt`` (B, 4, 4) mm.  Points
    behind the source camera get the flow of a point just in front of it (they are invalid warps anyway).
    """
    from colondepth.conventions import ImageSize

    B, _, H, W = target_depth_mm.shape
    pts = backproject_depth(target_depth_mm, K).flatten(2).transpose(1, 2)  # (B, HW, 3)
    R, t = src_from_tgt[:, :3, :3], src_from_tgt[:, :3, 3]
    pts_s = pts @ R.transpose(1, 2) + t[:, None, :]
    uv, _ = project_points(pts_s, K)  # (B, HW, 2)
    grid = pixel_grid(ImageSize(H, W), device=uv.device, dtype=uv.dtype).reshape(1, -1, 2)
    return (uv - grid).transpose(1, 2).reshape(B, 2, H, W)


def flow_warp(source: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source sampled at ``m + flow(m)``: ``(warped (B, C, H, W), valid (B, 1, H, W) bool)`` (bilinear;
    invalid where the sample falls outside the source)."""
    from colondepth.conventions import ImageSize
    from colondepth.geometry.warp import sample_image

    B, _, H, W = flow.shape
    grid = pixel_grid(ImageSize(H, W), device=flow.device, dtype=flow.dtype).reshape(1, H, W, 2)
    uv = grid + flow.permute(0, 2, 3, 1)
    return sample_image(source, uv)


def nonrigid_mask(flow: torch.Tensor, rigid: torch.Tensor, threshold_px: float = 2.0,
                  threshold_rel: float = 0.2) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: pixels whose optical flow and rigid flow differ by more than
    ``max(threshold_px, threshold_rel * |rigid flow|)`` px (no gradient)."""
    diff = (flow.detach() - rigid.detach()).norm(dim=1, keepdim=True)
    limit = torch.clamp(threshold_rel * rigid.detach().norm(dim=1, keepdim=True), min=threshold_px)
    return diff > limit


def flow_photometric_loss(target: torch.Tensor, source: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor,
                          alpha: float = 0.85, smoothness_weight: float = 1e-2) -> tuple[torch.Tensor, dict]:
    """Self-supervised loss of a flow: photometric error of the flow-warped source (SSIM + L1 after the affine
    brightness alignment of :func:`colondepth.losses.photometric.align_brightness`) over ``mask`` (B, 1, H, W)
    and valid samples, plus ``smoothness_weight`` times the edge-aware smoothness of the flow (divided by the
    frame's larger side, so the weight does not depend on resolution).  Returns ``(scalar, info)``."""
    from colondepth.losses.photometric import align_brightness, photometric_error
    from colondepth.losses.smoothness import edge_aware_smoothness

    warped, valid = flow_warp(source, flow)
    m = valid & mask.to(torch.bool)
    warped, _, _ = align_brightness(warped, target, m)
    err = photometric_error(warped, target, alpha)
    mf = m.to(err.dtype)
    photo = (err * mf).sum() / mf.sum().clamp(min=1.0)
    scale = float(max(flow.shape[-2:]))
    smooth = edge_aware_smoothness(flow / scale, target, mask.to(torch.bool), normalize=False)
    return photo + smoothness_weight * smooth, {"flow_photometric": float(photo.detach()),
                                                "flow_smoothness": float(smooth.detach())}
