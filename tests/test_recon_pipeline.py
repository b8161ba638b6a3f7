"""The reconstruction pipeline and the ``colondepth reconstruct`` command on a tiny on-disk tube dataset."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh
import yaml

from colondepth import cli
from colondepth.datasets.base import Sequence
from colondepth.datasets.tum import write_tum
from colondepth.errors import UserError
from colondepth.recon.pipeline import ReconstructionConfig, parse_frames, reconstruct_sequence, select_frames
from colondepth.recon.poses import chain_relative_poses
from test_recon_analytic import small_intrinsics, tube_depth, tube_mesh, tube_poses

R = 10.0
Z_RANGE = (-20.0, 60.0)
N = 6
SIZE = 32
SCALE = 0.01  # mm per depth unit


def _frames():
    intr = small_intrinsics(SIZE)
    poses = tube_poses(N, R, 20.0)
    depths = [tube_depth(intr, T, R, Z_RANGE) for T in poses]
    rgbs = []
    for k, d in enumerate(depths):
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[..., 0] = 180
        img[..., 1] = np.clip(d * 3, 0, 255).astype(np.uint8)
        img[..., 2] = 20 * k
        rgbs.append(img)
    return intr, poses, depths, rgbs


def write_tiny_dataset(root: Path) -> Path:
    """A sequence folder in the documented layout: meta.yaml, rgb/, depth/ (uint16), poses.txt, mesh.ply."""
    intr, poses, depths, rgbs = _frames()
    seq = root / "seq_00000"
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    meta = {**intr.to_dict(), "depth_scale_mm": SCALE, "fps": 10.0, "level": "L1", "seed": 0, "num_frames": N}
    (seq / "meta.yaml").write_text(yaml.safe_dump(meta))
    for k in range(N):
        iio.imwrite(seq / "rgb" / f"{k:06d}.png", rgbs[k])
        iio.imwrite(seq / "depth" / f"{k:06d}.png", np.round(depths[k] / SCALE).astype(np.uint16))
    write_tum(seq / "poses.txt", np.arange(N) / 10.0, poses)
    tube_mesh(R, *Z_RANGE).export(seq / "mesh.ply")
    return seq


def memory_sequence(**over) -> Sequence:
    intr, poses, depths, rgbs = _frames()
    kw = dict(name="tube", intrinsics=intr, num_frames=N, load_rgb=lambda i: rgbs[i],
              load_depth_mm=lambda i: depths[i], world_from_cam=poses, timestamps=np.arange(N) / 10.0)
    kw.update(over)
    return Sequence(**kw)


@pytest.fixture(scope="module")
def command_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    seq = write_tiny_dataset(root)
    out = root / "recon"
    code = cli.main(["reconstruct", "--sequence", str(seq), "--out", str(out), "--voxel-mm", "1.0",
                     "--max-depth-mm", "20", "--no-progress"])
    return code, seq, out


def test_command_writes_every_output(command_run):
    import nibabel as nib

    code, seq, out = command_run
    assert code == 0
    names = {"mesh.ply", "mesh.glb", "points.ply", "coverage.json", "unobserved.ply", "tsdf.nii.gz", "trajectory.txt",
             "report.json"}
    assert names <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    mesh = trimesh.load(out / "mesh.ply", force="mesh")
    r = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    assert len(mesh.faces) > 500 and np.abs(r - R).max() < 1.0  # within one voxel
    pts = trimesh.load(out / "points.ply")
    assert len(pts.vertices) > 1000 and pts.colors[:, 0].min() == 180
    glb = trimesh.load(out / "mesh.glb").to_geometry()
    assert len(glb.vertices) == len(mesh.vertices)
    first_cam = np.linalg.inv(tube_poses(N, R, 20.0)[0])
    expect = (mesh.vertices @ first_cam[:3, :3].T + first_cam[:3, 3]) * [1, -1, -1]  # OpenCV -> glTF
    np.testing.assert_allclose(np.sort(glb.vertices[:, 2]), np.sort(expect[:, 2]), atol=1e-3)
    img = nib.load(str(out / "tsdf.nii.gz"))
    report = json.loads((out / "report.json").read_text())
    np.testing.assert_allclose(img.affine, report["volume"]["affine_world_from_index"])
    traj = np.loadtxt(out / "trajectory.txt")
    assert traj.shape == (N, 8)
    np.testing.assert_allclose(traj[:, 1:4], tube_poses(N, R, 20.0)[:, :3, 3], atol=1e-5)


def test_command_report_metrics_and_coverage(command_run):
    _, seq, out = command_run
    report = json.loads((out / "report.json").read_text())
    cov = json.loads((out / "coverage.json").read_text())
    assert cov["method"] == "lumen"
    assert 0.1 < cov["observed_fraction"] < 0.9
    assert report["coverage"]["observed_fraction"] == cov["observed_fraction"]
    # the estimate (no ground truth used) agrees with the ground-truth oracle of the same segment
    assert 0.1 < cov["oracle"]["observed_fraction"] < 0.9
    assert abs(cov["estimate_minus_oracle"]) < 0.06
    assert cov["centreline_length_mm"] == pytest.approx(
        np.linalg.norm(np.diff(tube_poses(N, R, 20.0)[:, :3, 3], axis=0), axis=1).sum(), abs=1e-3)
    assert [b["from_mm"] for b in cov["per_cm"]] == [0.0, 10.0, 20.0][: len(cov["per_cm"])]
    assert abs(cov["median_radius_mm"] - R) < 0.5
    obs = report["metrics"]["observed_ground_truth"]
    assert obs["chamfer_mm"] < 1.0  # below the voxel size
    assert obs["fscore@1mm"] > 0.8
    full = report["metrics"]["full_ground_truth"]
    assert full["completeness_mm"] > obs["completeness_mm"]  # the unseen part is missing
    un = trimesh.load(out / "unobserved.ply", force="mesh")
    assert un.area == pytest.approx(cov["unobserved_area_mm2"], rel=1e-3)
    # the unseen wall lies beside the first cameras, where their view had not reached yet
    assert np.median(un.triangles_center[:, 2]) < 8.0
    whole = cov["oracle"]["whole_mesh"]
    gt = trimesh.load(seq / "mesh.ply", force="mesh")
    assert whole["total_area_mm2"] == pytest.approx(gt.area, rel=0.01)
    assert whole["observed_fraction"] < cov["oracle"]["observed_fraction"]  # most of the long tube is off the path
    assert report["frames"]["integrated"] == N and report["timing_s"]["fusion_fps"] > 0
    assert report["complete"] is True and report["warnings"] == []
    assert report["mesh"]["marching_cubes"]["failed_chunks"] == []
    assert report["mesh"]["marching_cubes"]["surface_chunks"] >= 1


def test_frames_selection_and_errors(tmp_path, capsys):
    assert parse_frames("0:10:2") == (0, 10, 2)
    assert parse_frames(":5") == (None, 5, None)
    assert parse_frames(None) == (None, None, None)
    for bad in ("a:b", "1:2:3:4", "0:5:0", "7"):
        with pytest.raises(UserError, match="--frames"):
            parse_frames(bad)
    assert select_frames(10, (2, None, 3)) == [2, 5, 8]
    with pytest.raises(UserError, match="selects no frame"):
        select_frames(4, (10, 20, None))
    code = cli.main(["reconstruct", "--video", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "o"),
                     "--depth", "gt"])
    assert code == 2
    assert "a video has no ground truth" in capsys.readouterr().err


def test_pipeline_user_errors(tmp_path):
    cfg = ReconstructionConfig(voxel_mm=1.0)
    with pytest.raises(UserError, match="no ground-truth poses"):
        reconstruct_sequence(memory_sequence(world_from_cam=None), tmp_path, cfg, progress=False)
    with pytest.raises(UserError, match="4 poses for 6 frames"):
        reconstruct_sequence(memory_sequence(world_from_cam=tube_poses(4, R)), tmp_path, cfg, progress=False)
    with pytest.raises(UserError, match="no ground-truth depth"):
        reconstruct_sequence(memory_sequence(load_depth_mm=None), tmp_path, cfg, progress=False)

    class NaNPredictor:
        def predict(self, rgb):
            return np.full(rgb.shape[:2], np.nan, np.float32)

    with pytest.raises(UserError, match="NaN"):
        reconstruct_sequence(memory_sequence(), tmp_path, ReconstructionConfig(depth="predicted"),
                             depth_predictor=NaNPredictor(), progress=False)
    empty = memory_sequence(load_depth_mm=lambda i: np.zeros((SIZE, SIZE), np.float32))
    with pytest.raises(UserError, match="no selected frame has valid depth"):
        reconstruct_sequence(empty, tmp_path, cfg, progress=False)
    with pytest.raises(UserError, match="--voxel-mm"):
        reconstruct_sequence(memory_sequence(), tmp_path, ReconstructionConfig(voxel_mm=-1.0), progress=False)
    assert not any(tmp_path.iterdir())  # nothing written on failure


def test_predicted_sources_are_chained_in_the_first_camera_frame(tmp_path):
    intr, poses, depths, rgbs = _frames()

    def frame_of(rgb):  # the blue channel encodes the frame index
        return int(rgb[0, 0, 2]) // 20

    class DepthOracle:
        def predict(self, rgb):
            return depths[frame_of(rgb)]

    calls = []

    def pose_oracle(rgb_prev, rgb_cur, rgb_next=None):  # prev_from_cur from the ground truth
        p, c = frame_of(rgb_prev), frame_of(rgb_cur)
        calls.append((p, c, None if rgb_next is None else frame_of(rgb_next)))
        return np.linalg.inv(poses[p]) @ poses[c]

    seq = memory_sequence(mesh_path=None)
    cfg = ReconstructionConfig(depth="predicted", poses="predicted", voxel_mm=1.0, max_depth_mm=20.0)
    report = reconstruct_sequence(seq, tmp_path, cfg, depth_predictor=DepthOracle(), pose_estimator=pose_oracle,
                                  progress=False)
    assert calls == [(k - 1, k, k + 1 if k + 1 < N else None) for k in range(1, N)]
    assert report["coverage"]["method"] == "lumen" and "oracle" not in report["coverage"]
    assert 0.3 < report["coverage"]["observed_fraction"] < 1.0
    traj = np.loadtxt(tmp_path / "trajectory.txt")
    np.testing.assert_allclose(traj[0, 1:], [0, 0, 0, 0, 0, 0, 1], atol=1e-9)  # first camera = world
    mesh = trimesh.load(tmp_path / "mesh.ply", force="mesh")
    mesh.apply_transform(poses[0])  # back to the tube's frame
    r = np.hypot(mesh.vertices[:, 0], mesh.vertices[:, 1])
    assert np.abs(r - R).max() < 1.0


def test_chain_relative_poses():
    poses = tube_poses(5, R)
    rel = [np.linalg.inv(poses[i]) @ poses[i + 1] for i in range(4)]
    np.testing.assert_allclose(chain_relative_poses(rel, poses[0]), poses, atol=1e-9)
    with pytest.raises(UserError, match="rigid"):
        chain_relative_poses([np.diag([1.0, 1.0, 2.0, 1.0])])


def test_command_with_predicted_depth_from_a_checkpoint(tmp_path, capsys):
    """The real predicted-depth path: an (untrained) depth network checkpoint through the command."""
    from colondepth.models.depth_net import DepthNetConfig, build_depth_net
    from colondepth.train.checkpoint import make_card, save_checkpoint

    net = build_depth_net(DepthNetConfig(input_height=32, input_width=32, min_depth_mm=5.0, max_depth_mm=30.0,
                                         encoder_channels=[8, 8], decoder_channels=[8, 8], num_scales=1))
    ckpt = save_checkpoint(tmp_path / "tiny.pt", net, make_card(net, "test", "s0", 0, 0, "test"), {})
    seq = write_tiny_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    code = cli.main(["reconstruct", "--sequence", str(seq), "--out", str(out), "--depth", "predicted",
                     "--checkpoint", str(ckpt), "--frames", "0:6:2", "--voxel-mm", "1.0", "--no-progress",
                     "--metric-samples-per-mm2", "1"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["depth"] == "predicted" and report["config"]["poses"] == "gt"
    assert report["frames"]["selected"] == 3
    assert report["metrics"]["full_ground_truth"]["chamfer_mm"] > 0
    # this checkpoint has no pose network: a clear error, nothing half-written
    code = cli.main(["reconstruct", "--sequence", str(seq), "--out", str(tmp_path / "out2"), "--depth", "predicted",
                     "--poses", "predicted", "--checkpoint", str(ckpt), "--no-progress"])
    assert code == 2
    assert "no pose network (pose_net_*.pt) beside this checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    # with a pose network beside it (the file 'colondepth finetune' writes), predicted poses are chained
    import torch

    from colondepth.models.pose_net import PoseNetConfig, build_pose_net

    pose_net = build_pose_net(PoseNetConfig(num_sources=2, channels=(8, 8), num_mask_scales=0))
    torch.save({"format": "colondepth-pose-net", "config": pose_net.config.to_dict(),
                "state": pose_net.state_dict(), "translation_norm_mm": 1.5}, tmp_path / "pose_net_ft.pt")
    code = cli.main(["reconstruct", "--sequence", str(seq), "--out", str(tmp_path / "out3"), "--depth", "predicted",
                     "--poses", "predicted", "--checkpoint", str(ckpt), "--no-progress",
                     "--metric-samples-per-mm2", "1", "--tracking", "none"])
    assert code == 0, capsys.readouterr().err
    traj = np.loadtxt(tmp_path / "out3" / "trajectory.txt")
    assert traj.shape == (N, 8)
    np.testing.assert_allclose(traj[0, 1:], [0, 0, 0, 0, 0, 0, 1], atol=1e-9)
    steps = np.linalg.norm(np.diff(traj[:, 1:4], axis=0), axis=1)
    assert np.all(steps > 0.1) and np.all(steps < 3.0)  # about the 1.5 mm training norm per step
    report = json.loads((tmp_path / "out3" / "report.json").read_text())
    assert report["metrics"]["frame"].startswith("predicted trajectory anchored")
    gt_path = tube_poses(N, R, 20.0)[:, :3, 3]
    expect = np.sqrt(np.mean(np.sum(((traj[:, 1:4] @ tube_poses(N, R, 20.0)[0][:3, :3].T
                                      + gt_path[0]) - gt_path) ** 2, axis=1)))
    assert report["metrics"]["trajectory"]["ate_mm"] == pytest.approx(expect, rel=1e-6)
    assert report["metrics"]["full_ground_truth"]["chamfer_mm"] > 0


def test_video_input_without_a_model_is_a_clear_error(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(3):
        iio.imwrite(frames / f"{k:03d}.png", np.full((32, 32, 3), 60 + 40 * k, np.uint8))
    with pytest.warns(UserWarning, match="intrinsics"):  # a frame folder without --intrinsics: guessed
        code = cli.main(["reconstruct", "--video", str(frames), "--out", str(tmp_path / "o"), "--no-progress",
                         "--checkpoint", str(tmp_path / "missing.pt")])
    assert code == 2
    assert "missing.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_chained_float32_poses_stay_rigid():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    rels = []
    for _ in range(3000):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(rng.normal(0, 0.02, 3)).as_matrix()
        T[:3, 3] = rng.normal(0, 1.0, 3)
        rels.append(T.astype(np.float32).astype(np.float64))  # network-precision input
    traj = chain_relative_poses(rels)
    R = traj[-1, :3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)


def test_oversized_volume_skips_only_the_nifti(tmp_path, capsys):
    seq = memory_sequence(mesh_path=None)
    report = reconstruct_sequence(seq, tmp_path, ReconstructionConfig(voxel_mm=1.0, max_dense_voxels=1000),
                                  progress=False)
    assert not (tmp_path / "tsdf.nii.gz").exists() and (tmp_path / "mesh.ply").exists()
    assert "tsdf.nii.gz" not in report["outputs"]
    assert "exceeds the cap of 1000" in report["volume"]["nifti"]
    assert "tsdf.nii.gz not written" in capsys.readouterr().err
    # a skipped volume is a setting, not a failure: listed in the warnings, the run stays complete
    assert report["complete"] is True
    assert len(report["warnings"]) == 1 and report["warnings"][0].startswith("tsdf.nii.gz not written")


def test_failed_marching_cubes_chunk_makes_the_command_fail_after_writing(tmp_path, capsys, monkeypatch):
    """A chunk marching cubes cannot mesh is never dropped silently: warning, report.json, exit status 4."""
    import skimage.measure

    from colondepth.recon.fusion import IncompleteMeshWarning

    real = skimage.measure.marching_cubes
    calls = []

    def fail_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(skimage.measure, "marching_cubes", fail_first)
    seq = write_tiny_dataset(tmp_path / "ds")
    out = tmp_path / "recon"
    argv = ["reconstruct", "--sequence", str(seq), "--out", str(out), "--voxel-mm", "1.0", "--max-depth-mm", "20",
            "--no-progress"]
    with pytest.warns(IncompleteMeshWarning, match="marching cubes failed on 1 of"):
        code = cli.main(argv + ["--frames", "0:6:1"])
    captured = capsys.readouterr()
    assert code == 4
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    n = len(calls)
    assert lines[-1] == (f"error: {out}/mesh.ply is incomplete: marching cubes failed on 1 of {n} surface chunks, "
                         f"so the mesh and its coverage have holes (where: 'warnings' in {out}/report.json); "
                         f"rerun with another --voxel-mm")
    assert "Traceback" not in captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False
    assert len(report["warnings"]) == 1
    assert report["warnings"][0].startswith(f"mesh.ply incomplete: marching cubes failed on 1 of {n} surface chunks "
                                            "(ValueError: simulated failure)")
    failed = report["mesh"]["marching_cubes"]["failed_chunks"]
    assert len(failed) == 1 and failed[0]["error"] == "ValueError: simulated failure"
    assert (out / "mesh.ply").is_file() and (out / "coverage.json").is_file()  # everything else is written


def test_pose_network_is_the_depth_checkpoints_stage_never_the_newest_file(tmp_path):
    """``find_pose_network``: ``pose_net_<stage>.pt`` of the depth checkpoint's own stage, whatever the
    modification times; several candidates and none of that stage is a one-line error listing them; a pose file
    of a newer format version is refused with the fix."""
    import os

    import torch

    from colondepth.errors import UserError
    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.models.pose_net import PoseNetConfig, build_pose_net
    from colondepth.recon.poses import find_pose_network
    from colondepth.train.checkpoint import make_card, save_checkpoint
    from colondepth.models.bundle import load_pose_file as load_pose_net

    net = DepthNet(DepthNetConfig(input_height=32, input_width=32, encoder_channels=[4, 8], decoder_channels=[4, 4],
                                  num_scales=1, norm="none"))
    ckpt = save_checkpoint(tmp_path / "final.pt", net, make_card(net, "test", "ft_b", 0, 0, "test"), {})
    cfg = PoseNetConfig(num_sources=2, channels=(8, 8), num_mask_scales=0)
    for i, name in enumerate(["ft_a", "ft_b", "ft_c"]):
        path = tmp_path / f"pose_net_{name}.pt"
        torch.save({"format": "colondepth-pose-net", "config": cfg.to_dict(),
                    "state": build_pose_net(cfg).state_dict(), "translation_norm_mm": -1.0}, path)
        os.utime(path, (1000 + i, 1000 + (10 - i)))  # ft_a newest
    assert find_pose_network(ckpt) == tmp_path / "pose_net_ft_b.pt"
    (tmp_path / "pose_net_ft_b.pt").unlink()
    with pytest.raises(UserError, match=r"several pose networks \(pose_net_ft_a.pt, pose_net_ft_c.pt\)"):
        find_pose_network(ckpt)
    (tmp_path / "pose_net_ft_c.pt").unlink()
    assert find_pose_network(ckpt) == tmp_path / "pose_net_ft_a.pt"  # the only one: used
    newer = tmp_path / "pose_net_new.pt"
    torch.save({"format": "colondepth-pose-net", "format_version": 99, "config": cfg.to_dict(),
                "state": build_pose_net(cfg).state_dict(), "translation_norm_mm": -1.0}, newer)
    with pytest.raises(UserError, match="format version 99 is newer"):
        load_pose_net(newer)
    assert load_pose_net(tmp_path / "pose_net_ft_a.pt")[1] is None  # no version key: read as version 1


def test_video_to_surface_with_the_default_model_alone(tmp_path, capsys):
    """No training step: the shipped bundle's depth and pose networks turn a frame folder into a surface."""
    from colondepth.models.bundle import load_bundle
    from colondepth.resources import default_model_path

    if load_bundle(default_model_path()).pose is None:
        pytest.skip("the installed default model has no pose network")
    seq = write_tiny_dataset(tmp_path / "ds")
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted((seq / "rgb").glob("*.png"))[:6]:
        (frames / f.name).write_bytes(f.read_bytes())
    code = cli.main(["reconstruct", "--video", str(frames), "--intrinsics", str(seq / "meta.yaml"),
                     "--out", str(tmp_path / "o"), "--depth", "predicted", "--poses", "predicted",
                     "--no-progress", "--metric-samples-per-mm2", "1"])
    assert code == 0, capsys.readouterr().err
    traj = np.loadtxt(tmp_path / "o" / "trajectory.txt")
    assert traj.shape == (6, 8) and np.isfinite(traj).all()
    assert np.linalg.norm(traj[-1, 1:4]) > 0  # the predicted camera moved
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["poses"] == "predicted" and report["complete"] is not False


def test_depth_spill_round_trip_keeps_float16_precision():
    from colondepth.recon.pipeline import _DepthSpill

    rng = np.random.default_rng(3)
    maps = [rng.uniform(2.0, 90.0, size=(5, 7)).astype(np.float32) for _ in range(4)]
    spill = _DepthSpill((5, 7))
    for m in maps:
        spill.append(m)
    for k in (2, 0, 3, 1):
        np.testing.assert_allclose(spill.get(k), maps[k], rtol=1e-3)
        assert spill.get(k).dtype == np.float32
    with pytest.raises(IndexError):
        spill.get(4)
    spill.close()
