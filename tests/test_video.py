"""Video / frame-folder reader: crop, intrinsics, FOV mask, frame selection and clear errors."""

from __future__ import annotations

import json
import warnings

import imageio.v3 as iio
import numpy as np
import pytest

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.datasets.video import (
    Crop,
    IntrinsicsGuessWarning,
    fov_mask_from_image,
    load_intrinsics,
    read_video,
    select_clips,
    split_clips,
)
from colondepth.errors import UserError
from colondepth.geometry.camera import PinholeIntrinsics

H, W = 48, 64


def _disk(h=H, w=W, cx=30.0, cy=22.0, r=20.0):
    vv, uu = np.mgrid[:h, :w]
    return (uu - cx) ** 2 + (vv - cy) ** 2 <= r * r


def _textured_frames(n=8, shift_per_frame=2, seed=0):
    """Endoscope-like frames: a bright textured disk on black, the texture sliding right."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(60, 250, size=(H // 4, (W + 4 * n) // 4 + 1, 3)).astype(np.uint8)
    tex = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)  # 4x4 blocks survive yuv420 coding
    disk = _disk()
    out = []
    for i in range(n):
        f = tex[:, i * shift_per_frame: i * shift_per_frame + W].copy()
        f[~disk] = 0
        out.append(f)
    return out


def _write_folder(tmp_path, frames):
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        iio.imwrite(d / f"{i:04d}.png", f)
    return d


def _write_mp4(path, frames, fps=6):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": "0"}
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


K_FULL = PinholeIntrinsics(fx=50.0, fy=52.0, cx=31.5, cy=23.5, size=ImageSize(H, W))


def test_frame_folder_with_crop_and_intrinsics(tmp_path):
    frames = _textured_frames()
    d = _write_folder(tmp_path, frames)
    seq = read_video(d, crop=(4, 2, 40, 30), intrinsics=K_FULL, fps=4.0, stride=2)
    assert seq.num_frames == 4
    np.testing.assert_allclose(seq.timestamps, [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(seq.rgb(1), frames[2][2:32, 4:44])
    seq = read_video(d, crop=(4, 2, 40, 30), intrinsics=K_FULL)
    assert seq.num_frames == 8
    assert seq.rgb(3).shape == (30, 40, 3)
    np.testing.assert_array_equal(seq.rgb(3), frames[3][2:32, 4:44])
    assert (seq.intrinsics.cx, seq.intrinsics.cy, seq.intrinsics.fx) == (27.5, 21.5, 50.0)
    assert seq.intrinsics.size == ImageSize(30, 40)
    assert seq.fov_mask.shape == (30, 40)


def test_mp4_decodes_crops_and_times(tmp_path):
    frames = _textured_frames(n=6)
    # side-by-side: endoscope on the left, an unrelated panel on the right
    wide = [np.concatenate([f, np.full_like(f, 200)], axis=1) for f in frames]
    p = _write_mp4(tmp_path / "v.mp4", wide)
    with pytest.warns(IntrinsicsGuessWarning, match="140 degree"):
        seq = read_video(p, crop="0 0 64 48")
    assert seq.num_frames == 6
    assert seq.rgb(0).shape == (48, 64, 3)
    # yuv420 chroma subsampling costs a few grey levels even at crf 0
    assert np.abs(seq.rgb(2).astype(int) - frames[2].astype(int)).mean() < 6.0
    np.testing.assert_allclose(seq.timestamps, np.arange(6) / 6.0)
    assert seq.extra["intrinsics_guessed"]
    assert seq.intrinsics.fov_x_deg == pytest.approx(140.0)
    # the guessed intrinsics refer to the cropped frame
    assert seq.intrinsics.cx == pytest.approx(31.5)


def test_intrinsics_files(tmp_path):
    y = tmp_path / "k.yaml"
    y.write_text("fx: 50\nfy: 52\ncx: 31.5\ncy: 23.5\nwidth: 64\nheight: 48\n")
    assert load_intrinsics(y) == K_FULL
    j = tmp_path / "k.json"
    j.write_text(json.dumps({"intrinsics": K_FULL.to_dict()}))
    assert load_intrinsics(j) == K_FULL
    bad = tmp_path / "bad.yaml"
    bad.write_text("fx: 50\nfy: 52\n")
    with pytest.raises(UserError, match="lack cx, cy, width, height"):
        load_intrinsics(bad)
    d = _write_folder(tmp_path, _textured_frames(n=3))
    with pytest.raises(UserError, match="intrinsics are for 64x48 but the frames are 40x30|uncropped"):
        read_video(d, intrinsics=K_FULL.cropped(0, 0, ImageSize(30, 40)))


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "no such video file or frame folder"),
        ("corrupt", "cannot (open|decode) video"),
        ("crop", "lies outside the 64x48"),
        ("short", "only 3 frame"),
        ("empty_dir", "no frames"),
        ("suffix", "unsupported video type"),
        ("crop_syntax", "expected four integers"),
    ],
)
def test_clear_one_line_errors(tmp_path, case, match):
    if case == "missing":
        args = dict(path=tmp_path / "nope.mp4")
    elif case == "corrupt":
        p = tmp_path / "broken.mp4"
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
        args = dict(path=p)
    elif case == "crop":
        args = dict(path=_write_folder(tmp_path, _textured_frames(n=3)), crop=(40, 0, 40, 10))
    elif case == "short":
        args = dict(path=_write_folder(tmp_path, _textured_frames(n=3)), min_frames=5)
    elif case == "empty_dir":
        (tmp_path / "e").mkdir()
        args = dict(path=tmp_path / "e")
    elif case == "suffix":
        p = tmp_path / "v.txt"
        p.write_text("x")
        args = dict(path=p)
    else:
        args = dict(path=tmp_path, crop="1 2 3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntrinsicsGuessWarning)
        with pytest.raises(UserError, match=match) as ei:
            read_video(**args)
    assert "\n" not in str(ei.value)


def test_fov_mask_region_and_circle():
    truth = _disk(h=96, w=128, cx=60.0, cy=50.0, r=40.0)
    rng = np.random.default_rng(1)
    img = np.where(truth, rng.uniform(20, 200, truth.shape), rng.uniform(0, 6, truth.shape))
    img[45:55, 55:65] = 3.0  # a dark lumen inside the field of view: must be filled
    img[2:4, 2:4] = 255.0  # a bright speck in the black corner: must be dropped
    for method in ("region", "circle"):
        m = fov_mask_from_image(img, method=method)
        iou = (m & truth).sum() / (m | truth).sum()
        assert iou > 0.97, (method, iou)
        assert m[50, 60] and not m[3, 3]


def test_fov_mask_circle_extends_past_the_frame():
    # circle clipped by the image border: the fit uses only the interior boundary
    truth = _disk(h=64, w=64, cx=32.0, cy=40.0, r=34.0)
    img = truth * 120.0
    m = fov_mask_from_image(img, method="circle", open_radius=0)
    assert (m ^ truth).sum() / truth.sum() < 0.02


def _seq_from_frames(frames):
    return Sequence(name="t", intrinsics=PinholeIntrinsics.from_fov(ImageSize(H, W), 90.0),
                    num_frames=len(frames), load_rgb=lambda i: frames[i])


def test_select_clips_skips_static_and_splits_at_cut():
    a = _textured_frames(n=6, seed=0)
    b = _textured_frames(n=6, seed=1)
    b = [np.clip(f.astype(int) // 3, 0, 255).astype(np.uint8) for f in b]  # a different, darker scene
    frames = [a[0], a[0], a[0], a[1], a[2], a[2], a[3], b[0], b[1], b[1], b[2], b[3]]
    seq = _seq_from_frames(frames)
    clips = select_clips(seq, min_motion=1.0, min_clip_frames=3)
    assert clips == [[0, 3, 4, 6], [7, 8, 10, 11]]
    subs = split_clips(seq, min_motion=1.0)
    assert [s.num_frames for s in subs] == [4, 4]
    np.testing.assert_array_equal(subs[1].rgb(2), b[2])
    assert subs[0].name == "t/clip_000"


def test_real_video_sample(shared_data):
    p = shared_data / "real_colon_video" / "colonoscopy_side_by_side.mp4"
    with pytest.warns(IntrinsicsGuessWarning):
        seq = read_video(p, crop=(0, 0, 192, 192), max_frames=60)
    assert seq.num_frames == 60 and seq.rgb(0).shape == (192, 192, 3)
    lossless = iio.imread(shared_data / "real_colon_video" / "frames" / "0010.png")
    assert np.abs(seq.rgb(10).astype(int) - lossless.astype(int)).mean() < 1.0
    # black corners out, centre in
    assert not seq.fov_mask[0, 0] and not seq.fov_mask[-1, -1] and seq.fov_mask[96, 96]
    assert 0.80 < seq.fov_mask.mean() < 0.99
    clips = select_clips(seq)
    kept = sum(len(c) for c in clips)
    assert 20 < kept < 60  # near-duplicates dropped


def test_crop_parse():
    assert Crop.parse("0,0,192,192") == Crop(0, 0, 192, 192)
    with pytest.raises(UserError, match="W, H > 0"):
        Crop.parse((0, 0, 0, 5))


def test_streamed_video_equals_the_decoded_one_in_any_order(tmp_path):
    frames = _textured_frames(n=9)
    p = _write_mp4(tmp_path / "v.mp4", frames)
    eager = read_video(p, intrinsics=K_FULL, stride=2)
    streamed = read_video(p, intrinsics=K_FULL, stride=2, stream=True)
    assert streamed.num_frames == eager.num_frames == 5
    np.testing.assert_array_equal(streamed.fov_mask, eager.fov_mask)
    np.testing.assert_allclose(streamed.timestamps, eager.timestamps)
    for i in [0, 1, 4, 2, 2, 3, 0]:  # forward, backward (re-decodes from the start), repeated
        np.testing.assert_array_equal(streamed.rgb(i), eager.rgb(i))
    capped = read_video(p, intrinsics=K_FULL, max_frames=3, stream=True)
    assert capped.num_frames == 3
    np.testing.assert_array_equal(capped.rgb(2), read_video(p, intrinsics=K_FULL).rgb(2))


def test_streamed_video_refuses_to_end_early(tmp_path):
    """A frame the decoder cannot deliver is an error naming the file, never a silently shorter video."""
    from colondepth.datasets.video import StreamedVideo

    p = _write_mp4(tmp_path / "v.mp4", _textured_frames(n=6))
    video = StreamedVideo(p, None, None, 1)
    video.num_frames = 8  # as if the container promised more frames than it decodes
    with pytest.raises(UserError, match=r"v\.mp4: decoding ended after 6 of 8 frames"):
        video.frame(7)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(UserError, match="bad.mp4: cannot open video"):
        read_video(bad, intrinsics=K_FULL, stream=True)
