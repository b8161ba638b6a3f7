"""Monocular depth network: one RGB frame -> dense z-depth in millimetres, at several scales.

A light DispNet-style encoder-decoder (Zhou et al. 2017, monodepth2's decoder layout): a strided
convolutional encoder, a decoder that upsamples by 2 and concatenates the encoder feature of the
same resolution, and a sigmoid disparity head at each of the finest ``num_scales`` decoder
resolutions.  A sigmoid output ``s`` is mapped to depth by

    disp = 1 / max_depth_mm + (1 / min_depth_mm - 1 / max_depth_mm) * s,   depth_mm = 1 / disp,

so depth always lies in ``[min_depth_mm, max_depth_mm]``.

The model owns its preprocessing: :meth:`DepthNet.predict_depth` takes RGB in ``[0, 1]`` at any
resolution, resizes to the configured input size, normalises, runs and resizes the depth back.
:meth:`DepthNet.forward` is the training entry: normalised input at the input size, a list of
depths from fine to coarse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from colondepth.conventions import ImageSize

#: Channel mean / std the model normalises RGB in [0, 1] with (stored in the model card).
DEFAULT_MEAN = (0.45, 0.45, 0.45)
DEFAULT_STD = (0.225, 0.225, 0.225)


@dataclass
class DepthNetConfig:
    """Architecture and preprocessing of :class:`DepthNet` (all plain numbers: it goes into model cards).

    Attributes
    ----------
    input_height, input_width : int
        Resolution the network runs at (px); each must be a multiple of ``2 ** len(encoder_channels)``.
    min_depth_mm, max_depth_mm : float
        Output depth range (mm), ``0 < min < max``.
    encoder_channels : list of int
        Channels after each stride-2 encoder level (one entry per halving of the resolution).
    decoder_channels : list of int
        Channels of the decoder at the same resolutions as ``encoder_channels`` (fine to coarse).
    num_scales : int
        Number of side outputs (full, 1/2, 1/4, ... resolution), ``1 <= num_scales <= len(encoder_channels)``.
    norm : str
        ``"batch"``, ``"group"`` (8 groups or fewer) or ``"none"``.
    mean, std : list of float
        Per-channel normalisation applied to RGB in ``[0, 1]``.
    """

    input_height: int = 128
    input_width: int = 128
    min_depth_mm: float = 1.0
    max_depth_mm: float = 150.0
    encoder_channels: list = field(default_factory=lambda: [16, 24, 32, 48, 64])
    decoder_channels: list = field(default_factory=lambda: [8, 16, 24, 32, 48])
    num_scales: int = 4
    norm: str = "batch"
    mean: list = field(default_factory=lambda: list(DEFAULT_MEAN))
    std: list = field(default_factory=lambda: list(DEFAULT_STD))

    def __post_init__(self) -> None:
        n = len(self.encoder_channels)
        if n < 1 or len(self.decoder_channels) != n:
            raise ValueError(
                f"encoder_channels and decoder_channels need the same non-zero length, got "
                f"{self.encoder_channels} and {self.decoder_channels}"
            )
        if any(int(c) <= 0 for c in list(self.encoder_channels) + list(self.decoder_channels)):
            raise ValueError("channel counts must be positive")
        div = 2 ** n
        if self.input_height % div or self.input_width % div or self.input_height <= 0 or self.input_width <= 0:
            raise ValueError(
                f"input size {self.input_height}x{self.input_width} (HxW) must be positive multiples of {div} "
                f"(2 ** number of encoder levels)"
            )
        if not 0 < self.min_depth_mm < self.max_depth_mm:
            raise ValueError(f"need 0 < min_depth_mm < max_depth_mm, got {self.min_depth_mm}, {self.max_depth_mm}")
        if not 1 <= self.num_scales <= n:
            raise ValueError(f"num_scales must be in 1..{n}, got {self.num_scales}")
        if self.norm not in ("batch", "group", "none"):
            raise ValueError(f"norm must be 'batch', 'group' or 'none', got {self.norm!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need 3 entries each, std positive")

    @property
    def input_size(self) -> ImageSize:
        return ImageSize(int(self.input_height), int(self.input_width))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder_channels"] = [int(c) for c in d["encoder_channels"]]
        d["decoder_channels"] = [int(c) for c in d["decoder_channels"]]
        d["mean"] = [float(v) for v in d["mean"]]
        d["std"] = [float(v) for v in d["std"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DepthNetConfig":
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})


def sigmoid_to_depth(sigmoid: torch.Tensor, min_depth_mm: float, max_depth_mm: float) -> torch.Tensor:
    """Map a sigmoid output in ``[0, 1]`` to depth in mm through linear disparity.

    ``s = 0`` gives ``max_depth_mm``, ``s = 1`` gives ``min_depth_mm``.

    >>> import torch
    >>> sigmoid_to_depth(torch.tensor([0.0, 1.0]), 1.0, 100.0).tolist()
    [100.0, 1.0]
    """
    min_disp = 1.0 / max_depth_mm
    max_disp = 1.0 / min_depth_mm
    disp = min_disp + (max_disp - min_disp) * sigmoid
    return 1.0 / disp


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class _ConvBlock(nn.Sequential):
    """3x3 convolution (zero padding), normalisation, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "batch"):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=(norm == "none")),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class DepthNet(nn.Module):
    """RGB -> multi-scale depth (mm).

    Parameters
    ----------
    config : DepthNetConfig, optional
        Architecture, input size, depth range and normalisation (defaults: 128x128, 1-150 mm).

    Shapes
    ------
    ``forward(x)``: ``x`` is ``(B, 3, H, W)`` *normalised* RGB at the input size ``(H, W)``; returns a
    list of ``num_scales`` tensors ``(B, 1, H / 2**i, W / 2**i)`` of z-depth in mm, finest first.

    ``predict_depth(rgb01)``: ``(B, 3, h, w)`` RGB in ``[0, 1]`` at any resolution -> ``(B, 1, h, w)`` mm.
    """

    def __init__(self, config: DepthNetConfig | None = None):
        super().__init__()
        self.config = config or DepthNetConfig()
        cfg = self.config
        enc = [int(c) for c in cfg.encoder_channels]
        dec = [int(c) for c in cfg.decoder_channels]
        n = len(enc)
        self.encoder = nn.ModuleList()
        c_in = 3
        for c in enc:  # level i has stride 2 ** (i + 1)
            self.encoder.append(nn.Sequential(_ConvBlock(c_in, c, stride=2, norm=cfg.norm),
                                              _ConvBlock(c, c, norm=cfg.norm)))
            c_in = c
        # decoder level i produces features at stride 2 ** i (i = n-1 .. 0), i.e. at the resolution
        # of encoder level i - 1 (level 0 is full resolution, with no skip connection).
        self.dec_pre = nn.ModuleList()
        self.dec_post = nn.ModuleList()
        for i in range(n):
            c_from = enc[-1] if i == n - 1 else dec[i + 1]
            self.dec_pre.append(_ConvBlock(c_from, dec[i], norm=cfg.norm))
            c_skip = enc[i - 1] if i > 0 else 0
            self.dec_post.append(_ConvBlock(dec[i] + c_skip, dec[i], norm=cfg.norm))
        self.heads = nn.ModuleList(
            nn.Conv2d(dec[i], 1, 3, padding=1, padding_mode="replicate") for i in range(cfg.num_scales)
        )
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # -- training entry -----------------------------------------------------------------------
    def forward_sigmoid(self, x: torch.Tensor, num_outputs: int | None = None) -> list[torch.Tensor]:
        """Sigmoid outputs ``(B, 1, H / 2**i, W / 2**i)`` in ``[0, 1]`` for ``i < num_outputs``, finest first.

        ``num_outputs`` defaults to ``config.num_scales``; inference asks for 1 and skips the coarse heads.
        """
        n_out = self.config.num_scales if num_outputs is None else max(1, min(int(num_outputs), self.config.num_scales))
        feats = []
        h = x
        for level in self.encoder:
            h = level(h)
            feats.append(h)
        n = len(self.encoder)
        out: dict[int, torch.Tensor] = {}
        h = feats[-1]
        for i in range(n - 1, -1, -1):
            h = self.dec_pre[i](h)
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            if i > 0:
                h = torch.cat([h, feats[i - 1]], dim=1)
            h = self.dec_post[i](h)
            if i < n_out:
                out[i] = torch.sigmoid(self.heads[i](h))
        return [out[i] for i in range(n_out)]

    def forward(self, x: torch.Tensor, num_outputs: int | None = None) -> list[torch.Tensor]:
        """Multi-scale depth in mm for normalised input at the input size (see class docstring).

        ``num_outputs`` (default: all ``num_scales``) limits the list to the finest scales.
        """
        cfg = self.config
        return [sigmoid_to_depth(s, cfg.min_depth_mm, cfg.max_depth_mm)
                for s in self.forward_sigmoid(x, num_outputs)]

    # -- preprocessing owned by the model -----------------------------------------------------
    def normalise(self, rgb01: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> normalised network input (same shape)."""
        return (rgb01 - self.mean) / self.std

    def prepare(self, rgb01: torch.Tensor) -> torch.Tensor:
        """Resize ``(B, 3, h, w)`` RGB in [0, 1] to the input size (antialiased bilinear) and normalise."""
        size = self.config.input_size.as_hw()
        if tuple(rgb01.shape[-2:]) != size:
            rgb01 = F.interpolate(rgb01, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.normalise(rgb01)

    @torch.no_grad()
    def predict_depth(self, rgb01: torch.Tensor) -> torch.Tensor:
        """Depth ``(B, 1, h, w)`` in mm for RGB ``(B, 3, h, w)`` float in [0, 1] at any resolution.

        Runs the finest output and resizes it back bilinearly (``align_corners=False``).  Does not change
        the train/eval mode: call ``model.eval()`` first for inference.
        """
        if rgb01.ndim != 4 or rgb01.shape[1] != 3:
            raise ValueError(f"predict_depth expects (B, 3, H, W) RGB, got shape {tuple(rgb01.shape)}")
        h, w = rgb01.shape[-2:]
        x = self.prepare(rgb01.to(self.mean.device, torch.float32))
        depth = self.forward(x, num_outputs=1)[0]
        if tuple(depth.shape[-2:]) != (h, w):
            depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=False)
        return depth


def build_depth_net(config: DepthNetConfig | dict | None = None) -> DepthNet:
    """Build a :class:`DepthNet` from a config object or a plain dict (as stored in model cards)."""
    if isinstance(config, dict):
        config = DepthNetConfig.from_dict(config)
    return DepthNet(config)
