"""Depth from two frames (DepthNet, Pinard et al. 2017): a U-Net on a target frame and a partner frame.

The network sees the target frame (normalised RGB plus the depth network's optional ray channels, exactly
:func:`colondepth.models.depth_net.network_input`) stacked with the partner frame (normalised RGB) and
predicts the target's z-depth **for a camera displacement of** ``reference_displacement_mm`` between the two
views (``D0``): parallax of a static scene scales as ``|t| / Z``, so a network trained on pairs whose labels
are ``Z * D0 / |t|`` learns depth relative to the displacement, and the metric depth of any pair is its output
times ``|t| / D0`` (:meth:`TwoFrameDepthNet.predict_depth`; ``|t|`` from the pose network or supplied poses).

Shapes: frames ``(B, 3, H, W)`` RGB in [0, 1] on the network grid (letterboxed by
:func:`colondepth.models.depth_net.prepare_frames`, the same layout for both frames); output ``(B, 1, H, W)``
z-depth in mm (OpenCV camera of the target frame).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from colondepth.models.depth_net import (DepthNetConfig, network_input, prepare_frames, seen_colour,
                                        sigmoid_to_depth)

__all__ = ["TwoFrameConfig", "TwoFrameDepthNet", "pair_depth_label"]


@dataclass
class TwoFrameConfig:
    """``depth``: the grid, normalisation, extra input channels and output range of the network (a
    :class:`DepthNetConfig` with ``arch: basic_unet``; its depth range is that of the output at ``D0``);
    ``reference_displacement_mm``: ``D0``."""

    depth: DepthNetConfig = field(default_factory=lambda: DepthNetConfig(
        arch="basic_unet", features=[16, 16, 32, 64, 128, 16], min_depth_mm=0.5, max_depth_mm=400.0))
    reference_displacement_mm: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.depth, dict):
            self.depth = DepthNetConfig.from_dict(self.depth)
        if self.depth.arch != "basic_unet":
            raise ValueError(f"depth.arch: the two-frame network is a basic_unet, got {self.depth.arch!r}")
        if not self.reference_displacement_mm > 0:
            raise ValueError(f"reference_displacement_mm must be positive, got {self.reference_displacement_mm}")

    @property
    def in_channels(self) -> int:
        return self.depth.in_channels + 3

    def to_dict(self) -> dict:
        return {"depth": self.depth.to_dict(), "reference_displacement_mm": float(self.reference_displacement_mm)}

    @classmethod
    def from_dict(cls, d: dict) -> "TwoFrameConfig":
        return cls(depth=DepthNetConfig.from_dict(d["depth"]),
                   reference_displacement_mm=float(d.get("reference_displacement_mm", 1.0)))


def pair_depth_label(depth_mm: torch.Tensor, displacement_mm: torch.Tensor, reference_mm: float) -> torch.Tensor:
    """The training label of a pair: ``depth * reference / displacement`` (``(B, 1, H, W)`` and ``(B,)``);
    invalid (0) depth stays 0."""
    scale = (float(reference_mm) / displacement_mm.clamp(min=1e-6)).view(-1, 1, 1, 1).to(depth_mm.dtype)
    return depth_mm * scale


class TwoFrameDepthNet(nn.Module):
    """MONAI ``BasicUNet`` on ``[target network input, partner RGB]`` -> depth (mm) at displacement ``D0``."""

    def __init__(self, config: TwoFrameConfig | dict | None = None):
        super().__init__()
        from monai.networks.nets import BasicUNet

        if isinstance(config, dict):
            config = TwoFrameConfig.from_dict(config)
        self.two_frame = config or TwoFrameConfig()
        self.config = self.two_frame.depth  # what network_input / prepare_frames read
        self.unet = BasicUNet(spatial_dims=2, in_channels=self.two_frame.in_channels, out_channels=1,
                              features=tuple(int(c) for c in self.config.features))
        self.register_buffer("mean", torch.tensor(self.config.mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(self.config.std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def inputs(self, target01: torch.Tensor, partner01: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, C + 3, H, W)``: the target's depth-network input (``network_input``) and the normalised partner."""
        if target01.shape != partner01.shape:
            raise ValueError(f"target and partner must have the same shape, got {tuple(target01.shape)} and "
                             f"{tuple(partner01.shape)}")
        partner01 = seen_colour(self.config, partner01)  # a grey model sees both frames grey
        return torch.cat([network_input(self, target01, K), (partner01 - self.mean) / self.std], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` from :meth:`inputs` (``H, W`` multiples of 16) -> ``(B, 1, H, W)`` depth in mm at ``D0``."""
        c = self.config
        return sigmoid_to_depth(torch.sigmoid(self.unet(x)), c.min_depth_mm, c.max_depth_mm)

    def predict_depth(self, target01: torch.Tensor, partner01: torch.Tensor, displacement_mm: torch.Tensor,
                      intrinsics=None) -> torch.Tensor:
        """Metric depth of ``(B, 3, h, w)`` target frames given partners and the camera displacement (mm,
        ``(B,)``) between them: letterboxed like the depth network, output cropped back to ``(B, 1, h, w)`` and
        scaled by ``displacement / D0``."""
        dev = self.mean.device
        pt = prepare_frames(self.config, target01.to(dev, torch.float32), intrinsics)
        pp = prepare_frames(self.config, partner01.to(dev, torch.float32), intrinsics, layout=pt.layout)
        out = self.forward(self.inputs(pt.rgb01, pp.rgb01, pt.K))
        d = torch.as_tensor(displacement_mm, dtype=out.dtype, device=dev).reshape(-1, 1, 1, 1)
        return pt.layout.restore(out) * d / float(self.two_frame.reference_displacement_mm)

    def card_model(self) -> dict:
        return {"arch": "two_frame", **self.two_frame.to_dict()}
