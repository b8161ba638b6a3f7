"""``colondepth reconstruct``: a fused colon surface, point cloud, coverage and volume from a sequence or video.

Examples::

    colondepth reconstruct --sequence data/synth_L1/seq_00000 --out runs/recon_gt
    colondepth reconstruct --sequence data/synth_L1/seq_00000 --out runs/recon_pred --depth predicted \\
        --checkpoint runs/sfs/checkpoints/final.pt --frames 0:200:2
    colondepth reconstruct --video clip.mp4 --out runs/recon_video --depth predicted --poses predicted \\
        --intrinsics scope.yaml            # the default model's depth and pose networks
    colondepth reconstruct --video clip.mp4 --out runs/recon_ft --depth predicted --poses predicted \\
        --checkpoint runs/finetune/checkpoints/final.pt --intrinsics scope.yaml

A fisheye ``--intrinsics`` file (``model: fisheye``) makes the frames be undistorted to a pinhole camera
first (:func:`colondepth.datasets.video.read_video`); everything after works on that pinhole.

``--progress-events FILE`` (or ``-`` for standard output) writes the run's progress as JSON lines
``{"stage": ..., "done": n, "total": m, "message": ...}`` for programs (stages:
:data:`colondepth.recon.pipeline.RECONSTRUCT_STAGES`; format: :mod:`colondepth.progress`).  With ``-``
standard output carries only those lines and the closing summary goes to standard error.
"""

from __future__ import annotations

import argparse

HELP = "fuse depth and poses into a colon surface (mesh, points, TSDF volume) and report unseen mucosa"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--sequence", metavar="DIR", help="one sequence folder (meta.yaml, rgb/, depth/, poses.txt)")
    src.add_argument("--video", metavar="PATH", help="a video file or a folder of frames (no ground truth)")
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder (created)")
    parser.add_argument("--checkpoint", metavar="CKPT", default=None,
                        help="network checkpoint for predicted depth/poses (default: the installed model)")
    parser.add_argument("--voxel-mm", type=float, default=1.0, metavar="V", help="TSDF voxel size in mm (default 1)")
    parser.add_argument("--trunc-mm", type=float, default=None, metavar="T",
                        help="TSDF truncation in mm (default 4 voxels)")
    parser.add_argument("--depth", choices=("gt", "predicted"), default=None,
                        help="depth source (default: gt for a sequence with depth, else predicted)")
    parser.add_argument("--poses", choices=("gt", "predicted"), default=None,
                        help="pose source (default: gt for a sequence with poses, else predicted)")
    parser.add_argument("--frames", metavar="A:B:S", default=None,
                        help="frame selection start:stop:step (e.g. 0:200:2)")
    parser.add_argument("--min-depth-mm", type=float, default=2.0, help="working range near limit (default 2)")
    parser.add_argument("--max-depth-mm", type=float, default=100.0, help="working range far limit (default 100)")
    parser.add_argument("--depth-tol-mm", type=float, default=1.0,
                        help="coverage occlusion tolerance in mm (default 1; the larger of this and 3%% of depth)")
    parser.add_argument("--metric-samples-per-mm2", type=float, default=20.0,
                        help="surface samples per mm^2 for the accuracy metrics (default 20)")
    from colondepth.datasets.video import INTRINSICS_HELP

    parser.add_argument("--intrinsics", metavar="FILE", default=None,
                        help=f"video only: camera of the frames: {INTRINSICS_HELP}; fisheye frames are undistorted "
                             "to a pinhole camera before depth prediction and fusion (default: a 140 degree "
                             "field-of-view guess, with a warning)")
    parser.add_argument("--crop", nargs=4, type=int, default=None, metavar=("X", "Y", "W", "H"),
                        help="video only: keep columns [X, X+W) and rows [Y, Y+H) (e.g. 0 0 192 192)")
    parser.add_argument("--tracking", choices=("model", "none"), default=None,
                        help="with --poses predicted: refine each guessed pose against the fused model (ICP with "
                             "a per-frame depth scale; a new segment after a tracking failure) or chain the "
                             "guessed motions as they are (default: none for --video, model for --sequence)")
    parser.add_argument("--pose-guess", choices=("network", "features"), default=None,
                        help="with --poses predicted: first guess of each frame's motion: the pose network, or "
                             "tracked corners (essential-matrix rotation and direction, length from PnP on the "
                             "previous frame's depth; the pose network where too few corners track) "
                             "(default: features for --video, network for --sequence)")
    parser.add_argument("--format", default="colondepth", help="dataset layout of --sequence (default colondepth)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N for the networks (default: CUDA when available)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--progress-events", metavar="FILE", default=None,
                        help="also write progress as JSON lines {stage, done, total, message} to FILE (- for "
                             "standard output, which then carries nothing else); stages: fusion, mesh, coverage, "
                             "metrics, write")


def _open_input(args):
    from colondepth.errors import UserError

    if args.video is not None:
        from colondepth.datasets.video import read_video

        crop = None if args.crop is None else tuple(args.crop)
        return read_video(args.video, crop=crop, intrinsics=args.intrinsics, stream=True)  # memory flat in length
    from colondepth.datasets.registry import open_sequences

    seqs = open_sequences(args.sequence, args.format)
    if len(seqs) != 1:
        raise UserError(f"{args.sequence}: holds {len(seqs)} sequences; pass one sequence folder "
                        f"(e.g. {args.sequence}/seq_00000)")
    return seqs[0]


def run(args: argparse.Namespace) -> int:
    import sys

    from colondepth.errors import UserError
    from colondepth.progress import progress_event_writer
    from colondepth.recon.pipeline import ReconstructionConfig, parse_frames, reconstruct_sequence

    frames = parse_frames(args.frames)
    if args.video is not None:
        for flag, val in (("--depth", args.depth), ("--poses", args.poses)):
            if val == "gt":
                raise UserError(f"{flag} gt: a video has no ground truth; use {flag} predicted (or --sequence)")
    elif args.intrinsics is not None or args.crop is not None:
        raise UserError("--intrinsics and --crop apply to --video only; a sequence carries its own intrinsics")
    events = args.progress_events
    if events is not None and events != "-":
        from colondepth.io import check_output_file

        check_output_file(events, "--progress-events")
    seq = _open_input(args)
    from colondepth.io import check_output_dir

    check_output_dir(args.out)
    depth = args.depth or ("gt" if seq.has_depth else "predicted")
    poses = args.poses or ("gt" if seq.has_poses else "predicted")
    from colondepth.recon.pipeline import SEQUENCE_POSE_DEFAULTS, VIDEO_POSE_DEFAULTS

    pose_defaults = VIDEO_POSE_DEFAULTS if args.video is not None else SEQUENCE_POSE_DEFAULTS
    cfg = ReconstructionConfig(depth=depth, poses=poses, voxel_mm=args.voxel_mm, trunc_mm=args.trunc_mm,
                               frames=frames, min_depth_mm=args.min_depth_mm, max_depth_mm=args.max_depth_mm,
                               depth_tol_mm=args.depth_tol_mm, checkpoint=args.checkpoint,
                               metric_samples_per_mm2=args.metric_samples_per_mm2, device=args.device,
                               tracking=args.tracking or pose_defaults["tracking"],
                               pose_guess=args.pose_guess or pose_defaults["pose_guess"])
    if events is None:
        report = reconstruct_sequence(seq, args.out, cfg, progress=not args.no_progress)
    else:
        with progress_event_writer(events) as on_progress:
            report = reconstruct_sequence(seq, args.out, cfg, progress=not args.no_progress,
                                          on_progress=on_progress)
    # with --progress-events - standard output holds only the events, so the summary goes to stderr
    summary = sys.stderr if events == "-" else sys.stdout
    cov = report["coverage"]
    if cov.get("observed_fraction") is None:
        seen = f"no coverage estimate ({cov.get('reason', 'see report.json')})"
    else:
        seen = (f"observed {100 * cov['observed_fraction']:.1f}% of the travelled lumen's wall over "
                f"{cov['centreline_length_mm']:.0f} mm ({cov['unobserved_area_mm2']:.0f} mm^2 unseen)")
        oracle = (cov.get("oracle") or {}).get("observed_fraction")
        if oracle is not None:
            seen += f"; ground-truth oracle {100 * oracle:.1f}%"
    print(f"{seq.name}: {report['frames']['integrated']} frames fused at {cfg.voxel_mm} mm -> "
          f"{report['mesh']['faces']} faces; {seen}", file=summary)
    m = report.get("metrics") or {}
    for key in ("observed_ground_truth", "full_ground_truth"):
        r = m.get(key)
        if r:
            print(f"vs {key.replace('_', ' ')}: accuracy {r['accuracy_mm']:.3f} mm, completeness "
                  f"{r['completeness_mm']:.3f} mm, Chamfer {r['chamfer_mm']:.3f} mm, F@1mm {r['fscore@1mm']:.3f}",
                  file=summary)
    print(f"wrote {args.out}/: " + ", ".join(report["outputs"]), file=summary)
    if not report["complete"]:
        from colondepth.errors import IncompleteOutput

        mc = report["mesh"]["marching_cubes"]
        raise IncompleteOutput(f"{args.out}/mesh.ply is incomplete: marching cubes failed on "
                               f"{len(mc['failed_chunks'])} of {mc['surface_chunks']} surface chunks, so the mesh "
                               f"and its coverage have holes (where: 'warnings' in {args.out}/report.json); "
                               f"rerun with another --voxel-mm")
    return 0
