"""Real endoscopy video as a :class:`~colondepth.datasets.base.Sequence`.

Inputs
    A video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``; decoded with PyAV) or a folder of
    frames (``.png``/``.jpg``/``.jpeg``/``.bmp``/``.tif``, sorted by name).

Region of interest
    ``crop=(x, y, w, h)`` keeps columns ``[x, x + w)`` and rows ``[y, y + h)`` of every frame (pixels,
    origin at the top-left).  Clinical recordings often carry overlays, insets or a second panel;
    ``colonoscopy_side_by_side.mp4`` keeps its endoscope image in ``crop=(0, 0, 192, 192)``.

Field-of-view mask
    :func:`estimate_fov_mask` finds the endoscope's bright image region (the corners of an endoscope
    image are black): per-pixel maximum over a few frames, a threshold, morphological opening, the
    largest connected region, holes filled; optionally replaced by the fitted circle.

Frame selection
    :func:`select_clips` drops near-static frames (mean absolute grey difference to the last kept frame
    below ``min_motion``) and splits clips at cuts (a jump of the colour-histogram distance between
    neighbours), returning lists of frame indices for :mod:`colondepth.datasets.clips`.

Intrinsics
    :func:`load_intrinsics` reads YAML/JSON ``width height fx fy cx cy`` (pixels, OpenCV, pixel centres at
    integers, for the *uncropped* frame), plus ``model: fisheye`` and ``k1 k2 k3 k4`` for a fisheye lens
    (OpenCV fisheye / Kannala-Brandt); :func:`intrinsics_for_frames` checks them against the frames and
    applies the crop; :func:`guess_intrinsics` assumes a field of view (140 degrees by default) and warns
    that depth scale and geometry are then approximate.  :func:`read_video` undistorts fisheye frames to
    the pinhole camera of :func:`colondepth.geometry.camera.fisheye_to_pinhole_maps`.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence as Seq

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.errors import UserError
from colondepth.geometry.camera import FisheyeIntrinsics, Intrinsics, PinholeIntrinsics, fisheye_to_pinhole_maps

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Default horizontal field of view assumed when no intrinsics are given (wide-angle colonoscope).
DEFAULT_FOV_DEG = 140.0


class IntrinsicsGuessWarning(UserWarning):
    """Intrinsics were guessed from a field of view: metric depth and poses are approximate."""


@dataclass(frozen=True)
class Crop:
    """A region of interest ``[x, x + width) x [y, y + height)`` in pixels of the original frame."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, value) -> "Crop":
        """From a :class:`Crop`, a 4-sequence ``(x, y, w, h)`` or the string ``"x y w h"`` / ``"x,y,w,h"``."""
        if isinstance(value, Crop):
            return value
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        try:
            vals = [int(v) for v in value]
        except (TypeError, ValueError):
            raise UserError(f"--crop {value}: expected four integers X Y W H") from None
        if len(vals) != 4:
            raise UserError(f"--crop {' '.join(map(str, vals))}: expected four integers X Y W H")
        x, y, w, h = vals
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise UserError(f"--crop {x} {y} {w} {h}: X, Y must be >= 0 and W, H > 0")
        return cls(x, y, w, h)

    def check_inside(self, size: ImageSize, source: Path) -> None:
        if self.x + self.width > size.width or self.y + self.height > size.height:
            raise UserError(
                f"{source}: --crop {self.x} {self.y} {self.width} {self.height} lies outside the "
                f"{size.width}x{size.height} (WxH) frame; choose a window inside it"
            )

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``(H, W, ...)`` -> ``(height, width, ...)`` view."""
        return frame[self.y:self.y + self.height, self.x:self.x + self.width]

    @property
    def size(self) -> ImageSize:
        return ImageSize(self.height, self.width)


# ----------------------------------------------------------------------------------------------
# intrinsics
# ----------------------------------------------------------------------------------------------
#: The keys of an intrinsics file, for help texts and messages.
INTRINSICS_KEYS = "width height fx fy cx cy"
#: One-sentence description of an intrinsics file, shared by every command's ``--intrinsics`` help.
INTRINSICS_HELP = (
    "YAML/JSON with width height fx fy cx cy (pixels, OpenCV, pixel centres at integers) of the uncropped "
    "frame; for a fisheye lens add model: fisheye and k1 k2 k3 k4 (OpenCV fisheye / Kannala-Brandt)"
)
_FISHEYE_KEYS = ("k1", "k2", "k3", "k4")
_UNSUPPORTED_DISTORTION_KEYS = ("p1", "p2", "k5", "k6", "dist_coeffs", "distortion")
CAMERA_MODELS = ("pinhole", "fisheye")


def _number(p: Path, data: dict, key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or value is None:
        raise UserError(f"{p}: {key}: {value!r} is not a number; write {key} as a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{p}: {key}: {value!r} is not a number; write {key} as a number") from None
    if not np.isfinite(v):
        raise UserError(f"{p}: {key}: {value!r} is not a finite number; write {key} as a number")
    return v


def load_intrinsics(path) -> Intrinsics:
    """Read camera intrinsics from a YAML or JSON file (pixels, OpenCV convention).

    Keys: ``width height fx fy cx cy`` for the *uncropped* frame (pixel centres at integers); optionally
    ``model: pinhole`` (the default) or ``model: fisheye`` with ``k1 k2 k3 k4`` (OpenCV fisheye /
    Kannala-Brandt).  A nested ``intrinsics:`` mapping is accepted too; other keys are ignored (a
    sequence's ``meta.yaml`` is a valid intrinsics file).

    Returns :class:`PinholeIntrinsics` or :class:`FisheyeIntrinsics`.  Raises a one-line
    :class:`UserError` naming the file and the key for: a missing key, a value that is not a number,
    ``fx``/``fy`` or ``width``/``height`` not positive (sizes must be whole numbers), ``k1``..``k4``
    without ``model: fisheye``, an unknown ``model``, and ``model: fisheye`` without all of ``k1``..``k4``.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: intrinsics file not found; pass a YAML/JSON file with {INTRINSICS_KEYS}")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise UserError(f"{p}: cannot parse intrinsics ({type(exc).__name__}); write YAML/JSON with "
                        f"{INTRINSICS_KEYS}") from None
    if isinstance(data, dict) and isinstance(data.get("intrinsics"), dict):
        data = data["intrinsics"]
    if not isinstance(data, dict):
        raise UserError(f"{p}: intrinsics must be a mapping with {INTRINSICS_KEYS}")
    model = data.get("model", "pinhole")
    if not isinstance(model, str) or model.strip().lower() not in CAMERA_MODELS:
        raise UserError(f"{p}: model: {model!r} is not a camera model ColonDepth knows; use model: pinhole "
                        f"(the default) or model: fisheye with k1 k2 k3 k4")
    model = model.strip().lower()
    missing = [k for k in ("fx", "fy", "cx", "cy", "width", "height") if k not in data]
    if missing:
        raise UserError(f"{p}: intrinsics lack {', '.join(missing)}; add them (pixels, OpenCV convention)")
    given_k = [k for k in _FISHEYE_KEYS if k in data]
    if model == "pinhole" and given_k:
        raise UserError(f"{p}: {', '.join(given_k)} given without model: fisheye; add model: fisheye for OpenCV "
                        f"fisheye coefficients or remove them")
    other = [k for k in _UNSUPPORTED_DISTORTION_KEYS if k in data]
    if other:
        raise UserError(f"{p}: {', '.join(other)}: only the fisheye model's k1 k2 k3 k4 are supported; calibrate "
                        f"with model: fisheye or undistort the frames first")
    if model == "fisheye" and len(given_k) < 4:
        lack = [k for k in _FISHEYE_KEYS if k not in data]
        raise UserError(f"{p}: model: fisheye lacks {', '.join(lack)}; give all of k1 k2 k3 k4 (0 for unused terms)")
    values = {k: _number(p, data, k) for k in ("width", "height", "fx", "fy", "cx", "cy", *given_k)}
    for key in ("width", "height"):
        if values[key] <= 0 or values[key] != int(values[key]):
            raise UserError(f"{p}: {key}: {data[key]!r} must be a positive whole number of pixels")
    for key in ("fx", "fy"):
        if values[key] <= 0:
            raise UserError(f"{p}: {key}: {data[key]!r} must be a positive focal length in pixels")
    size = ImageSize(int(values["height"]), int(values["width"]))
    common = dict(fx=values["fx"], fy=values["fy"], cx=values["cx"], cy=values["cy"], size=size)
    if model == "fisheye":
        return FisheyeIntrinsics(**common, **{k: values[k] for k in _FISHEYE_KEYS})
    return PinholeIntrinsics(**common)


def intrinsics_for_frames(intrinsics: Intrinsics, frame_size: ImageSize, crop: Optional[Crop] = None,
                          source="--intrinsics") -> Intrinsics:
    """Check ``intrinsics`` against the uncropped frames and return them for the (cropped) frames.

    Parameters
    ----------
    intrinsics : PinholeIntrinsics or FisheyeIntrinsics of the *uncropped* frame.
    frame_size : ImageSize of the uncropped frames.
    crop : Crop, optional, inside the frames (see :meth:`Crop.check_inside`); shifts ``cx, cy`` and sets
        the size to the crop's.
    source : the intrinsics file (or a description) named in the error.

    Raises a one-line :class:`UserError` naming ``source`` when ``width``/``height`` differ from the frames.
    """
    if intrinsics.size != frame_size:
        raise UserError(
            f"{source}: intrinsics are for {intrinsics.size.width}x{intrinsics.size.height} but the frames are "
            f"{frame_size.width}x{frame_size.height} (WxH); set width and height to the uncropped frame's "
            "(and fx fy cx cy for that size)"
        )
    if crop is not None:
        return intrinsics.cropped(crop.x, crop.y, crop.size)
    return intrinsics


def guess_intrinsics(size: ImageSize, fov_deg: float = DEFAULT_FOV_DEG, source: str = "video") -> PinholeIntrinsics:
    """Square pixels, centred principal point, horizontal field of view ``fov_deg``; warns loudly."""
    k = PinholeIntrinsics.from_fov(size, fov_deg)
    msg = (
        f"{source}: no --intrinsics given; assuming a {fov_deg:g} degree horizontal field of view "
        f"(fx = fy = {k.fx:.1f} px for {size.width}x{size.height}). Depth scale and geometry are approximate; "
        "calibrate the endoscope and pass --intrinsics FILE for metric results."
    )
    warnings.warn(msg, IntrinsicsGuessWarning, stacklevel=2)
    return k


# ----------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------
def _open_container(path: Path):
    """``av.open(path)``, or a :class:`UserError` naming the file (PyAV raises many error types for bad files)."""
    import av

    try:
        return av.open(str(path))
    except Exception as exc:  # noqa: BLE001
        raise UserError(
            f"{path}: cannot open video ({type(exc).__name__}: {exc}); check the file is a complete "
            "mp4/avi/mov or extract its frames to a folder"
        ) from None


def _decode_video(path: Path, crop: Optional[Crop], max_frames: Optional[int], stride: int):
    """Decode a video with PyAV; return (frames list of (H, W, 3) uint8, full ImageSize, fps)."""
    container = _open_container(path)
    frames: list[np.ndarray] = []
    full: Optional[ImageSize] = None
    fps = float("nan")
    try:
        if not container.streams.video:
            raise UserError(f"{path}: contains no video stream; pass a video file or a folder of frames")
        stream = container.streams.video[0]
        if stream.average_rate:
            fps = float(stream.average_rate)
        for i, frame in enumerate(container.decode(stream)):
            if i % stride:
                continue
            arr = frame.to_ndarray(format="rgb24")
            if full is None:
                full = ImageSize(arr.shape[0], arr.shape[1])
                if crop is not None:
                    crop.check_inside(full, path)
            if crop is not None:
                arr = np.ascontiguousarray(crop.apply(arr))
            frames.append(arr)
            if max_frames is not None and len(frames) >= max_frames:
                break
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        if not frames:
            raise UserError(
                f"{path}: cannot decode video ({type(exc).__name__}: {exc}); the file is corrupt or uses an "
                "unsupported codec; re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or extract frames"
            ) from None
        log.warning("%s: decoding stopped after %d frames (%s)", path, len(frames), exc)
    finally:
        container.close()
    if not frames:
        raise UserError(f"{path}: no decodable frames; the file is empty, corrupt or uses an unsupported codec")
    return frames, full, fps


class StreamedVideo:
    """Frames of a video file decoded on demand: memory holds one decoder and a frame or two, whatever the length.

    ``frame(i)`` returns kept frame ``i`` (every ``stride``-th decoded frame, cropped) as ``(H, W, 3) uint8``.
    Reading forward decodes forward; asking for an earlier frame reopens the file and decodes from the start
    (a full pass: reconstruction and the field-of-view estimate read in order).  The number of frames comes
    from a demux pass (packets, no decoding); a frame the decoder then cannot deliver is a :class:`UserError`
    naming the file and the frame, never a silently shorter video.
    """

    def __init__(self, path: Path, crop: Optional["Crop"], max_frames: Optional[int], stride: int):
        self.path, self.crop, self.stride = path, crop, stride
        container = _open_container(path)
        try:
            if not container.streams.video:
                raise UserError(f"{path}: contains no video stream; pass a video file or a folder of frames")
            stream = container.streams.video[0]
            self.fps = float(stream.average_rate) if stream.average_rate else float("nan")
            packets = sum(1 for pkt in container.demux(stream) if pkt.size > 0)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{path}: cannot read video packets ({type(exc).__name__}: {exc}); the file is "
                            "corrupt; re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or extract frames") from None
        finally:
            container.close()
        n = (packets + stride - 1) // stride
        self.num_frames = min(n, max_frames) if max_frames is not None else n
        self._container = None
        self._iter = None
        self._next = 0  # index of the next kept frame the open decoder yields
        self._last: tuple[int, np.ndarray] | None = None
        if self.num_frames == 0:
            raise UserError(f"{path}: no video frames; the file is empty or corrupt")
        first = self._decode_raw(0)
        self.full = ImageSize(first.shape[0], first.shape[1])
        if crop is not None:
            crop.check_inside(self.full, path)

    def _open(self) -> None:
        import av

        self.close()
        self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        self._iter = (f for k, f in enumerate(self._container.decode(stream)) if k % self.stride == 0)
        self._next = 0

    def _decode_raw(self, i: int) -> np.ndarray:
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        if self._iter is None or i < self._next:
            self._open()
        try:
            while True:
                frame = next(self._iter)
                k = self._next
                self._next += 1
                if k == i:
                    arr = frame.to_ndarray(format="rgb24")
                    self._last = (i, arr)
                    return arr
        except StopIteration:
            raise UserError(f"{self.path}: decoding ended after {self._next} of {self.num_frames} frames; the "
                            "file is truncated or corrupt; re-encode it or pass --frames to stop before the end") from None
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{self.path}: cannot decode frame {i * self.stride} ({type(exc).__name__}: {exc}); "
                            "the file is corrupt; re-encode it or pass --frames to stop before that frame") from None

    def frame(self, i: int) -> np.ndarray:
        arr = self._decode_raw(i)
        return np.ascontiguousarray(self.crop.apply(arr)) if self.crop is not None else arr

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._iter = None, None


def _list_frames(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no frames (png/jpg/bmp/tif) in this folder; pass a video file or a frame folder")
    return files


def _read_image_rgb(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        img = iio.imread(path)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}); replace or remove the file") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        else:
            raise UserError(f"{path}: unsupported image type {img.dtype}; use 8-bit RGB frames")
    return np.ascontiguousarray(img)


def read_video(
    path,
    crop=None,
    intrinsics: Optional[Intrinsics | str | Path] = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    max_frames: Optional[int] = None,
    stride: int = 1,
    fov_mask: bool | str = True,
    min_frames: int = 1,
    fps: Optional[float] = None,
    stream: bool = False,
) -> Sequence:
    """Open a video file or frame folder as a :class:`Sequence` without ground truth.

    Parameters
    ----------
    path : video file or folder of frames.
    crop : ``(x, y, w, h)``, ``"x y w h"`` or :class:`Crop`; pixels of the original frame.
    intrinsics : :class:`PinholeIntrinsics`, :class:`FisheyeIntrinsics` or a YAML/JSON path
        (:func:`load_intrinsics`), for the *original* frame size (the crop shifts the principal point).
        Fisheye frames are cropped, then undistorted to the pinhole camera of
        :func:`colondepth.geometry.camera.fisheye_to_pinhole_maps`: the sequence's frames and intrinsics
        are that pinhole's.  ``None``: :func:`guess_intrinsics` with ``fov_deg`` on the cropped frame,
        with a warning.
    max_frames, stride : keep every ``stride``-th frame, at most ``max_frames`` of them.
    fov_mask : True (largest bright region), ``"circle"`` (fitted circle) or False (all pixels valid).
    min_frames : raise a :class:`UserError` when fewer frames remain (e.g. the snippet length).
    fps : frame rate of a frame folder (videos carry their own); without it folder timestamps count frames.
    stream : a video file is decoded frame by frame on demand (:class:`StreamedVideo`) instead of into
        memory at once: memory no longer grows with the video's length; reading in order is fast, going
        back re-decodes from the start.  Frame folders are always read on demand.

    Returns
    -------
    Sequence with ``intrinsics`` for the cropped frames, ``timestamps`` in seconds (frame numbers for a
    folder without ``fps``), ``fov_mask`` (H, W) bool
    and ``extra = {"source": str, "crop": Crop or None, "fps": float, "intrinsics_guessed": bool,
    "fisheye": FisheyeIntrinsics of the cropped frames before undistortion, or None}``.
    """
    p = Path(path)
    crop_obj = Crop.parse(crop) if crop is not None else None
    if stride < 1:
        raise UserError(f"stride {stride}: must be >= 1")
    if not p.exists():
        raise UserError(f"{p}: no such video file or frame folder; check the path passed to --video")

    if p.is_dir():
        files = _list_frames(p)[::stride]
        if max_frames is not None:
            files = files[:max_frames]
        first = _read_image_rgb(files[0])
        full = ImageSize(first.shape[0], first.shape[1])
        if crop_obj is not None:
            crop_obj.check_inside(full, files[0])

        def load_rgb(i: int, _files=files, _crop=crop_obj) -> np.ndarray:
            img = _read_image_rgb(_files[i])
            if (img.shape[0], img.shape[1]) != full.as_hw():
                raise UserError(f"{_files[i]}: frame is {img.shape[1]}x{img.shape[0]}, others are "
                                f"{full.width}x{full.height}; all frames must share one size")
            return np.ascontiguousarray(_crop.apply(img)) if _crop is not None else img

        n = len(files)
        if fps is not None and not fps > 0:
            raise UserError(f"fps {fps}: must be a positive frame rate")
        fps = float(fps) if fps is not None else float("nan")
        timestamps = np.arange(n, dtype=np.float64) * stride / (fps if np.isfinite(fps) else 1.0)
    else:
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(f"{p}: unsupported video type '{p.suffix}'; use one of {' '.join(VIDEO_SUFFIXES)} or a frame folder")
        if stream:
            streamed = StreamedVideo(p, crop_obj, max_frames, stride)
            full, fps, n = streamed.full, streamed.fps, streamed.num_frames
            load_rgb = streamed.frame
        else:
            frames, full, fps = _decode_video(p, crop_obj, max_frames, stride)

            def load_rgb(i: int, _frames=frames) -> np.ndarray:
                return _frames[i]

            n = len(frames)
        dt = stride / fps if np.isfinite(fps) and fps > 0 else float(stride)
        timestamps = np.arange(n, dtype=np.float64) * dt

    if n < min_frames:
        raise UserError(f"{p}: only {n} frame(s) after stride {stride}; at least {min_frames} are needed (one snippet)")

    size = crop_obj.size if crop_obj is not None else full
    guessed = False
    fisheye = None
    if intrinsics is None:
        k = guess_intrinsics(size, fov_deg, source=str(p))
        guessed = True
    else:
        given = isinstance(intrinsics, (PinholeIntrinsics, FisheyeIntrinsics))
        k = intrinsics if given else load_intrinsics(intrinsics)
        k = intrinsics_for_frames(k, full, crop_obj, source=p if given else intrinsics)
        if isinstance(k, FisheyeIntrinsics):
            fisheye = k
            undistortion = fisheye_to_pinhole_maps(fisheye)
            k = undistortion.pinhole

            def load_rgb(i: int, _load=load_rgb, _und=undistortion) -> np.ndarray:
                return _und.undistort_image(_load(i))

    seq = Sequence(
        name=p.stem if p.is_file() else p.name,
        intrinsics=k,
        num_frames=n,
        load_rgb=load_rgb,
        timestamps=timestamps,
        extra={"source": str(p), "crop": crop_obj, "fps": fps, "intrinsics_guessed": guessed, "fisheye": fisheye},
    )
    if fov_mask:
        seq.fov_mask = estimate_fov_mask(seq, method="circle" if fov_mask == "circle" else "region")
    return seq


# ----------------------------------------------------------------------------------------------
# field-of-view mask
# ----------------------------------------------------------------------------------------------
def fov_mask_from_image(bright: np.ndarray, threshold: float = 12.0, method: str = "region",
                        open_radius: int = 2) -> np.ndarray:
    """Field-of-view mask of an endoscope image.

    Parameters
    ----------
    bright : ``(H, W)`` float grey image (0..255); typically the per-pixel max over frames.
    threshold : grey level below which a pixel counts as the black border.
    method : ``"region"`` (largest bright connected region, holes filled) or ``"circle"`` (the circle
        through that region's boundary, least-squares fit, intersected with the image).
    open_radius : radius (px) of the disk used for morphological opening (removes text/noise specks).

    Returns ``(H, W) bool``, True inside the field of view.  When nothing is bright, all True.
    """
    from scipy import ndimage
    from skimage import measure, morphology

    fg = bright > threshold
    if open_radius > 0:
        fg = ndimage.binary_opening(fg, structure=morphology.disk(open_radius).astype(bool))
    labels = measure.label(fg, connectivity=2)
    if labels.max() == 0:
        return np.ones_like(bright, dtype=bool)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    region = ndimage.binary_fill_holes(labels == int(np.argmax(counts)))
    if method == "region":
        return region
    if method != "circle":
        raise ValueError(f"unknown fov mask method {method!r}; use 'region' or 'circle'")
    boundary = region & ~ndimage.binary_erosion(region)
    # Drop boundary pixels on the image border: the circle may extend past the frame.
    boundary[0, :] = boundary[-1, :] = boundary[:, 0] = boundary[:, -1] = False
    vs, us = np.nonzero(boundary)
    if len(us) < 10:
        return region
    # Kasa fit: u^2 + v^2 = 2 a u + 2 b v + c.
    A = np.stack([2 * us, 2 * vs, np.ones_like(us)], axis=1).astype(np.float64)
    rhs = (us.astype(np.float64) ** 2 + vs.astype(np.float64) ** 2)
    (a, b, c), *_ = np.linalg.lstsq(A, rhs, rcond=None)
    r = np.sqrt(max(c + a * a + b * b, 0.0))
    vv, uu = np.mgrid[: bright.shape[0], : bright.shape[1]]
    return (uu - a) ** 2 + (vv - b) ** 2 <= r * r


def estimate_fov_mask(seq: Sequence, num_frames: int = 16, threshold: float = 12.0,
                      method: str = "region") -> np.ndarray:
    """``(H, W) bool`` field-of-view mask from the per-pixel max grey value over up to ``num_frames``
    evenly spaced frames of ``seq`` (a dark lumen in one frame is bright in another)."""
    idx = np.unique(np.linspace(0, seq.num_frames - 1, min(num_frames, seq.num_frames)).round().astype(int))
    bright = None
    for i in idx:
        g = seq.rgb(int(i)).astype(np.float32).mean(axis=2)
        bright = g if bright is None else np.maximum(bright, g)
    return fov_mask_from_image(bright, threshold=threshold, method=method)


# ----------------------------------------------------------------------------------------------
# frame selection
# ----------------------------------------------------------------------------------------------
def _small_grey(img: np.ndarray, side: int = 64) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


def _hist(img: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    import cv2

    m = None if mask is None else mask.astype(np.uint8)
    h = cv2.calcHist([img], [0, 1, 2], m, [8, 8, 8], [0, 256, 0, 256, 0, 256])
    return cv2.normalize(h, h).flatten()


def frame_motion_stats(seq: Sequence, progress: bool = False) -> dict:
    """Per neighbouring pair ``(i, i+1)``: ``mad`` mean absolute grey difference (0..255, inside the FOV
    mask, on a 64x64 thumbnail) and ``hist`` Bhattacharyya distance (0..1) of 8x8x8 colour histograms.

    Returns ``{"mad": (N-1,) float, "hist": (N-1,) float, "thumbs": (N, 64, 64) float32}``.
    """
    import cv2
    from tqdm import tqdm

    mask_small = None
    if seq.fov_mask is not None:
        mask_small = cv2.resize(seq.fov_mask.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST) > 0
    thumbs, hists = [], []
    for i in tqdm(range(seq.num_frames), desc="scanning frames", disable=not progress, leave=False):
        img = seq.rgb(i)
        thumbs.append(_small_grey(img))
        hists.append(_hist(img, seq.fov_mask))
    thumbs = np.stack(thumbs)
    mad = np.zeros(max(seq.num_frames - 1, 0))
    hist = np.zeros_like(mad)
    for i in range(seq.num_frames - 1):
        d = np.abs(thumbs[i + 1] - thumbs[i])
        mad[i] = d[mask_small].mean() if mask_small is not None and mask_small.any() else d.mean()
        hist[i] = cv2.compareHist(hists[i], hists[i + 1], cv2.HISTCMP_BHATTACHARYYA)
    return {"mad": mad, "hist": hist, "thumbs": thumbs}


def tracked_motion_px(seq: Sequence, pairs: Seq[tuple[int, int]], min_tracks: int = 10) -> np.ndarray:
    """Median image motion (px of the frame) between the frames of each pair ``(i, j)`` of ``seq``.

    The corners of frame ``i`` inside the field-of-view mask tracked into frame ``j`` and back
    (:func:`colondepth.geometry.matching.feature_matches`, ``"flow"``).  Returns ``(len(pairs),) float``: the
    median displacement of the tracks, NaN for a pair with fewer than ``min_tracks`` (no texture, or a cut).
    """
    import cv2

    from colondepth.geometry.matching import feature_matches

    grey: dict[int, np.ndarray] = {}

    def _grey(i: int) -> np.ndarray:
        if i not in grey:
            grey[i] = cv2.cvtColor(seq.rgb(int(i)), cv2.COLOR_RGB2GRAY)
        return grey[i]

    out = np.full(len(pairs), np.nan)
    for n, (i, j) in enumerate(pairs):
        p0, p1 = feature_matches(_grey(i), _grey(j), seq.fov_mask, "flow")
        if len(p0) >= min_tracks:
            out[n] = float(np.median(np.linalg.norm(p1 - p0, axis=1)))
    return out


def select_clips(
    seq: Sequence,
    min_motion: float = 1.0,
    cut_threshold: float = 0.25,
    cut_ratio: float = 6.0,
    min_clip_frames: int = 3,
    progress: bool = False,
) -> list[list[int]]:
    """Frame indices of ``seq`` grouped into clips fit for photometric training.

    - A cut is declared between ``i`` and ``i+1`` when their histogram distance (Bhattacharyya, 0..1)
      exceeds both ``cut_threshold`` and ``cut_ratio`` times the median neighbour distance.
    - Within a clip, frame ``j`` is kept only if its mean absolute grey difference (0..255) to the last
      *kept* frame is at least ``min_motion`` (so a near-static run collapses to one frame).
    - Clips with fewer than ``min_clip_frames`` kept frames are dropped.
    """
    stats = frame_motion_stats(seq, progress=progress)
    med = float(np.median(stats["hist"])) if len(stats["hist"]) else 0.0
    cuts = {i + 1 for i, h in enumerate(stats["hist"]) if h > cut_threshold and h > cut_ratio * med}
    thumbs = stats["thumbs"]
    import cv2

    mask_small = None
    if seq.fov_mask is not None:
        mask_small = cv2.resize(seq.fov_mask.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST) > 0
        if not mask_small.any():
            mask_small = None
    clips: list[list[int]] = []
    cur: list[int] = []
    for j in range(seq.num_frames):
        if j in cuts:
            if len(cur) >= min_clip_frames:
                clips.append(cur)
            cur = []
        if not cur:
            cur = [j]
            continue
        d = np.abs(thumbs[j] - thumbs[cur[-1]])
        mad = float(d[mask_small].mean() if mask_small is not None else d.mean())
        if mad >= min_motion:
            cur.append(j)
    if len(cur) >= min_clip_frames:
        clips.append(cur)
    return clips


def subsequence(seq: Sequence, indices: Seq[int], name: Optional[str] = None) -> Sequence:
    """A :class:`Sequence` view holding frames ``indices`` of ``seq`` (ground truth carried along)."""
    idx = [int(i) for i in indices]
    return Sequence(
        name=name or seq.name,
        intrinsics=seq.intrinsics,
        num_frames=len(idx),
        load_rgb=lambda i: seq.rgb(idx[i]),
        load_depth_mm=(lambda i: seq.depth_mm(idx[i])) if seq.has_depth else None,
        world_from_cam=None if seq.world_from_cam is None else seq.world_from_cam[idx],
        timestamps=None if seq.timestamps is None else np.asarray(seq.timestamps)[idx],
        level=seq.level,
        mesh_path=seq.mesh_path,
        fov_mask=seq.fov_mask,
        extra={**seq.extra, "frame_indices": idx},
    )


def split_clips(seq: Sequence, **kwargs) -> list[Sequence]:
    """:func:`select_clips` then one :class:`Sequence` per clip, named ``<name>/clip_<k>``."""
    return [subsequence(seq, c, name=f"{seq.name}/clip_{k:03d}") for k, c in enumerate(select_clips(seq, **kwargs))]
