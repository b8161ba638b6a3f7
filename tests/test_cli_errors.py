"""Bad input across every ``colondepth`` subcommand: one line, non-zero exit, no partial output.

Each case runs ``colondepth.cli.main([...])`` in-process on tiny fixtures (a real 3-frame 32x32 synthetic
dataset, a real 32x32 checkpoint, a real 4-frame mp4) with one realistic mistake, and asserts:

* the exit code is non-zero,
* stderr is exactly one line, it starts with ``error:`` and holds no traceback,
* the message names the offending path or value (and the fix, checked through a key phrase),
* the command's final-named output (dataset, run checkpoint, predictions, JSON table, reconstruction)
  does not exist afterwards.

"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

from colondepth import cli

REPO = Path(__file__).resolve().parents[1]
L1_RECIPE = REPO / "synth" / "L1_straight.yaml"
SMOKE = REPO / "curricula" / "smoke.yaml"

#: A path nothing can be created under (root included): /proc refuses new entries.
UNWRITABLE = Path("/proc/colondepth-no-such-dir/out")


# ---------------------------------------------------------------------------------------------------------
# fixtures: generated once per module, each a few hundred KB at most
# ---------------------------------------------------------------------------------------------------------

class Fx:
    """Paths of the shared fixtures (filled by the ``fx`` fixture)."""

    root: Path
    ds: Path          # a real dataset: 1 sequence x 3 frames, 32x32, no video
    seq: Path         # ds/seq_00000
    ckpt: Path        # a real checkpoint (32x32 DepthNet)
    video: Path       # a real 4-frame 32x32 mp4
    rand_mp4: Path    # random bytes named .mp4
    rand_pt: Path     # random bytes named .pt
    text_pt: Path     # a text file named .pt
    frames: Path      # a folder of 4 good 32x32 PNGs
    png: Path         # one good 32x32 PNG
    trunc_png: Path   # the first half of a PNG
    empty: Path       # an empty folder
    afile: Path       # a plain file (used where a folder is expected)
    curriculum: Path  # a one-stage L1 curriculum without data generation (fast)


def _write_video(path: Path, n: int = 4, h: int = 32, w: int = 32, options: dict | None = None) -> None:
    import av

    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            rgb = (np.random.default_rng(i).random((h, w, 3)) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Fx:
    import torch

    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.synth.generate import generate_dataset
    from colondepth.train.checkpoint import make_card, save_checkpoint

    f = Fx()
    f.root = tmp_path_factory.mktemp("cli_errors")
    f.ds = f.root / "ds"
    generate_dataset(L1_RECIPE, f.ds, sequences=1, frames=3, size=(32, 32), progress=False, video=False)
    f.seq = f.ds / "seq_00000"
    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(input_height=32, input_width=32, encoder_channels=[8, 12, 16],
                                  decoder_channels=[8, 8, 12], num_scales=3, min_depth_mm=1.0,
                                  max_depth_mm=100.0)).eval()
    f.ckpt = f.root / "model.pt"
    save_checkpoint(f.ckpt, net, make_card(net, "test", "s", 0, 0, "test"), {})
    f.video = f.root / "clip.mp4"
    _write_video(f.video)
    rng = np.random.default_rng(0)
    f.rand_mp4 = f.root / "random.mp4"
    f.rand_mp4.write_bytes(rng.bytes(4000))
    f.rand_pt = f.root / "random.pt"
    f.rand_pt.write_bytes(rng.bytes(4000))
    f.text_pt = f.root / "notes.pt"
    f.text_pt.write_text("this is not a checkpoint\n")
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    f.frames = f.root / "frames"
    f.frames.mkdir()
    for i in range(4):
        iio.imwrite(f.frames / f"{i:03d}.png", np.roll(img, i, axis=1))
    f.png = f.root / "frame.png"
    iio.imwrite(f.png, img)
    data = f.png.read_bytes()
    f.trunc_png = f.root / "truncated.png"
    f.trunc_png.write_bytes(data[: len(data) // 2])
    f.empty = f.root / "empty"
    f.empty.mkdir()
    f.afile = f.root / "a_file"
    f.afile.write_text("x\n")
    cur = yaml.safe_load(SMOKE.read_text())
    cur.pop("generate")
    cur["stages"] = cur["stages"][:1]
    f.curriculum = f.root / "l1.yaml"
    f.curriculum.write_text(yaml.safe_dump(cur, sort_keys=False))
    return f


def _damaged(fx: Fx, tmp_path: Path, name: str, edit) -> Path:
    """A copy of the fixture dataset with one file damaged by ``edit(dataset_dir)``."""
    d = tmp_path / name
    shutil.copytree(fx.ds, d)
    edit(d)
    return d


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:60])


def _drop_meta_key(d: Path, key: str) -> None:
    m = d / "seq_00000" / "meta.yaml"
    m.write_text("\n".join(line for line in m.read_text().splitlines() if not line.startswith(f"{key}:")) + "\n")


def _poses_lines(d: Path, fn) -> None:
    p = d / "seq_00000" / "poses.txt"
    p.write_text("\n".join(fn(p.read_text().splitlines())) + "\n")


def _nan_pose(lines):
    parts = lines[1].split()
    parts[3] = "nan"
    return [lines[0], " ".join(parts), *lines[2:]]


def _zero_depth(d: Path) -> None:
    for png in sorted((d / "seq_00000" / "depth").glob("*.png")):
        iio.imwrite(png, np.zeros((32, 32), np.uint16))


DAMAGE = {
    "truncated depth PNG": (lambda d: _truncate(d / "seq_00000" / "depth" / "000001.png"),
                            ["depth/000001.png", "not a readable PNG", "colondepth synth"]),
    "truncated RGB PNG": (lambda d: _truncate(d / "seq_00000" / "rgb" / "000001.png"),
                          ["rgb/000001.png", "not a readable PNG", "colondepth synth"]),
    "depth PNG of the wrong size": (
        lambda d: iio.imwrite(d / "seq_00000" / "depth" / "000001.png", np.zeros((16, 16), np.uint16)),
        ["depth/000001.png", "16x16", "32x32"]),
    "meta.yaml without fx": (lambda d: _drop_meta_key(d, "fx"), ["meta.yaml", "fx", "Field required"]),
    "meta.yaml with a YAML syntax error": (lambda d: (d / "seq_00000" / "meta.yaml").write_text("width: [\n"),
                                           ["meta.yaml", "not valid YAML at line 2"]),
    "poses.txt one line short": (lambda d: _poses_lines(d, lambda ls: ls[:-1]),
                                 ["poses.txt", "2 poses for 3 frames"]),
    "poses.txt with a NaN": (lambda d: _poses_lines(d, _nan_pose), ["poses.txt:2", "NaN"]),
}


# ---------------------------------------------------------------------------------------------------------
# the check every case goes through
# ---------------------------------------------------------------------------------------------------------

def fails_cleanly(capsys, argv, *names: str, absent=(), strict: bool = True) -> str:
    """Run the CLI; assert a non-zero exit, one ``error:`` line naming ``names``, and no ``absent`` paths.

    With ``strict`` the error is the only stderr line; without it, earlier progress or note lines are
    allowed (for errors found mid-run) but the error must be the last line and the only ``error:`` one.
    Returns the error line.
    """
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code != 0, f"exit 0 for {argv}; stderr: {err!r}"
    assert "Traceback" not in err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines, "no message on stderr"
    if strict:
        assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    line = lines[-1]
    assert line.startswith("error: "), line
    assert sum(ln.startswith("error:") for ln in lines) == 1, lines
    for name in names:
        assert str(name) in line, f"{name!r} not in {line!r}"
    for p in absent:
        assert not Path(p).exists(), f"{p} was left behind by a failed command"
    return line


# ---------------------------------------------------------------------------------------------------------
# synth
# ---------------------------------------------------------------------------------------------------------

def _synth(recipe, out, *extra):
    return ["synth", "--recipe", recipe, "--out", out, "--frames", "2", "--size", "32", "32", "--no-video",
            "--quiet", *extra]


def test_synth_missing_recipe_and_folder_as_recipe(fx, tmp_path, capsys):
    out = tmp_path / "ds"
    fails_cleanly(capsys, _synth(tmp_path / "nope.yaml", out), "nope.yaml", "recipe file not found", "synth/",
                  absent=[out])
    fails_cleanly(capsys, _synth(fx.empty, out), str(fx.empty), "is a folder", absent=[out])


def test_synth_recipe_syntax_error_names_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("level: L1\ncamera: {width: 32\n")
    out = tmp_path / "ds"
    line = fails_cleanly(capsys, _synth(bad, out), str(bad), "not valid YAML at line 3", "fix the syntax",
                         absent=[out])
    assert len(line) < 200  # the parser's multi-line dump is not pasted in


def test_synth_recipe_unknown_key(tmp_path, capsys):
    bad = tmp_path / "typo.yaml"
    bad.write_text(L1_RECIPE.read_text() + "\nlumen_radius: 3\n")
    out = tmp_path / "ds"
    fails_cleanly(capsys, _synth(bad, out), str(bad), "lumen_radius", "Extra inputs", absent=[out])


@pytest.mark.parametrize("key, value, names", [
    ("lumen.radius_mm", -5, ["lumen.radius_mm", "[2, 100]", "-5"]),
    ("camera.fov_deg", "wide", ["camera.fov_deg", "valid number"]),
])
def test_synth_recipe_bad_value_names_the_key(tmp_path, capsys, key, value, names):
    recipe = yaml.safe_load(L1_RECIPE.read_text())
    section, field = key.split(".")
    recipe[section][field] = value
    bad = tmp_path / "bad_value.yaml"
    bad.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "ds"
    fails_cleanly(capsys, _synth(bad, out), str(bad), *names, "fix the value", absent=[out])


@pytest.mark.parametrize("extra, names", [
    (["--size", "0", "0"], ["--size 0 0", "8x8"]),
    (["--size", "-5", "32"], ["--size -5 32"]),
    (["--frames", "0"], ["--frames 0", "at least 1"]),
    (["--sequences", "0"], ["--sequences 0", "at least 1"]),
    (["--shard", "3/2"], ["--shard 3/2", "0 <= I < N"]),
    (["--shard", "0/0"], ["--shard 0/0"]),
    (["--shard", "half"], ["--shard half", "I/N"]),
    (["--workers", "0"], ["--workers 0"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None)
def test_synth_bad_values(tmp_path, capsys, extra, names):
    out = tmp_path / "ds"
    # argparse keeps the last of a repeated option, so these override _synth's defaults
    fails_cleanly(capsys, _synth(L1_RECIPE, out, *extra), *names, absent=[out])


def test_synth_out_is_a_file_or_unwritable(fx, tmp_path, capsys):
    fails_cleanly(capsys, _synth(L1_RECIPE, fx.afile), str(fx.afile), "not a folder", "--out")
    assert fx.afile.read_text() == "x\n"
    under = fx.afile / "ds"
    fails_cleanly(capsys, _synth(L1_RECIPE, under), str(under), "cannot create", "--out")
    fails_cleanly(capsys, _synth(L1_RECIPE, UNWRITABLE), str(UNWRITABLE), "cannot create", "--out")


# ---------------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------------

def _train(cur, out, *data, extra=()):
    argv = ["train", "--curriculum", cur, "--out", out, "--device", "cpu", "--no-progress"]
    for d in data:
        argv += ["--data", d]
    return argv + list(extra)


def test_train_curriculum_path_mistakes(fx, tmp_path, capsys):
    run = tmp_path / "run"
    fails_cleanly(capsys, _train(tmp_path / "nope.yaml", run, fx.ds), "nope.yaml", "curriculum file not found",
                  absent=[run])
    fails_cleanly(capsys, _train(fx.empty, run, fx.ds), str(fx.empty), "is a folder", absent=[run])


@pytest.mark.parametrize("case", ["syntax", "unknown top key", "unknown stage key", "negative batch", "a list"])
def test_train_bad_curriculum(fx, tmp_path, capsys, case):
    text = fx.curriculum.read_text()
    body, names = {
        "syntax": ("name: x\nstages: [\n", ["not valid YAML at line 3", "fix the syntax"]),
        "unknown top key": (text + "\nlearning_rate: 0.1\n", ["learning_rate", "Extra inputs"]),
        "unknown stage key": (text.replace("batch_size: 4", "batchsize: 4", 1), ["stages.0.batchsize"]),
        "negative batch": (text.replace("batch_size: 4", "batch_size: -4", 1),
                           ["stages.0.batch_size", "greater than 0"]),
        "a list": ("- level1\n- level2\n", ["YAML mapping"]),
    }[case]
    cur = tmp_path / "cur.yaml"
    cur.write_text(body)
    run = tmp_path / "run"
    fails_cleanly(capsys, _train(cur, run, fx.ds), str(cur), *names, absent=[run])


def test_train_bad_values(fx, tmp_path, capsys):
    run = tmp_path / "run"
    for n in ("0", "-1"):
        fails_cleanly(capsys, _train(fx.curriculum, run, fx.ds, extra=["--stop-after-steps", n]),
                      f"--stop-after-steps {n}", "at least 1", absent=[run])
    cur = yaml.safe_load(fx.curriculum.read_text())
    cur["stages"][0]["levels"] = ["L9"]
    l9 = tmp_path / "l9.yaml"
    l9.write_text(yaml.safe_dump(cur))
    fails_cleanly(capsys, _train(l9, run, fx.ds), "level L9", "levels found: L1",
                  "colondepth synth --recipe synth/L9_*.yaml", absent=[run / "checkpoints"])


def test_train_data_path_mistakes_write_nothing(fx, tmp_path, capsys):
    run = tmp_path / "run"
    fails_cleanly(capsys, _train(fx.curriculum, run, tmp_path / "nope"), "nope", "--data folder not found",
                  absent=[run])
    fails_cleanly(capsys, _train(fx.curriculum, run, fx.empty), str(fx.empty), "no dataset.yaml", absent=[run])
    fails_cleanly(capsys, _train(fx.curriculum, run, fx.afile), str(fx.afile), "--data folder not found",
                  absent=[run])


@pytest.mark.parametrize("damage", ["truncated RGB PNG", "depth PNG of the wrong size", "meta.yaml without fx",
                                    "poses.txt one line short", "poses.txt with a NaN"])
def test_train_damaged_dataset(fx, tmp_path, capsys, damage):
    edit, names = DAMAGE[damage]
    data = _damaged(fx, tmp_path, "data", edit)
    run = tmp_path / "run"
    fails_cleanly(capsys, _train(fx.curriculum, run, data), *names, absent=[run / "checkpoints"])


def test_train_on_depth_without_a_valid_pixel_stops(fx, tmp_path, capsys):
    """All-zero depth PNGs used to train silently to a 'perfect' validation loss of 0."""
    data = _damaged(fx, tmp_path, "data", _zero_depth)
    cur = yaml.safe_load(fx.curriculum.read_text())
    cur["stages"][0]["budget"] = {"steps": 1}  # validation runs at the end of the stage
    one_step = tmp_path / "one_step.yaml"
    one_step.write_text(yaml.safe_dump(cur))
    run = tmp_path / "run"
    fails_cleanly(capsys, _train(one_step, run, data), "stage level1", "no validation frame has valid "
                  "ground-truth depth", str(data / "seq_00000"), "colondepth synth",
                  absent=[run / "checkpoints" / "final.pt"])


def test_train_out_is_a_file_or_unwritable(fx, tmp_path, capsys):
    fails_cleanly(capsys, _train(fx.curriculum, fx.afile, fx.ds), str(fx.afile), "not a folder")
    assert fx.afile.read_text() == "x\n"
    fails_cleanly(capsys, _train(fx.curriculum, UNWRITABLE, fx.ds), str(UNWRITABLE), "cannot create")


# ---------------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------------

def _predict(fx, inp, out, *extra, ckpt=None):
    return ["predict", "--checkpoint", ckpt or fx.ckpt, "--input", inp, "--out", out, "--device", "cpu", *extra]


def test_predict_input_mistakes(fx, tmp_path, capsys):
    out = tmp_path / "pred"
    fails_cleanly(capsys, _predict(fx, tmp_path / "nope.png", out), "nope.png", "check --input", absent=[out])
    fails_cleanly(capsys, _predict(fx, fx.empty, out), str(fx.empty), "no images", absent=[out])
    fails_cleanly(capsys, _predict(fx, fx.afile, out), str(fx.afile), "unsupported input type", absent=[out])
    fails_cleanly(capsys, _predict(fx, fx.rand_mp4, out), str(fx.rand_mp4), "cannot open video", absent=[out])
    fails_cleanly(capsys, _predict(fx, fx.trunc_png, out), str(fx.trunc_png), "cannot read image", absent=[out])


def test_predict_folder_with_a_truncated_png_leaves_nothing(fx, tmp_path, capsys):
    folder = tmp_path / "frames"
    shutil.copytree(fx.frames, folder)
    shutil.copy(fx.trunc_png, folder / "002.png")
    out = tmp_path / "pred"
    fails_cleanly(capsys, _predict(fx, folder, out), str(folder / "002.png"), "cannot read image",
                  absent=[out], strict=False)


@pytest.mark.parametrize("which", ["random bytes", "text file", "folder", "missing"])
def test_predict_not_a_checkpoint(fx, tmp_path, capsys, which):
    ckpt, phrases = {"random bytes": (fx.rand_pt, ["not a readable ColonDepth checkpoint", "colondepth train"]),
                     "text file": (fx.text_pt, ["not a readable ColonDepth checkpoint", "colondepth train"]),
                     "folder": (fx.empty, ["is a folder, not a checkpoint", "RUN/checkpoints/final.pt"]),
                     "missing": (tmp_path / "none.pt", ["checkpoint not found", "RUN/checkpoints/"])}[which]
    out = tmp_path / "pred"
    fails_cleanly(capsys, _predict(fx, fx.png, out, ckpt=ckpt), str(ckpt), *phrases, absent=[out])


@pytest.mark.parametrize("crop, names", [
    (["20", "20", "30", "30"], ["--crop 20 20 30 30", "lies outside the 32x32"]),
    (["-1", "0", "10", "10"], ["--crop -1 0 10 10", ">= 0"]),
    (["0", "0", "0", "10"], ["--crop 0 0 0 10", "> 0"]),
])
def test_predict_bad_crop(fx, tmp_path, capsys, crop, names):
    out = tmp_path / "pred"
    fails_cleanly(capsys, _predict(fx, fx.png, out, "--crop", *crop), *names, absent=[out])
    fails_cleanly(capsys, _predict(fx, fx.video, out, "--crop", *crop), *names, absent=[out])


def test_predict_bad_values_and_outputs(fx, tmp_path, capsys):
    out = tmp_path / "pred"
    fails_cleanly(capsys, _predict(fx, fx.png, out, "--batch-size", "0"), "--batch-size 0", absent=[out])
    fails_cleanly(capsys, _predict(fx, fx.png, fx.afile), str(fx.afile), "not a folder", "--out")
    assert fx.afile.read_text() == "x\n"
    fails_cleanly(capsys, _predict(fx, fx.png, fx.afile / "pred"), str(fx.afile / "pred"), "cannot create")
    fails_cleanly(capsys, _predict(fx, fx.png, UNWRITABLE), str(UNWRITABLE), "cannot create")
    fails_cleanly(capsys, _predict(fx, fx.frames, fx.frames), "is the input folder")
    assert sorted(p.name for p in fx.frames.iterdir()) == ["000.png", "001.png", "002.png", "003.png"]


#: Intrinsics files with one mistake each, for 32x32 fixture frames: (text or None for a missing file, phrases).
_K32 = "width: 32\nheight: 32\nfx: 20\nfy: 20\ncx: 15.5\ncy: 15.5\n"
BAD_INTRINSICS = {
    "missing file": (None, ["intrinsics file not found", "width height fx fy cx cy"]),
    "missing key": (_K32.replace("cy: 15.5\n", ""), ["lack cy"]),
    "negative focal length": (_K32.replace("fx: 20", "fx: -20"), ["fx: -20", "positive focal length"]),
    "not a number": (_K32.replace("fy: 20", "fy: twenty"), ["fy: 'twenty'", "not a number"]),
    "size of other frames": (_K32.replace("width: 32", "width: 64"),
                             ["intrinsics are for 64x32 but the frames are 32x32", "width and height"]),
    "fisheye coefficients without the model": (_K32 + "k1: 0.1\nk2: 0\nk3: 0\nk4: 0\n",
                                               ["k1, k2, k3, k4", "without model: fisheye"]),
    "fisheye without k4": (_K32 + "model: fisheye\nk1: 0.1\nk2: 0\nk3: 0\n", ["model: fisheye lacks k4"]),
    "unknown model": (_K32 + "model: scaramuzza\n", ["model: 'scaramuzza'", "model: fisheye"]),
}


def _intrinsics_file(tmp_path: Path, case: str) -> tuple[Path, list]:
    text, names = BAD_INTRINSICS[case]
    path = tmp_path / "scope.yaml"
    if text is not None:
        path.write_text(text)
    return path, names


@pytest.mark.parametrize("case", sorted(BAD_INTRINSICS))
def test_predict_bad_intrinsics(fx, tmp_path, capsys, case):
    kfile, names = _intrinsics_file(tmp_path, case)
    out = tmp_path / "pred"
    for inp in (fx.png, fx.video, fx.frames):
        fails_cleanly(capsys, _predict(fx, inp, out, "--intrinsics", kfile), str(kfile), *names, absent=[out])


@pytest.mark.parametrize("case", ["size of other frames", "fisheye coefficients without the model"])
def test_evaluate_reconstruct_finetune_bad_intrinsics(fx, tmp_path, capsys, case):
    kfile, names = _intrinsics_file(tmp_path, case)
    js = tmp_path / "eval.json"
    fails_cleanly(capsys, _evaluate(fx, fx.ds, "--json", js, "--intrinsics", kfile), str(kfile), *names,
                  absent=[js])
    rec = tmp_path / "rec"
    fails_cleanly(capsys, _reconstruct(rec, "--video", fx.video, "--checkpoint", fx.ckpt, "--intrinsics", kfile),
                  str(kfile), *names, absent=[rec])
    ft = tmp_path / "ft"
    fails_cleanly(capsys, _finetune(fx, ft, "--intrinsics", kfile, video=fx.video), str(kfile), *names,
                  absent=[ft / "checkpoints"])


# ---------------------------------------------------------------------------------------------------------
# finetune
# ---------------------------------------------------------------------------------------------------------

def _finetune(fx, out, *extra, init=None, video=None):
    return ["finetune", "--init", init or fx.ckpt, "--video", video or fx.frames, "--out", out, "--steps", "1",
            "--batch-size", "1", "--device", "cpu", "--no-progress", *extra]


def test_finetune_input_mistakes(fx, tmp_path, capsys):
    out = tmp_path / "ft"
    ck = out / "checkpoints"
    fails_cleanly(capsys, _finetune(fx, out, init=tmp_path / "none.pt"), "none.pt", "checkpoint not found",
                  absent=[out])
    fails_cleanly(capsys, _finetune(fx, out, init=fx.rand_pt), str(fx.rand_pt), "not a readable", absent=[out])
    fails_cleanly(capsys, _finetune(fx, out, init=fx.text_pt), str(fx.text_pt), "not a readable", absent=[out])
    fails_cleanly(capsys, _finetune(fx, out, video=tmp_path / "nope.mp4"), "nope.mp4", "check --video",
                  absent=[out])
    fails_cleanly(capsys, _finetune(fx, out, video=fx.rand_mp4), str(fx.rand_mp4), "cannot open video",
                  absent=[ck])
    fails_cleanly(capsys, _finetune(fx, out, video=fx.empty), str(fx.empty), "no frames", absent=[ck])
    fails_cleanly(capsys, _finetune(fx, out, "--crop", "20", "20", "30", "30", video=fx.video),
                  "--crop 20 20 30 30", "lies outside", absent=[ck])


def test_finetune_bad_intrinsics(fx, tmp_path, capsys):
    out = tmp_path / "ft"
    missing = tmp_path / "k.yaml"
    fails_cleanly(capsys, _finetune(fx, out, "--intrinsics", missing), str(missing), "intrinsics file not found",
                  absent=[out])
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("fx: [\n")
    fails_cleanly(capsys, _finetune(fx, out, "--intrinsics", syntax), str(syntax), "cannot parse intrinsics",
                  absent=[out / "checkpoints"])
    partial = tmp_path / "partial.yaml"
    partial.write_text("fx: 10\nfy: 10\n")
    fails_cleanly(capsys, _finetune(fx, out, "--intrinsics", partial), str(partial), "cx, cy, width, height",
                  absent=[out / "checkpoints"])


def test_finetune_bad_counts(fx, tmp_path, capsys):
    out = tmp_path / "ft"
    fails_cleanly(capsys, _finetune(fx, out, "--steps", "0"), "--steps 0", absent=[out])
    fails_cleanly(capsys, _finetune(fx, out, "--batch-size", "0"), "--batch-size 0", absent=[out])


def test_finetune_bad_flag_values_name_the_flag(fx, tmp_path, capsys):
    out = tmp_path / "ft"
    fails_cleanly(capsys, _finetune(fx, out, "--lr", "-1"), "--lr -1", absent=[out])
    fails_cleanly(capsys, _finetune(fx, out, "--frame-skip", "0"), "--frame-skip 0", absent=[out])
    fails_cleanly(capsys, _finetune(fx, out, "--checkpoint-every", "0"), "--checkpoint-every 0", absent=[out])


def test_finetune_out_unwritable(fx, capsys):
    fails_cleanly(capsys, _finetune(fx, UNWRITABLE, "--intrinsics", fx.seq / "meta.yaml"), str(UNWRITABLE))


def test_finetune_out_is_a_file(fx, capsys):
    fails_cleanly(capsys, _finetune(fx, fx.afile), str(fx.afile), "not a folder")


# ---------------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------------

def _evaluate(fx, data, *extra, ckpt=None):
    return ["evaluate", "--checkpoint", ckpt or fx.ckpt, "--data", data, "--device", "cpu", *extra]


def test_evaluate_data_path_mistakes(fx, tmp_path, capsys):
    js = tmp_path / "eval.json"
    fails_cleanly(capsys, _evaluate(fx, tmp_path / "nope", "--json", js), "nope", "no such dataset folder",
                  absent=[js])
    fails_cleanly(capsys, _evaluate(fx, fx.empty, "--json", js), str(fx.empty), "holds no dataset.yaml",
                  absent=[js])
    fails_cleanly(capsys, _evaluate(fx, fx.afile, "--json", js), str(fx.afile), "no such dataset folder",
                  absent=[js])


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_evaluate_damaged_dataset(fx, tmp_path, capsys, damage):
    edit, names = DAMAGE[damage]
    data = _damaged(fx, tmp_path, "data", edit)
    js = tmp_path / "eval.json"
    # image files are read frame by frame under the progress bar, so its lines may precede the error
    fails_cleanly(capsys, _evaluate(fx, data, "--json", js), *names, absent=[js], strict=False)


def test_evaluate_depth_without_a_valid_pixel_names_the_data(fx, tmp_path, capsys):
    data = _damaged(fx, tmp_path, "data", _zero_depth)
    fails_cleanly(capsys, _evaluate(fx, data), "no evaluated frame has valid ground-truth depth", str(data),
                  strict=False)


def test_evaluate_not_a_checkpoint(fx, tmp_path, capsys):
    js = tmp_path / "eval.json"
    for ckpt in (fx.rand_pt, fx.text_pt):
        fails_cleanly(capsys, _evaluate(fx, fx.ds, "--json", js, ckpt=ckpt), str(ckpt), "not a readable",
                      absent=[js])


@pytest.mark.parametrize("extra, names", [
    (["--format", "tum"], ["--format tum", "colondepth, simcol3d, c3vd"]),
    (["--align", "mean"], ["--align mean", "median, none"]),
    (["--max-frames", "0"], ["--max-frames 0"]),
    (["--batch-size", "0"], ["--batch-size 0"]),
    (["--min-depth-mm", "50", "--max-depth-mm", "10"], ["[50.0, 10.0]", "--min-depth-mm"]),
])
def test_evaluate_bad_values(fx, tmp_path, capsys, extra, names):
    js = tmp_path / "eval.json"
    fails_cleanly(capsys, _evaluate(fx, fx.ds, "--json", js, *extra), *names, absent=[js])


@pytest.mark.parametrize("where", ["a folder", "under a file", "unwritable"])
def test_evaluate_json_path_unusable(fx, capsys, where):
    js = {"a folder": fx.empty, "under a file": fx.afile / "eval.json", "unwritable": UNWRITABLE / "e.json"}[where]
    fails_cleanly(capsys, _evaluate(fx, fx.ds, "--json", js), str(js))


# ---------------------------------------------------------------------------------------------------------
# reconstruct
# ---------------------------------------------------------------------------------------------------------

def _reconstruct(out, *extra):
    return ["reconstruct", "--out", out, "--no-progress", *extra]


def test_reconstruct_sequence_path_mistakes(fx, tmp_path, capsys):
    out = tmp_path / "rec"
    fails_cleanly(capsys, _reconstruct(out, "--sequence", tmp_path / "nope"), "nope", "no such dataset folder",
                  absent=[out])
    fails_cleanly(capsys, _reconstruct(out, "--sequence", fx.afile), str(fx.afile), "no such dataset folder",
                  absent=[out])
    fails_cleanly(capsys, _reconstruct(out, "--sequence", fx.empty), str(fx.empty), "holds no", absent=[out])


@pytest.mark.parametrize("damage", ["truncated depth PNG", "poses.txt with a NaN", "poses.txt one line short",
                                    "meta.yaml without fx"])
def test_reconstruct_damaged_sequence(fx, tmp_path, capsys, damage):
    edit, names = DAMAGE[damage]
    data = _damaged(fx, tmp_path, "data", edit)
    out = tmp_path / "rec"
    fails_cleanly(capsys, _reconstruct(out, "--sequence", data / "seq_00000"), *names, absent=[out])


@pytest.mark.parametrize("extra, names", [
    (["--frames", "0"], ["--frames 0", "A:B:S"]),
    (["--frames", "a:b"], ["--frames a:b", "integers"]),
    (["--frames", "5:2"], ["--frames 5:2", "selects no frame"]),
    (["--voxel-mm", "0"], ["--voxel-mm 0", "positive"]),
    (["--voxel-mm", "-1"], ["--voxel-mm -1", "positive"]),
    (["--format", "tum"], ["--format tum"]),
    (["--min-depth-mm", "50", "--max-depth-mm", "10"], ["[50.0, 10.0]"]),
])
def test_reconstruct_bad_values(fx, tmp_path, capsys, extra, names):
    out = tmp_path / "rec"
    fails_cleanly(capsys, _reconstruct(out, "--sequence", fx.seq, *extra), *names, absent=[out])


def test_reconstruct_depth_without_a_valid_pixel(fx, tmp_path, capsys):
    data = _damaged(fx, tmp_path, "data", _zero_depth)
    out = tmp_path / "rec"
    fails_cleanly(capsys, _reconstruct(out, "--sequence", data / "seq_00000"), "seq_00000", "no selected frame "
                  "has valid depth", "working range", absent=[out])


@pytest.fixture(scope="module")
def cut_video(fx) -> Path:
    """The first half of a real 30-frame mp4: what an interrupted copy or download leaves."""
    whole = fx.root / "whole.mp4"
    _write_video(whole, n=30, h=64, w=64)
    data = whole.read_bytes()
    cut = fx.root / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_video_everywhere(fx, cut_video, tmp_path, capsys):
    out = tmp_path / "out"
    for argv in (_predict(fx, cut_video, out),
                 _finetune(fx, out, "--intrinsics", fx.seq / "meta.yaml", video=cut_video),
                 _reconstruct(out, "--video", cut_video, "--checkpoint", fx.ckpt)):
        fails_cleanly(capsys, argv, str(cut_video), "cannot open video", "extract", absent=[out / "checkpoints"])
        assert not any(out.glob("*_depth.npy")) and not (out / "report.json").exists()


def _write_faststart_video(path: Path, n: int = 30, h: int = 64, w: int = 64) -> None:
    """An mp4 with its index first (``movflags=faststart``), as streaming tools write it: cut short, it still
    opens and decodes, and simply ends early."""
    _write_video(path, n=n, h=h, w=w, options={"movflags": "faststart"})


def _decodable_frames(path: Path) -> int:
    """Frames PyAV decodes before the stream ends or fails (what predict can use)."""
    import av

    n = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(container.streams.video[0]):
                n += 1
        except av.error.FFmpegError:
            pass
    return n


@pytest.fixture(scope="module")
def damaged_videos(fx) -> dict:
    """A whole 30-frame faststart mp4, its first half (truncated copy) and a copy with garbage mid-file."""
    whole = fx.root / "stream.mp4"
    _write_faststart_video(whole)
    data = whole.read_bytes()
    half = fx.root / "stream_half.mp4"
    half.write_bytes(data[: len(data) // 2])
    garbled = fx.root / "stream_garbled.mp4"
    mid = len(data) // 2
    garbled.write_bytes(data[:mid] + np.random.default_rng(0).bytes(2000) + data[mid + 2000:])
    return {"whole": whole, "half": half, "garbled": garbled}


@pytest.mark.parametrize("which, cause", [("half", "the video ends there but its header has 30 frames"),
                                          ("garbled", "(InvalidDataError; frames 0-")])
def test_predict_video_failing_mid_stream_exits_non_zero_and_adds_nothing(fx, damaged_videos, tmp_path, capsys,
                                                                           which, cause):
    video = damaged_videos[which]
    n = _decodable_frames(video)
    assert 0 < n < 30  # the damage is mid-stream: the first frames decode
    out = tmp_path / "pred"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results\n")
    line = fails_cleanly(capsys, _predict(fx, video, out, "--batch-size", "1"), str(video), f"cannot decode frame {n}",
                         cause, "no depth maps written", "extract its frames", strict=False)
    assert line.startswith(f"error: {video}: cannot decode frame {n}")
    # nothing half-written: the folder holds exactly what it held before (no maps, no temporary folder)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "earlier results\n"
    fresh = tmp_path / "fresh"
    fails_cleanly(capsys, _predict(fx, video, fresh), str(video), f"cannot decode frame {n}", absent=[fresh],
                  strict=False)


def test_predict_whole_faststart_video_writes_every_frame(fx, damaged_videos, tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli.main([str(a) for a in _predict(fx, damaged_videos["whole"], out, "--no-png")]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"stream_{i:06d}_depth.npy" for i in range(30)]
    depth = np.load(out / "stream_000029_depth.npy")
    assert depth.shape == (64, 64) and depth.dtype == np.float32 and np.all(depth > 0)


def test_reconstruct_predicted_poses_with_an_unreadable_depth_checkpoint(fx, tmp_path, capsys):
    """The pose network runs at the depth checkpoint's input size: an unreadable checkpoint is an error naming
    it, not a silent fallback to the frame size."""
    import torch

    from colondepth.models.pose_net import PoseNetConfig, build_pose_net

    run = tmp_path / "checkpoints"
    run.mkdir()
    cfg = PoseNetConfig(num_sources=2, channels=(8, 16), num_mask_scales=0)
    torch.save({"format": "colondepth-pose-net", "config": cfg.to_dict(),
                "state": build_pose_net(cfg).state_dict(), "translation_norm_mm": -1.0}, run / "pose_net_ft.pt")
    bad = run / "final.pt"
    shutil.copy(fx.rand_pt, bad)
    out = tmp_path / "rec"
    line = fails_cleanly(capsys, _reconstruct(out, "--sequence", fx.seq, "--depth", "gt", "--poses", "predicted",
                                              "--checkpoint", bad),
                         str(bad), "not a readable ColonDepth checkpoint", absent=[out])
    assert line.startswith(f"error: {bad}: ")


def test_reconstruct_video_mistakes(fx, tmp_path, capsys):
    out = tmp_path / "rec"
    ck = ["--checkpoint", fx.ckpt]
    fails_cleanly(capsys, _reconstruct(out, "--video", fx.rand_mp4, *ck), str(fx.rand_mp4), "cannot open video",
                  absent=[out])
    fails_cleanly(capsys, _reconstruct(out, "--video", fx.video, "--depth", "gt"), "--depth gt", "no ground truth",
                  absent=[out])
    fails_cleanly(capsys, _reconstruct(out, "--video", fx.video, "--crop", "20", "20", "30", "30", *ck),
                  "--crop 20 20 30 30", "lies outside", absent=[out])
    fails_cleanly(capsys, _reconstruct(out, "--video", fx.video, "--crop", "-1", "0", "10", "10", *ck),
                  "--crop -1 0 10 10", ">= 0", absent=[out])
    fails_cleanly(capsys, _reconstruct(out, "--sequence", fx.seq, "--crop", "0", "0", "8", "8"), "--crop",
                  "--video only", absent=[out])
    fails_cleanly(capsys, _reconstruct(out, "--sequence", fx.seq, "--depth", "predicted", "--checkpoint",
                                       fx.rand_pt), str(fx.rand_pt), "not a readable", absent=[out])


def test_reconstruct_out_is_a_file(fx, capsys):
    fails_cleanly(capsys, _reconstruct(fx.afile, "--sequence", fx.seq), str(fx.afile))


def test_reconstruct_out_unwritable(fx, capsys):
    fails_cleanly(capsys, _reconstruct(UNWRITABLE, "--sequence", fx.seq), str(UNWRITABLE))


# ---------------------------------------------------------------------------------------------------------
# app and demo (guarded so a regression can never start a server or the pipeline)
# ---------------------------------------------------------------------------------------------------------

def test_app_bad_root_and_port(fx, tmp_path, capsys, monkeypatch):
    from colondepth.commands import app

    def no_server(*a, **k):
        raise AssertionError("the app server was started despite bad input")

    monkeypatch.setattr(app.subprocess, "Popen", no_server)
    fails_cleanly(capsys, ["app", "--root", tmp_path / "nope"], "nope", "app root folder not found")
    fails_cleanly(capsys, ["app", "--root", fx.afile], str(fx.afile), "app root folder not found")
    fails_cleanly(capsys, ["app", "--root", fx.empty, "--port", "0"], "--port 0", "1 and 65535")
    fails_cleanly(capsys, ["app", "--root", fx.empty, "--port", "70000"], "--port 70000")


@pytest.fixture
def no_pipeline(monkeypatch):
    from colondepth.commands import demo

    def refuse(self, title, argv, done_marker=None):
        raise AssertionError(f"demo started step '{title}' despite bad input")

    monkeypatch.setattr(demo._Step, "run", refuse)


@pytest.mark.parametrize("extra, names", [
    (["--size", "0", "0"], ["--size 0 0", "32x32"]),
    (["--sequences", "0"], ["--sequences 0", "at least 1"]),
    (["--frames", "0"], ["--frames 0", "at least 1"]),
    (["--finetune-steps", "0"], ["--finetune-steps 0", "at least 1"]),
])
def test_demo_bad_values_fail_before_anything_is_written(tmp_path, capsys, no_pipeline, extra, names):
    out = tmp_path / "demo"
    fails_cleanly(capsys, ["demo", "--out", out, *extra], *names, absent=[out])


def test_demo_bad_curriculum_fails_before_generating(fx, tmp_path, capsys, no_pipeline):
    out = tmp_path / "demo"
    fails_cleanly(capsys, ["demo", "--out", out, "--curriculum", tmp_path / "nope.yaml"], "nope.yaml",
                  "curriculum file not found", absent=[out])
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nstages: [\n")
    fails_cleanly(capsys, ["demo", "--out", out, "--curriculum", bad], str(bad), "not valid YAML", absent=[out])
    typo = tmp_path / "typo.yaml"
    typo.write_text(fx.curriculum.read_text() + "\nepochs: 3\n")
    fails_cleanly(capsys, ["demo", "--out", out, "--curriculum", typo], str(typo), "epochs", absent=[out])


def test_demo_out_is_a_file(fx, tmp_path, capsys, no_pipeline):
    fails_cleanly(capsys, ["demo", "--out", fx.afile], str(fx.afile), "not a folder")
    assert fx.afile.read_text() == "x\n"
    fails_cleanly(capsys, ["demo", "--out", UNWRITABLE], str(UNWRITABLE), "cannot create")


def test_demo_failed_step_is_one_line_with_the_cause(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "data" / "L1").write_text("in the way\n")  # the first step's output folder is a file
    line = fails_cleanly(capsys, ["demo", "--out", out, "--size", "32", "32", "--sequences", "1", "--frames", "2"],
                         "demo step 'generate synthetic level L1' failed", str(out / "data" / "L1"),
                         "not a folder", "rerun 'colondepth demo'", strict=False)
    assert line.count("error:") == 1


# ---------------------------------------------------------------------------------------------------------
# every command that takes --device; and the real process's stderr
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "finetune", "reconstruct"])
def test_unknown_device_is_one_line(fx, tmp_path, capsys, command):
    argv = {
        "train": _train(fx.curriculum, tmp_path / "run", fx.ds),
        "predict": _predict(fx, fx.png, tmp_path / "pred"),
        "evaluate": _evaluate(fx, fx.ds),
        "finetune": _finetune(fx, tmp_path / "ft", "--intrinsics", fx.seq / "meta.yaml"),
        "reconstruct": _reconstruct(tmp_path / "rec", "--sequence", fx.seq, "--depth", "predicted",
                                    "--checkpoint", fx.ckpt),
    }[command]
    argv = [str(a) for a in argv]
    if "--device" in argv:
        argv[argv.index("--device") + 1] = "gpu7"
    else:
        argv += ["--device", "gpu7"]
    fails_cleanly(capsys, argv, "gpu7")


def test_argparse_mistakes_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "--recipe", str(L1_RECIPE), "--out", str(tmp_path / "ds"), "--frames", "ten"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--frames" in err and "ten" in err


def test_real_process_stderr_is_one_line(fx, tmp_path):
    """Through the installed entry point: no library warning lines around the error, exit 2."""
    out = tmp_path / "pred"
    env = dict(os.environ, PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "colondepth.cli", "predict", "--checkpoint", str(fx.rand_pt),
                           "--input", str(fx.png), "--out", str(out), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {fx.rand_pt}: not a readable ColonDepth checkpoint")
    assert not out.exists()
