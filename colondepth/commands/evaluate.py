"""``colondepth evaluate``: depth metrics of a model and two baselines on data with ground truth.

Example::

    colondepth evaluate --checkpoint runs/sfs/model.pt --data data/synth_L5 --json out/eval.json
    colondepth evaluate --data ../shared/data/simcol3d_sample --format simcol3d --align none
    colondepth evaluate --data data/c3vd --format c3vd --intrinsics scope.yaml

The model is given each dataset's own camera (or the ``--intrinsics`` file's).
"""

from __future__ import annotations

import argparse

HELP = "score predicted depth (and physics/constant baselines) against ground truth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", default=None,
                        help="model checkpoint from 'colondepth train' (default: the shipped default model)")
    parser.add_argument("--data", metavar="DIR", required=True, help="dataset folder with ground-truth depth")
    parser.add_argument("--format", default="colondepth", metavar="FMT",
                        help="dataset layout: colondepth (default), simcol3d or c3vd")
    parser.add_argument("--align", default="median", metavar="MODE",
                        help="median (per-frame median scaling, default) or none (metric millimetres)")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="evaluate at most N frames, evenly spread over all sequences")
    parser.add_argument("--device", default=None, metavar="D", help="torch device (default: cuda if available)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="B", help="frames per forward pass (default 8)")
    parser.add_argument("--min-depth-mm", type=float, default=None, metavar="MM",
                        help="score only ground truth at or beyond this depth")
    parser.add_argument("--max-depth-mm", type=float, default=None, metavar="MM",
                        help="score only ground truth at or below this depth")
    parser.add_argument("--constant-depth-mm", type=float, default=None, metavar="MM",
                        help="value of the constant baseline with --align none (use the training-set median depth; "
                        "default: the median of the evaluated ground truth, an oracle value)")
    from colondepth.datasets.video import INTRINSICS_HELP

    parser.add_argument("--intrinsics", default=None, metavar="FILE",
                        help=f"camera of the dataset's frames: {INTRINSICS_HELP}; replaces the intrinsics the "
                             "dataset carries (meta.yaml, SimCol3D cam.txt, C3VD intrinsics.yaml); fisheye frames are "
                             "undistorted for the network and the depth is mapped back before scoring (default: the "
                             "dataset's own; C3VD without intrinsics.yaml: a 140 degree field-of-view guess, with a "
                             "warning)")
    parser.add_argument("--physics-gamma", type=float, default=2.2, metavar="G",
                        help="display gamma the physics baseline undoes before using brightness (default 2.2)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from colondepth.errors import UserError
    from colondepth.eval.alignment import ALIGN_MODES

    if args.align not in ALIGN_MODES:
        raise UserError(f"--align {args.align}: unknown alignment; choose one of {', '.join(ALIGN_MODES)}")
    if args.max_frames is not None and args.max_frames <= 0:
        raise UserError(f"--max-frames {args.max_frames}: must be a positive number of frames")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size {args.batch_size}: must be a positive number of frames")
    if args.constant_depth_mm is not None and not args.constant_depth_mm > 0:
        raise UserError(f"--constant-depth-mm {args.constant_depth_mm}: must be a positive depth in mm")
    if not args.physics_gamma > 0:
        raise UserError(f"--physics-gamma {args.physics_gamma}: must be a positive exponent (2.2 for sRGB-like video)")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UserError(
            f"{args.checkpoint}: checkpoint not found; pass --checkpoint with a file written by "
            "'colondepth train', or omit it to use the default model"
        )

    if args.json is not None:
        from colondepth.io import check_output_file

        check_output_file(args.json, "--json")

    from colondepth.datasets.registry import open_sequences

    camera = None
    if args.intrinsics is not None:
        from colondepth.datasets.video import load_intrinsics

        camera = load_intrinsics(args.intrinsics)
    sequences = open_sequences(args.data, args.format)
    cameras = [seq.intrinsics for seq in sequences]
    if camera is not None:
        from colondepth.conventions import ImageSize
        from colondepth.datasets.video import intrinsics_for_frames

        for seq in sequences:
            rgb = seq.rgb(0)
            intrinsics_for_frames(camera, ImageSize(rgb.shape[0], rgb.shape[1]), source=args.intrinsics)
        cameras = [camera] * len(sequences)

    from colondepth.infer.predictor import DepthPredictor

    predictor = DepthPredictor.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size)

    from colondepth.eval.evaluate import evaluate_sequences, format_report, write_report_json

    try:
        report = _evaluate(evaluate_sequences, sequences, predictor, args, cameras)
    except UserError as exc:
        if str(exc).startswith("no evaluated frame"):
            raise UserError(f"{args.data}: {exc}; check that its depth maps hold non-zero depth") from None
        raise
    report.inputs = {
        "checkpoint": str(args.checkpoint) if args.checkpoint else "default",
        "data": str(args.data),
        "format": args.format,
        "intrinsics": str(args.intrinsics) if args.intrinsics else "dataset",
    }
    print(format_report(report), end="")
    if args.json:
        path = write_report_json(report, args.json)
        print(f"wrote {path}")
    return 0


def _evaluate(evaluate_sequences, sequences, predictor, args, cameras=None):
    return evaluate_sequences(
        sequences,
        predictor.predict_batch,
        align=args.align,
        min_mm=args.min_depth_mm,
        max_mm=args.max_depth_mm,
        max_frames=args.max_frames,
        batch_size=args.batch_size,
        constant_mm=args.constant_depth_mm,
        physics_kwargs={"gamma": args.physics_gamma},
        cameras=cameras,
        views=[predictor.video_view(seq, None if cameras is None else cameras[k]) for k, seq in enumerate(sequences)],
    )
