"""Tests of the review app: ``colondepth.app.data`` (pure functions), every page through
``streamlit.testing.v1.AppTest``, and ``colondepth app``.

The fixture root holds one synthetic sequence of five 32x32 frames whose depth is exact in the uint16
PNGs, predictions with known errors, a training run and a tube-shaped reconstruction.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh

from colondepth.app import data as appdata
from colondepth.errors import UserError

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "colondepth" / "app" / "review.py"
H = W = 32
N_FRAMES = 5
DEPTH_SCALE_MM = 0.01


# ----------------------------------------------------------------------------------------------
# Fixture root
# ----------------------------------------------------------------------------------------------
def gt_depth_mm(k: int) -> np.ndarray:
    """Frame ``k``'s ground truth: a tilted plane ``20 + 0.5 u`` mm, except frame 2: a wall at 50 mm."""
    if k == 2:
        return np.full((H, W), 50.0)
    u = np.arange(W)[None, :] * np.ones((H, 1))
    d = 20.0 + 0.5 * u + k
    d[:2, :2] = 0.0  # a few invalid pixels
    return d


def pred_depth_mm(k: int) -> np.ndarray:
    """Twice the truth (median scaling undoes it exactly), except frame 2: bottom quarter 20 % too far."""
    p = 2.0 * gt_depth_mm(k)
    if k == 2:
        p[24:] *= 1.2
    p[p == 0] = 7.0  # predictions are dense
    return p.astype(np.float32)


def open_tube(radius: float = 10.0, length: float = 40.0, sections: int = 24, rings: int = 9) -> trimesh.Trimesh:
    """An open tube along z, centred at 0: ``rings`` circles of ``sections`` vertices,
    ``2 * sections * (rings - 1)`` triangles (384 by default)."""
    ang = 2 * np.pi * (np.arange(sections) + 0.5) / sections
    z = np.linspace(-length / 2, length / 2, rings)
    verts = np.stack([np.repeat(radius * np.cos(ang)[None], rings, 0), np.repeat(radius * np.sin(ang)[None], rings, 0),
                      np.repeat(z[:, None], sections, 1)], axis=-1).reshape(-1, 3)
    a = (np.arange(rings - 1)[:, None] * sections + np.arange(sections)[None]).ravel()
    b = (np.arange(rings - 1)[:, None] * sections + (np.arange(sections)[None] + 1) % sections).ravel()
    faces = np.concatenate([np.stack([a, b, a + sections], 1), np.stack([b, b + sections, a + sections], 1)])
    return trimesh.Trimesh(verts, faces, process=False)


def make_app_root(root: Path) -> Path:
    """Create the fixture root described in the module docstring and return it."""
    import nibabel as nib
    import yaml

    seq = root / "synthetic" / "seq_00000"
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    (root / "synthetic" / "dataset.yaml").write_text(yaml.safe_dump({"level": "L0", "seed": 0, "sequences": 1}))
    (seq / "meta.yaml").write_text(yaml.safe_dump({
        "width": W, "height": H, "fx": 30.0, "fy": 30.0, "cx": 15.5, "cy": 15.5,
        "depth_scale_mm": DEPTH_SCALE_MM, "fps": 10, "level": "L0", "seed": 0}))
    pred_dir = root / "predictions" / "seq_00000"
    pred_dir.mkdir(parents=True)
    lines = []
    for k in range(N_FRAMES):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 0] = 40 * k + 60
        rgb[:, : W // 2, 1] = 200
        iio.imwrite(seq / "rgb" / f"{k:06d}.png", rgb)
        iio.imwrite(seq / "depth" / f"{k:06d}.png", np.round(gt_depth_mm(k) / DEPTH_SCALE_MM).astype(np.uint16))
        np.save(pred_dir / f"{k:06d}_depth.npy", pred_depth_mm(k))
        lines.append(f"{k / 10:.2f} 0 0 {2.0 * k:.1f} 0 0 0 1")
    (seq / "poses.txt").write_text("\n".join(lines) + "\n")

    run = root / "runs" / "run1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.resolved.yaml").write_text(yaml.safe_dump({"stages": [
        {"name": "sup_L0", "kind": "supervised", "levels": ["L0"], "budget": {"steps": 4, "epochs": None},
         "promotion": {"rule": "budget"}},
        {"name": "sup_L1", "kind": "supervised", "levels": ["L0", "L1"], "budget": {"steps": 2}},
    ]}, sort_keys=False))
    recs = [{"stage": "sup_L0", "step": s, "loss": 1.0 / (s + 1)} for s in range(5)]
    recs[-1]["abs_rel"] = 0.3
    recs += [{"stage": "sup_L1", "step": s, "loss": 0.5 / (s + 1)} for s in range(3)]
    recs[-1]["abs_rel"] = 0.2
    recs += [{"type": "monitor", "stage": "sup_L0", "global_step": 4, "set": "L0", "set_kind": "level",
              "abs_rel_median_scaled": 0.2, "abs_rel": 0.3, "frames": 3},
             {"type": "monitor", "stage": "sup_L0", "global_step": 4, "set": "real", "set_kind": "foreign",
              "abs_rel_median_scaled": 0.25, "abs_rel": None, "frames": 3},
             {"type": "monitor", "stage": "sup_L1", "global_step": 6, "set": "L0", "set_kind": "level",
              "abs_rel_median_scaled": 0.22, "abs_rel": 0.35, "frames": 3}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    rec = root / "reconstructions" / "tube"
    rec.mkdir(parents=True)
    tube = open_tube()
    tube.export(rec / "mesh.ply")
    patch = (tube.triangles_center[:, 0] > 0) & (tube.triangles_center[:, 2] > 10.0)  # 48 triangles
    unobserved = tube.submesh([np.nonzero(patch)[0]], append=True)
    unobserved.export(rec / "unobserved.ply")
    (rec / "coverage.json").write_text(json.dumps({"observed_fraction": 0.8, "voxel_mm": 1.0}))
    (rec / "report.json").write_text(json.dumps({"frames": N_FRAMES, "metrics": {
        "observed_ground_truth": {"accuracy_mm": 0.25, "completeness_mm": 1.5, "n_samples": 1000, "fscore@1mm": 0.9},
        "full_ground_truth": {"accuracy_mm": 0.5, "completeness_mm": 30.0, "n_samples": 1000, "fscore@1mm": 0.4}}}))
    (rec / "trajectory.txt").write_text("".join(f"{k} 0 0 {4.0 * k - 8:.1f} 0 0 0 1\n" for k in range(N_FRAMES)))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(rec / "tsdf.nii.gz"))
    return root


@pytest.fixture(scope="module")
def app_root(tmp_path_factory) -> Path:
    return make_app_root(tmp_path_factory.mktemp("approot"))


# ----------------------------------------------------------------------------------------------
# Path safety and discovery
# ----------------------------------------------------------------------------------------------
class TestPaths:
    def test_safe_path_inside(self, tmp_path):
        (tmp_path / "a").mkdir()
        assert appdata.safe_path(tmp_path, "a") == (tmp_path / "a").resolve()
        assert appdata.safe_path(tmp_path, tmp_path / "a" / "new.mp4") == (tmp_path / "a" / "new.mp4").resolve()
        assert appdata.safe_path(tmp_path, ".") == tmp_path.resolve()

    def test_safe_path_refuses_outside(self, tmp_path):
        root = tmp_path / "root"
        root.mkdir()
        (tmp_path / "secret.txt").write_text("x")
        with pytest.raises(UserError, match="outside the app root"):
            appdata.safe_path(root, "../secret.txt")
        with pytest.raises(UserError, match="outside the app root"):
            appdata.safe_path(root, tmp_path / "secret.txt")
        with pytest.raises(UserError, match="outside the app root"):
            appdata.safe_path(root, "/etc/passwd")

    def test_safe_path_resolves_symlinks(self, tmp_path):
        root = tmp_path / "root"
        root.mkdir()
        outside = tmp_path / "outside"
        outside.mkdir()
        (root / "link").symlink_to(outside, target_is_directory=True)
        (root / "inner").mkdir()
        (root / "ok_link").symlink_to(root / "inner", target_is_directory=True)
        with pytest.raises(UserError, match="outside the app root"):
            appdata.safe_path(root, "link")
        with pytest.raises(UserError, match="outside the app root"):
            appdata.safe_path(root, "link/file.mp4")
        assert appdata.safe_path(root, "ok_link") == (root / "inner").resolve()

    def test_discovery_skips_symlinks_leaving_root(self, tmp_path, app_root):
        root = tmp_path / "root"
        root.mkdir()
        (root / "elsewhere").symlink_to(app_root, target_is_directory=True)
        assert appdata.find_datasets(root) == []
        assert appdata.find_runs(root) == []
        assert appdata.find_reconstructions(root) == []

    def test_missing_root(self, tmp_path):
        with pytest.raises(UserError, match="app root folder not found"):
            appdata.resolve_root(tmp_path / "nope")

    def test_find_everything(self, app_root):
        ds = appdata.find_datasets(app_root)
        assert [d.name for d in ds] == ["synthetic"]
        assert [p.name for p in ds[0].sequence_dirs] == ["seq_00000"]
        assert [appdata.relative_name(app_root, p) for p in appdata.find_runs(app_root)] == ["runs/run1"]
        assert [appdata.relative_name(app_root, p) for p in appdata.find_reconstructions(app_root)] == \
            ["reconstructions/tube"]
        assert [appdata.relative_name(app_root, p) for p in appdata.find_prediction_dirs(app_root)] == \
            ["predictions/seq_00000"]

    def test_lone_sequence_is_a_dataset(self, tmp_path, app_root):
        import shutil

        shutil.copytree(app_root / "synthetic" / "seq_00000", tmp_path / "clip")
        ds = appdata.find_datasets(tmp_path)
        assert [(d.name, len(d.sequence_dirs)) for d in ds] == [("clip", 1)]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
class TestLoading:
    def test_sequence(self, app_root):
        (seq,) = appdata.load_sequences(appdata.find_datasets(app_root)[0])
        assert seq.num_frames == N_FRAMES and seq.has_depth and seq.has_poses
        assert seq.rgb(1).shape == (H, W, 3) and seq.rgb(1).dtype == np.uint8
        assert seq.rgb(1)[0, 0, 0] == 100
        np.testing.assert_allclose(seq.depth_mm(3), gt_depth_mm(3), atol=1e-4)
        np.testing.assert_allclose(seq.world_from_cam[4, :3, 3], [0, 0, 8.0])
        assert appdata.sequence_fps(seq) == 10.0
        assert appdata.frame_stem(seq, 4) == "000004"

    def test_sequences_come_from_the_package_reader(self, app_root):
        """The app reads sequences with the reader 'colondepth evaluate' uses: same names, frames, camera."""
        from colondepth.datasets.synthetic import SequenceMeta, read_sequences

        (mine,) = appdata.load_sequences(appdata.find_datasets(app_root)[0])
        (ref,) = read_sequences(app_root / "synthetic")
        assert mine.name == ref.name == "synthetic/seq_00000"
        assert mine.intrinsics == ref.intrinsics
        assert isinstance(mine.extra["meta"], SequenceMeta)
        assert mine.extra["frame_stems"] == [f"{k:06d}" for k in range(N_FRAMES)]
        np.testing.assert_array_equal(mine.depth_mm(2), ref.depth_mm(2))

    def test_incomplete_sequence_is_one_line(self, app_root, tmp_path):
        import shutil

        shutil.copytree(app_root / "synthetic", tmp_path / "synthetic")
        (tmp_path / "synthetic" / "seq_00000" / "poses.txt").write_text("0 0 0 0 0 0 0 1\n")
        with pytest.raises(UserError, match=r"poses\.txt: 1 poses for 5 frames"):
            appdata.load_sequences(appdata.find_datasets(tmp_path)[0])

    def test_frame_stem_without_file_names(self):
        from colondepth.datasets.base import Sequence
        from colondepth.geometry.camera import PinholeIntrinsics
        from colondepth.conventions import ImageSize

        seq = Sequence("v", PinholeIntrinsics(10, 10, 3.5, 3.5, ImageSize(8, 8)), 3, lambda i: None)
        assert appdata.frame_stem(seq, 2) == "000002" and appdata.sequence_fps(seq) == 10.0

    def test_bad_trajectory(self, app_root, tmp_path):
        import shutil

        shutil.copytree(app_root / "reconstructions" / "tube", tmp_path / "r")
        (tmp_path / "r" / "trajectory.txt").write_text("0 1 2 3 0 0 0\n")
        with pytest.raises(UserError, match=r"trajectory\.txt:1: expected 8 numbers"):
            appdata.load_reconstruction(tmp_path / "r")

    def test_prediction(self, app_root):
        idx = appdata.prediction_index(app_root / "predictions" / "seq_00000")
        assert sorted(idx) == [f"{k:06d}" for k in range(N_FRAMES)]
        d = appdata.load_prediction(idx["000002"])
        assert d.dtype == np.float32 and d.shape == (H, W) and d[0, 0] == 100.0 and d[-1, 0] == 120.0

    def test_bad_prediction(self, tmp_path):
        np.save(tmp_path / "x_depth.npy", np.zeros((2, 3, 4)))
        with pytest.raises(UserError, match="expected an \\(H, W\\) depth array"):
            appdata.load_prediction(tmp_path / "x_depth.npy")

    def test_metrics_jsonl(self, app_root, tmp_path):
        recs = appdata.read_metrics(app_root / "runs" / "run1")
        assert len(recs) == 11 and recs[0]["stage"] == "sup_L0"
        df = appdata.metrics_frame(recs)
        # second stage continues after the first (last step 4): x = 4, 5, 6
        assert df["x"].tolist() == [0, 1, 2, 3, 4, 4, 5, 6]
        assert appdata.metric_columns(recs) == ["loss", "abs_rel"]
        assert appdata.metric_columns([{"step": 1, "lr": 0.1, "val_abs_rel": 0.2, "loss": 1.0}]) == \
            ["loss", "val_abs_rel", "lr"]
        (tmp_path / "metrics.jsonl").write_text('{"stage": "a", "step": 0, "loss": 1}\n{"stage": "a", "st')
        assert len(appdata.read_metrics(tmp_path)) == 1  # truncated last line ignored
        (tmp_path / "metrics.jsonl").write_text('oops\n{"stage": "a", "step": 0, "loss": 1}\n')
        with pytest.raises(UserError, match=r"metrics\.jsonl:1: not a JSON object"):
            appdata.read_metrics(tmp_path)

    def test_metrics_typed_records(self, tmp_path):
        """The trainer's format: ``type`` train/val/stage_end/run_end and a ``global_step``."""
        recs = [{"type": "train", "stage": "a", "step": 2, "global_step": 2, "loss": 0.9, "stage_index": 0},
                {"type": "val", "stage": "a", "step": 2, "global_step": 2, "val_abs_rel": 0.5},
                {"type": "stage_end", "stage": "a", "steps": 2, "global_step": 2, "val_abs_rel": 0.5},
                {"type": "train", "stage": "b", "step": 2, "global_step": 4, "loss": 0.7},
                {"type": "run_end", "global_step": 4}]
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        records = appdata.read_metrics(tmp_path)
        assert appdata.metric_columns(records) == ["loss", "val_abs_rel"]
        df = appdata.metrics_frame(records)
        assert df["x"].tolist() == [2, 2, 4] and df["stage"].tolist() == ["a", "a", "b"]

    def test_curriculum(self, app_root, tmp_path):
        rows = appdata.read_curriculum(app_root / "runs" / "run1")
        assert rows == [
            {"stage": 0, "name": "sup_L0", "kind": "supervised", "levels": "L0", "budget": "steps=4",
             "promotion": "budget"},
            {"stage": 1, "name": "sup_L1", "kind": "supervised", "levels": "L0, L1", "budget": "steps=2",
             "promotion": ""},
        ]
        assert appdata.read_curriculum(tmp_path) == []
        assert [p.name for p in appdata.list_checkpoints(app_root / "runs" / "run1")] == ["last.pt"]

    def test_reconstruction(self, app_root):
        rec = appdata.load_reconstruction(app_root / "reconstructions" / "tube")
        assert len(rec.mesh.faces) == 384  # open tube: 24 sections x 8 ring gaps x 2
        assert len(rec.unobserved.faces) == 48  # 12 sections (x > 0) x 2 ring gaps (z > 10) x 2
        np.testing.assert_allclose(rec.trajectory_xyz[:, 2], [-8, -4, 0, 4, 8])
        assert rec.world_from_cam.shape == (5, 4, 4)
        assert appdata.coverage_summary(rec.coverage) == {"observed_fraction": 0.8, "voxel_mm": 1.0}
        assert set(rec.files) == {"mesh.ply", "unobserved.ply", "coverage.json", "report.json", "trajectory.txt",
                                  "tsdf.nii.gz"}

    def test_report_metrics_rows(self):
        assert appdata.report_metrics_rows({"frames": 3}) == []
        rows = appdata.report_metrics_rows({"metrics": {"observed_ground_truth": {"accuracy_mm": 0.2, "n_samples": 9,
                                                                                  "fscore@1mm": 0.8}}})
        assert rows == [{"compared with": "observed ground truth", "accuracy_mm": 0.2, "fscore@1mm": 0.8}]

    def test_reconstruction_missing_mesh(self, tmp_path):
        with pytest.raises(UserError, match="no fused surface"):
            appdata.load_reconstruction(tmp_path)


# ----------------------------------------------------------------------------------------------
# Pictures, metrics and meshes
# ----------------------------------------------------------------------------------------------
class TestPictures:
    def test_colorize_endpoints(self):
        lut = appdata.colormap_lut("viridis")
        img = appdata.colorize(np.array([[10.0, 20.0, 30.0, 0.0]]), 10.0, 30.0, "viridis",
                               valid=np.array([[True, True, True, False]]))
        assert img.dtype == np.uint8 and img.shape == (1, 4, 3)
        assert img[0, 0].tolist() == lut[0].tolist()
        assert img[0, 1].tolist() == lut[128].tolist()  # (20-10)/20*255 = 127.5 -> rounds to 128
        assert img[0, 2].tolist() == lut[255].tolist()
        assert img[0, 3].tolist() == [0, 0, 0]
        np.testing.assert_array_equal(lut[0], [68, 1, 84])  # viridis starts dark purple

    def test_colorbar_and_panel(self):
        bar = appdata.colorbar_image(0.0, 100.0, "viridis", height=200)
        assert bar.shape == (200, 96, 3)
        lut = appdata.colormap_lut("viridis")
        assert bar[8, 10].tolist() == lut[255].tolist()  # vmax at the top of the bar
        assert bar[191, 10].tolist() == lut[0].tolist()  # vmin at the bottom
        assert (bar[:, 30:] < 128).any()  # tick labels drawn
        panel = appdata.depth_panel(np.ones((32, 32)), 0.0, 2.0)
        assert panel.shape == (256, 256 + 96, 3)  # upscaled x8, bar on the right

    def test_display_range(self):
        lo, hi = appdata.depth_display_range(np.array([[0.0, 10.0], [20.0, 30.0]]), lo_pct=0, hi_pct=100)
        assert (lo, hi) == (10.0, 30.0)
        assert appdata.depth_display_range(np.zeros((2, 2))) == (0.0, 1.0)

    def test_error_map_and_metrics(self):
        gt, pred = gt_depth_mm(2), pred_depth_mm(2)
        score = appdata.score_prediction(pred, gt)
        assert score.metrics["scale"] == pytest.approx(0.5) and score.valid.all()
        np.testing.assert_allclose(score.error_mm[:24], 0.0, atol=1e-5)
        np.testing.assert_allclose(score.error_mm[24:], 10.0, atol=1e-4)  # 0.5 * 120 - 50
        m = appdata.frame_metrics(pred, gt)
        assert m == score.metrics
        assert m["abs_rel"] == pytest.approx(0.05) and m["rmse"] == pytest.approx(5.0)
        assert m["rmse"] == pytest.approx(float(np.sqrt(np.nanmean(score.error_mm.astype(np.float64) ** 2))))
        assert m["delta1"] == 1.0 and m["num_valid"] == H * W
        m0 = appdata.frame_metrics(pred_depth_mm(0), gt_depth_mm(0))
        assert m0["abs_rel"] == pytest.approx(0.0, abs=1e-7) and m0["num_valid"] == H * W - 4
        seq = appdata.sequence_metrics((pred_depth_mm(k), gt_depth_mm(k)) for k in range(N_FRAMES))
        assert seq["frames"] == N_FRAMES and seq["abs_rel"] == pytest.approx(0.01)
        assert seq["rmse"] == pytest.approx(1.0)

    def test_field_of_view_is_scored_only_inside(self):
        gt, pred = gt_depth_mm(2), pred_depth_mm(2)
        fov = np.zeros((H, W), bool)
        fov[:24] = True  # only the rows where the prediction is exact
        score = appdata.score_prediction(pred, gt, fov_mask=fov)
        assert score.metrics["num_valid"] == 24 * W and score.metrics["abs_rel"] == pytest.approx(0.0, abs=1e-7)
        assert np.isnan(score.error_mm[24:]).all() and not score.valid[24:].any()

    def test_low_resolution_prediction_is_resized_as_evaluate_resizes(self):
        """With 'colondepth evaluate''s resize (bilinear), not the nearest-neighbour one the app once had."""
        from colondepth.conventions import ImageSize
        from colondepth.eval.evaluate import resize_depth

        assert appdata.resize_depth is resize_depth
        low = pred_depth_mm(1)[::2, ::2]
        score = appdata.score_prediction(low, gt_depth_mm(1))
        np.testing.assert_array_equal(score.pred_mm, resize_depth(low, ImageSize(H, W)))
        nearest = np.repeat(np.repeat(low, 2, axis=0), 2, axis=1)
        assert np.abs(score.pred_mm - nearest)[4:-4, 4:-4].min() > 0.1  # a ramp: every inner pixel differs

    def test_decimate(self):
        sphere = trimesh.creation.icosphere(subdivisions=4)  # 5120 faces
        small = appdata.decimate_mesh(sphere, 1000)
        assert 500 <= len(small.faces) <= 1000
        np.testing.assert_allclose(np.linalg.norm(small.vertices, axis=1), 1.0, atol=0.05)
        assert appdata.decimate_mesh(sphere, 10_000) is sphere

    @pytest.mark.parametrize("fmt", ["PLY", "STL", "GLB"])
    def test_export_roundtrip(self, fmt):
        tube = open_tube()
        tube.apply_translation([5.0, 0.0, 30.0])
        ref = np.eye(4)
        ref[:3, 3] = [0.0, 0.0, 10.0]  # reference camera 10 mm along +z
        data = appdata.export_mesh_bytes(tube, fmt, world_from_ref_cam=ref)
        back = trimesh.load(io.BytesIO(data), file_type=fmt.lower(), force="mesh")
        assert len(back.faces) == len(tube.faces)
        if fmt == "GLB":  # glTF axes in the reference camera: x, -y, -(z - 10)
            expected = tube.vertices * [1, -1, -1] + [0, 0, 10.0]
            np.testing.assert_allclose(back.bounds, trimesh.PointCloud(expected).bounds, atol=1e-4)
        else:
            np.testing.assert_allclose(back.bounds, tube.bounds, atol=1e-4)

    def test_export_unknown(self):
        with pytest.raises(UserError, match="OBJX: unknown"):
            appdata.export_mesh_bytes(trimesh.creation.box(), "OBJX")

    def test_drop_shared_faces(self):
        box = trimesh.creation.box()
        part = box.submesh([[0, 3, 5]], append=True)
        rest = appdata.drop_shared_faces(box, part)
        assert len(rest.faces) == 9
        assert appdata.drop_shared_faces(box, trimesh.creation.icosphere()) is box
        assert len(appdata.drop_shared_faces(box, box).faces) == 0

    def test_mesh_figure(self):
        tube = trimesh.creation.cylinder(radius=10.0, height=40.0, sections=24)
        fig = appdata.mesh_figure(tube, tube.submesh([[0, 1]], append=True), np.zeros((3, 3)))
        assert [t.name for t in fig.data] == ["surface", "unobserved", "camera path"]
        assert len(fig.data[0].i) == 94 and len(fig.data[1].i) == 2  # shared faces drawn once, in blue
        assert fig.data[0].color != fig.data[1].color
        assert fig.data[2].mode == "lines"


# ----------------------------------------------------------------------------------------------
# The app's depth scores are 'colondepth evaluate's
# ----------------------------------------------------------------------------------------------
def _masked_low_res_root(app_root: Path, root: Path) -> tuple[Path, Path]:
    """A copy of the fixture root whose sequence has a circular field-of-view mask and whose predictions are
    16x16 with a bumpy error: nearest and bilinear resizing, and scoring with or without the mask, all differ."""
    import shutil

    import yaml

    shutil.copytree(app_root / "synthetic", root / "synthetic")
    seq_dir = root / "synthetic" / "seq_00000"
    meta = yaml.safe_load((seq_dir / "meta.yaml").read_text())
    (seq_dir / "meta.yaml").write_text(yaml.safe_dump({**meta, "fov_mask": "circle"}))
    v, u = np.mgrid[:H, :W]
    fov = (u - 15.5) ** 2 + (v - 15.5) ** 2 <= 14.0 ** 2
    iio.imwrite(seq_dir / "fov_mask.png", (fov * 255).astype(np.uint8))
    pred_dir = root / "predictions" / "seq_00000"
    pred_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(N_FRAMES):
        low = pred_depth_mm(k)[::2, ::2] * rng.uniform(0.8, 1.25, (H // 2, W // 2))
        np.save(pred_dir / f"{k:06d}_depth.npy", low.astype(np.float32))
    return seq_dir, pred_dir


class TestSameNumbersAsEvaluate:
    def test_prediction_folder(self, app_root, tmp_path):
        """Per frame and over the sequence, the app's metrics of a prediction folder equal those of
        colondepth.eval.evaluate.evaluate_sequences fed the same predictions."""
        from colondepth.eval.depth_metrics import frame_depth_metrics
        from colondepth.eval.evaluate import evaluate_sequences

        _, pred_dir = _masked_low_res_root(app_root, tmp_path)
        (seq,) = appdata.load_sequences(appdata.find_datasets(tmp_path)[0])
        assert seq.fov_mask is not None and not seq.fov_mask.all()
        index = appdata.prediction_index(pred_dir)
        preds = {seq.rgb(k).tobytes(): appdata.load_prediction(index[appdata.frame_stem(seq, k)])
                 for k in range(N_FRAMES)}  # every fixture frame has its own colour

        def predict_batch(rgbs):
            return np.stack([preds[rgb.tobytes()] for rgb in rgbs])

        report = evaluate_sequences([seq], predict_batch, progress=False)
        assert [f["frame"] for f in report.frames] == list(range(N_FRAMES))
        for f in report.frames:
            k = f["frame"]
            app = appdata.frame_metrics(preds[seq.rgb(k).tobytes()], seq.depth_mm(k), fov_mask=seq.fov_mask)
            assert {m: app[m] for m in f["metrics"]["model"]} == f["metrics"]["model"]
            assert app["scale"] == f["scale"]["model"] and app["num_valid"] == f["num_valid"]
        expected = report.summary()
        app_seq = appdata.prediction_sequence_metrics(seq, pred_dir)
        assert app_seq == {**expected["metrics"]["model"], "frames": expected["num_frames"]}

        # what the app computed before (nearest resize, no field-of-view mask) is measurably different
        def nearest(d):
            return np.repeat(np.repeat(d, 2, axis=0), 2, axis=1)

        old = frame_depth_metrics(nearest(preds[seq.rgb(1).tobytes()]), seq.depth_mm(1)).metrics
        assert abs(old["abs_rel"] - report.frames[1]["metrics"]["model"]["abs_rel"]) > 1e-4

    def test_sequence_page_matches_the_evaluate_command(self, app_root, monkeypatch, tmp_path, capsys):
        """An (untrained) checkpoint under the root: the Sequence page's whole-sequence score equals the JSON
        of 'colondepth evaluate --checkpoint CKPT --data SEQ' to the 4 digits the page shows."""
        import shutil

        from colondepth.cli import main
        from colondepth.models.depth_net import build_depth_net
        from colondepth.train.checkpoint import make_card, save_checkpoint

        root = tmp_path / "root"
        seq_dir, _ = _masked_low_res_root(app_root, root)
        shutil.copytree(app_root / "runs", root / "runs")
        net = build_depth_net({"input_height": 32, "input_width": 32, "encoder_channels": [4, 8],
                               "decoder_channels": [4, 8], "num_scales": 1, "min_depth_mm": 5.0,
                               "max_depth_mm": 80.0})
        ckpt = root / "runs" / "run1" / "checkpoints" / "tiny.pt"
        save_checkpoint(ckpt, net, make_card(net, "test", "s0", 0, 0, "test"), {})
        out = tmp_path / "eval.json"
        assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(seq_dir), "--json", str(out)]) == 0
        expected = json.loads(out.read_text())["overall"]
        capsys.readouterr()

        from colondepth.infer.predictor import DepthPredictor

        seq = appdata.load_sequences(appdata.find_datasets(root)[0])[0]
        direct = appdata.score_sequence_with_model(seq, DepthPredictor.from_checkpoint(ckpt).predict_batch)
        assert direct == {**expected["metrics"]["model"], "frames": expected["num_frames"]}

        at = _app(root, monkeypatch)
        at.switch_page("views/sequence.py").run()
        _by_label(at.selectbox, "Predicted depth").set_value("Model: runs/run1/checkpoints/tiny.pt").run()
        at.button(key="score_model").click().run()
        assert not at.exception and not at.error
        assert f"Sequence ({expected['num_frames']} frames)" in [md.value for md in at.markdown]
        table = at.dataframe[0].value
        for name, value in expected["metrics"]["model"].items():
            assert table[name][0] == round(value, 4), name


# ----------------------------------------------------------------------------------------------
# New video helpers
# ----------------------------------------------------------------------------------------------
class TestNewVideo:
    def test_check_upload(self):
        assert appdata.check_upload("../My clip (1).MP4", 10) == "My_clip_1.mp4"
        with pytest.raises(UserError, match="larger than the 500 MB limit"):
            appdata.check_upload("a.mp4", 501 * 2**20)
        with pytest.raises(UserError, match="not a video file"):
            appdata.check_upload("a.txt", 10)
        with pytest.raises(UserError, match="empty"):
            appdata.check_upload("a.mp4", 0)

    def test_save_and_probe(self, tmp_path):
        frames = np.zeros((3, 32, 48, 3), np.uint8)
        frames[:, :, :24] = 200
        buf = iio.imwrite("<bytes>", frames, extension=".mp4", fps=5, codec="libx264")
        saved = appdata.save_upload(tmp_path, "clip.mp4", buf)
        assert saved == (tmp_path / "uploads" / "clip.mp4").resolve() and saved.read_bytes() == buf
        info = appdata.probe_video(saved)
        assert (info["height"], info["width"]) == (32, 48)
        bad = appdata.save_upload(tmp_path, "bad.mp4", b"not a video at all")
        with pytest.raises(UserError, match="bad.mp4"):
            appdata.probe_video(bad)

    def test_reconstruct_command(self, app_root):
        argv, out = appdata.reconstruct_command(app_root, "synthetic/seq_00000", depth="gt", poses="gt",
                                                checkpoint="runs/run1/checkpoints/last.pt")
        assert argv[:4] == [sys.executable, "-m", "colondepth.cli", "reconstruct"]
        assert argv[4:6] == ["--sequence", str((app_root / "synthetic" / "seq_00000").resolve())]
        assert out == (app_root / "reconstructions" / "seq_00000").resolve()
        assert argv[argv.index("--out") + 1] == str(out)
        assert argv[argv.index("--depth") + 1] == "gt" and argv[argv.index("--poses") + 1] == "gt"
        assert argv[-1].endswith("last.pt")
        with pytest.raises(UserError, match="outside the app root"):
            appdata.reconstruct_command(app_root, "../x.mp4")
        with pytest.raises(UserError, match="not a sequence folder"):
            appdata.reconstruct_command(app_root, "runs")
        with pytest.raises(UserError, match="no such file"):
            appdata.reconstruct_command(app_root, "missing.mp4")

    def test_reconstruct_command_camera(self, tmp_path):
        root = tmp_path / "root"
        root.mkdir()
        (root / "clip.mp4").write_bytes(b"x")
        (root / "scope.yaml").write_text("model: fisheye\nwidth: 64\nheight: 48\nfx: 30\nfy: 30\ncx: 31.5\n"
                                         "cy: 23.5\nk1: 0.01\nk2: 0\nk3: 0\nk4: 0\n")
        argv, _ = appdata.reconstruct_command(root, "clip.mp4", intrinsics="scope.yaml", crop="0 0 40 40")
        assert argv[argv.index("--intrinsics") + 1] == str((root / "scope.yaml").resolve())
        assert argv[argv.index("--crop") + 1:argv.index("--crop") + 5] == ["0", "0", "40", "40"]
        argv, _ = appdata.reconstruct_command(root, "clip.mp4", intrinsics=" ", crop="")
        assert "--intrinsics" not in argv and "--crop" not in argv
        (root / "bad.yaml").write_text("width: 64\nheight: 48\nfx: -30\nfy: 30\ncx: 31.5\ncy: 23.5\n")
        with pytest.raises(UserError, match="bad.yaml: fx: -30 must be a positive focal length"):
            appdata.reconstruct_command(root, "clip.mp4", intrinsics="bad.yaml")
        with pytest.raises(UserError, match="outside the app root"):
            appdata.reconstruct_command(root, "clip.mp4", intrinsics="../scope.yaml")
        with pytest.raises(UserError, match="expected four integers"):
            appdata.reconstruct_command(root, "clip.mp4", crop="0 0 40")

    def test_error_line(self):
        out = "reconstruct: 10%\rwarning: x\nerror: --frames 9:9: selects no frame of s (5 frames)\n"
        assert appdata.error_line(out) == "error: --frames 9:9: selects no frame of s (5 frames)"
        assert appdata.error_line("fine\n") is None

    def test_reconstruct_fraction(self):
        from colondepth.progress import ProgressEvent
        from colondepth.recon.pipeline import RECONSTRUCT_STAGES

        assert set(appdata.RECONSTRUCT_STAGE_WEIGHTS) == set(RECONSTRUCT_STAGES)
        run = [ProgressEvent(st_, d, t) for st_, t in zip(RECONSTRUCT_STAGES, (4, 2, 4, 2, 8))
               for d in range(t + 1)]
        fractions = [appdata.reconstruct_fraction(e) for e in run]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
        assert appdata.reconstruct_fraction(ProgressEvent("fusion", 4, 4)) == pytest.approx(0.7)
        with pytest.raises(ValueError, match="unknown reconstruct stage 'training'"):
            appdata.reconstruct_fraction(ProgressEvent("training", 1, 2))

    def test_run_reconstruct_follows_events(self, tmp_path):
        """A stand-in command writes events to the --progress-events file slowly, each line in two halves;
        the runner passes whole events on while it runs and returns the merged output and the exit status."""
        code = ("import json, sys, time\n"
                "path = sys.argv[sys.argv.index('--progress-events') + 1]\n"
                "assert '--no-progress' in sys.argv\n"
                "with open(path, 'w') as f:\n"
                "    for k in range(4):\n"
                "        line = json.dumps({'stage': 'fusion', 'done': k, 'total': 3, 'message': f'frame {k}'})\n"
                "        f.write(line[:10]); f.flush(); time.sleep(0.03)\n"
                "        f.write(line[10:] + '\\n'); f.flush(); time.sleep(0.03)\n"
                "print('wrote out'); sys.stderr.write('error: stand-in failure\\n'); sys.exit(3)\n")
        (tmp_path / "cmd.py").write_text(code)
        seen = []
        run = appdata.run_reconstruct([sys.executable, str(tmp_path / "cmd.py")], seen.append, poll_s=0.01)
        assert run.return_code == 3 and "wrote out" in run.output
        assert appdata.error_line(run.output) == "error: stand-in failure"
        assert [(e.stage, e.done, e.total, e.message) for e in seen] == [("fusion", k, 3, f"frame {k}")
                                                                         for k in range(4)]
        assert run.events == seen

    def test_run_reconstruct_rejects_garbage_events(self, tmp_path):
        (tmp_path / "cmd.py").write_text(
            "import sys\nopen(sys.argv[sys.argv.index('--progress-events') + 1], 'w').write('50%|##\\n')\n")
        with pytest.raises(ValueError, match="not JSON"):
            appdata.run_reconstruct([sys.executable, str(tmp_path / "cmd.py")], poll_s=0.01)


# ----------------------------------------------------------------------------------------------
# The pages (AppTest)
# ----------------------------------------------------------------------------------------------
def _app(root: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(appdata.ROOT_ENV, str(root))
    return AppTest.from_file(str(APP), default_timeout=30)


def _by_label(elements, label: str):
    (found,) = [e for e in elements if e.label == label]
    return found


def _metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def _plotly_specs(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _array(x) -> list:
    """A plotly JSON array: a list, or (plotly 6+) a typed buffer ``{"dtype", "bdata"}``."""
    if isinstance(x, dict):
        import base64

        return np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
    return list(x)


class TestPages:
    def test_overview(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch).run()
        assert not at.exception
        assert at.title[0].value == "ColonDepth review"
        assert _metrics(at) == {"Datasets": "1", "Sequences": "1", "Reconstructions": "1", "Training runs": "1"}

    def test_missing_root(self, tmp_path, monkeypatch):
        at = _app(tmp_path / "missing", monkeypatch).run()
        assert not at.exception
        assert "app root folder not found" in at.error[0].value

    @pytest.mark.parametrize("page, hint", [("sequence", "No dataset under"), ("training", "No training run under"),
                                            ("reconstruction", "No reconstruction under")])
    def test_empty_root_hints(self, tmp_path, monkeypatch, page, hint):
        """The shared page preamble: title, then a hint (no selector, no error) when there is nothing to show."""
        at = _app(tmp_path, monkeypatch)
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception and not at.error and not at.selectbox
        assert at.info[0].value.startswith(hint) and str(tmp_path) in at.info[0].value

    def test_unreadable_run_is_one_line(self, app_root, monkeypatch, tmp_path):
        import shutil

        root = tmp_path / "root"
        shutil.copytree(app_root / "runs", root / "runs")
        (root / "runs" / "run1" / "config.resolved.yaml").write_text("stages: [a, b\n")
        at = _app(root, monkeypatch)
        at.switch_page("views/training.py").run()
        assert not at.exception
        assert "config.resolved.yaml: not valid YAML at line 2" in at.error[0].value

    def test_sequence(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.switch_page("views/sequence.py").run()
        assert not at.exception
        slider = at.slider[0]
        assert (slider.min, slider.max, slider.value) == (0, N_FRAMES - 1, 0)
        assert _by_label(at.selectbox, "Predicted depth").value == "Predictions: predictions/seq_00000"
        images = at.image
        assert len(images) == 4  # RGB, predicted, ground truth, error
        captions = [img.captions[0] for img in images]
        assert captions[1:3] == ["Predicted depth, median-scaled ×0.5 (mm)", "Ground-truth depth (mm)"]
        m = _metrics(at)
        assert m["abs_rel (frame)"] == "0.0000" and m["scale (frame)"] == "0.5"
        seq_table = at.dataframe[0].value
        assert seq_table["abs_rel"][0] == pytest.approx(0.01)
        assert seq_table["rmse"][0] == pytest.approx(1.0)

        slider.set_value(2).run()
        assert not at.exception
        m = _metrics(at)
        assert m["abs_rel (frame)"] == "0.0500" and m["rmse mm (frame)"] == "5.000"
        assert "frame 2 of 0–4" in at.image[0].captions[0]

    def test_sequence_frame_from_link(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.query_params["frame"] = "3"
        at.switch_page("views/sequence.py").run()
        assert not at.exception and at.slider[0].value == 3
        at = _app(app_root, monkeypatch)
        at.query_params["frame"] = "99"
        at.switch_page("views/sequence.py").run()
        assert at.slider[0].value == N_FRAMES - 1

    def test_sequence_play_to_the_end(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.switch_page("views/sequence.py").run()
        at.slider[0].set_value(2).run()
        at.toggle(key="playing").set_value(True).run()  # plays 2 -> 3 -> 4, then stops
        assert not at.exception
        assert at.slider[0].value == N_FRAMES - 1 and at.toggle(key="playing").value is False
        at.toggle(key="playing").set_value(True).run()  # Play on the last frame starts over ... and ends again
        assert at.slider[0].value == N_FRAMES - 1 and at.toggle(key="playing").value is False

    def test_sequence_without_model(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.switch_page("views/sequence.py").run()
        _by_label(at.selectbox, "Predicted depth").set_value("Default model").run()
        assert not at.exception
        from colondepth.infer.predictor import DEFAULT_MODEL_PATH

        if DEFAULT_MODEL_PATH.is_file():
            assert len(at.image) == 4 and "abs_rel (frame)" in _metrics(at)
        else:  # the message is shown instead of a traceback
            assert "default model is not installed" in at.error[0].value
            assert len(at.image) == 2  # RGB and ground truth only
        _by_label(at.selectbox, "Predicted depth").set_value("No prediction").run()
        assert not at.exception and "No predicted depth selected." in [i.value for i in at.info]

    def test_sequence_unusable_prediction(self, app_root, monkeypatch, tmp_path):
        import shutil

        root = tmp_path / "root"
        shutil.copytree(app_root, root)
        np.save(root / "predictions" / "seq_00000" / "000000_depth.npy", np.zeros((H, W), np.float32))
        at = _app(root, monkeypatch)
        at.switch_page("views/sequence.py").run()
        assert not at.exception
        assert "frame 0: cannot score the prediction" in at.error[0].value
        assert len(at.image) == 2  # RGB and ground truth

    def test_sequence_with_checkpoint(self, app_root, monkeypatch, tmp_path):
        """An (untrained) checkpoint under the root predicts every frame; the whole sequence can be scored."""
        import shutil

        from colondepth.models.depth_net import build_depth_net
        from colondepth.train.checkpoint import make_card, save_checkpoint

        root = tmp_path / "root"
        shutil.copytree(app_root, root)
        net = build_depth_net({"input_height": 32, "input_width": 32, "encoder_channels": [4, 8],
                               "decoder_channels": [4, 8], "num_scales": 1, "min_depth_mm": 5.0,
                               "max_depth_mm": 80.0})
        card = make_card(net, "test", "s0", 0, 0, "test")
        save_checkpoint(root / "runs" / "run1" / "checkpoints" / "tiny.pt", net, card, {})
        at = _app(root, monkeypatch)
        at.switch_page("views/sequence.py").run()
        _by_label(at.selectbox, "Predicted depth").set_value("Model: runs/run1/checkpoints/tiny.pt").run()
        assert not at.exception and not at.error
        assert len(at.image) == 4
        m = _metrics(at)
        assert 0.0 <= float(m["abs_rel (frame)"]) < 10.0
        at.button(key="score_model").click().run()
        assert not at.exception
        assert "Sequence (5 frames)" in [md.value for md in at.markdown]
        assert 0.0 <= at.dataframe[0].value["abs_rel"][0] < 10.0

    def test_reconstruction(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.switch_page("views/reconstruction.py").run()
        assert not at.exception
        m = _metrics(at)
        assert m["Surface triangles"] == "384" and m["Unobserved triangles"] == "48" and m["Camera poses"] == "5"
        assert m["observed fraction"] == "80.0 %"
        (spec,) = _plotly_specs(at)
        names = [t.get("name") for t in spec["data"]]
        assert names == ["surface", "unobserved", "camera path"]
        assert spec["data"][0]["type"] == "mesh3d" and len(_array(spec["data"][0]["i"])) == 384 - 48
        table = at.dataframe[0].value
        assert table["compared with"].tolist() == ["observed ground truth", "full ground truth"]
        assert table["completeness_mm"].tolist() == [1.5, 30.0] and "n_samples" not in table
        labels = [b.proto.label for b in at.get("download_button")]
        assert labels == ["Mesh (PLY)", "Mesh (STL)", "Mesh (GLB)", "TSDF volume (NIfTI)"]

    def test_training(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.switch_page("views/training.py").run()
        assert not at.exception
        table = at.dataframe[0].value
        assert table["name"].tolist() == ["sup_L0", "sup_L1"]
        assert table["budget"].tolist() == ["steps=4", "steps=2"]
        specs = _plotly_specs(at)
        assert [s["layout"]["title"]["text"] for s in specs] == ["abs_rel, median-scaled", "abs_rel, metric (mm)",
                                                                 "loss", "abs_rel"]
        monitor = {t["name"]: t for t in specs[0]["data"]}
        assert _array(monitor["L0"]["x"]) == [4, 6] and _array(monitor["L0"]["y"]) == [0.2, 0.22]
        assert _array(monitor["real"]["y"]) == [0.25]
        assert {t["name"] for t in specs[1]["data"]} == {"L0"}  # the scale-free set has no metric curve
        specs = specs[2:]
        loss = {t["name"]: t for t in specs[0]["data"]}
        assert set(loss) == {"sup_L0", "sup_L1"}
        assert _array(loss["sup_L1"]["x"]) == [4, 5, 6]
        assert "last.pt" in at.caption[0].value

    def test_new_video_path_checks(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        assert not at.exception
        assert at.button(key="go").disabled
        at.text_input(key="source_path").set_value("../../etc").run()
        assert "outside the app root" in at.error[0].value and at.button(key="go").disabled
        at.text_input(key="source_path").set_value("synthetic/seq_00000").run()
        assert not at.error and not at.button(key="go").disabled
        assert at.selectbox(key="depth").options == ["predicted", "gt"]

    def test_new_video_upload_rejected(self, app_root, monkeypatch):
        at = _app(app_root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        uploader = at.file_uploader(key="upload")
        uploader.upload("broken.mp4", b"garbage bytes", "video/mp4").run()
        assert not at.exception
        assert "broken.mp4" in at.error[0].value and at.button(key="go").disabled

    def test_new_video_upload_accepted(self, tmp_path, monkeypatch):
        root = tmp_path / "root"
        root.mkdir()
        frames = np.zeros((3, 32, 48, 3), np.uint8)
        data = iio.imwrite("<bytes>", frames, extension=".mp4", fps=5, codec="libx264")
        at = _app(root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        at.file_uploader(key="upload").upload("my clip.mp4", data, "video/mp4").run()
        assert not at.exception and not at.error
        assert at.success[0].value == "Saved uploads/my_clip.mp4 (48×32 px)."
        assert (root / "uploads" / "my_clip.mp4").read_bytes() == data
        assert not at.button(key="go").disabled
        assert at.selectbox(key="depth").options == ["predicted"]  # a video has no ground truth

    def test_new_video_intrinsics_and_crop_fields(self, tmp_path, monkeypatch):
        root = tmp_path / "root"
        root.mkdir()
        iio.imwrite(root / "clip.mp4", np.zeros((3, 32, 48, 3), np.uint8), fps=5, codec="libx264")
        (root / "bad.yaml").write_text("width: 48\nheight: 32\nfx: 20\nfy: 20\ncx: 23.5\ncy: 15.5\nk1: 0.1\n")
        at = _app(root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        at.text_input(key="source_path").set_value("clip.mp4").run()
        assert not at.error and not at.button(key="go").disabled
        at.text_input(key="intrinsics_path").set_value("bad.yaml").run()
        assert "without model: fisheye" in at.error[0].value and at.button(key="go").disabled
        at.text_input(key="intrinsics_path").set_value("").run()
        at.text_input(key="crop").set_value("0 0 32").run()
        assert "expected four integers" in at.error[0].value and at.button(key="go").disabled
        at.text_input(key="crop").set_value("0 0 32 32").run()
        assert not at.error and not at.button(key="go").disabled

    def test_new_video_runs_reconstruct(self, app_root, monkeypatch, tmp_path):
        """The button runs the reconstruct command; a stand-in command reports progress events and an error."""
        fake = tmp_path / "fake_cli.py"
        fake.write_text("import json, sys\n"
                        "path = sys.argv[sys.argv.index('--progress-events') + 1]\n"
                        "open(path, 'w').write(json.dumps({'stage': 'fusion', 'done': 1, 'total': 2}) + '\\n')\n"
                        "print('error: default model not found; train one')\nsys.exit(2)\n")
        real = appdata.reconstruct_command

        def patched(*a, **k):
            argv, out = real(*a, **k)
            return [sys.executable, str(fake)] + argv[3:], out

        monkeypatch.setattr(appdata, "reconstruct_command", patched)
        at = _app(app_root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        at.text_input(key="source_path").set_value("synthetic/seq_00000").run()
        at.button(key="go").click().run()
        assert not at.exception
        assert at.error[0].value == "error: default model not found; train one"
        assert "fusion: 1/2" in [t.value for t in at.text]

    def test_new_video_reconstructs_a_sequence(self, tmp_path, monkeypatch):
        """The real command on a tiny tube sequence: the page follows its events to the end."""
        from test_recon_pipeline import write_tiny_dataset

        root = tmp_path / "root"
        write_tiny_dataset(root / "synthetic")
        at = _app(root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        at.text_input(key="source_path").set_value("synthetic/seq_00000").run()
        at.selectbox(key="depth").set_value("gt").run()
        at.selectbox(key="poses").set_value("gt").run()
        at.button(key="go").click().run(timeout=240)
        assert not at.exception and not at.error
        assert at.success[-1].value.startswith("Reconstruction written to reconstructions/seq_00000")
        assert (root / "reconstructions" / "seq_00000" / "report.json").is_file()
        assert at.text[-1].value == "write: 8/8 (report.json)"


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------
class TestCommand:
    def test_missing_root_one_line(self, tmp_path, capsys):
        from colondepth.cli import main

        assert main(["app", "--root", str(tmp_path / "nope")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "app root folder not found" in err and "\n" not in err

    def test_streamlit_command(self, tmp_path):
        from colondepth.commands import app as cmd
        from colondepth.resources import app_script

        argv = cmd.streamlit_command(app_script(), tmp_path, 8600, "127.0.0.1")
        assert argv[1:5] == ["-m", "streamlit", "run", str(APP)]
        pairs = dict(zip(argv[5:-3:2], argv[6:-3:2]))
        assert pairs == {"--server.port": "8600", "--server.address": "127.0.0.1",
                         "--server.fileWatcherType": "none", "--server.headless": "true",
                         "--browser.gatherUsageStats": "false", "--server.maxUploadSize": "500",
                         "--client.toolbarMode": "minimal"}
        assert argv[-3:] == ["--", "--root", str(tmp_path)]

    def test_defaults(self):
        from colondepth.cli import build_parser

        args = build_parser().parse_args(["app"])
        assert (args.root, args.port, args.host) == ("out", 8501, "127.0.0.1")
