"""Camera intrinsics that stay consistent under resize and crop: pinhole and fisheye.

Convention: pixel centres at integer coordinates (see :mod:`colondepth.conventions`).  Under a
resize by factors ``(s_x, s_y)`` the continuous image edge ``-0.5`` maps to ``-0.5``, so
``cx' = (cx + 0.5) * s_x - 0.5``; focal lengths scale by the same factors.  A crop at
``(x0, y0)`` shifts the principal point: ``cx' = cx - x0``.  Both rules hold for the pinhole and
for the fisheye model (distortion acts on normalised coordinates, before ``fx, cx`` are applied).

Fisheye model (OpenCV ``cv2.fisheye``, Kannala-Brandt): a camera-frame point ``(X, Y, Z)`` at angle
``theta = atan(sqrt(X^2 + Y^2) / Z)`` from the optical axis lands at
``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)`` along its azimuth:
``u = fx theta_d X / r + cx``, ``v = fy theta_d Y / r + cy`` with ``r = sqrt(X^2 + Y^2)``.
:func:`fisheye_to_pinhole_maps` resamples fisheye frames to a pinhole camera with the same optical
centre and axes (so the z-depth of a 3D point is the same in both) and back.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import ClassVar, Optional, Union

import numpy as np

from colondepth.conventions import ImageSize

#: Largest angle from the optical axis (degrees) the pinhole of :func:`fisheye_to_pinhole_maps` shows
#: by default: a 150 degree view.  A pinhole image of a view approaching 180 degrees would spend
#: almost all of its pixels on the periphery (``u = f tan(theta)`` grows without bound), so wider
#: fisheye views are cut at this angle and their periphery gets the nearest depth inside it.
DEFAULT_MAX_HALF_FOV_DEG = 75.0


#: The fisheye (Kannala-Brandt) distortion coefficients, in order.
_FISHEYE_KS = ("k1", "k2", "k3", "k4")


def _check_pixel_camera(cam) -> None:
    """Finite numbers and positive focal lengths (shared by every camera model)."""
    for name in ("fx", "fy", "cx", "cy"):
        v = float(getattr(cam, name))
        if not math.isfinite(v):
            raise ValueError(f"intrinsics {name} must be finite, got {v}")
    if cam.fx <= 0 or cam.fy <= 0:
        raise ValueError(f"intrinsics focal lengths must be positive, got fx={cam.fx} fy={cam.fy}")


class _PixelCamera:
    """``K``, resize and crop of a camera with ``fx fy cx cy`` in pixels and an image ``size``.

    Shared by :class:`PinholeIntrinsics` and :class:`FisheyeIntrinsics` (frozen dataclasses): the
    pixel-level transforms are the same for both models.
    """

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def K_tensor(self, device=None, dtype=None):
        """(3, 3) torch tensor of :attr:`K` on ``device`` (default CPU) and ``dtype`` (default float32)."""
        import torch

        return torch.as_tensor(self.K, dtype=dtype or torch.float32, device=device)

    def resized(self, new_size: ImageSize):
        """Intrinsics of the same camera after resizing the image to ``new_size``."""
        sx = new_size.width / self.size.width
        sy = new_size.height / self.size.height
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            size=new_size,
        )

    def _pixel_dict(self) -> dict:
        """``width height fx fy cx cy`` as plain numbers (the part of ``to_dict`` every model shares)."""
        return {"width": int(self.size.width), "height": int(self.size.height), "fx": float(self.fx),
                "fy": float(self.fy), "cx": float(self.cx), "cy": float(self.cy)}

    @staticmethod
    def _pixel_kwargs(d: dict) -> dict:
        """Constructor keywords ``fx fy cx cy size`` from a mapping written by :meth:`_pixel_dict`."""
        return {"fx": float(d["fx"]), "fy": float(d["fy"]), "cx": float(d["cx"]), "cy": float(d["cy"]),
                "size": ImageSize(int(d["height"]), int(d["width"]))}

    def cropped(self, x0: int, y0: int, size: ImageSize):
        """Intrinsics after keeping the window ``[x0, x0 + width) x [y0, y0 + height)``."""
        if x0 < 0 or y0 < 0 or x0 + size.width > self.size.width or y0 + size.height > self.size.height:
            raise ValueError(
                f"crop x={x0} y={y0} {size} lies outside the {self.size} image"
            )
        return replace(self, cx=self.cx - x0, cy=self.cy - y0, size=size)

    def padded(self, left: int, top: int, size: ImageSize):
        """Intrinsics after placing the image at column ``left``, row ``top`` of a larger ``size`` grid
        (zero padding around it): ``cx' = cx + left``, ``cy' = cy + top``."""
        if left < 0 or top < 0 or left + self.size.width > size.width or top + self.size.height > size.height:
            raise ValueError(f"a {self.size} image at left={left} top={top} does not fit a {size} grid")
        return replace(self, cx=self.cx + left, cy=self.cy + top, size=size)


@dataclass(frozen=True)
class PinholeIntrinsics(_PixelCamera):
    """Pinhole camera intrinsics in pixels (OpenCV convention, pixel centres at integers).

    Attributes: ``fx, fy`` focal lengths (px); ``cx, cy`` principal point (px); ``size`` the
    :class:`ImageSize` the numbers refer to.

    >>> k = PinholeIntrinsics(fx=100.0, fy=100.0, cx=63.5, cy=63.5, size=ImageSize(128, 128))
    >>> k2 = k.resized(ImageSize(64, 64))
    >>> (k2.fx, k2.cx)
    (50.0, 31.5)
    >>> k.cropped(x0=10, y0=20, size=ImageSize(50, 60)).cx
    53.5
    """

    fx: float
    fy: float
    cx: float
    cy: float
    size: ImageSize

    #: Camera model name, as written in intrinsics files (``model: pinhole``, the default).
    model: ClassVar[str] = "pinhole"

    def __post_init__(self) -> None:
        _check_pixel_camera(self)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_fov(cls, size: ImageSize, fov_x_deg: float) -> "PinholeIntrinsics":
        """Square pixels, principal point at the image centre, horizontal field of view in degrees."""
        if not 0.0 < fov_x_deg < 180.0:
            raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_x_deg}")
        fx = (size.width / 2.0) / math.tan(math.radians(fov_x_deg) / 2.0)
        return cls(fx=fx, fy=fx, cx=(size.width - 1) / 2.0, cy=(size.height - 1) / 2.0, size=size)

    @classmethod
    def from_matrix(cls, K: np.ndarray, size: ImageSize) -> "PinholeIntrinsics":
        """From a 3x3 matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (skew must be 0)."""
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {K.shape}")
        if abs(K[0, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9 or abs(K[2, 0]) > 1e-9 or abs(K[2, 1]) > 1e-9 \
                or abs(K[2, 2] - 1.0) > 1e-9:
            raise ValueError(f"K must be [[fx,0,cx],[0,fy,cy],[0,0,1]], got {K.tolist()}")
        return cls(fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]), size=size)

    # -- views --------------------------------------------------------------------------------
    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan((self.size.width / 2.0) / self.fx))

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2.0 * math.atan((self.size.height / 2.0) / self.fy))

    def to_dict(self) -> dict:
        return self._pixel_dict()

    @classmethod
    def from_dict(cls, d: dict) -> "PinholeIntrinsics":
        return cls(**cls._pixel_kwargs(d))


@dataclass(frozen=True)
class FisheyeIntrinsics(_PixelCamera):
    """Fisheye camera intrinsics in pixels: OpenCV ``cv2.fisheye`` (Kannala-Brandt) model.

    Attributes: ``fx, fy`` focal lengths (px); ``cx, cy`` principal point (px, pixel centres at
    integers); ``size`` the :class:`ImageSize` the numbers refer to; ``k1 .. k4`` the distortion
    coefficients of ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``
    (dimensionless, unchanged by resize and crop).

    >>> k = FisheyeIntrinsics(fx=60.0, fy=60.0, cx=63.5, cy=47.5, size=ImageSize(96, 128), k1=-0.02)
    >>> k.resized(ImageSize(48, 64)).fx, k.resized(ImageSize(48, 64)).k1
    (30.0, -0.02)
    >>> k.cropped(x0=10, y0=0, size=ImageSize(96, 100)).cx
    53.5
    """

    fx: float
    fy: float
    cx: float
    cy: float
    size: ImageSize
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0

    #: Camera model name, as written in intrinsics files (``model: fisheye``).
    model: ClassVar[str] = "fisheye"

    def __post_init__(self) -> None:
        _check_pixel_camera(self)
        for name in _FISHEYE_KS:
            v = float(getattr(self, name))
            if not math.isfinite(v):
                raise ValueError(f"fisheye coefficient {name} must be finite, got {v}")

    @property
    def D(self) -> np.ndarray:
        """(4,) float64 distortion coefficients ``k1 k2 k3 k4`` as ``cv2.fisheye`` takes them."""
        return np.array([self.k1, self.k2, self.k3, self.k4], dtype=np.float64)

    def to_dict(self) -> dict:
        return {"model": "fisheye", **self._pixel_dict(), **{k: float(getattr(self, k)) for k in _FISHEYE_KS}}

    @classmethod
    def from_dict(cls, d: dict) -> "FisheyeIntrinsics":
        return cls(**cls._pixel_kwargs(d), **{k: float(d[k]) for k in _FISHEYE_KS})


#: Either camera model.
Intrinsics = Union[PinholeIntrinsics, FisheyeIntrinsics]

#: Newton iterations of ``cv2.fisheye.undistortPoints`` (its default of 10 stops short at wide angles).
_UNDISTORT_CRITERIA = (3, 50, 1e-12)  # cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS
#: A fisheye pixel counts as inverted when re-distorting its ray lands within this many pixels of it.
_ROUND_TRIP_TOL_PX = 1e-3


def _pixel_centres(size: ImageSize) -> np.ndarray:
    """``(H * W, 2) float64`` pixel centres ``(u, v)`` in row-major order (integers, OpenCV)."""
    vv, uu = np.mgrid[0:size.height, 0:size.width]
    return np.stack([uu.ravel(), vv.ravel()], axis=1).astype(np.float64)


def _fisheye_angles(fisheye: FisheyeIntrinsics, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Angle from the optical axis and azimuth of fisheye pixels, inverted with ``cv2.fisheye``.

    Parameters
    ----------
    fisheye : FisheyeIntrinsics
    uv : (N, 2) float pixel coordinates of the fisheye image.

    Returns
    -------
    theta : (N,) float64 radians from the optical axis (meaningful where ``ok``).
    azimuth : (N, 2) float64 unit vector of the ray's direction in the image plane, (0, 0) on the axis.
    ok : (N,) bool, False where ``cv2.fisheye.undistortPoints`` cannot invert the model (``theta_d``
        beyond pi/2, a non-monotonic distortion polynomial, or a ray at or behind 90 degrees): re-distorting
        its answer with ``cv2.fisheye.distortPoints`` does not return to the pixel.
    """
    import cv2

    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    K, D = fisheye.K, fisheye.D
    und = cv2.fisheye.undistortPoints(uv[None], K, D, criteria=_UNDISTORT_CRITERIA)[0]
    back = cv2.fisheye.distortPoints(und[None], K, D)[0]
    ok = np.all(np.isfinite(und), axis=1) & (np.linalg.norm(back - uv, axis=1) < _ROUND_TRIP_TOL_PX)
    theta = np.arctan(np.hypot(und[:, 0], und[:, 1]))
    xd = np.stack([(uv[:, 0] - fisheye.cx) / fisheye.fx, (uv[:, 1] - fisheye.cy) / fisheye.fy], axis=1)
    norm = np.linalg.norm(xd, axis=1, keepdims=True)
    azimuth = np.divide(xd, norm, out=np.zeros_like(xd), where=norm > 0)
    return theta, azimuth, ok


@dataclass(frozen=True, eq=False)
class FisheyeUndistortion:
    """A fisheye camera, the pinhole camera it is resampled to, and the maps between their pixel grids.

    Both cameras share the optical centre and axes, so a 3D point has the same z-depth in both and
    converting a depth map is a resampling only.  Made by :func:`fisheye_to_pinhole_maps`.

    Attributes
    ----------
    fisheye : FisheyeIntrinsics
    pinhole : PinholeIntrinsics of the same image size, principal point at the fisheye's.
    to_fisheye_x, to_fisheye_y : (H, W) float32; pinhole pixel ``(u, v)`` shows fisheye pixel
        ``(to_fisheye_x[v, u], to_fisheye_y[v, u])`` (``cv2.remap`` maps for :meth:`undistort_image`).
    to_pinhole_x, to_pinhole_y : (H, W) float32; fisheye pixel ``(u, v)`` is seen at pinhole pixel
        ``(to_pinhole_x[v, u], to_pinhole_y[v, u])``, clamped into the pinhole image (the maps of
        :meth:`depth_to_fisheye`).
    fisheye_in_view : (H, W) bool; True where the fisheye pixel lies inside the pinhole's view (False: its
        depth in :meth:`depth_to_fisheye` is the nearest depth the pinhole sees).
    max_half_fov_deg : float, the cap the pinhole was built with.
    """

    fisheye: FisheyeIntrinsics
    pinhole: PinholeIntrinsics
    to_fisheye_x: np.ndarray
    to_fisheye_y: np.ndarray
    to_pinhole_x: np.ndarray
    to_pinhole_y: np.ndarray
    fisheye_in_view: np.ndarray
    max_half_fov_deg: float

    def undistort_image(self, image: np.ndarray) -> np.ndarray:
        """Fisheye ``(H, W[, C])`` image -> pinhole image of the same shape and dtype (bilinear).

        Pinhole pixels whose ray falls outside the fisheye frame are 0 (black).
        """
        import cv2

        img = np.asarray(image)
        if img.shape[:2] != self.fisheye.size.as_hw():
            raise ValueError(f"image of shape {img.shape} does not match the fisheye camera's {self.fisheye.size}")
        return cv2.remap(img, self.to_fisheye_x, self.to_fisheye_y, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def depth_to_fisheye(self, depth_mm: np.ndarray) -> np.ndarray:
        """Pinhole ``(H, W)`` z-depth -> ``(H, W) float32`` z-depth on the fisheye pixel grid (bilinear).

        The z-depth of a 3D point is the same in both cameras, so values are only resampled.  Fisheye
        pixels outside the pinhole's view (:attr:`fisheye_in_view` False) take the depth of the nearest
        pinhole pixel (their coordinates are clamped into the pinhole image).
        """
        import cv2

        d = np.asarray(depth_mm, dtype=np.float32)
        if d.shape != self.pinhole.size.as_hw():
            raise ValueError(f"depth of shape {d.shape} does not match the pinhole camera's {self.pinhole.size}")
        return cv2.remap(d, self.to_pinhole_x, self.to_pinhole_y, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=4)
def fisheye_to_pinhole_maps(fisheye: FisheyeIntrinsics,
                            max_half_fov_deg: float = DEFAULT_MAX_HALF_FOV_DEG) -> FisheyeUndistortion:
    """The pinhole camera a fisheye frame is undistorted to, with the remap maps both ways.

    The pinhole has the fisheye's image size, principal point and pixel aspect ratio ``fx / fy``.  Its
    focal length is the largest that still shows the fisheye's whole extent along the four half-axes from
    the principal point to the image edges, each taken up to ``max_half_fov_deg`` from the optical axis:
    a view much beyond 150 degrees cannot be a pinhole image (``u = f tan(theta)`` diverges at 90
    degrees), so the periphery of a wider fisheye is cut at the cap.

    Parameters
    ----------
    fisheye : FisheyeIntrinsics
    max_half_fov_deg : float in (0, 90)
        Cap on the angle from the optical axis the pinhole shows along the axes (default
        :data:`DEFAULT_MAX_HALF_FOV_DEG`, a 150 degree view).

    Returns
    -------
    FisheyeUndistortion holding the pinhole, ``to_fisheye_*`` maps (pinhole pixel -> fisheye pixel, for
    ``cv2.remap`` of the frames) and ``to_pinhole_*`` maps (fisheye pixel -> pinhole pixel, for mapping a
    depth predicted on the pinhole image back onto the fisheye grid).  Fisheye pixels outside the
    pinhole's view get the nearest valid depth: their pinhole coordinates are clamped into the image
    (they are False in ``fisheye_in_view``).  The arrays are read-only and cached per camera.
    """
    import cv2

    if not 0.0 < max_half_fov_deg < 90.0:
        raise ValueError(f"max_half_fov_deg must be in (0, 90) degrees, got {max_half_fov_deg}")
    if not isinstance(fisheye, FisheyeIntrinsics):
        raise TypeError(f"fisheye must be FisheyeIntrinsics, got {type(fisheye).__name__}")
    cap = math.radians(max_half_fov_deg)
    size = fisheye.size
    W, H = size.width, size.height
    # The four half-axes from the principal point to the continuous image edges: (direction, length px,
    # focal length along it).
    half_axes = [((-1.0, 0.0), fisheye.cx + 0.5, fisheye.fx), ((1.0, 0.0), W - 0.5 - fisheye.cx, fisheye.fx),
                 ((0.0, -1.0), fisheye.cy + 0.5, fisheye.fy), ((0.0, 1.0), H - 0.5 - fisheye.cy, fisheye.fy)]
    half_axes = [a for a in half_axes if a[1] > 0]
    if not half_axes:
        raise ValueError(f"fisheye principal point ({fisheye.cx}, {fisheye.cy}) lies outside the {size} image")
    edges = np.array([[fisheye.cx + d[0] * n, fisheye.cy + d[1] * n] for d, n, _ in half_axes])
    lengths = np.array([n for _, n, _ in half_axes])
    focal = np.array([f for _, _, f in half_axes])
    theta, _, ok = _fisheye_angles(fisheye, edges)
    theta = np.maximum(np.where(ok, np.minimum(theta, cap), cap), 1e-9)
    # The pinhole shows angle theta at pixel distance f tan(theta), so f = length / tan(theta) per half-axis,
    # written as a scale of the fisheye's (fx, fy); the smallest scale shows them all.
    scale = float(np.min(lengths / np.tan(theta) / focal))
    pinhole = PinholeIntrinsics(fx=fisheye.fx * scale, fy=fisheye.fy * scale, cx=fisheye.cx, cy=fisheye.cy,
                                size=size)

    # pinhole pixel -> fisheye pixel: OpenCV's own rectification maps (identity rotation).
    to_fx, to_fy = cv2.fisheye.initUndistortRectifyMap(fisheye.K, fisheye.D, np.eye(3), pinhole.K, (W, H),
                                                       cv2.CV_32FC1)

    # fisheye pixel -> pinhole pixel: the ray of every fisheye pixel projected by the pinhole.
    uv = _pixel_centres(size)
    th, az, ok = _fisheye_angles(fisheye, uv)
    limit = math.radians(89.0)  # keeps tan finite; such pixels are clamped into the image below
    th = np.where(ok, np.minimum(th, limit), limit)
    t = np.tan(th)
    up = pinhole.cx + pinhole.fx * t * az[:, 0]
    vp = pinhole.cy + pinhole.fy * t * az[:, 1]
    in_view = ok & (up >= -0.5) & (up <= W - 0.5) & (vp >= -0.5) & (vp <= H - 0.5)
    up = np.clip(up, 0.0, W - 1.0).astype(np.float32).reshape(H, W)
    vp = np.clip(vp, 0.0, H - 1.0).astype(np.float32).reshape(H, W)
    in_view = in_view.reshape(H, W)
    arrays = [np.ascontiguousarray(a) for a in (to_fx, to_fy, up, vp, in_view)]
    for a in arrays:
        a.setflags(write=False)
    return FisheyeUndistortion(fisheye, pinhole, *arrays, max_half_fov_deg=float(max_half_fov_deg))


@functools.lru_cache(maxsize=8)
def ray_directions(intrinsics: Intrinsics, size: Optional[ImageSize] = None) -> np.ndarray:
    """Unit ray direction of every pixel, ``(H, W, 3) float64`` in the OpenCV camera frame.

    Parameters
    ----------
    intrinsics : PinholeIntrinsics or FisheyeIntrinsics
    size : ImageSize, optional
        Image size of the rays; the intrinsics are :meth:`resized` to it when they refer to another.

    Returns
    -------
    (H, W, 3) unit vectors, read-only and cached per camera and size.  ``rays[v, u]`` is the direction of
    pixel ``(u, v)`` (pixel centres at integers), so a pixel's 3D point is ``range_mm * ray`` and its z-depth
    is ``range_mm * ray[..., 2]``.  Pinhole rays are ``K^-1 (u, v, 1)`` normalised
    (:func:`colondepth.geometry.projection.pixel_rays`); fisheye rays are ``(sin theta * azimuth, cos theta)``
    with ``theta`` inverted by ``cv2.fisheye.undistortPoints``, and NaN where the model cannot be inverted
    (at or beyond 90 degrees from the axis, see :func:`_fisheye_angles`).

    >>> k = PinholeIntrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, size=ImageSize(1, 2))
    >>> ray_directions(k).round(6).tolist()
    [[[0.0, 0.0, 1.0], [0.707107, 0.0, 0.707107]]]
    """
    size = intrinsics.size if size is None else size
    k = intrinsics if intrinsics.size == size else intrinsics.resized(size)
    if isinstance(k, FisheyeIntrinsics):
        theta, az, ok = _fisheye_angles(k, _pixel_centres(size))
        s = np.sin(theta)
        rays = np.stack([s * az[:, 0], s * az[:, 1], np.cos(theta)], axis=1)
        rays[~ok] = np.nan
        rays = rays.reshape(size.height, size.width, 3)
        rays.setflags(write=False)
        return rays
    if not isinstance(k, PinholeIntrinsics):
        raise TypeError(f"intrinsics must be PinholeIntrinsics or FisheyeIntrinsics, got {type(k).__name__}")
    import torch

    from colondepth.geometry.projection import pixel_rays

    rays = pixel_rays(torch.from_numpy(k.K), size, dtype=torch.float64)[0].permute(1, 2, 0).numpy()
    rays = rays / np.linalg.norm(rays, axis=-1, keepdims=True)
    rays.setflags(write=False)
    return rays


def range_to_z_depth(range_mm: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Convert ray length to z-depth: ``z = range * d_z`` with ``d`` the pixel's unit ray direction.

    The numpy conversion for pinhole and fisheye cameras; the torch pair for pinhole batches is
    :func:`colondepth.geometry.projection.range_to_depth` / :func:`~colondepth.geometry.projection.depth_to_range`
    (both use the rays of :func:`colondepth.geometry.projection.pixel_rays`).

    Parameters
    ----------
    range_mm : (H, W) float
        Distance from the optical centre along each pixel's ray.
    intrinsics : PinholeIntrinsics or FisheyeIntrinsics
        OpenCV convention, pixel centres at integers; resized to ``(H, W)`` if it refers to another
        size.  The rays are :func:`ray_directions` (for a pinhole ``d_z = 1 / |(x_n, y_n, 1)|`` with
        normalised coordinates).

    Returns
    -------
    (H, W) float64 z-depth (same unit as ``range_mm``); 0 (invalid) at fisheye pixels whose ray the model
    cannot give (at or beyond 90 degrees from the axis, see :func:`ray_directions`).

    >>> k = PinholeIntrinsics(fx=1.0, fy=1.0, cx=0.0, cy=0.0, size=ImageSize(1, 2))
    >>> range_to_z_depth(np.array([[1.0, 2.0]]), k).round(6).tolist()
    [[1.0, 1.414214]]
    """
    r = np.asarray(range_mm, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"range_mm must have shape (H, W), got {r.shape}")
    h, w = r.shape
    ray_z = ray_directions(intrinsics, ImageSize(h, w))[..., 2]
    return r * np.nan_to_num(ray_z, nan=0.0)
