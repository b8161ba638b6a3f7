"""Camera-aware inference: intrinsics files, the fisheye model, undistortion maps, rays, the predictor.

Every geometric check is against closed forms or OpenCV's own ``cv2.fisheye.projectPoints``: a tilted
plane (offset from the axis, so flips show) has a known z-depth at every pixel of either camera.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import yaml

from colondepth.conventions import ImageSize
from colondepth.datasets.video import Crop, intrinsics_for_frames, load_intrinsics, read_video
from colondepth.errors import UserError
from colondepth.geometry.camera import (
    DEFAULT_MAX_HALF_FOV_DEG,
    FisheyeIntrinsics,
    PinholeIntrinsics,
    fisheye_to_pinhole_maps,
    ray_directions,
)
from colondepth.infer.predictor import DepthPredictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: A non-square fisheye with an off-centre principal point and all four coefficients in use.
FISHEYE = FisheyeIntrinsics(fx=55.0, fy=53.0, cx=66.2, cy=45.7, size=ImageSize(96, 128),
                            k1=-0.03, k2=0.004, k3=-0.001, k4=0.0002)
#: A tilted plane n . X = d (mm) in front of the camera, off-axis.
PLANE_N = np.array([0.25, -0.3, 1.0]) / np.linalg.norm([0.25, -0.3, 1.0])
PLANE_D = 30.0


def _project_fisheye(k: FisheyeIntrinsics, points: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points -> (N, 2) fisheye pixels with OpenCV."""
    uv, _ = cv2.fisheye.projectPoints(points[:, None, :].astype(np.float64), np.zeros(3), np.zeros(3), k.K, k.D)
    return uv[:, 0]


def _sample(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of a (H, W) float map at (N, 2) pixel positions (pixel centres at integers)."""
    u = uv[:, 0].astype(np.float32)[None]
    v = uv[:, 1].astype(np.float32)[None]
    return cv2.remap(np.asarray(img, np.float32), u, v, cv2.INTER_LINEAR)[0]


def _plane_z(rays: np.ndarray) -> np.ndarray:
    """z-depth of the plane along rays ``(..., 3)`` (any scale): ``t = d / (n . r)``, ``z = t r_z``."""
    return PLANE_D / (rays @ PLANE_N) * rays[..., 2]


def _well_seen(truth: np.ndarray) -> np.ndarray:
    """Pixels whose ray meets the plane at a moderate depth (far from its horizon, where z diverges)."""
    return np.isfinite(truth) & (truth > 0) & (truth < 80.0)


def _pinhole_plane_depth(k: PinholeIntrinsics) -> np.ndarray:
    vv, uu = np.mgrid[0:k.size.height, 0:k.size.width].astype(np.float64)
    rays = np.stack([(uu - k.cx) / k.fx, (vv - k.cy) / k.fy, np.ones_like(uu)], axis=-1)
    return _plane_z(rays)


# ---------------------------------------------------------------------------------------------------------
# intrinsics files
# ---------------------------------------------------------------------------------------------------------

PINHOLE_YAML = "width: 64\nheight: 48\nfx: 50\nfy: 52\ncx: 31.5\ncy: 23.5\n"
FISHEYE_YAML = PINHOLE_YAML + "model: fisheye\nk1: -0.03\nk2: 0.004\nk3: -0.001\nk4: 0.0002\n"


def test_pinhole_and_fisheye_files(tmp_path):
    p = tmp_path / "pinhole.yaml"
    p.write_text(PINHOLE_YAML)
    assert load_intrinsics(p) == PinholeIntrinsics(50.0, 52.0, 31.5, 23.5, ImageSize(48, 64))
    f = tmp_path / "fisheye.yaml"
    f.write_text(FISHEYE_YAML)
    k = load_intrinsics(f)
    assert k == FisheyeIntrinsics(50.0, 52.0, 31.5, 23.5, ImageSize(48, 64), -0.03, 0.004, -0.001, 0.0002)
    assert FisheyeIntrinsics.from_dict(k.to_dict()) == k and k.to_dict()["model"] == "fisheye"
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text("model: pinhole\n" + PINHOLE_YAML)
    assert isinstance(load_intrinsics(explicit), PinholeIntrinsics)


@pytest.mark.parametrize("text, key, phrase", [
    ("width: 64\nheight: 48\nfx: 50\nfy: 52\ncy: 23.5\n", "cx", "lack cx"),
    (PINHOLE_YAML.replace("fx: 50", "fx: wide"), "fx", "not a number"),
    (PINHOLE_YAML.replace("cy: 23.5", "cy: [1, 2]"), "cy", "not a number"),
    (PINHOLE_YAML.replace("fx: 50", "fx: -50"), "fx", "positive focal length"),
    (PINHOLE_YAML.replace("fy: 52", "fy: 0"), "fy", "positive focal length"),
    (PINHOLE_YAML.replace("width: 64", "width: 0"), "width", "positive whole number"),
    (PINHOLE_YAML.replace("height: 48", "height: 47.5"), "height", "positive whole number"),
    (PINHOLE_YAML + "k1: -0.03\nk2: 0.004\n", "k1, k2", "without model: fisheye"),
    (PINHOLE_YAML + "model: omnidirectional\n", "model", "use model: pinhole"),
    (FISHEYE_YAML.replace("k4: 0.0002\n", ""), "k4", "model: fisheye lacks k4"),
    (FISHEYE_YAML.replace("k2: 0.004", "k2: big"), "k2", "not a number"),
    (PINHOLE_YAML + "p1: 0.001\n", "p1", "only the fisheye model"),
], ids=["missing cx", "fx text", "cy list", "fx negative", "fy zero", "width zero", "height fraction",
        "k without model", "unknown model", "fisheye missing k4", "k2 text", "tangential p1"])
def test_bad_files_name_the_file_and_the_key(tmp_path, text, key, phrase):
    path = tmp_path / "scope.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as ei:
        load_intrinsics(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert key in msg and phrase in msg


def test_size_check_and_crop():
    k = FISHEYE
    with pytest.raises(UserError, match=r"scope.yaml: intrinsics are for 128x96 but the frames are 100x96.*width"):
        intrinsics_for_frames(k, ImageSize(96, 100), source="scope.yaml")
    c = intrinsics_for_frames(k, k.size, Crop(10, 6, 100, 80))
    assert (c.cx, c.cy, c.size, c.k3) == (k.cx - 10, k.cy - 6, ImageSize(80, 100), k.k3)
    assert intrinsics_for_frames(k, k.size) is k


# ---------------------------------------------------------------------------------------------------------
# the fisheye model under resize and crop, and rays
# ---------------------------------------------------------------------------------------------------------

POINTS = np.array([[3.0, -2.0, 10.0], [-8.0, 5.0, 6.0], [12.0, 1.0, 8.0], [0.5, 0.2, 30.0], [-2.0, -6.0, 9.0]])


def test_fisheye_resize_and_crop_keep_projections_consistent():
    uv = _project_fisheye(FISHEYE, POINTS)
    small = FISHEYE.resized(ImageSize(48, 64))
    np.testing.assert_allclose(_project_fisheye(small, POINTS), (uv + 0.5) * 0.5 - 0.5, atol=1e-9)
    crop = FISHEYE.cropped(7, 3, ImageSize(80, 100))
    np.testing.assert_allclose(_project_fisheye(crop, POINTS), uv - [7.0, 3.0], atol=1e-9)


@pytest.mark.parametrize("camera", [FISHEYE, PinholeIntrinsics(40.0, 44.0, 30.3, 20.6, ImageSize(40, 64))],
                         ids=["fisheye", "pinhole"])
def test_ray_directions_reproject_to_their_pixels(camera):
    rays = ray_directions(camera)
    H, W = camera.size.as_hw()
    assert rays.shape == (H, W, 3) and not rays.flags.writeable
    ok = np.isfinite(rays).all(axis=-1)
    assert ok[H // 2 - 10:H // 2 + 10, W // 2 - 10:W // 2 + 10].all()
    np.testing.assert_allclose(np.linalg.norm(rays[ok], axis=-1), 1.0, atol=1e-12)
    vv, uu = np.nonzero(ok)
    pts = rays[vv, uu] * 20.0
    if isinstance(camera, FisheyeIntrinsics):
        uv = _project_fisheye(camera, pts)
    else:
        p = pts @ camera.K.T
        uv = p[:, :2] / p[:, 2:]
    np.testing.assert_allclose(uv, np.stack([uu, vv], axis=1), atol=1e-6)
    # the ray of the pixel right of the principal point leans towards +X (OpenCV: +X right, +Y down)
    assert rays[int(round(camera.cy)), W - 1, 0] > 0 and rays[H - 1, int(round(camera.cx)), 1] > 0
    # resizing the camera with the rays gives the rays of the resized camera
    np.testing.assert_allclose(ray_directions(camera, ImageSize(H // 2, W // 2)),
                               ray_directions(camera.resized(ImageSize(H // 2, W // 2))), atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# fisheye <-> pinhole maps
# ---------------------------------------------------------------------------------------------------------

def test_known_point_lands_on_the_pinhole_pixel_and_maps_back():
    und = fisheye_to_pinhole_maps(FISHEYE)
    pin = und.pinhole
    assert pin.size == FISHEYE.size and (pin.cx, pin.cy) == (FISHEYE.cx, FISHEYE.cy)
    assert pin.fx / pin.fy == pytest.approx(FISHEYE.fx / FISHEYE.fy)
    pts = POINTS[[0, 1, 3, 4]]  # inside the fisheye frame
    uv_fish = _project_fisheye(FISHEYE, pts)
    assert np.all((uv_fish >= 0) & (uv_fish <= [127, 95]))
    p = pts @ pin.K.T
    uv_pin = p[:, :2] / p[:, 2:]
    # undistorting: the pinhole pixel of the point shows the fisheye pixel of the point
    back_fish = np.stack([_sample(und.to_fisheye_x, uv_pin), _sample(und.to_fisheye_y, uv_pin)], axis=1)
    np.testing.assert_allclose(back_fish, uv_fish, atol=0.05)
    # mapping back: the fisheye pixel of the point is seen at its pinhole pixel
    back_pin = np.stack([_sample(und.to_pinhole_x, uv_fish), _sample(und.to_pinhole_y, uv_fish)], axis=1)
    np.testing.assert_allclose(back_pin, uv_pin, atol=0.5)
    # an image: a bright dot at a fisheye pixel lands where the pinhole projects that pixel's ray
    u, v = np.round(uv_fish[0]).astype(int)
    img = np.zeros((96, 128), np.float32)
    img[v - 1:v + 2, u - 1:u + 2] = 1.0
    undist = und.undistort_image(img)
    yy, xx = np.nonzero(undist > 0.05)
    w = undist[yy, xx]
    centroid = np.array([(xx * w).sum(), (yy * w).sum()]) / w.sum()
    ray = ray_directions(FISHEYE)[v, u]
    expected = (pin.K @ ray)[:2] / ray[2]
    np.testing.assert_allclose(centroid, expected, atol=0.5)


def test_round_trip_over_the_whole_view():
    und = fisheye_to_pinhole_maps(FISHEYE)
    H, W = FISHEYE.size.as_hw()
    vv, uu = np.nonzero(und.fisheye_in_view)
    assert und.fisheye_in_view.mean() > 0.8
    uv_pin = np.stack([und.to_pinhole_x[vv, uu], und.to_pinhole_y[vv, uu]], axis=1)
    uv_back = np.stack([_sample(und.to_fisheye_x, uv_pin), _sample(und.to_fisheye_y, uv_pin)], axis=1)
    np.testing.assert_allclose(uv_back, np.stack([uu, vv], axis=1), atol=0.5)
    # pixels outside the view are clamped into the pinhole image
    assert und.to_pinhole_x.min() >= 0 and und.to_pinhole_x.max() <= W - 1
    assert und.to_pinhole_y.min() >= 0 and und.to_pinhole_y.max() <= H - 1


def test_plane_depth_is_resampled_onto_the_fisheye_grid():
    und = fisheye_to_pinhole_maps(FISHEYE)
    depth_pin = _pinhole_plane_depth(und.pinhole)
    depth_fish = und.depth_to_fisheye(depth_pin)
    assert depth_fish.shape == FISHEYE.size.as_hw() and depth_fish.dtype == np.float32
    truth = _plane_z(ray_directions(FISHEYE))
    inside = und.fisheye_in_view & _well_seen(truth)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(depth_fish[inside], truth[inside], rtol=0.01)
    # outside the view: the depth of the nearest pinhole pixel (finite, one of the pinhole's values)
    out = ~und.fisheye_in_view
    assert out.any() and np.all(np.isfinite(depth_fish))
    edge = np.concatenate([depth_pin[0], depth_pin[-1], depth_pin[:, 0], depth_pin[:, -1]])
    assert np.all((depth_fish[out] >= edge.min() - 1e-3) & (depth_fish[out] <= edge.max() + 1e-3))


def test_wide_fisheye_is_capped():
    # equidistant, 200 degrees across the width: no pinhole can show it all
    size = ImageSize(100, 100)
    f = 50.0 / math.radians(100.0)
    wide = FisheyeIntrinsics(fx=f, fy=f, cx=49.5, cy=49.5, size=size)
    und = fisheye_to_pinhole_maps(wide)
    half_fov = math.degrees(math.atan(50.0 / und.pinhole.fx))
    assert half_fov == pytest.approx(DEFAULT_MAX_HALF_FOV_DEG, abs=1e-6)
    assert math.degrees(math.atan(50.0 / fisheye_to_pinhole_maps(wide, 60.0).pinhole.fx)) == pytest.approx(60.0)
    # in view: everything within the cap; beyond it only towards the pinhole's corners (up to their angle)
    theta_deg = np.degrees(np.hypot(*np.meshgrid(np.arange(100) - 49.5, np.arange(100) - 49.5)) / f)
    corner_deg = math.degrees(math.atan(math.hypot(50.0, 50.0) / und.pinhole.fx))
    assert und.fisheye_in_view[theta_deg < DEFAULT_MAX_HALF_FOV_DEG - 0.5].all()
    assert not und.fisheye_in_view[theta_deg > corner_deg + 0.5].any()
    row = np.abs(np.arange(100) - 49.5) / f  # the pixels of the central rows, along the x-axis
    assert not und.fisheye_in_view[49:51, np.degrees(row) > DEFAULT_MAX_HALF_FOV_DEG + 1].any()
    with pytest.raises(ValueError, match="max_half_fov_deg"):
        fisheye_to_pinhole_maps(wide, 90.0)


# ---------------------------------------------------------------------------------------------------------
# the predictor with a stand-in model
# ---------------------------------------------------------------------------------------------------------

class PlaneNet(torch.nn.Module):
    """Returns the plane's z-depth in the camera it is given (and records the calls)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def predict_depth(self, rgb01, intrinsics=None):
        B, _, H, W = rgb01.shape
        self.calls.append(((H, W), intrinsics))
        if intrinsics is None:
            return torch.full((B, 1, H, W), 7.0)
        assert intrinsics.size == ImageSize(H, W)
        d = torch.from_numpy(_pinhole_plane_depth(intrinsics).astype(np.float32))
        return d.expand(B, 1, H, W).clone()


class OldNet(torch.nn.Module):
    """A model whose predict_depth has no camera argument."""

    def predict_depth(self, rgb01):
        return rgb01[:, :1] * 0 + 3.0


def _frames(b, h, w):
    return (np.random.default_rng(0).random((b, h, w, 3)) * 255).astype(np.uint8)


def test_non_square_frames_keep_their_shape():
    net = PlaneNet()
    p = DepthPredictor(net, {}, device="cpu", batch_size=2)
    out = p.predict_batch(_frames(3, 40, 64))
    assert out.shape == (3, 40, 64) and np.all(out == 7.0)
    assert [c[1] for c in net.calls] == [None, None]
    k = PinholeIntrinsics(30.0, 30.0, 31.5, 19.5, ImageSize(40, 64))
    out = p.predict(_frames(1, 40, 64)[0], intrinsics=k)
    assert out.shape == (40, 64) and net.calls[-1] == ((40, 64), k)
    np.testing.assert_allclose(out, _pinhole_plane_depth(k), rtol=1e-6)
    with pytest.raises(UserError, match="intrinsics are for 64x40 but the frames are 50x40"):
        p.predict_batch(_frames(1, 40, 50), intrinsics=k)
    # a model without the camera argument is called without it
    old = DepthPredictor(OldNet(), {}, device="cpu")
    assert not old.model_takes_intrinsics
    assert old.predict(_frames(1, 40, 64)[0], intrinsics=k).shape == (40, 64)


def test_fisheye_frames_return_depth_on_the_fisheye_grid():
    net = PlaneNet()
    p = DepthPredictor(net, {}, device="cpu", batch_size=4)
    out = p.predict_batch(_frames(2, 96, 128), intrinsics=FISHEYE)
    assert out.shape == (2, 96, 128)
    und = fisheye_to_pinhole_maps(FISHEYE)
    assert net.calls[-1] == ((96, 128), und.pinhole)  # the network saw the pinhole camera
    truth = _plane_z(ray_directions(FISHEYE))
    inside = und.fisheye_in_view & _well_seen(truth)
    np.testing.assert_allclose(out[1][inside], truth[inside], rtol=0.01)


def test_read_video_undistorts_fisheye_frames(tmp_path):
    import imageio.v3 as iio

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _frames(2, 96, 128)
    for i, f in enumerate(frames):
        iio.imwrite(folder / f"{i:03d}.png", f)
    kfile = tmp_path / "scope.yaml"
    kfile.write_text(yaml.safe_dump(FISHEYE.to_dict()))
    seq = read_video(folder, crop=(10, 6, 100, 80), intrinsics=kfile, fov_mask=False)
    fish = FISHEYE.cropped(10, 6, ImageSize(80, 100))
    und = fisheye_to_pinhole_maps(fish)
    assert seq.extra["fisheye"] == fish and seq.intrinsics == und.pinhole
    np.testing.assert_array_equal(seq.rgb(1), und.undistort_image(frames[1][6:86, 10:110]))
    small = tmp_path / "small"
    small.mkdir()
    iio.imwrite(small / "000.png", _frames(1, 48, 64)[0])
    with pytest.raises(UserError, match=r"scope.yaml: intrinsics are for 128x96 but the frames are 64x48"):
        read_video(small, intrinsics=kfile, fov_mask=False)


def test_evaluation_gives_the_model_the_camera():
    """A model exact on pinhole frames scores ~0 error against fisheye ground truth when given the fisheye camera."""
    from colondepth.datasets.base import Sequence
    from colondepth.eval.evaluate import evaluate_sequences

    truth = _plane_z(ray_directions(FISHEYE))
    und = fisheye_to_pinhole_maps(FISHEYE)
    gt = np.where(und.fisheye_in_view & _well_seen(truth), truth, 0.0).astype(np.float32)
    frames = _frames(2, 96, 128)
    pinhole_guess = PinholeIntrinsics.from_fov(FISHEYE.size, 140.0)
    seq = Sequence(name="fisheye", intrinsics=pinhole_guess, num_frames=2, load_rgb=lambda i: frames[i],
                   load_depth_mm=lambda i: gt)
    p = DepthPredictor(PlaneNet(), {}, device="cpu")
    report = evaluate_sequences([seq], p.predict_batch, align="none", progress=False, cameras=[FISHEYE])
    assert report.summary()["metrics"]["model"]["abs_rel"] < 0.005
    assert [c[1] for c in p.model.calls] == [und.pinhole]
    # without cameras the predictor is called as before (no camera: the stand-in returns its constant)
    report = evaluate_sequences([seq], p.predict_batch, align="none", progress=False)
    assert p.model.calls[-1][1] is None and report.summary()["metrics"]["model"]["abs_rel"] > 0.5


def test_reconstruction_refuses_frames_left_on_a_fisheye_grid(tmp_path):
    from colondepth.datasets.base import Sequence
    from colondepth.recon.pipeline import ReconstructionConfig, reconstruct_sequence

    frames = _frames(2, 96, 128)
    seq = Sequence(name="fish", intrinsics=FISHEYE, num_frames=2, load_rgb=lambda i: frames[i],
                   load_depth_mm=lambda i: np.full((96, 128), 20.0, np.float32),
                   world_from_cam=np.stack([np.eye(4)] * 2))
    with pytest.raises(UserError, match="needs pinhole frames, got fisheye intrinsics; undistort"):
        reconstruct_sequence(seq, tmp_path / "rec", ReconstructionConfig(), progress=False)
    assert not (tmp_path / "rec").exists()
