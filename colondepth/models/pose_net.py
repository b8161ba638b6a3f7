"""Pose network with explainability masks (Zhou et al., CVPR 2017, "PoseExpNet").

One convolutional encoder reads the target frame and N source frames concatenated along channels
``(B, 3 (1 + N), H, W)``; it is shared by

- the pose head: a 1x1 convolution to ``6 N`` channels averaged over space, giving per source the
  6-DoF ``src_from_tgt`` as ``[axis-angle (rad), translation (mm)]``.  Outputs are scaled small at
  initialisation (``rotation_scale`` rad and ``translation_scale_mm`` mm per unit of the head), so the
  first poses are near identity; and
- the explainability head: a decoder with skip connections predicting, at ``num_mask_scales`` scales
  (full resolution first, each next one half the size), one soft mask per source in (0, 1).  Its
  regulariser (binary cross-entropy towards 1) is
  :func:`colondepth.losses.photometric.explainability_regularization`.

Convention: ``src_from_tgt[:, n]`` maps points of the target camera into source ``n``'s camera (OpenCV,
mm), the matrix :func:`colondepth.geometry.warp.warp_source_to_target` expects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from colondepth.geometry.letterbox import pad_to_multiple
from colondepth.geometry.pose import pose_from_axis_angle_translation

__all__ = ["PoseNetConfig", "PoseNetOutput", "PoseNet", "build_pose_net"]

_MEAN, _STD = 0.45, 0.225


@dataclass
class PoseNetConfig:
    """``num_sources`` N; ``channels`` per encoder stage (each halves the resolution); ``num_mask_scales``
    0 disables the explainability head; output scales in rad / mm per unit."""

    num_sources: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_mask_scales: int = 4
    rotation_scale: float = 0.01
    translation_scale_mm: float = 1.0
    mask_init_bias: float = 2.0

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.num_sources < 1:
            raise ValueError(f"num_sources must be >= 1, got {self.num_sources}")
        if len(self.channels) < 2:
            raise ValueError("channels needs at least two stages")
        if not 0 <= self.num_mask_scales <= len(self.channels):
            raise ValueError(f"num_mask_scales must be in [0, {len(self.channels)}], got {self.num_mask_scales}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


@dataclass
class PoseNetOutput:
    """``src_from_tgt`` (B, N, 4, 4) mm; ``vec6`` (B, N, 6) ``[axis-angle rad, translation mm]``;
    ``masks`` list (finest first) of (B, N, H / 2**s, W / 2**s) in (0, 1), or None."""

    src_from_tgt: torch.Tensor
    vec6: torch.Tensor
    masks: Optional[list[torch.Tensor]]


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.ReLU(inplace=True))


class PoseNet(nn.Module):
    """See the module docstring.  ``forward(target (B, 3, H, W), sources (B, N, 3, H, W))`` with images in
    [0, 1] of any size: frames are zero-padded at the bottom and right up to multiples of :attr:`divisor`
    (:func:`colondepth.geometry.letterbox.pad_to_multiple`; black, like the letterbox padding the frames
    already carry), and the masks are cropped back to ``(H >> s, W >> s)``.  Callers letterbox frames with
    the depth network's transform first (:func:`colondepth.models.depth_net.prepare_frames`), never
    stretch them."""

    def __init__(self, config: PoseNetConfig | None = None):
        super().__init__()
        self.config = cfg = config or PoseNetConfig()
        n_in = 3 * (1 + cfg.num_sources)
        kernels = [7, 5] + [3] * (len(cfg.channels) - 2)
        self.encoder = nn.ModuleList()
        cin = n_in
        for c, k in zip(cfg.channels, kernels):
            self.encoder.append(nn.Sequential(_conv(cin, c, k, stride=2), _conv(c, c, 3)))
            cin = c
        self.pose_head = nn.Conv2d(cfg.channels[-1], 6 * cfg.num_sources, 1)
        nn.init.normal_(self.pose_head.weight, std=1e-3)
        nn.init.zeros_(self.pose_head.bias)

        self.decoder = nn.ModuleList()
        self.mask_heads = nn.ModuleList()
        if cfg.num_mask_scales:
            rev = list(cfg.channels[::-1])  # deepest first
            dec_in = rev[0]
            for i in range(len(rev)):
                skip = rev[i + 1] if i + 1 < len(rev) else n_in
                out = max(rev[i] // 2, 8)
                self.decoder.append(_conv(dec_in + skip, out, 3))
                dec_in = out
            # mask heads on the last num_mask_scales decoder outputs (coarse to fine)
            outs = [max(c // 2, 8) for c in rev]
            for c in outs[-cfg.num_mask_scales:]:
                head = nn.Conv2d(c, cfg.num_sources, 3, padding=1)
                nn.init.zeros_(head.weight)
                nn.init.constant_(head.bias, cfg.mask_init_bias)
                self.mask_heads.append(head)

    @property
    def divisor(self) -> int:
        return 2 ** len(self.config.channels)

    def forward(self, target: torch.Tensor, sources: torch.Tensor) -> PoseNetOutput:
        cfg = self.config
        if target.dim() != 4 or sources.dim() != 5 or sources.shape[1] != cfg.num_sources:
            raise ValueError(f"expected target (B, 3, H, W) and sources (B, {cfg.num_sources}, 3, H, W), got "
                             f"{tuple(target.shape)} and {tuple(sources.shape)}")
        B, N, _, H, W = sources.shape
        if tuple(target.shape[-2:]) != (H, W) or H < 1 or W < 1:
            raise ValueError(f"target {tuple(target.shape)} and sources {tuple(sources.shape)} need one image size")
        x = pad_to_multiple(torch.cat([target, sources.reshape(B, N * 3, H, W)], dim=1), self.divisor)
        x = (x - _MEAN) / _STD
        feats = [x]
        for stage in self.encoder:
            feats.append(stage(feats[-1]))
        raw = self.pose_head(feats[-1]).mean(dim=(2, 3)).reshape(B, N, 6)
        vec6 = torch.cat([raw[..., :3] * cfg.rotation_scale, raw[..., 3:] * cfg.translation_scale_mm], dim=-1)
        src_from_tgt = pose_from_axis_angle_translation(vec6)

        masks = None
        if cfg.num_mask_scales:
            y = feats[-1]
            dec_outs = []
            for i, block in enumerate(self.decoder):
                skip = feats[-2 - i]
                y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
                y = block(torch.cat([y, skip], dim=1))
                dec_outs.append(y)
            chosen = dec_outs[-cfg.num_mask_scales:]
            masks = [torch.sigmoid(h(o)) for h, o in zip(self.mask_heads, chosen)][::-1]  # finest first
            masks = [m[..., :max(1, H >> s), :max(1, W >> s)] for s, m in enumerate(masks)]  # drop the padding
        return PoseNetOutput(src_from_tgt=src_from_tgt, vec6=vec6, masks=masks)


def build_pose_net(config: PoseNetConfig | dict | None = None) -> PoseNet:
    """A :class:`PoseNet` from a config object or a plain dict (as stored in checkpoints)."""
    if isinstance(config, dict):
        config = PoseNetConfig(**config)
    return PoseNet(config)
