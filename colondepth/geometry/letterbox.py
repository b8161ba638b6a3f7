"""Image resizing and letterboxing with the intrinsics that go with them: the one frame -> grid transform.

Every frame a network sees (depth or pose, training or inference) goes through :class:`Letterbox`:
scaled by one factor (the aspect ratio is never changed), then zero-padded (black, like the area
outside an endoscope's field of view) to the network's grid.  The intrinsics follow the same steps
(:meth:`Letterbox.intrinsics`): resized with the pixel-centre rule of
:meth:`colondepth.geometry.camera.PinholeIntrinsics.resized` (``cx' = (cx + 0.5) s - 0.5``), then shifted
by the padding (``cx'' = cx' + left``).

Convention
    Images are ``(B, C, H, W)`` torch tensors (numpy ``(H, W[, C])`` through :func:`resize_image_np`),
    pixel centres at integers, ``ImageSize`` is ``(height, width)``.  Resampling kinds
    (:data:`RESAMPLING`):

    - ``"image"``: bilinear, ``align_corners=False`` (pixel centres aligned, as the intrinsics rule
      assumes), anti-aliased when shrinking (:func:`torch.nn.functional.interpolate`, ``antialias=True``);
    - ``"dense"``: bilinear without anti-aliasing, for smooth dense maps such as a predicted depth
      (the same sampling positions as OpenCV's ``INTER_LINEAR``);
    - ``"nearest"``: the nearest source pixel centre (``nearest-exact``: source ``floor((i + 0.5) / s)``),
      for depth with invalid zeros and for masks, which must not mix valid and invalid values.

Fit modes (:data:`FITS`) of :func:`letterbox_layout`:

- ``"inside"``: scaled to fit inside the target size, padded to exactly it (fixed-size networks);
- ``"short_side"``: scaled so the short side equals the target's short side, padded up to multiples of
  ``multiple`` (fully convolutional networks).

>>> from colondepth.conventions import ImageSize
>>> box = letterbox_layout(ImageSize(270, 480), ImageSize(128, 128), fit="short_side", multiple=16)
>>> box.resized, box.padded, (box.top, box.left)
(ImageSize(height=128, width=228), ImageSize(height=128, width=240), (0, 6))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from colondepth.conventions import ImageSize

__all__ = ["RESAMPLING", "FITS", "Letterbox", "letterbox_layout", "resize_image", "resize_image_np",
           "pad_to_multiple", "InputGrid", "common_canvas"]

#: Resampling kinds of :func:`resize_image` (see the module docstring).
RESAMPLING = ("image", "dense", "nearest")
#: Fit modes of :func:`letterbox_layout`.
FITS = ("inside", "short_side")


def _check_size(size, name: str) -> ImageSize:
    if not isinstance(size, ImageSize):
        raise TypeError(f"{name} must be an ImageSize(height, width), got {type(size).__name__}")
    if size.height <= 0 or size.width <= 0:
        raise ValueError(f"{name} must be positive, got {size}")
    return size


def resize_image(x: torch.Tensor, size: ImageSize, kind: str = "image") -> torch.Tensor:
    """Resize ``(B, C, h, w)`` images to ``size`` with the resampling ``kind`` of :data:`RESAMPLING`.

    Returns ``(B, C, H, W)`` of the input's dtype (integer and bool inputs only with ``"nearest"``);
    the input itself when it already has that size.  The caller keeps the intrinsics consistent
    (:meth:`PinholeIntrinsics.resized`).
    """
    if kind not in RESAMPLING:
        raise ValueError(f"resampling kind must be one of {RESAMPLING}, got {kind!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"resize_image expects a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    size = _check_size(size, "size")
    if tuple(x.shape[-2:]) == size.as_hw():
        return x
    if kind == "nearest":
        if x.is_floating_point():
            return F.interpolate(x, size=size.as_hw(), mode="nearest-exact")
        return F.interpolate(x.to(torch.float32), size=size.as_hw(), mode="nearest-exact").to(x.dtype)
    if not x.is_floating_point():
        raise TypeError(f"resampling kind {kind!r} needs a floating-point image, got {x.dtype}")
    return F.interpolate(x, size=size.as_hw(), mode="bilinear", align_corners=False, antialias=(kind == "image"))


def resize_image_np(img: np.ndarray, size: ImageSize, kind: str = "image") -> np.ndarray:
    """Numpy twin of :func:`resize_image` for one ``(h, w)`` or ``(h, w, C)`` image -> ``(H, W[, C])``.

    The result keeps the dtype for ``"nearest"``; ``"image"`` and ``"dense"`` need a floating-point input
    and return float32 (convert uint8 frames with ``/ 255`` first, as every network path does).

    >>> resize_image_np(np.array([[1.0, 3.0]], np.float32), ImageSize(1, 4), "dense").tolist()
    [[1.0, 1.5, 2.5, 3.0]]
    """
    a = np.asarray(img)
    if a.ndim not in (2, 3):
        raise ValueError(f"resize_image_np expects an (H, W) or (H, W, C) image, got shape {a.shape}")
    if a.shape[:2] == _check_size(size, "size").as_hw():
        return a
    if kind != "nearest" and not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"resampling kind {kind!r} needs a floating-point image, got {a.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(a if a.dtype != np.float64 else a.astype(np.float32)))
    t = t[None, None] if a.ndim == 2 else t.permute(2, 0, 1)[None]
    out = resize_image(t, size, kind)[0]
    out = out[0] if a.ndim == 2 else out.permute(1, 2, 0)
    return np.ascontiguousarray(out.numpy())


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``(B, C, H, W)`` at the bottom and right up to multiples of ``multiple`` (pixel ``(0, 0)``
    stays where it is, so intrinsics and coarser outputs ``[..., :H >> s, :W >> s]`` keep their origin)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    H, W = x.shape[-2:]
    Hp, Wp = -(-H // multiple) * multiple, -(-W // multiple) * multiple
    if (Hp, Wp) == (H, W):
        return x
    return F.pad(x, (0, Wp - W, 0, Hp - H))


@dataclass(frozen=True)
class Letterbox:
    """Where a frame lands on a network grid: scaled to ``resized``, placed at ``(top, left)`` of ``padded``.

    Attributes
    ----------
    frame : ImageSize of the input frame (px).
    resized : ImageSize of the scaled frame (one scale factor for both axes, up to rounding to whole pixels).
    padded : ImageSize of the grid the network sees; zeros outside rows ``top:top + resized.height`` and
        columns ``left:left + resized.width``.
    top, left : int, offset of the scaled frame in the grid (px).
    """

    frame: ImageSize
    resized: ImageSize
    padded: ImageSize
    top: int
    left: int

    def __post_init__(self) -> None:
        for name in ("frame", "resized", "padded"):
            _check_size(getattr(self, name), name)
        if self.top < 0 or self.left < 0 or self.top + self.resized.height > self.padded.height \
                or self.left + self.resized.width > self.padded.width:
            raise ValueError(f"a {self.resized} frame at top={self.top} left={self.left} does not fit the {self.padded} grid")

    # -- images ---------------------------------------------------------------------------------
    def apply(self, x: torch.Tensor, kind: str = "image") -> torch.Tensor:
        """``(B, C, frame.height, frame.width)`` -> ``(B, C, padded.height, padded.width)``: resized with
        ``kind`` (:func:`resize_image`), zero-padded."""
        if tuple(x.shape[-2:]) != self.frame.as_hw():
            raise ValueError(f"letterbox for {self.frame} frames got an image of shape {tuple(x.shape)}")
        x = resize_image(x, self.resized, kind)
        if self.padded != self.resized:
            x = F.pad(x, (self.left, self.padded.width - self.resized.width - self.left,
                          self.top, self.padded.height - self.resized.height - self.top))
        return x

    def apply_np(self, img: np.ndarray, kind: str = "image") -> np.ndarray:
        """Numpy twin of :meth:`apply` for one ``(h, w)`` or ``(h, w, C)`` image."""
        a = np.asarray(img)
        t = torch.from_numpy(np.ascontiguousarray(a))
        t = t[None, None] if a.ndim == 2 else t.permute(2, 0, 1)[None]
        out = self.apply(t, kind)[0]
        return np.ascontiguousarray((out[0] if a.ndim == 2 else out.permute(1, 2, 0)).numpy())

    def inside(self, device=None) -> torch.Tensor:
        """``(1, 1, padded.height, padded.width)`` bool, True on the scaled frame, False on the padding."""
        m = torch.zeros((1, 1) + self.padded.as_hw(), dtype=torch.bool, device=device)
        m[..., self.top:self.top + self.resized.height, self.left:self.left + self.resized.width] = True
        return m

    def crop(self, y: torch.Tensor) -> torch.Tensor:
        """The scaled frame's region ``(B, C, resized.height, resized.width)`` of a grid-sized output."""
        if tuple(y.shape[-2:]) != self.padded.as_hw():
            raise ValueError(f"expected an output on the {self.padded} grid, got shape {tuple(y.shape)}")
        return y[..., self.top:self.top + self.resized.height, self.left:self.left + self.resized.width]

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """A grid-sized dense output back on the frame's pixels: :meth:`crop`, then ``"dense"`` resize to
        ``frame`` -> ``(B, C, frame.height, frame.width)``."""
        return resize_image(self.crop(y), self.frame, "dense")

    # -- cameras --------------------------------------------------------------------------------
    def intrinsics(self, k):
        """Intrinsics (pinhole or fisheye) of the ``frame`` -> the same camera on the ``padded`` grid."""
        if k.size != self.frame:
            raise ValueError(f"intrinsics are for {k.size} but the letterbox is for {self.frame} frames")
        return k.resized(self.resized).padded(self.left, self.top, self.padded)

    def on_canvas(self, canvas: ImageSize) -> "Letterbox":
        """The same scaled frame centred on a larger ``canvas`` (a common grid for frames of several sizes)."""
        _check_size(canvas, "canvas")
        if canvas.height < self.resized.height or canvas.width < self.resized.width:
            raise ValueError(f"canvas {canvas} is smaller than the scaled frame {self.resized}")
        return Letterbox(self.frame, self.resized, canvas, (canvas.height - self.resized.height) // 2,
                         (canvas.width - self.resized.width) // 2)


def letterbox_layout(frame: ImageSize, target: ImageSize, fit: str = "inside", multiple: int = 1) -> Letterbox:
    """The :class:`Letterbox` of a ``frame`` on a network whose input size is ``target``.

    ``fit="inside"``: scale ``min(H / h, W / w)``, padded to ``target``.  ``fit="short_side"``: scale
    ``min(H, W) / min(h, w)``, padded to multiples of ``multiple``.  The scaled size is
    ``round(h * scale), round(w * scale)`` (at least 1 px); the frame is centred (``top = (Hp - nh) // 2``).
    """
    _check_size(frame, "frame")
    _check_size(target, "target")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if int(multiple) < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = frame.as_hw()
    H, W = target.as_hw()
    m = int(multiple)
    if fit == "inside":
        scale = min(H / h, W / w)
        nh, nw = max(1, min(H, round(h * scale))), max(1, min(W, round(w * scale)))
        Hp, Wp = H, W
    else:
        scale = min(H, W) / min(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        Hp, Wp = -(-nh // m) * m, -(-nw // m) * m
    return Letterbox(frame, ImageSize(nh, nw), ImageSize(Hp, Wp), (Hp - nh) // 2, (Wp - nw) // 2)


@dataclass(frozen=True)
class InputGrid:
    """How frames are laid out for a network: its ``size`` (target), ``fit`` (:data:`FITS`) and ``multiple``.

    :meth:`layout` gives the :class:`Letterbox` of a frame size; the depth network's grid is
    ``DepthNetConfig.input_grid``.
    """

    size: ImageSize
    fit: str = "inside"
    multiple: int = 1

    def __post_init__(self) -> None:
        _check_size(self.size, "size")
        if self.fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
        if int(self.multiple) < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")

    def layout(self, frame: ImageSize) -> Letterbox:
        return letterbox_layout(frame, self.size, self.fit, self.multiple)


def common_canvas(boxes: list[Letterbox]) -> Optional[ImageSize]:
    """The smallest grid holding every box's ``padded`` grid (``None`` for no boxes)."""
    if not boxes:
        return None
    return ImageSize(max(b.padded.height for b in boxes), max(b.padded.width for b in boxes))
