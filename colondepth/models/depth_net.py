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

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from colondepth.conventions import ImageSize

#: Optional input channels beside RGB and how many channels each adds:
#: ``rays``: x and y of the unit ray direction of every pixel (from the intrinsics: the camera's field
#: of view and principal point); ``physics``: the inverse-square-light depth prior
#: ``log(1 / sqrt(luminance))`` minus its image median (:func:`physics_prior_channel`).
INPUT_CHANNELS = {"rays": 2, "physics": 1}

#: What the network sees of a frame's colour (``DepthNetConfig.colour``): all of it, or its luminance alone.
COLOUR_MODES = ("rgb", "grey")

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
    colour : str
        ``"rgb"``: the network sees the frame's colours; ``"grey"``: it sees only the frame's luminance, in all
        three channels (:func:`grey_frames`): mucosa colour, white balance and the camera's colour response
        differ between endoscopes and patients far more than shading does.
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
    arch: str = "dispnet"
    features: list = field(default_factory=lambda: [16, 16, 32, 64, 128, 16])
    inputs: list = field(default_factory=list)
    default_fov_deg: float = 140.0
    colour: str = "rgb"

    def __post_init__(self) -> None:
        if self.colour not in COLOUR_MODES:
            raise ValueError(f"colour must be one of {', '.join(COLOUR_MODES)}, got {self.colour!r}")
        if self.arch not in ("dispnet", "basic_unet"):
            raise ValueError(f"arch must be 'dispnet' or 'basic_unet', got {self.arch!r}")
        bad = [i for i in self.inputs if i not in INPUT_CHANNELS]
        if bad:
            raise ValueError(f"inputs: unknown {bad}; choose from {sorted(INPUT_CHANNELS)}")
        if not 1.0 <= float(self.default_fov_deg) < 180.0:
            raise ValueError(f"default_fov_deg must be in [1, 180), got {self.default_fov_deg}")
        if self.arch == "basic_unet":
            if len(self.features) != 6 or any(int(c) <= 0 for c in self.features):
                raise ValueError(f"features: basic_unet needs 6 positive channel counts, got {self.features}")
            self.num_scales = 1
            why = "a BasicUNet halves the resolution 4 times"
        else:
            n = len(self.encoder_channels)
            if n < 1 or len(self.decoder_channels) != n:
                raise ValueError(
                    f"encoder_channels and decoder_channels need the same non-zero length, got "
                    f"{self.encoder_channels} and {self.decoder_channels}"
                )
            if any(int(c) <= 0 for c in list(self.encoder_channels) + list(self.decoder_channels)):
                raise ValueError("channel counts must be positive")
            if not 1 <= self.num_scales <= n:
                raise ValueError(f"num_scales must be in 1..{n}, got {self.num_scales}")
            if self.norm not in ("batch", "group", "none"):
                raise ValueError(f"norm must be 'batch', 'group' or 'none', got {self.norm!r}")
            why = "2 ** number of encoder levels"
        div = self.size_multiple
        if self.input_height % div or self.input_width % div or self.input_height <= 0 or self.input_width <= 0:
            raise ValueError(
                f"input size {self.input_height}x{self.input_width} (HxW) must be positive multiples of {div} ({why})"
            )
        if not 0 < self.min_depth_mm < self.max_depth_mm:
            raise ValueError(f"need 0 < min_depth_mm < max_depth_mm, got {self.min_depth_mm}, {self.max_depth_mm}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need 3 entries each, std positive")

    @property
    def input_size(self) -> ImageSize:
        return ImageSize(int(self.input_height), int(self.input_width))

    @property
    def input_grid(self):
        """The :class:`~colondepth.geometry.letterbox.InputGrid` frames are letterboxed onto: ``dispnet``
        fits inside ``input_size``; ``basic_unet`` scales the short side to ``input_size``'s short side and pads
        to multiples of :attr:`size_multiple`."""
        from colondepth.geometry.letterbox import InputGrid

        fit = "inside" if self.arch == "dispnet" else "short_side"
        return InputGrid(self.input_size, fit, self.size_multiple)

    @property
    def in_channels(self) -> int:
        """Network input channels: RGB plus the optional :data:`INPUT_CHANNELS`."""
        return 3 + sum(INPUT_CHANNELS[i] for i in self.inputs)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (one per halving of the resolution)."""
        return 16 if self.arch == "basic_unet" else 2 ** len(self.encoder_channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = [int(c) for c in d["features"]]
        d["inputs"] = [str(i) for i in d["inputs"]]
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
        c_in = cfg.in_channels  # RGB plus the optional ray / physics channels (network_input)
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
    def normalise(self, rgb01: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
        """The network input for ``(B, 3, H, W)`` RGB in [0, 1]: see :func:`network_input`."""
        return network_input(self, rgb01, K)

    def prepare(self, rgb01: torch.Tensor, intrinsics=None) -> tuple[torch.Tensor, tuple]:
        """Aspect-preserving resize + padding to the network's grid: see :func:`letterbox`."""
        return letterbox(self, rgb01, intrinsics)

    @torch.no_grad()
    def predict_depth(self, rgb01: torch.Tensor, intrinsics=None) -> torch.Tensor:
        """Depth ``(B, 1, h, w)`` in mm for RGB ``(B, 3, h, w)`` float in [0, 1] at any resolution.

        ``intrinsics``: a :class:`~colondepth.geometry.camera.PinholeIntrinsics` of the ``(h, w)`` frames,
        or None for the model's ``default_fov_deg`` guess.  The aspect ratio is never changed
        (:func:`letterbox`); the finest output is cropped and resized back bilinearly.  Does not change
        the train/eval mode: call ``model.eval()`` first for inference.
        """
        return predict_depth_letterboxed(self, rgb01, intrinsics)


def pinhole_ray_channels(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, 2, H, W)`` x and y components of the unit ray direction of every pixel.

    ``K`` is ``(B, 3, 3)`` (or ``(3, 3)``) OpenCV pinhole intrinsics of the ``(H, W)`` grid, pixel centres
    at integer coordinates: the ray of pixel ``(u, v)`` is ``((u - cx) / fx, (v - cy) / fy, 1)``, normalised.

    >>> K = torch.tensor([[2.0, 0, 1], [0, 2.0, 0], [0, 0, 1]])
    >>> r = pinhole_ray_channels(K, 1, 3)  # pixel u = 3 - 1 = 2 is 0.5 to the right: ray (0.5, 0, 1)
    >>> round(float(r[0, 0, 0, 2]), 4), round(float(r[0, 0, 0, 1]), 4)
    (0.4472, 0.0)
    """
    from colondepth.geometry.projection import pixel_rays

    rays = pixel_rays(K.to(torch.float32), ImageSize(int(height), int(width)))  # (B, 3, H, W), unit z
    x, y = rays[:, 0], rays[:, 1]
    norm = torch.sqrt(1.0 + x * x + y * y)
    return torch.stack([x / norm, y / norm], dim=1)


def linear_luminance_t(rgb01: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` linear Rec. 709 luminance of ``(B, 3, H, W)`` display-encoded RGB in [0, 1] (display
    gamma ``DEFAULT_GAMMA`` undone first): the torch twin of :func:`colondepth.eval.baselines.linear_luminance`."""
    from colondepth.eval.baselines import DEFAULT_GAMMA, REC709_WEIGHTS

    w = torch.tensor(REC709_WEIGHTS, dtype=rgb01.dtype, device=rgb01.device).view(1, 3, 1, 1)
    return (rgb01.clamp(0, 1) ** DEFAULT_GAMMA * w).sum(1, keepdim=True)


def grey_frames(rgb01: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` grey frames of ``(B, 3, H, W)`` display-encoded RGB in [0, 1]: the linear luminance
    (:func:`linear_luminance_t`) re-encoded with the display gamma, in all three channels.  A grey frame has
    the luminance of its colour original, so the physics prior of either is the same.

    >>> import torch
    >>> g = grey_frames(torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1))
    >>> [round(float(v), 4) for v in g.flatten()]
    [0.5015, 0.5015, 0.5015]
    >>> bool(torch.allclose(linear_luminance_t(g), linear_luminance_t(torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1))))
    True
    """
    from colondepth.eval.baselines import DEFAULT_GAMMA

    return (linear_luminance_t(rgb01) ** (1.0 / DEFAULT_GAMMA)).expand(-1, 3, -1, -1)


def seen_colour(config: "DepthNetConfig", rgb01: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` frames as a network of ``config`` sees them: unchanged, or grey (:func:`grey_frames`)
    with ``config.colour == "grey"``.  Every frame a depth or two-frame network is fed passes through this."""
    return grey_frames(rgb01) if config.colour == "grey" else rgb01


def physics_prior_channel(rgb01: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` inverse-square-light log-depth prior of ``(B, 3, H, W)`` RGB in [0, 1].

    The same model as :func:`colondepth.eval.baselines.physics_depth_mm` (display gamma undone, Rec. 709
    luminance, Gaussian blur, dark floor): ``log(1 / sqrt(luminance))``, minus its per-image median over
    lit pixels (linear luminance above 4x the floor) so the channel carries shape, not the unknown light
    scale, and black borders do not shift it.
    """
    import kornia

    from colondepth.eval.baselines import DEFAULT_MIN_LUMINANCE, DEFAULT_SMOOTH_SIGMA_PX

    lum = linear_luminance_t(rgb01)
    sig = float(DEFAULT_SMOOTH_SIGMA_PX)
    k = 2 * int(math.ceil(3 * sig)) + 1
    lum = kornia.filters.gaussian_blur2d(lum, (k, k), (sig, sig), border_type="replicate")
    logd = -0.5 * torch.log(lum.clamp(min=DEFAULT_MIN_LUMINANCE))
    # the median over lit pixels: black borders (outside an endoscope's field of view, padding) would
    # otherwise decide it; with no lit pixel at all, over every pixel
    flat = logd.flatten(1)
    lit = lum.flatten(1) > 4.0 * DEFAULT_MIN_LUMINANCE
    masked = torch.where(lit, flat, torch.full_like(flat, float("nan")))
    med = torch.nanmedian(masked, dim=1).values
    med = torch.where(torch.isnan(med), flat.median(dim=1).values, med).view(-1, 1, 1, 1)
    return logd - med


def default_K(config: "DepthNetConfig", height: int, width: int, batch: int, device=None) -> torch.Tensor:
    """``(B, 3, 3)`` the field-of-view guess (``config.default_fov_deg`` across the width, centred)."""
    f = (width / 2.0) / math.tan(math.radians(float(config.default_fov_deg)) / 2.0)
    K = torch.tensor([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]], device=device)
    return K.expand(batch, 3, 3)


def network_input(net: nn.Module, rgb01: torch.Tensor, K: torch.Tensor | None = None) -> torch.Tensor:
    """The one preprocessing of every depth network: RGB ``(B, 3, H, W)`` in [0, 1] -> ``(B, C, H, W)``.

    With ``config.colour == "grey"`` the frames are made grey first (:func:`grey_frames`).  Then normalised
    RGB (``(rgb - mean) / std``) and the optional channels named by ``config.inputs`` in that order: ray
    directions from ``K`` (``(B, 3, 3)`` or ``(3, 3)`` intrinsics of this ``(H, W)`` grid; None:
    :func:`default_K`) and the physics prior.  Training and inference both call this.
    """
    cfg = net.config
    rgb01 = seen_colour(cfg, rgb01)
    parts = [(rgb01 - net.mean) / net.std]
    for name in cfg.inputs:
        if name == "rays":
            b, _, h, w = rgb01.shape
            KK = default_K(cfg, h, w, b, rgb01.device) if K is None else torch.as_tensor(K).to(rgb01.device)
            if KK.ndim == 2:
                KK = KK.expand(b, 3, 3)
            parts.append(pinhole_ray_channels(KK, h, w).to(rgb01.dtype))
        elif name == "physics":
            parts.append(physics_prior_channel(rgb01))
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def frame_intrinsics(config: "DepthNetConfig", frame: ImageSize, intrinsics=None):
    """The camera of ``frame``-sized frames: ``intrinsics`` (checked against ``frame``) or, for None, the
    model's field-of-view guess (``config.default_fov_deg`` across the width, principal point centred)."""
    from colondepth.geometry.camera import PinholeIntrinsics

    if intrinsics is None:
        return PinholeIntrinsics.from_fov(frame, float(config.default_fov_deg))
    if intrinsics.size != frame:
        raise ValueError(f"intrinsics are for {intrinsics.size} but the frames are {frame}")
    return intrinsics


@dataclass(frozen=True)
class PreparedFrames:
    """Frames on a network's grid (:func:`prepare_frames`).

    Attributes
    ----------
    rgb01 : (B, 3, Hp, Wp) float RGB in [0, 1], letterboxed (zeros on the padding).
    K : (3, 3) float32 pinhole intrinsics (px) of the ``(Hp, Wp)`` grid.
    inside : (1, 1, Hp, Wp) bool, True on the frame, False on the padding.
    layout : the :class:`~colondepth.geometry.letterbox.Letterbox` used.
    """

    rgb01: torch.Tensor
    K: torch.Tensor
    inside: torch.Tensor
    layout: object


def prepare_frames(config: "DepthNetConfig", rgb01: torch.Tensor, intrinsics=None, layout=None) -> PreparedFrames:
    """The one frame -> network-grid transform of training and inference (depth and pose networks).

    ``rgb01`` ``(B, 3, h, w)`` float RGB in [0, 1]; ``intrinsics`` a PinholeIntrinsics of the ``(h, w)``
    frames or None (:func:`frame_intrinsics`); ``layout`` a
    :class:`~colondepth.geometry.letterbox.Letterbox` for ``(h, w)`` frames (default
    ``config.input_grid.layout``).  The frames are resized with the ``"image"`` resampling (bilinear,
    anti-aliased) keeping their aspect ratio and zero-padded; the intrinsics follow.  The network input
    is then :func:`network_input` ``(rgb01, K)``.
    """
    if rgb01.ndim != 4 or rgb01.shape[1] != 3:
        raise ValueError(f"frames must have shape (B, 3, H, W), got {tuple(rgb01.shape)}")
    frame = ImageSize(int(rgb01.shape[-2]), int(rgb01.shape[-1]))
    box = config.input_grid.layout(frame) if layout is None else layout
    k = box.intrinsics(frame_intrinsics(config, frame, intrinsics))
    K = torch.tensor([[k.fx, 0.0, k.cx], [0.0, k.fy, k.cy], [0.0, 0.0, 1.0]], dtype=torch.float32,
                     device=rgb01.device)
    return PreparedFrames(box.apply(rgb01, "image"), K, box.inside(rgb01.device), box)


def letterbox(net: nn.Module, rgb01: torch.Tensor, intrinsics=None):
    """Resize ``(B, 3, h, w)`` RGB to the network's grid *without changing its aspect ratio*, and pad.

    - ``dispnet`` (fixed input size): scaled to fit inside ``input_size``, zero-padded around it;
    - ``basic_unet`` (fully convolutional): scaled so the short side equals the short side of
      ``input_size``, zero-padded (black, like the area outside an endoscope's field of view) to
      multiples of 16.

    Returns ``(network input (B, C, Hp, Wp), (top, left, nh, nw))`` where the frame occupies rows
    ``top:top+nh`` and columns ``left:left+nw``.  Ray channels use ``intrinsics`` (a PinholeIntrinsics of
    the ``(h, w)`` frame, or None for the field-of-view guess) moved to the padded grid.  The layout and
    resampling are :func:`prepare_frames`'s.
    """
    p = prepare_frames(net.config, rgb01, intrinsics)
    box = p.layout
    return network_input(net, p.rgb01, p.K), (box.top, box.left, box.resized.height, box.resized.width)


def predict_depth_letterboxed(net: nn.Module, rgb01: torch.Tensor, intrinsics=None) -> torch.Tensor:
    """``(B, 3, h, w)`` RGB in [0, 1] -> ``(B, 1, h, w)`` depth in mm via :func:`prepare_frames`; the finest
    output is cropped to the frame and resized back (``Letterbox.restore``)."""
    if rgb01.ndim != 4 or rgb01.shape[1] != 3:
        raise ValueError(f"predict_depth expects (B, 3, H, W) RGB, got shape {tuple(rgb01.shape)}")
    p = prepare_frames(net.config, rgb01.to(net.mean.device, torch.float32), intrinsics)
    depth = net.forward(network_input(net, p.rgb01, p.K), num_outputs=1)[0]
    return p.layout.restore(depth)


class UNetDepthNet(nn.Module):
    """RGB (+ optional ray / physics channels) -> depth (mm) with MONAI's ``BasicUNet``.

    A fully convolutional U-Net (MONAI ``BasicUNet``: two convolutions per level, instance
    normalisation, LeakyReLU, 4 down-samplings, ``features`` channels); its one output channel goes
    through a sigmoid and :func:`sigmoid_to_depth`, so depth stays in ``[min_depth_mm, max_depth_mm]``.
    Instance normalisation makes the features independent of a frame's overall gain, which real
    endoscopes change all the time (auto-exposure).

    Shapes
    ------
    ``forward(x)``: ``x`` ``(B, C, H, W)`` from :func:`network_input`, ``H, W`` multiples of 16; returns
    ``[(B, 1, H, W)]`` z-depth in mm (one scale).
    ``predict_depth(rgb01, intrinsics)``: ``(B, 3, h, w)`` in [0, 1], any size -> ``(B, 1, h, w)`` mm.
    """

    def __init__(self, config: DepthNetConfig):
        super().__init__()
        from monai.networks.nets import BasicUNet

        self.config = config
        self.unet = BasicUNet(spatial_dims=2, in_channels=config.in_channels, out_channels=1,
                              features=tuple(int(c) for c in config.features))
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, num_outputs: int | None = None) -> list[torch.Tensor]:
        """``[(B, 1, H, W)]`` depth in mm for the network input ``x`` (see class docstring)."""
        cfg = self.config
        return [sigmoid_to_depth(torch.sigmoid(self.unet(x)), cfg.min_depth_mm, cfg.max_depth_mm)]

    normalise = DepthNet.normalise
    prepare = DepthNet.prepare
    predict_depth = DepthNet.predict_depth


def build_depth_net(config: DepthNetConfig | dict | None = None) -> nn.Module:
    """Build a :class:`DepthNet` or :class:`UNetDepthNet` (``config.arch``) from a config or a plain dict
    (as stored in model cards)."""
    if isinstance(config, dict):
        config = DepthNetConfig.from_dict(config)
    config = config or DepthNetConfig()
    return UNetDepthNet(config) if config.arch == "basic_unet" else DepthNet(config)
