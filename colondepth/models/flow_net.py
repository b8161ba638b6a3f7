"""Optical-flow network for CoopNet-style co-training (Hariat et al. 2023).

A MONAI ``BasicUNet`` reads a target frame and one source frame concatenated along channels
``(B, 6, H, W)`` (each normalised like the pose network's input) and predicts the flow from the target to
the source: the pixel ``m`` of the target shows what the source shows at ``m + flow(m)`` (px, ``(u, v)``
order, OpenCV pixel centres at integers).  The output goes through ``tanh`` and is scaled to at most
``max_flow_fraction`` of the frame's larger side, so a fresh network predicts small flows.

Shapes: ``forward(target (B, 3, H, W), source (B, 3, H, W)) -> (B, 2, H, W)`` px; any ``H, W`` (inputs are
zero-padded to multiples of 16 and the output cropped back).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from colondepth.geometry.letterbox import pad_to_multiple

__all__ = ["FlowNetConfig", "FlowNet"]

_MEAN, _STD = 0.45, 0.225


@dataclass
class FlowNetConfig:
    """``features``: the six channel counts of MONAI's ``BasicUNet``; ``max_flow_fraction``: largest flow as a
    fraction of the frame's larger side."""

    features: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
    max_flow_fraction: float = 0.25

    def __post_init__(self) -> None:
        self.features = tuple(int(c) for c in self.features)
        if len(self.features) != 6 or min(self.features) < 1:
            raise ValueError(f"features must be six positive channel counts, got {list(self.features)}")
        if not 0 < self.max_flow_fraction <= 1:
            raise ValueError(f"max_flow_fraction must be in (0, 1], got {self.max_flow_fraction}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d


class FlowNet(nn.Module):
    """Target -> source optical flow (see the module docstring)."""

    def __init__(self, config: FlowNetConfig | None = None):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.config = config or FlowNetConfig()
        self.unet = BasicUNet(spatial_dims=2, in_channels=6, out_channels=2, features=self.config.features)
        with torch.no_grad():  # start near zero flow
            last = [m for m in self.unet.modules() if isinstance(m, nn.Conv2d)][-1]
            last.weight.mul_(0.01)
            if last.bias is not None:
                last.bias.zero_()

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        if target.dim() != 4 or target.shape[1] != 3 or source.shape != target.shape:
            raise ValueError(f"target and source must both be (B, 3, H, W); got {tuple(target.shape)} and "
                             f"{tuple(source.shape)}")
        H, W = target.shape[-2:]
        x = (torch.cat([target, source], 1) - _MEAN) / _STD
        out = self.unet(pad_to_multiple(x, 16))[..., :H, :W]
        return torch.tanh(out) * (self.config.max_flow_fraction * max(H, W))
