"""Depth inference from a trained checkpoint: RGB uint8 frames in, z-depth in millimetres out.

>>> # predictor = DepthPredictor.from_checkpoint("runs/sfs/checkpoints/final.pt", device="cpu")
>>> # depth_mm = predictor.predict(rgb)            # (H, W, 3) uint8 RGB -> (H, W) float32 mm
>>> # depth_mm = predictor.predict(rgb, intrinsics=load_intrinsics("scope.yaml"))  # a calibrated camera

The device is chosen explicitly (``device=`` or :func:`colondepth.device.default_device`), input is RGB
(not BGR), and the output is z-depth in mm along the OpenCV camera +Z axis on the input's pixel grid
(not disparity).  Preprocessing (resize to the network's input size, normalisation) comes from the
checkpoint's model card; the aspect ratio is the model's business (:meth:`DepthNet.predict_depth`).

Camera: ``intrinsics=None`` lets the model assume its own camera.  A :class:`PinholeIntrinsics` of the
frames is handed to the model.  A :class:`FisheyeIntrinsics` frame is undistorted to the pinhole camera
of :func:`colondepth.geometry.camera.fisheye_to_pinhole_maps` (bilinear), the depth is predicted there
and resampled back onto the fisheye pixel grid (the z-depth of a 3D point is the same in both cameras;
fisheye pixels outside the pinhole's view get the nearest depth it sees).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.errors import UserError
from colondepth.geometry.camera import FisheyeIntrinsics, Intrinsics, PinholeIntrinsics, fisheye_to_pinhole_maps

from colondepth.resources import default_model_path

#: Where the released default model lives (package data); ``from_checkpoint()`` without a path loads it.
DEFAULT_MODEL_PATH = default_model_path()


#: A pixel is lit when its brightest channel exceeds this (uint8); endoscope borders are near 0.
VIEW_THRESHOLD = 12
#: Crop only when the lit box covers less than this fraction of the frame.
VIEW_MAX_FRACTION = 0.9


def view_box(rgbs: np.ndarray, threshold: int = VIEW_THRESHOLD) -> Optional[tuple[int, int, int, int]]:
    """Bounding box ``(y0, x0, height, width)`` of the lit field of view of ``(B, H, W, 3) uint8`` frames.

    Rows and columns count as inside when more than 2 % of their pixels (over all frames) are lit (brightest
    channel above ``threshold``); the box grows by 2 px.  None when the box covers more than
    :data:`VIEW_MAX_FRACTION` of the frame (nothing worth cropping) or fewer than 16 px a side.

    >>> f = np.zeros((1, 40, 80, 3), np.uint8); f[0, 5:35, 20:50] = 120
    >>> view_box(f)
    (3, 18, 34, 34)
    """
    lit = np.asarray(rgbs).max(axis=-1) > threshold  # (B, H, W)
    frac = lit.mean(axis=0)
    rows = np.flatnonzero(frac.mean(axis=1) > 0.02)
    cols = np.flatnonzero(frac.mean(axis=0) > 0.02)
    if rows.size == 0 or cols.size == 0:
        return None
    H, W = frac.shape
    y0, y1 = max(0, rows[0] - 2), min(H, rows[-1] + 3)
    x0, x1 = max(0, cols[0] - 2), min(W, cols[-1] + 3)
    if (y1 - y0) < 16 or (x1 - x0) < 16 or (y1 - y0) * (x1 - x0) > VIEW_MAX_FRACTION * H * W:
        return None
    return int(y0), int(x0), int(y1 - y0), int(x1 - x0)


#: Frames of a video that :meth:`DepthPredictor.video_view` looks at (evenly spaced).
VIEW_SAMPLE_FRAMES = 32


class DepthPredictor:
    """Run a :class:`colondepth.models.depth_net.DepthNet` on uint8 RGB frames.

    Attributes
    ----------
    model : DepthNet in eval mode on :attr:`device`
    card : dict, the checkpoint's model card (input size, normalisation, depth range, provenance)
    device : torch.device
    batch_size : int, frames per forward pass in :meth:`predict_batch`
    crop_to_view : bool, predict only inside the bounding box of the endoscope's field of view (the lit
        part of each frame, :func:`view_box`) and fill the black border around it with the nearest predicted
        depth: black borders and letterboxing are not part of any scene.  Default True.  A frame on its own is
        cropped to its own box, so its depth never depends on the other frames of its batch; for a video,
        :meth:`video_view` finds one box from frames spread over it and ``predict_batch(view=box)`` uses it for
        every frame (what ``predict``, ``evaluate``, ``reconstruct`` and the app do: a frame-by-frame box
        follows dark corners of the mucosa and makes the depth of neighbouring frames jump).
    flip_average : bool, also predict the mirrored frame (with the mirrored camera) and average the two
        depths geometrically: test-time augmentation that halves the speed.  ``None`` takes the model
        card's ``inference.flip_average`` (chosen on a validation split; off when absent).
    """

    def __init__(self, model, card: dict, device=None, batch_size: int = 8, flip_average: Optional[bool] = None,
                 crop_to_view: bool = True):
        from colondepth.device import default_device

        self.device = default_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        self.card = card
        self.batch_size = int(batch_size)
        if flip_average is None:
            flip_average = bool((card.get("inference") or {}).get("flip_average", False))
        self.flip_average = bool(flip_average)
        self.crop_to_view = bool(crop_to_view)
        try:
            params = inspect.signature(self.model.predict_depth).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            params = {}
        #: Whether the model's ``predict_depth`` takes the camera (``intrinsics=``).
        self.model_takes_intrinsics = "intrinsics" in params

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device=None, batch_size: int = 8,
                        flip_average: Optional[bool] = None, crop_to_view: bool = True) -> "DepthPredictor":
        """Load ``path`` (default :data:`DEFAULT_MODEL_PATH`) with ``torch.load(weights_only=True)``."""
        from colondepth.models.bundle import load_bundle

        if path is None:
            path = DEFAULT_MODEL_PATH
            if not path.is_file():
                raise UserError(f"{path}: the default model is not installed; pass --checkpoint with a .pt file "
                                f"from 'colondepth train' (RUN/checkpoints/final.pt)")
        bundle = load_bundle(path, map_location="cpu", with_pose=False)
        return cls(bundle.depth, bundle.card, device=device, batch_size=batch_size, flip_average=flip_average,
                   crop_to_view=crop_to_view)

    @property
    def depth_range_mm(self) -> tuple[float, float]:
        lo, hi = self.card["depth_range_mm"]
        return float(lo), float(hi)

    def predict(self, rgb: np.ndarray, intrinsics: Optional[Intrinsics] = None, view="frame") -> np.ndarray:
        """Depth of one frame: ``(H, W, 3) uint8`` RGB -> ``(H, W) float32`` z-depth in mm.

        ``intrinsics``, ``view``: the camera of this frame and the crop (see :meth:`predict_batch`).
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3:
            raise UserError(f"predict expects one (H, W, 3) uint8 RGB frame, got shape {rgb.shape}; "
                            f"use predict_batch for (B, H, W, 3)")
        return self.predict_batch(rgb[None], intrinsics=intrinsics, view=view)[0]

    def predict_batch(self, rgbs: np.ndarray, intrinsics: Optional[Intrinsics] = None,
                      view: "str | tuple[int, int, int, int] | None" = "frame") -> np.ndarray:
        """Depth of frames of one size: ``(B, H, W, 3) uint8`` RGB -> ``(B, H, W) float32`` z-depth in mm.

        Parameters
        ----------
        rgbs : (B, H, W, 3) uint8 RGB frames of one camera.
        intrinsics : PinholeIntrinsics or FisheyeIntrinsics for ``H x W`` frames, optional.  Pinhole: passed
            to the model.  Fisheye: frames are undistorted to a pinhole, predicted, and the depth is mapped
            back to the fisheye grid, so the output is always on the input's pixel grid.  ``None``: the model
            assumes its own camera.
        view : ``"frame"`` (default): with :attr:`crop_to_view`, each frame is cropped to its own lit box
            (:func:`view_box` of that frame alone), so the result for a frame is the same in any batch; a box
            ``(y0, x0, height, width)`` in input pixels (after fisheye undistortion): every frame is cropped to
            it; ``None``: no crop.
        """
        rgbs = np.asarray(rgbs)
        if rgbs.ndim != 4 or rgbs.shape[-1] != 3 or rgbs.dtype != np.uint8:
            raise UserError(f"predict_batch expects (B, H, W, 3) uint8 RGB frames, got shape {rgbs.shape} "
                            f"dtype {rgbs.dtype}; convert to 8-bit RGB first")
        size = ImageSize(int(rgbs.shape[1]), int(rgbs.shape[2]))
        undistortion = None
        k = intrinsics
        if intrinsics is not None:
            if not isinstance(intrinsics, (PinholeIntrinsics, FisheyeIntrinsics)):
                raise TypeError(f"intrinsics must be PinholeIntrinsics or FisheyeIntrinsics, got "
                                f"{type(intrinsics).__name__}")
            if intrinsics.size != size:
                raise UserError(f"intrinsics are for {intrinsics.size.width}x{intrinsics.size.height} but the "
                                f"frames are {size.width}x{size.height} (WxH); pass intrinsics of these frames "
                                "(after any crop)")
            if isinstance(intrinsics, FisheyeIntrinsics):
                undistortion = fisheye_to_pinhole_maps(intrinsics)
                k = undistortion.pinhole
                rgbs = np.stack([undistortion.undistort_image(f) for f in rgbs])
        if isinstance(view, str):
            if view != "frame":
                raise ValueError(f"view must be 'frame', a (y0, x0, height, width) box or None, got {view!r}")
            boxes = [view_box(f[None]) if self.crop_to_view else None for f in rgbs]
        else:
            if view is not None:
                y0, x0, bh, bw = (int(v) for v in view)
                if y0 < 0 or x0 < 0 or bh < 1 or bw < 1 or y0 + bh > size.height or x0 + bw > size.width:
                    raise UserError(f"view box {tuple(view)} (y0, x0, height, width) does not fit "
                                    f"{size.width}x{size.height} frames")
                view = (y0, x0, bh, bw)
            boxes = [view] * len(rgbs)
        out = np.empty(rgbs.shape[:3], dtype=np.float32)
        for box in dict.fromkeys(boxes):  # frames sharing a box share forward passes, in input order
            idx = [i for i, b in enumerate(boxes) if b == box]
            out[idx] = self._predict_in_box(rgbs[idx], k, box)
        if undistortion is not None:
            out = np.stack([undistortion.depth_to_fisheye(d) for d in out])
        return out

    def video_view(self, frames, intrinsics: Optional[Intrinsics] = None) -> Optional[tuple[int, int, int, int]]:
        """The lit view box of a video (``(y0, x0, height, width)`` or None) for ``predict_batch(view=...)``.

        ``frames``: a :class:`colondepth.datasets.base.Sequence` (up to :data:`VIEW_SAMPLE_FRAMES` evenly
        spaced frames are read) or a list of ``(H, W, 3) uint8`` frames (all are used); ``intrinsics``: their
        camera (a fisheye camera's frames are undistorted first, as :meth:`predict_batch` does).  None when
        :attr:`crop_to_view` is off or nothing is worth cropping (:func:`view_box`).
        """
        if not self.crop_to_view:
            return None
        if hasattr(frames, "rgb") and hasattr(frames, "num_frames"):
            n = int(frames.num_frames)
            idx = sorted(set(np.linspace(0, n - 1, min(n, VIEW_SAMPLE_FRAMES)).round().astype(int).tolist()))
            frames = [frames.rgb(i) for i in idx]
        rgbs = np.stack([np.asarray(f)[..., :3] for f in frames])
        if isinstance(intrinsics, FisheyeIntrinsics):
            undistortion = fisheye_to_pinhole_maps(intrinsics)
            rgbs = np.stack([undistortion.undistort_image(f) for f in rgbs])
        return view_box(rgbs)

    def _predict_in_box(self, rgbs: np.ndarray, k: Optional[PinholeIntrinsics],
                        box: Optional[tuple[int, int, int, int]]) -> np.ndarray:
        """Depth ``(B, H, W)`` of pinhole frames ``(B, H, W, 3) uint8`` predicted inside ``box`` (None: the
        whole frame); outside it the border repeats the nearest predicted depth."""
        import torch

        full_hw = rgbs.shape[1:3]
        if box is not None:
            y0, x0, bh, bw = box
            rgbs = rgbs[:, y0:y0 + bh, x0:x0 + bw]
            if k is not None:
                k = k.cropped(x0, y0, ImageSize(bh, bw))
            elif self.model_takes_intrinsics:  # the field-of-view guess belongs to the whole frame
                from colondepth.datasets.video import DEFAULT_FOV_DEG

                fov = float((self.card.get("model") or {}).get("default_fov_deg", DEFAULT_FOV_DEG))
                k = PinholeIntrinsics.from_fov(ImageSize(*full_hw), fov).cropped(x0, y0, ImageSize(bh, bw))
        kwargs = {"intrinsics": k} if self.model_takes_intrinsics else {}
        out = np.empty(rgbs.shape[:3], dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(rgbs), self.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(rgbs[start:start + self.batch_size]))
                x = chunk.to(self.device).permute(0, 3, 1, 2).float() / 255.0
                depth = self.model.predict_depth(x, **kwargs)[:, 0]
                if self.flip_average:
                    depth = torch.sqrt(depth * self._predict_mirrored(x, k)[:, 0])
                out[start:start + len(chunk)] = depth.float().cpu().numpy()
        if box is None:
            return out
        import cv2

        y0, x0, bh, bw = box
        H, W = full_hw
        return np.stack([cv2.copyMakeBorder(d, y0, H - y0 - bh, x0, W - x0 - bw, cv2.BORDER_REPLICATE) for d in out])

    def _predict_mirrored(self, x, k: Optional[PinholeIntrinsics]):
        """Depth of the left-right mirrored frames, mirrored back: ``(B, 1, H, W)``.

        The mirrored image is what a camera with ``cx' = W - 1 - cx`` sees of the mirrored scene, so the
        model gets that camera (without intrinsics it assumes a centred principal point either way).
        """
        kwargs = {}
        if self.model_takes_intrinsics:
            if k is not None:
                k = PinholeIntrinsics(fx=k.fx, fy=k.fy, cx=(k.size.width - 1) - k.cx, cy=k.cy, size=k.size)
            kwargs = {"intrinsics": k}
        return self.model.predict_depth(x.flip(-1), **kwargs).flip(-1)
