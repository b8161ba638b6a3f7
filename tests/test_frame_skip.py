"""``frame_skip: auto``: the image motion between two frames is measured in pixels, the smallest skip that reaches
the target on the network grid is chosen, and ``colondepth finetune --frame-skip auto`` trains with it."""

from __future__ import annotations

import numpy as np
import pytest

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.datasets.clips import adaptive_frame_skip
from colondepth.datasets.video import tracked_motion_px
from colondepth.geometry.camera import PinholeIntrinsics

H, W = 96, 128


def _texture(seed: int = 0, size: int = 256) -> np.ndarray:
    """A smooth random grey texture with corners to track, ``(size, size)`` float in [0, 1]."""
    import cv2

    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
    return (t - t.min()) / (t.max() - t.min())


def _panning(step_px: float, frames: int, flat: bool = False) -> Sequence:
    """A camera panning ``step_px`` per frame to the right over a texture (sub-pixel shifts by interpolation)."""
    import cv2

    tex = np.full((256, 256), 0.5, np.float32) if flat else _texture()

    def load(i: int) -> np.ndarray:
        m = np.float32([[1, 0, -(20 + step_px * i)], [0, 1, -40]])
        g = cv2.warpAffine(tex, m, (W, H), flags=cv2.INTER_CUBIC)
        return np.repeat((np.clip(g, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)

    k = PinholeIntrinsics(fx=100.0, fy=100.0, cx=(W - 1) / 2, cy=(H - 1) / 2, size=ImageSize(H, W))
    return Sequence(name="pan", intrinsics=k, num_frames=frames, load_rgb=load)


def test_tracked_motion_is_the_shift_in_pixels():
    seq = _panning(0.5, 20)
    moved = tracked_motion_px(seq, [(0, 1), (0, 4), (2, 12), (5, 5)])
    assert moved == pytest.approx([0.5, 2.0, 5.0, 0.0], abs=0.08)


def test_untextured_frames_have_no_measured_motion():
    assert np.isnan(tracked_motion_px(_panning(1.0, 3, flat=True), [(0, 1)])).all()


def test_adaptive_skip_is_the_smallest_reaching_the_target_on_the_grid():
    seq = _panning(0.5, 60)
    clips = [list(range(60))]
    pick = adaptive_frame_skip(seq, clips, target_px=2.0, scale=1.0)
    assert pick.skip == 4 and pick.reached and pick.motion_px == pytest.approx(2.0, abs=0.1)
    # the same video on a grid half its size moves half as many grid pixels: twice the skip
    half = adaptive_frame_skip(seq, clips, target_px=2.0, scale=0.5)
    assert half.skip == 8 and half.motion_px == pytest.approx(2.0, abs=0.1)
    # a fast camera keeps skip 1
    assert adaptive_frame_skip(_panning(3.0, 60), clips, target_px=2.0, scale=1.0).skip == 1


def test_adaptive_skip_is_capped_so_snippets_remain():
    seq = _panning(0.1, 21)
    pick = adaptive_frame_skip(seq, [list(range(21))], target_px=5.0, scale=1.0)
    assert pick.skip == 5 and not pick.reached  # (21 - 1) // 4: the longest clip keeps half its frames as targets
    assert pick.motion_px == pytest.approx(0.5, abs=0.08)
    flat = adaptive_frame_skip(_panning(1.0, 21, flat=True), [list(range(21))], target_px=2.0, scale=1.0)
    assert flat.skip == 1 and np.isnan(flat.motion_px) and not flat.reached
    with pytest.raises(ValueError, match="target_px"):
        adaptive_frame_skip(seq, [list(range(21))], target_px=0.0, scale=1.0)


def test_stage_schema_takes_auto_or_a_positive_integer():
    from colondepth.train.config import parse_curriculum

    def stage(**kw):
        return parse_curriculum({"name": "t", "stages": [{
            "name": "ss", "kind": "self_supervised", "init_from": "a.pt", "sources": [{"path": "v.mp4"}],
            "budget": {"steps": 10}, **kw}]}).stages[0]

    assert stage().frame_skip == 1 and stage().target_motion_px == 3.0
    s = stage(frame_skip="auto", target_motion_px=4.5)
    assert s.frame_skip == "auto" and s.target_motion_px == 4.5
    for bad in ({"frame_skip": 0}, {"frame_skip": "fast"}, {"target_motion_px": 0}):
        with pytest.raises(Exception, match="frame_skip|target_motion_px"):
            stage(**bad)


def test_finetune_with_auto_frame_skip_says_what_it_chose(tmp_path, capsys):
    from colondepth.cli import main
    from test_finetune import TINY, write_tube_video
    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.train.checkpoint import load_checkpoint, make_card, save_checkpoint
    import torch

    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(**TINY))
    init = tmp_path / "init.pt"
    save_checkpoint(init, net, make_card(net, "test", "sup", 0, 0, "test"), {})
    video = write_tube_video(tmp_path / "frames", 12)
    out = tmp_path / "run"
    argv = ["finetune", "--init", init, "--video", video, "--out", out, "--steps", 2, "--batch-size", 2,
            "--intrinsics", tmp_path / "k.yaml", "--no-progress", "--frame-skip", "auto", "--target-motion", 1000]
    # 12 frames allow at most skip (12 - 1) // 4 = 2; a 1000 px target is never reached: said in one warning
    with pytest.warns(UserWarning, match="short of target_motion_px 1000"):
        code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "frame skip 2 (median motion" in captured.out
    _, _, config = load_checkpoint(out / "checkpoints" / "final.pt")
    assert config["stages"][0]["frame_skip"] == "auto" and config["stages"][0]["target_motion_px"] == 1000


def test_finetune_frame_skip_errors(tmp_path, capsys):
    from colondepth.cli import main

    video = tmp_path / "v"
    video.mkdir()
    base = ["finetune", "--init", str(tmp_path / "a.pt"), "--video", str(video), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit 2
        main([*base, "--frame-skip", "fast"])
    assert exc.value.code == 2 and "a whole number of frames (e.g. 2) or 'auto'" in capsys.readouterr().err
    for argv, match in ((["--target-motion", "0"], "--target-motion 0: must be a positive number of pixels"),
                        (["--two-frame", "--frame-skip", "auto"], "--frame-skip auto applies to the depth network")):
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err
        assert match in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run").exists()
