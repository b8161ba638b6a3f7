"""End to end: generate tiny datasets and check them against the mesh, the poses and each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from colondepth.conventions import CONVENTIONS_VERSION
from colondepth.datasets.synthetic import open_sequence, read_sequences
from colondepth.errors import UserError
from colondepth.synth.generate import FrameRenderer, SequenceScene, generate_dataset, sequence_seed
from colondepth.synth.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO / "synth"
SIZE = (48, 64)
FRAMES = 3


@pytest.fixture(scope="module")
def l5(tmp_path_factory):
    out = tmp_path_factory.mktemp("l5") / "ds"
    generate_dataset(SYNTH / "L5_tortuous.yaml", out, sequences=2, frames=FRAMES, size=SIZE, seed=5, workers=2,
                     progress=False)
    return out


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """A short, light L3 colon (folds, taeniae, vessels) rendered unlit: albedo only, no noise."""
    recipe = load_recipe(SYNTH / "L3_haustra.yaml").model_dump()
    recipe["centreline"]["length_mm"] = 110
    recipe["mesh"] = {"ring_spacing_mm": 2.0, "segments": 32}
    recipe["appearance"]["flat_shading"] = True
    recipe["appearance"]["texture_px_per_mm"] = 2.0
    recipe["trajectory"]["speed_mm_per_frame"] = 1.0
    out = tmp_path_factory.mktemp("flat") / "ds"
    generate_dataset(recipe, out, sequences=1, frames=FRAMES, size=SIZE, seed=3, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in {".png", ".txt", ".yaml", ".ply"}}


def test_layout_and_metadata(l5):
    info = yaml.safe_load((l5 / "dataset.yaml").read_text())
    assert info["level"] == "L5" and info["seed"] == 5 and info["sequences"] == 2
    assert info["frames_per_sequence"] == FRAMES and info["conventions_version"] == CONVENTIONS_VERSION
    assert info["recipe"]["camera"]["height"] == 48 and info["recipe"]["camera"]["width"] == 64
    for i in range(2):
        d = l5 / f"seq_{i:05d}"
        for name in ("meta.yaml", "poses.txt", "mesh.ply", "video.mp4", "fov_mask.png"):
            assert (d / name).is_file(), name
        assert sorted(p.name for p in (d / "rgb").iterdir()) == [f"{t:06d}.png" for t in range(FRAMES)]
        assert sorted(p.name for p in (d / "depth").iterdir()) == [f"{t:06d}.png" for t in range(FRAMES)]
        meta = yaml.safe_load((d / "meta.yaml").read_text())
        assert meta["seed"] == sequence_seed(5, i) and meta["level"] == "L5"
        assert (meta["height"], meta["width"], meta["cx"], meta["cy"]) == (48, 64, 31.5, 23.5)
        assert 100 <= np.degrees(2 * np.arctan(32 / meta["fx"])) <= 140


def test_reader_returns_sequences(l5):
    seqs = read_sequences(l5)
    assert [s.name for s in seqs] == ["ds/seq_00000", "ds/seq_00001"]
    s = seqs[0]
    assert s.level == "L5" and s.num_frames == FRAMES and s.world_from_cam.shape == (FRAMES, 4, 4)
    rgb, depth = s.rgb(1), s.depth_mm(1)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    assert s.fov_mask is not None and not s.fov_mask[0, 0] and s.fov_mask[24, 32]
    assert (depth[~s.fov_mask] == 0).all() and (depth[s.fov_mask] > 0).mean() > 0.95
    assert np.allclose(s.timestamps, np.arange(FRAMES) / 30.0)
    assert read_sequences(l5 / "seq_00001")[0].name.endswith("seq_00001")
    assert len(read_sequences(l5.parent)) == 2  # a folder of datasets


def test_reader_depth_round_trip_within_half_a_step(flat):
    import yaml as _yaml

    recipe = load_recipe(SYNTH / "L3_haustra.yaml").model_validate(
        _yaml.safe_load((flat / "dataset.yaml").read_text())["recipe"])
    scene = SequenceScene(recipe, sequence_seed(3, 0), FRAMES)
    fr = FrameRenderer(scene)
    try:
        _, depth_true = fr.render(2)
    finally:
        fr.close()
    s = open_sequence(flat / "seq_00000")
    depth_read = s.depth_mm(2)
    scale = s.extra["meta"].depth_scale_mm
    assert np.array_equal(depth_read > 0, depth_true > 0)
    assert float(np.abs(depth_read - depth_true).max()) <= scale / 2 + 1e-4
    assert np.allclose(s.world_from_cam, scene.world_from_cam, atol=2e-6)


def test_depth_agrees_with_ray_casting_the_mesh(flat):
    import trimesh

    s = open_sequence(flat / "seq_00000")
    mesh = trimesh.load(s.mesh_path, process=False)
    K = s.intrinsics
    H, W = SIZE
    # Every other pixel in each direction keeps trimesh's ray casting quick; pixel centres are integers.
    v, u = np.mgrid[1:H:2, 1:W:2]
    rays_cam = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones(u.shape)], -1).reshape(-1, 3)
    checked = 0
    for t in (0, FRAMES - 1):
        depth = s.depth_mm(t).astype(np.float64)
        pose = s.world_from_cam[t]
        dirs = rays_cam @ pose[:3, :3].T
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        origins = np.repeat(pose[None, :3, 3], len(dirs), axis=0)
        locs, ray_idx, _ = mesh.ray.intersects_location(origins, dirs, multiple_hits=False)
        cast = np.zeros(len(dirs))
        cast[ray_idx] = (locs - pose[:3, 3]) @ pose[:3, 2]  # z-depth along the camera's +Z
        cast = cast.reshape(u.shape)
        # Away from silhouettes: all 8 neighbours within 10 % of the pixel's depth.
        pad = np.pad(depth, 1, mode="edge")
        neigh = np.stack([pad[1 + dy:1 + dy + H, 1 + dx:1 + dx + W] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        smooth = (depth > 0) & (np.abs(neigh - depth).max(axis=0) < 0.10 * depth) & (neigh.min(axis=0) > 0)
        smooth, d = smooth[1:H:2, 1:W:2], depth[1:H:2, 1:W:2]
        assert smooth.mean() > 0.5
        assert (cast[smooth] > 0).all()
        rel = np.abs(d[smooth] - cast[smooth]) / cast[smooth]
        assert float(np.median(rel)) < 5e-4
        assert float(rel.max()) < 5e-3
        checked += int(smooth.sum())
    assert checked > 600


def test_same_seed_gives_identical_files_across_runs_shards_and_workers(l5, tmp_path):
    out = tmp_path / "again"
    # The fixture ran with two spawned workers; here shard 1/2 runs first, then shard 0/2, in-process.
    generate_dataset(SYNTH / "L5_tortuous.yaml", out, sequences=2, frames=FRAMES, size=SIZE, seed=5,
                     shard="1/2", progress=False)
    assert not (out / "seq_00000").exists() and (out / "seq_00001").is_dir()
    generate_dataset(SYNTH / "L5_tortuous.yaml", out, sequences=2, frames=FRAMES, size=SIZE, seed=5,
                     shard=(0, 2), progress=False)
    a, b = _files(l5), _files(out)
    assert a.keys() == b.keys() and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []


def test_different_seed_differs(flat, tmp_path):
    recipe = yaml.safe_load((flat / "dataset.yaml").read_text())["recipe"]
    generate_dataset(recipe, tmp_path, sequences=1, frames=1, size=SIZE, seed=4, progress=False, video=False)
    assert (tmp_path / "seq_00000/mesh.ply").read_bytes() != (flat / "seq_00000/mesh.ply").read_bytes()
    assert (tmp_path / "seq_00000/poses.txt").read_text() != (flat / "seq_00000/poses.txt").read_text()


def test_rerun_with_other_settings_refuses(l5):
    with pytest.raises(UserError, match="different settings .*seed"):
        generate_dataset(SYNTH / "L5_tortuous.yaml", l5, sequences=2, frames=FRAMES, size=SIZE, seed=6,
                         progress=False)


def test_resume_after_kill(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "colondepth.cli", "synth", "--recipe", str(SYNTH / "L1_straight.yaml"),
           "--out", str(out), "--sequences", "3", "--frames", "30", "--size", "32", "40", "--quiet", "--no-video"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "seq_00000").is_dir() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finished = sorted(p.name for p in out.glob("seq_*"))
    assert "seq_00000" in finished and len(finished) < 3, finished  # killed mid-run
    for name in finished:  # whatever looks finished is complete
        d = out / name
        assert len(list((d / "rgb").glob("*.png"))) == 30 and (d / "meta.yaml").is_file()
    # A temporary folder left by a killed run is invisible to readers and removed by the rerun.
    stale = out / ".seq_00002.killed.tmp"
    (stale / "rgb").mkdir(parents=True)
    (stale / "rgb" / "000000.png").write_bytes(b"partial")
    assert [s.name for s in read_sequences(out)] == [f"ds/{n}" for n in finished]
    before = (out / "seq_00000" / "meta.yaml").stat().st_mtime_ns
    generate_dataset(SYNTH / "L1_straight.yaml", out, sequences=3, frames=30, size=(32, 40), progress=False,
                     video=False)
    assert sorted(p.name for p in out.iterdir()) == ["dataset.yaml", "seq_00000", "seq_00001", "seq_00002"]
    assert (out / "seq_00000" / "meta.yaml").stat().st_mtime_ns == before  # finished work is skipped
    assert all(s.num_frames == 30 for s in read_sequences(out))


def test_reader_errors_are_one_line(tmp_path, l5):
    import shutil

    with pytest.raises(UserError, match="no such dataset folder"):
        read_sequences(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no dataset.yaml"):
        read_sequences(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(l5 / "seq_00000", bad)
    (bad / "depth" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="000001.png: not a readable PNG"):
        open_sequence(bad).depth_mm(1)
    (bad / "meta.yaml").write_text("width: 64\n")
    with pytest.raises(UserError, match="invalid meta.yaml") as exc:
        open_sequence(bad)
    assert "\n" not in str(exc.value)
    (bad / "meta.yaml").unlink()
    with pytest.raises(UserError, match="meta.yaml: not found"):
        open_sequence(bad)


def test_warping_next_frame_with_gt_depth_and_poses_is_photometrically_consistent(flat):
    """Unlit texture: frame t+1 warped into t with GT depth and poses reproduces frame t."""
    import torch

    from colondepth.geometry.pose import compose_pose, invert_pose
    from colondepth.geometry.warp import warp_source_to_target

    s = open_sequence(flat / "seq_00000")
    K = torch.as_tensor(s.intrinsics.K, dtype=torch.float64)[None]
    poses = torch.as_tensor(s.world_from_cam, dtype=torch.float64)
    errors, baseline = [], []
    for t in range(FRAMES - 1):
        target = torch.as_tensor(s.rgb(t), dtype=torch.float64).permute(2, 0, 1)[None] / 255.0
        source = torch.as_tensor(s.rgb(t + 1), dtype=torch.float64).permute(2, 0, 1)[None] / 255.0
        depth = torch.as_tensor(s.depth_mm(t), dtype=torch.float64)[None, None]
        src_from_tgt = compose_pose(invert_pose(poses[t + 1]), poses[t])[None]
        warped, valid = warp_source_to_target(source, depth, src_from_tgt, K)
        assert float(valid.double().mean()) > 0.7
        err = (warped - target).abs().mean(1, keepdim=True)[valid]
        errors.append(err)
        baseline.append((source - target).abs().mean(1, keepdim=True)[valid])
        # A mirrored pose convention (target_from_src) must do clearly worse.
        wrong, vw = warp_source_to_target(source, depth, invert_pose(src_from_tgt), K)
        wrong_err = (wrong - target).abs().mean(1, keepdim=True)[vw & valid]
        assert float(wrong_err.mean()) > 2 * float(err.mean())
    err = torch.cat(errors)
    base = torch.cat(baseline)
    assert float(err.median()) < 1.0 / 255
    assert float(err.mean()) < 1.5 / 255
    assert float(err.mean()) < 0.35 * float(base.mean())
