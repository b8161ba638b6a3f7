"""The whole reconstruction of one sequence: fusion, point cloud, coverage, metrics, files.

:func:`reconstruct_sequence` is what ``colondepth reconstruct`` runs.  Outputs in ``out_dir`` (each
written atomically):

==================  ==========================================================================
``mesh.ply``        fused surface (TSDF + marching cubes), world frame, mm, vertex colours
``mesh.glb``        the same surface for glTF viewers: first camera's view, +Y up, -Z forward, mm
``points.ply``      coloured point cloud of the frames (subsampled), world frame, mm
``coverage.json``   observed area fraction of the travelled lumen's wall, total and per cm of
                    centreline (:mod:`colondepth.recon.lumen`); on synthetic data also ``oracle``:
                    the same segment of the ground-truth mesh with ground-truth depth and poses
``unobserved.ply``  the expected wall no frame saw (the missed mucosa), world frame, mm
``tsdf.nii.gz``     the TSDF volume (mm), affine voxel index -> world mm (see :mod:`.export`)
``trajectory.txt``  the poses used, TUM ``t tx ty tz qx qy qz qw`` world_from_cam, mm
``report.json``     configuration, timings, volume and mesh statistics, coverage, accuracy, and
                    ``complete`` / ``warnings`` (below)
==================  ==========================================================================

Nothing is dropped silently.  ``report.json`` holds ``warnings``, a list of one-line messages (also shown
on stderr), and ``complete``: ``false`` when marching cubes failed on part of the volume, so
``mesh.ply``/``mesh.glb`` have holes.  ``colondepth reconstruct``
then exits non-zero after writing everything (:class:`colondepth.errors.IncompleteOutput`), so scripts
and ``colondepth demo`` do not take the reconstruction for finished.  A skipped ``tsdf.nii.gz`` (the
``max_dense_voxels`` cap) is a warning only: the cap is a setting, and the report says so.

Progress: besides the tqdm bars for people (``progress=True``), :func:`reconstruct_sequence` calls an optional
``on_progress(event)`` with :class:`colondepth.progress.ProgressEvent` objects, stage by stage in the order of
:data:`RECONSTRUCT_STAGES`:

============  ==========================================  ===========================================
stage         one unit of ``done`` / ``total``            notes
============  ==========================================  ===========================================
``fusion``    a selected frame predicted/read and fused   starts at 0 before the networks are loaded
``mesh``      marching cubes, then the dense TSDF copy    ``total`` = 2
``coverage``  a frame tested against the expected wall      twice the frames with a ground-truth oracle
``metrics``   a surface compared with the ground truth    ``total`` = 2; 1 ("skipped") without one
``write``     an output file written                      ends with ``report.json``: the run is done
============  ==========================================  ===========================================

Every stage emits ``done = 0`` first and ends with ``done == total``; ``done`` never decreases within a
stage.  ``colondepth reconstruct --progress-events FILE|-`` writes these events as JSON lines.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from colondepth.errors import UserError
from colondepth.io import atomic_write_text
from colondepth.progress import ProgressCallback, emit

DEPTH_SOURCES = ("gt", "predicted")
POSE_SOURCES = ("gt", "predicted")
#: ``--tracking`` for predicted poses: ``model`` refines every guessed pose against the fused model
#: (:mod:`colondepth.recon.tracking`), ``none`` chains the guessed motions as they are.
TRACKING_MODES = ("model", "none")
#: ``--pose-guess`` for predicted poses: the first guess of each frame's motion.  ``network``: the pose
#: network; ``features``: tracked corners (essential-matrix rotation and direction, PnP length on the previous
#: frame's depth; :mod:`colondepth.recon.feature_pose`), the pose network where too few corners track.
POSE_GUESSES = ("network", "features")
#: ``--pose-guess`` and ``--tracking`` when not given, by input, each chosen on a validation split of its kind
#: (docs/reconstruction.md, *Trajectories of real video*): a video (``--video``: real endoscope frames, chosen on
#: frames 0-149 of the real sinus video) and a dataset sequence (``--sequence``: rendered frames, chosen on the
#: synthetic validation sequences).
VIDEO_POSE_DEFAULTS = {"pose_guess": "features", "tracking": "none"}
SEQUENCE_POSE_DEFAULTS = {"pose_guess": "network", "tracking": "model"}

#: Relative depth error assumed for a network's depth in fusion (weights and truncation); chosen on
#: validation sequences (docs/reconstruction.md, *TSDF fusion*).
PREDICTED_DEPTH_SIGMA_REL = 0.2

#: Stages of :func:`reconstruct_sequence`'s progress events, in the order they run.
RECONSTRUCT_STAGES = ("fusion", "mesh", "coverage", "metrics", "write")


@dataclass
class ReconstructionConfig:
    """Settings of one reconstruction (lengths in mm).

    ``frames``: ``(start, stop, step)`` as in Python slicing (``None`` = default).  ``min_depth_mm`` /
    ``max_depth_mm``: the working depth range for fusion and coverage.  ``depth_tol_mm`` /
    ``depth_tol_rel``: the coverage occlusion tolerance on a real mesh (the ground-truth oracle).
    ``depth_sigma_rel``: relative depth error for fusion weights and truncation (see
    :class:`colondepth.recon.fusion.TSDFVolume`); ``None``: 0 for ground-truth depth,
    :data:`PREDICTED_DEPTH_SIGMA_REL` for predicted depth.
    ``lumen_*``: the expected-wall estimate of :mod:`colondepth.recon.lumen` (centreline spacing and
    smoothing, angular sectors, and its wider relative depth tolerance, since that wall is a fit).
    ``coverage_max_edge_mm``: the ground-truth surface is subdivided until no edge is longer.  ``max_points``: size of ``points.ply``.
    ``tracking`` (:data:`TRACKING_MODES`): with predicted poses, refine them against the fused model.
    ``metric_samples_per_mm2``: surface sampling density of the accuracy metrics.  ``max_blocks``: cap on
    the sparse TSDF's blocks.  ``max_dense_voxels``: cap on the dense copy written to ``tsdf.nii.gz``
    (above it that file is skipped with a warning; everything else is still written).
    """

    depth: str = "gt"
    poses: str = "gt"
    voxel_mm: float = 1.0
    trunc_mm: Optional[float] = None
    frames: tuple = (None, None, None)
    min_depth_mm: float = 2.0
    max_depth_mm: float = 100.0
    depth_tol_mm: float = 1.0
    depth_tol_rel: float = 0.03
    coverage_max_edge_mm: float = 2.0
    depth_sigma_rel: Optional[float] = None
    lumen_step_mm: float = 1.0
    lumen_smooth_mm: float = 4.0
    lumen_sectors: int = 36
    lumen_depth_tol_rel: float = 0.15
    max_points: int = 200_000
    device: Optional[str] = None  # torch device for the networks (None: CUDA when available)
    point_stride: int = 2
    max_blocks: int = 1_000_000
    max_dense_voxels: int = 64 * 1024 ** 2
    metric_samples_per_mm2: float = 20.0
    checkpoint: Optional[str] = None
    tracking: str = "model"  # predicted poses: "model" (refined against the fused model) or "none" (chained)
    pose_guess: str = "network"  # predicted poses: first guess of each motion (POSE_GUESSES)

    def validate(self) -> None:
        if self.depth not in DEPTH_SOURCES:
            raise UserError(f"--depth {self.depth}: choose one of {', '.join(DEPTH_SOURCES)}")
        if self.poses not in POSE_SOURCES:
            raise UserError(f"--poses {self.poses}: choose one of {', '.join(POSE_SOURCES)}")
        if self.tracking not in TRACKING_MODES:
            raise UserError(f"--tracking {self.tracking}: choose one of {', '.join(TRACKING_MODES)}")
        if self.pose_guess not in POSE_GUESSES:
            raise UserError(f"--pose-guess {self.pose_guess}: choose one of {', '.join(POSE_GUESSES)}")
        if not (self.voxel_mm > 0 and math.isfinite(self.voxel_mm)):
            raise UserError(f"--voxel-mm {self.voxel_mm}: must be a positive number of millimetres")
        if not 0 <= self.min_depth_mm < self.max_depth_mm:
            raise UserError(f"depth range [{self.min_depth_mm}, {self.max_depth_mm}] mm is empty; need 0 <= min < max")
        if not (self.lumen_step_mm > 0 and self.lumen_smooth_mm >= 0 and self.lumen_sectors >= 4
                and self.lumen_depth_tol_rel >= 0):
            raise UserError("lumen coverage settings: need lumen_step_mm > 0, lumen_smooth_mm >= 0, "
                            "lumen_sectors >= 4 and lumen_depth_tol_rel >= 0")


def parse_frames(spec: Optional[str]) -> tuple:
    """``"A:B:S"`` (any part may be empty; ``"A:B"`` too) -> ``(start, stop, step)``.

    Raises a one-line :class:`UserError` when malformed.
    """
    if spec is None or spec.strip() == "":
        return (None, None, None)
    parts = spec.split(":")
    if len(parts) > 3:
        raise UserError(f"--frames {spec}: expected A:B:S (start:stop:step), e.g. 0:200:2")
    try:
        vals = [int(p) if p.strip() else None for p in parts] + [None] * (3 - len(parts))
    except ValueError:
        raise UserError(f"--frames {spec}: start, stop and step must be integers, e.g. 0:200:2") from None
    if len(parts) == 1 and vals[0] is not None:
        raise UserError(f"--frames {spec}: expected A:B:S (start:stop:step), e.g. 0:200:2")
    if vals[2] is not None and vals[2] <= 0:
        raise UserError(f"--frames {spec}: the step must be a positive integer")
    return tuple(vals)


def select_frames(num_frames: int, frames: tuple, name: str = "sequence") -> list[int]:
    idx = list(range(num_frames))[slice(*frames)]
    if not idx:
        a, b, s = ("" if v is None else v for v in frames)
        raise UserError(f"--frames {a}:{b}:{s} selects no frame of {name} ({num_frames} frames)")
    return idx


def _load_gt_mesh(path: Path):
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise UserError(f"{path}: cannot read the ground-truth mesh ({exc}); regenerate the sequence") from None
    if len(mesh.faces) == 0:
        raise UserError(f"{path}: the ground-truth mesh has no faces; regenerate the sequence")
    return mesh


class _FrameSource:
    """Depth, pose and colour of the selected frames from the chosen sources (streamed, in order)."""

    def __init__(self, seq, cfg: ReconstructionConfig, indices: list[int], depth_predictor=None,
                 pose_estimator=None):
        self.seq, self.cfg, self.indices = seq, cfg, indices
        if cfg.depth == "gt" and not seq.has_depth:
            raise UserError(f"--depth gt: {seq.name} has no ground-truth depth (e.g. a video); use --depth predicted")
        if cfg.poses == "gt":
            if not seq.has_poses:
                raise UserError(f"--poses gt: {seq.name} has no ground-truth poses (e.g. a video); "
                                "use --poses predicted")
            poses = np.asarray(seq.world_from_cam)
            if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) != seq.num_frames:
                raise UserError(f"{seq.name}: {len(poses)} poses for {seq.num_frames} frames; "
                                "the trajectory must have one pose per frame")
            self.gt_poses = poses
        self.predict_kwargs = {}
        if cfg.depth == "predicted" and depth_predictor is None:
            from colondepth.infer.predictor import DepthPredictor

            depth_predictor = DepthPredictor.from_checkpoint(cfg.checkpoint, device=cfg.device)
            # the network sees the sequence's camera, cropped to the video's lit view box (from its first
            # selected frames: a streamed video is read once, in order)
            from colondepth.infer.predictor import VIEW_SAMPLE_FRAMES

            first = [seq.rgb(i) for i in indices[:VIEW_SAMPLE_FRAMES]]
            self.predict_kwargs = {"intrinsics": seq.intrinsics,
                                   "view": depth_predictor.video_view(first, seq.intrinsics)}
        if cfg.poses == "predicted" and pose_estimator is None:
            from colondepth.recon.poses import load_pose_estimator

            pose_estimator = load_pose_estimator(cfg.checkpoint, device=cfg.device)
        self.depth_predictor, self.pose_estimator = depth_predictor, pose_estimator
        self.tracker = None
        if cfg.poses == "predicted" and cfg.tracking == "model":
            from colondepth.recon.tracking import ModelTracker, TrackingConfig

            self.tracker = ModelTracker(seq.intrinsics, TrackingConfig(min_depth_mm=cfg.min_depth_mm,
                                                                       max_depth_mm=cfg.max_depth_mm),
                                        valid=seq.fov_mask)
        #: running tracking statistics (counts and sums; nothing per frame, so memory does not grow)
        self.track_stats = {"tracked": 0, "lost": 0, "first": 0, "keyframes": 0, "scale_sum": 0.0,
                            "scale_sq_sum": 0.0, "inlier_sum": 0.0}
        #: with ``pose_guess: features``: how many motions came from tracked corners, and from the network
        self.guess_stats = ({"features": 0, "network": 0} if cfg.pose_guess == "features" and cfg.poses == "predicted"
                            else None)
        #: index of the current segment (a new one after a tracking failure)
        self.segment = 0

    def __iter__(self):
        from colondepth.recon.poses import chain_relative_poses

        prev_rgb, prev_pose, before_prev_pose, prev_depth = None, None, None, None
        next_rgb = self.seq.rgb(self.indices[0])
        for k, i in enumerate(self.indices):
            rgb = next_rgb
            next_rgb = self.seq.rgb(self.indices[k + 1]) if k + 1 < len(self.indices) else None
            if self.cfg.depth == "gt":
                depth = self.seq.depth_mm(i)
            else:
                depth = np.asarray(self.depth_predictor.predict(rgb, **self.predict_kwargs), dtype=np.float32)
            network_pose = None  # the pose network's guess, when another one leads
            if self.cfg.poses == "gt":
                pose = self.gt_poses[i]
            elif prev_rgb is None:
                pose = np.eye(4)
            else:
                fp = None
                if self.guess_stats is not None:
                    from colondepth.recon.feature_pose import feature_relative_pose

                    fp = feature_relative_pose(prev_rgb, prev_depth, rgb, self.seq.intrinsics.K, self.seq.fov_mask)
                    self.guess_stats["network" if fp is None else "features"] += 1
                if fp is None or self.tracker is not None:  # the network's guess leads, or joins the tracker's
                    network_pose = chain_relative_poses([self.pose_estimator(prev_rgb, rgb, next_rgb)], prev_pose)[1]
                if fp is None:
                    pose, network_pose = network_pose, None
                else:
                    pose = chain_relative_poses([fp.prev_from_cur], prev_pose)[1]
            if self.tracker is not None:
                # the first guess and the constant-velocity one (and the pose network's, when the first guess
                # came from tracked corners), refined against the model
                others = () if before_prev_pose is None else (prev_pose @ np.linalg.inv(before_prev_pose) @ prev_pose,)
                if network_pose is not None:
                    others = others + (network_pose,)
                r = self.tracker.track(depth, pose, others, rgb=rgb)
                pose = r.world_from_cam
                depth = (depth * np.float32(r.scale)).astype(np.float32)
                if r.status == "lost":
                    self.segment += 1
                st = self.track_stats
                st[r.status] += 1
                st["keyframes"] += int(r.keyframe)
                st["scale_sum"] += r.scale
                st["scale_sq_sum"] += r.scale ** 2
                st["inlier_sum"] += r.inlier_fraction
            before_prev_pose = prev_pose
            prev_rgb, prev_pose, prev_depth = rgb, pose, depth
            yield i, rgb, depth, pose


def _counted(items: Iterable, on_progress: Optional[ProgressCallback], stage: str, total: int,
             message: Callable[[int], str], offset: int = 0) -> Iterator:
    """Yield ``items`` and emit ``stage`` events: ``(offset + k)/total`` after the consumer handled item ``k``."""
    for k, item in enumerate(items):
        yield item
        emit(on_progress, stage, min(offset + k + 1, total), total, message(k))


class _DepthSpill:
    """Predicted depth maps kept for the coverage pass in a temporary file, not in memory.

    ``append(depth)`` stores an ``(H, W)`` map as float16 (0.05 % relative precision, far below the
    depth error); ``get(k)`` reads map ``k`` back as float32.  Memory stays one map, whatever the video's
    length; the file is deleted on :meth:`close` (or when the process ends).
    """

    def __init__(self, shape_hw: tuple[int, int]):
        import tempfile

        self.shape = tuple(shape_hw)
        self.nbytes = int(np.prod(self.shape)) * 2
        self.count = 0
        self._file = tempfile.TemporaryFile(prefix="colondepth_depth_")

    def append(self, depth: np.ndarray) -> None:
        self._file.seek(self.count * self.nbytes)
        self._file.write(np.ascontiguousarray(depth, dtype=np.float16).tobytes())
        self.count += 1

    def get(self, k: int) -> np.ndarray:
        if not 0 <= k < self.count:
            raise IndexError(f"depth map {k} of {self.count}")
        self._file.seek(k * self.nbytes)
        return np.frombuffer(self._file.read(self.nbytes), dtype=np.float16).reshape(self.shape).astype(np.float32)

    def close(self) -> None:
        self._file.close()


def _lumen_coverage_dict(seq, cfg: "ReconstructionConfig", indices: list, depths, poses: np.ndarray, valid,
                         cloud, on_progress, total: int, warnings_out: list) -> tuple[dict, object]:
    """``(coverage.json dict, LumenCoverage or None)`` of the fused frames (see :mod:`colondepth.recon.lumen`).

    The frames are tested with the depth and poses that were fused.  When the lumen cannot be fitted
    (the camera barely moved, an empty surface) the fraction is ``None`` and the reason is recorded
    in ``warnings_out``, not raised: every other output of the reconstruction is still valid.
    """
    from colondepth.recon.lumen import fit_lumen, lumen_coverage

    n_sel = len(indices)
    base = {"method": "lumen", "sequence": seq.name, "frames": n_sel}
    try:
        lumen = fit_lumen(poses[:, :3, 3], cloud.points_mm, step_mm=cfg.lumen_step_mm, smooth_mm=cfg.lumen_smooth_mm,
                          sectors=cfg.lumen_sectors)
        frames = ((seq.depth_mm(i) if depths is None else depths.get(k), p, valid)
                  for k, (i, p) in enumerate(zip(indices, poses)))
        frames = _counted(frames, on_progress, "coverage", total, lambda k: f"frame {indices[k]}")
        lc = lumen_coverage(lumen, frames, seq.intrinsics, min_depth_mm=cfg.min_depth_mm,
                            max_depth_mm=cfg.max_depth_mm, depth_tol_mm=cfg.depth_tol_mm,
                            depth_tol_rel=cfg.lumen_depth_tol_rel)
    except UserError as exc:
        note = f"coverage.json has no observed_fraction: {exc}"
        print(f"warning: {note}", file=sys.stderr)
        warnings_out.append(note)
        emit(on_progress, "coverage", n_sel, total, "no lumen estimate")
        return {**base, "observed_fraction": None, "reason": str(exc)}, None
    return {**base, **lc.to_dict()}, lc


def reconstruct_sequence(seq, out_dir, cfg: ReconstructionConfig, depth_predictor=None, pose_estimator=None,
                         progress: bool = True, on_progress: Optional[ProgressCallback] = None) -> dict:
    """Reconstruct ``seq`` (a :class:`colondepth.datasets.base.Sequence`) into ``out_dir``; return the report.

    ``depth_predictor`` (``.predict(rgb) -> depth_mm``) and ``pose_estimator`` (see
    :mod:`colondepth.recon.poses`) override the networks loaded from ``cfg.checkpoint``.  ``progress``
    shows tqdm bars on stderr; ``on_progress`` (optional) is called with a
    :class:`colondepth.progress.ProgressEvent` per step of each stage of :data:`RECONSTRUCT_STAGES`
    (see the module docstring).
    """
    from tqdm import tqdm

    from colondepth.datasets.tum import write_tum
    from colondepth.recon.coverage import compute_coverage, subdivide_to
    from colondepth.recon.lumen import oracle_segment_faces
    import trimesh
    from colondepth.recon.export import export_mesh, export_point_cloud, write_tsdf_nifti_volume
    from colondepth.recon.fusion import TSDFVolume
    from colondepth.recon.metrics import surface_metrics
    from colondepth.recon.pointcloud import PointCloud, depth_to_pointcloud

    cfg.validate()
    from colondepth.geometry.camera import PinholeIntrinsics

    if not isinstance(seq.intrinsics, PinholeIntrinsics):
        raise UserError(f"{seq.name}: reconstruction needs pinhole frames, got {seq.intrinsics.model} intrinsics; "
                        "undistort the frames first (read_video and --intrinsics do this for a fisheye video)")
    out = Path(out_dir)
    indices = select_frames(seq.num_frames, cfg.frames, seq.name)
    n_sel = len(indices)
    emit(on_progress, "fusion", 0, n_sel, "loading networks" if "predicted" in (cfg.depth, cfg.poses)
         else "reading frames")
    source = _FrameSource(seq, cfg, indices, depth_predictor, pose_estimator)
    intr = seq.intrinsics
    valid = seq.fov_mask
    sigma_rel = cfg.depth_sigma_rel if cfg.depth_sigma_rel is not None else (
        PREDICTED_DEPTH_SIGMA_REL if cfg.depth == "predicted" else 0.0)
    def new_volume():
        return TSDFVolume(voxel_mm=cfg.voxel_mm, trunc_mm=cfg.trunc_mm, max_blocks=cfg.max_blocks,
                          min_depth_mm=cfg.min_depth_mm, max_depth_mm=cfg.max_depth_mm, depth_sigma_rel=sigma_rel)

    # one volume per tracking segment: after a tracking failure the next frames start a new volume instead of
    # fusing into (and corrupting) the model built so far
    volumes = [new_volume()]
    vol = volumes[0]
    per_frame_points = max(1, cfg.max_points // len(indices)) * 4
    clouds, poses = [], []
    depths = _DepthSpill(intr.size.as_hw()) if cfg.depth == "predicted" else None  # for the coverage pass
    t0 = time.perf_counter()
    t_fuse = 0.0
    for k, (i, rgb, depth, pose) in enumerate(tqdm(source, total=len(indices), desc="reconstruct", unit="frame",
                                                   disable=not progress)):
        what = f"{seq.name} frame {i}"
        if depth.shape != intr.size.as_hw():
            raise UserError(f"{what}: depth shape {depth.shape} does not match the intrinsics' {intr.size}; "
                            "the depth source must return depth on the frame's pixel grid")
        if not np.all(np.isfinite(depth)):
            raise UserError(f"{what}: depth has NaN/inf values; mark invalid pixels with 0 instead")
        if source.segment >= len(volumes):
            volumes.append(new_volume())
            vol = volumes[-1]
        ts = time.perf_counter()
        vol.integrate(depth, intr, pose, rgb=rgb, valid=valid)
        t_fuse += time.perf_counter() - ts
        poses.append(pose)
        if depths is not None:
            depths.append(depth)
        in_range = (depth > 0) & (depth >= cfg.min_depth_mm) & (depth <= cfg.max_depth_mm)
        if valid is not None:
            in_range &= valid
        if in_range[:: cfg.point_stride, :: cfg.point_stride].any():  # an empty frame adds no points
            c = depth_to_pointcloud(depth, intr, rgb=rgb, world_from_cam=pose, valid=valid, stride=cfg.point_stride,
                                    min_depth_mm=cfg.min_depth_mm, max_depth_mm=cfg.max_depth_mm)
            clouds.append(c.subsample(per_frame_points, seed=k))
        emit(on_progress, "fusion", k + 1, n_sel, f"frame {i}")
    frames_integrated = sum(v.frames_integrated for v in volumes)
    frames_empty = sum(v.frames_empty for v in volumes)
    if frames_integrated == 0:
        raise UserError(f"{seq.name}: no selected frame has valid depth within "
                        f"{cfg.min_depth_mm}-{cfg.max_depth_mm} mm; "
                        "check the depth source and the working range")
    poses = np.stack(poses)
    emit(on_progress, "mesh", 0, 2, "marching cubes")
    t_mesh = time.perf_counter()
    used = [v for v in volumes if v.frames_integrated > 0]
    meshes = [v.extract_mesh(progress=progress) for v in used]  # warns (IncompleteMeshWarning) when a chunk fails
    mesh = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate([m for m in meshes if len(m.faces)]
                                                                       or meshes[:1])
    t_mesh = time.perf_counter() - t_mesh
    emit(on_progress, "mesh", 1, 2, f"{len(mesh.faces)} faces; dense TSDF volume")
    report_warnings = []
    failed_chunks = [c for v in used for c in v.failed_chunks]
    surface_chunks = sum(v.surface_chunks for v in used)
    for v in used:
        if v.failed_chunks:
            report_warnings.append(f"mesh.ply incomplete: {v.incomplete_message()}")
    vol = max(used, key=lambda v: v.frames_integrated)  # the dense TSDF: the segment with the most frames
    if len(used) > 1:
        report_warnings.append(f"tracking failed {len(used) - 1} time(s): mesh.ply holds {len(used)} separately "
                               "fused segments (report.json -> tracking -> segments); tsdf.nii.gz is the segment "
                               "with the most frames")
    # the dense TSDF is streamed to tsdf.nii.gz one block layer at a time when the files are written: no
    # dense copy of the box in memory; a box above the cap is skipped (a file-size guard)
    _, dense_shape = vol.dense_shape()
    dense, nifti_note = True, None
    if int(np.prod(dense_shape)) > cfg.max_dense_voxels:  # keep every other output, say why the volume is missing
        dense, nifti_note = None, (f"tsdf.nii.gz not written: dense TSDF of {dense_shape.tolist()} voxels exceeds "
                                   f"the cap of {cfg.max_dense_voxels}; use a larger --voxel-mm or fewer frames")
        print(f"warning: {nifti_note}", file=sys.stderr)
        report_warnings.append(nifti_note)
    emit(on_progress, "mesh", 2, 2, "dense TSDF volume skipped" if dense is None else "dense TSDF volume")

    # coverage: the expected wall of the travelled lumen (no ground truth needed), tested against the
    # frames that were fused; on synthetic data also the ground-truth oracle of the same segment
    cloud = PointCloud.concatenate(clouds).subsample(cfg.max_points)
    gt_mesh = _load_gt_mesh(Path(seq.mesh_path)) if seq.mesh_path is not None else None
    use_gt_surface = gt_mesh is not None and seq.has_depth and seq.has_poses
    cov_total = n_sel * (2 if use_gt_surface else 1)
    emit(on_progress, "coverage", 0, cov_total, "fitting the lumen")
    cov_dict, lumen_cov = _lumen_coverage_dict(seq, cfg, indices, depths, poses, valid, cloud, on_progress,
                                               cov_total, report_warnings)
    if depths is not None:
        depths.close()
    surface, coverage = None, None
    if use_gt_surface:
        surface = subdivide_to(gt_mesh, cfg.coverage_max_edge_mm)
        gt_poses = np.asarray(seq.world_from_cam)
        gt_frames = ((seq.depth_mm(i), gt_poses[i], valid) for i in indices)
        gt_frames = _counted(gt_frames, on_progress, "coverage", cov_total,
                             lambda k: f"oracle frame {indices[k]}", offset=n_sel)
        coverage = compute_coverage(surface, gt_frames, intr, min_depth_mm=cfg.min_depth_mm,
                                    max_depth_mm=cfg.max_depth_mm, depth_tol_mm=cfg.depth_tol_mm,
                                    depth_tol_rel=cfg.depth_tol_rel, progress=progress)
        segment = oracle_segment_faces(surface, gt_poses[indices][:, :3, 3])
        area = np.asarray(surface.area_faces)
        seg_area = float(area[segment].sum())
        oracle = (float(area[segment & coverage.face_observed].sum()) / seg_area) if seg_area > 0 else None
        cov_dict["oracle"] = {
            "observed_fraction": None if oracle is None else round(oracle, 6),
            "segment_area_mm2": round(seg_area, 3),
            "definition": ("ground-truth mesh faces whose nearest camera-path point lies strictly between the "
                           "first and last camera centre and which that point sees without crossing another "
                           "wall; observed when some frame sees the face centre with ground-truth depth and poses"),
            "whole_mesh": coverage.to_dict(),
        }
        if oracle is not None and cov_dict.get("observed_fraction") is not None:
            cov_dict["estimate_minus_oracle"] = round(cov_dict["observed_fraction"] - oracle, 6)

    metrics = None
    if not (gt_mesh is not None and (cfg.poses == "gt" or seq.has_poses)):
        emit(on_progress, "metrics", 0, 1, "no ground-truth surface")
        emit(on_progress, "metrics", 1, 1, "skipped: no ground-truth surface")
    else:
        emit(on_progress, "metrics", 0, 2, "observed part of the ground truth")
        eval_mesh = mesh
        metrics = {"frame": "ground-truth world"}
        if cfg.poses == "predicted":
            # predicted poses start at the first camera: anchor that camera at its ground-truth pose
            # (rigid, no scale alignment), and report the trajectory error the same way
            from colondepth.eval.pose_metrics import ate

            gt_traj = np.asarray(seq.world_from_cam)[indices]
            eval_mesh = mesh.copy()
            eval_mesh.apply_transform(gt_traj[0])
            ate_mm, _ = ate(poses, gt_traj, align_scale=False)
            ate_scaled_mm, scale = ate(poses, gt_traj, align_scale=True)
            metrics = {"frame": "predicted trajectory anchored at the first ground-truth camera, no scale alignment",
                       "trajectory": {"ate_mm": ate_mm, "ate_scale_aligned_mm": ate_scaled_mm,
                                      "scale_to_ground_truth": scale}}
        metrics["observed_ground_truth"] = (
            surface_metrics(eval_mesh, coverage.observed_mesh(surface), samples_per_mm2=cfg.metric_samples_per_mm2)
            if use_gt_surface and coverage.face_observed.any() else None)
        emit(on_progress, "metrics", 1, 2, "whole ground truth")
        metrics["full_ground_truth"] = surface_metrics(eval_mesh, gt_mesh, samples_per_mm2=cfg.metric_samples_per_mm2)
        emit(on_progress, "metrics", 2, 2, "surface metrics done")

    # files
    out.mkdir(parents=True, exist_ok=True)
    outputs = ["mesh.ply", "mesh.glb", "points.ply", "coverage.json", "unobserved.ply"] \
        + ([] if dense is None else ["tsdf.nii.gz"]) + ["trajectory.txt", "report.json"]
    written = 0

    def wrote(name: str) -> None:
        nonlocal written
        written += 1
        emit(on_progress, "write", written, len(outputs), name)

    emit(on_progress, "write", 0, len(outputs), f"writing {out}")
    export_mesh(mesh, out / "mesh.ply")
    wrote("mesh.ply")
    export_mesh(mesh, out / "mesh.glb", world_from_ref_cam=poses[0])
    wrote("mesh.glb")
    export_point_cloud(cloud, out / "points.ply")
    wrote("points.ply")
    export_mesh(lumen_cov.unobserved_mesh() if lumen_cov is not None else trimesh.Trimesh(), out / "unobserved.ply")
    wrote("unobserved.ply")
    if dense is not None:
        write_tsdf_nifti_volume(vol, out / "tsdf.nii.gz")
        wrote("tsdf.nii.gz")
    ts = seq.timestamps if seq.timestamps is not None else np.arange(seq.num_frames, dtype=np.float64)
    write_tum(out / "trajectory.txt", np.asarray(ts)[indices], poses)
    wrote("trajectory.txt")
    atomic_write_text(out / "coverage.json", json.dumps(cov_dict, indent=2) + "\n")
    wrote("coverage.json")
    total = time.perf_counter() - t0
    report = {
        "sequence": seq.name,
        "level": seq.level,
        "config": asdict(cfg),
        "frames": {"selected": len(indices), "first": indices[0], "last": indices[-1],
                   "integrated": frames_integrated, "empty": frames_empty},
        "tracking": None if source.tracker is None else {
            "mode": cfg.tracking, "config": source.tracker.cfg.to_dict(),
            "segments": [{"first": int(indices[g["first"]]), "last": int(indices[g["last"]]), "reason": g["reason"]}
                         for g in source.tracker.segments],
            **_tracking_summary(source.track_stats)},
        "pose_guesses": source.guess_stats,  # with --pose-guess features: motions from corners / the network
        "intrinsics": intr.to_dict(),
        "fisheye_intrinsics": (seq.extra.get("fisheye").to_dict() if seq.extra.get("fisheye") is not None
                               else None),  # the camera the frames were undistorted from
        "volume": {"voxel_mm": vol.voxel_mm, "trunc_mm": vol.trunc_mm, "blocks": vol.num_blocks,
                   "block_voxels": vol.block_voxels, "memory_mb": round(vol.memory_bytes / 2 ** 20, 2),
                   "used_mb": round(vol.used_bytes / 2 ** 20, 2),
                   "dense_shape": None if dense is None else dense_shape.tolist(),
                   "affine_world_from_index": None if dense is None else vol.dense_affine().tolist(),
                   "nifti": nifti_note or "tsdf.nii.gz: truncated signed distance in mm, +lumen -tissue"},
        "complete": not failed_chunks,
        "warnings": report_warnings,
        "mesh": {"vertices": int(len(mesh.vertices)), "faces": int(len(mesh.faces)),
                 "area_mm2": round(float(mesh.area), 3),
                 "marching_cubes": {"surface_chunks": surface_chunks, "failed_chunks": failed_chunks}},
        "points": int(len(cloud)),
        "coverage": cov_dict,
        "metrics": metrics,
        "timing_s": {"total": round(total, 3), "fusion": round(t_fuse, 3), "marching_cubes": round(t_mesh, 3),
                     "fusion_fps": round(frames_integrated / t_fuse, 3) if t_fuse > 0 else None},
        "outputs": outputs,
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=_json_default) + "\n")
    wrote("report.json")
    return report


def _tracking_summary(st: dict) -> dict:
    """report.json's tracking counts from :attr:`_FrameSource.track_stats`."""
    n = st["tracked"] + st["lost"] + st["first"]
    mean = st["scale_sum"] / n if n else None
    return {"tracked_frames": st["tracked"], "lost_frames": st["lost"], "keyframes": st["keyframes"],
            "depth_scale_mean": None if mean is None else round(mean, 5),
            "depth_scale_std": None if mean is None else round(float(np.sqrt(max(st["scale_sq_sum"] / n - mean ** 2,
                                                                                  0.0))), 5),
            "inlier_fraction_mean": None if not n else round(st["inlier_sum"] / n, 4)}


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
