"""``colondepth predict``: depth maps (mm) for an image, a folder of images or a video.

For every frame it writes ``<stem>_depth.npy`` (float32 z-depth in mm, H x W at the input's (cropped)
resolution) and ``<stem>_depth.png`` (a turbo colour preview, near = red, far = blue, with a colour bar
labelled in mm).  Video frames get stems ``<video>_<frame:06d>``.

``--method`` chooses how: ``sfs`` (shape from shading, one frame at a time; the default), ``two-frame`` (the
two-frame network on each frame and a partner frame chosen by an adaptive baseline, scaled by the camera
displacement from the model's pose network) or ``fused`` (both, weighted per pixel by confidence); see
:mod:`colondepth.infer.two_frame`.  The last two need ordered frames (a video or a folder) and a checkpoint
with a two-frame network; a single image falls back to ``sfs`` with a note.

``--intrinsics FILE`` gives the camera (see :func:`colondepth.datasets.video.load_intrinsics`): a fisheye
frame is undistorted to a pinhole for the network and its depth mapped back, so the depth map is always on
the input's pixel grid.  Without it the network assumes its own camera.

All or nothing: the maps are written to a hidden folder inside ``--out`` and moved in only when every
frame was predicted.  A frame that cannot be read or decoded (a damaged image, a video that fails or ends
early mid-stream, e.g. a truncated copy) stops the command with a non-zero exit and one error line naming
the file and the frame index, and adds nothing to ``--out``.
"""

from __future__ import annotations

import argparse

HELP = "predict depth maps (mm, .npy + colour .png) for an image, a folder of images or a video"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default=None, metavar="CKPT",
                        help="trained checkpoint (.pt); default: data/default_model.pt")
    parser.add_argument("--input", required=True, metavar="IMAGE|DIR|VIDEO",
                        help="an image, a folder of images, or a video file")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--crop", nargs=4, type=int, default=None, metavar=("X", "Y", "W", "H"),
                        help="keep columns [X, X+W) and rows [Y, Y+H) of every frame before predicting")
    from colondepth.datasets.video import INTRINSICS_HELP

    parser.add_argument("--intrinsics", default=None, metavar="FILE",
                        help=f"camera of the frames: {INTRINSICS_HELP}; fisheye frames are undistorted for the "
                             "network and the depth is mapped back to their pixel grid (default: none; the network "
                             "assumes its own camera)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default 8)")
    parser.add_argument("--no-png", action="store_true", help="write only the .npy depth maps")
    parser.add_argument("--method", choices=("sfs", "two-frame", "fused"), default="sfs",
                        help="sfs: shape from shading, frame by frame; two-frame: depth from each frame and a "
                             "partner frame (adaptive baseline, scaled by the pose network's motion); fused: both, "
                             "weighted per pixel by confidence (default sfs; the last two need ordered frames)")


def colorize_depth(depth_mm, lo: float | None = None, hi: float | None = None, bar: bool = True):
    """``(H, W)`` depth in mm -> ``(H, W', 3)`` uint8 RGB preview (turbo; near = red, far = blue).

    ``lo``/``hi`` default to the 2nd/98th percentiles of the valid (> 0, finite) depths; invalid pixels
    are black.  With ``bar`` a colour bar labelled ``lo``/``hi`` in mm is appended on the right.
    """
    import cv2
    import numpy as np

    depth = np.asarray(depth_mm, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if lo is None or hi is None:
        vals = depth[valid]
        p_lo, p_hi = (np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0))
        lo = float(p_lo) if lo is None else lo
        hi = float(p_hi) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-3
    t = np.clip((np.where(valid, depth, hi) - lo) / (hi - lo), 0, 1)
    idx = ((1.0 - t) * 255).round().astype(np.uint8)  # near -> 255 (red end of turbo)
    rgb = cv2.cvtColor(cv2.applyColorMap(idx, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    if not bar:
        return rgb
    h = depth.shape[0]
    ramp = np.linspace(255, 0, h).round().astype(np.uint8)[:, None].repeat(max(4, h // 16), axis=1)
    bar_rgb = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    scale = max(0.3, h / 480.0)
    thick = max(1, int(round(scale)))
    labels = [f"{lo:.0f}mm", f"{hi:.0f}mm"]
    tw = max(cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for s in labels) + 4
    th = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][1]
    panel = np.full((h, tw, 3), 255, np.uint8)
    cv2.putText(panel, labels[0], (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    cv2.putText(panel, labels[1], (2, h - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    gap = np.full((h, 2, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, bar_rgb, panel], axis=1)


def _read_image(path):
    import imageio.v3 as iio
    import numpy as np

    from colondepth.errors import UserError

    try:
        img = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input file
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}); replace or remove the file") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise UserError(f"{path}: expected an RGB image, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise UserError(f"{path}: unsupported image type {img.dtype}; use 8-bit RGB images")
    return np.ascontiguousarray(img)


def iter_frames(path, crop=None, check_size=None):
    """Yield ``(stem, (H, W, 3) uint8 RGB)`` for an image, a folder of images or a video; and a frame count.

    ``check_size(size, source)``, when given, is called with the :class:`ImageSize` of every uncropped
    frame and its file (it raises a :class:`UserError` for a frame the camera does not fit).

    Returns ``(count or None, generator)``.
    """
    from pathlib import Path

    from colondepth.datasets.video import VIDEO_SUFFIXES
    from colondepth.errors import UserError

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such image, folder or video; check --input")

    def cropped(img, source):
        from colondepth.conventions import ImageSize

        full = ImageSize(img.shape[0], img.shape[1])
        if check_size is not None:
            check_size(full, source)
        if crop is None:
            return img
        crop.check_inside(full, source)
        return crop.apply(img).copy()

    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{p}: no images ({' '.join(IMAGE_SUFFIXES)}) in this folder; check --input")
        return len(files), ((f.stem, cropped(_read_image(f), f)) for f in files)
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return 1, iter([(p.stem, cropped(_read_image(p), p))])
    if suffix in VIDEO_SUFFIXES:
        return _video_frames(p, cropped)
    raise UserError(f"{p}: unsupported input type '{p.suffix}'; pass an image ({' '.join(IMAGE_SUFFIXES)}), "
                    f"a folder of images or a video ({' '.join(VIDEO_SUFFIXES)})")


def _video_frames(p, cropped):
    import av

    from colondepth.errors import UserError

    try:
        container = av.open(str(p))
    except Exception as exc:  # noqa: BLE001 - PyAV raises many error types for bad files
        raise UserError(f"{p}: cannot open video ({type(exc).__name__}); check the file or extract its frames "
                        f"to a folder") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{p}: contains no video stream; pass a video file or a folder of images")
    stream = container.streams.video[0]
    count = int(stream.frames) if stream.frames else None

    fix = "re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4) or extract its frames to a folder"

    def gen():
        n = 0  # frames decoded so far = index of the frame being decoded
        try:
            for i, frame in enumerate(container.decode(stream)):
                n += 1
                yield f"{p.stem}_{i:06d}", cropped(frame.to_ndarray(format="rgb24"), p)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - PyAV raises many error types for damaged streams
            if n == 0:
                raise UserError(f"{p}: cannot decode video ({type(exc).__name__}); {fix}") from None
            raise UserError(f"{p}: cannot decode frame {n} ({type(exc).__name__}; frames 0-{n - 1} decoded); "
                            f"no depth maps written; {fix}") from None
        finally:
            container.close()
        if n == 0:
            raise UserError(f"{p}: no decodable frames; the file is empty or corrupt")
        if count is not None and n < count:  # a truncated file decodes cleanly but ends early
            raise UserError(f"{p}: cannot decode frame {n}: the video ends there but its header has {count} "
                            f"frames (truncated or corrupt file); no depth maps written; {fix}")

    return count, gen()


def _sequence_depths(args, method, predictor, frames, camera, view, shape0):
    """``(stem, depth)`` of ordered frames by ``method`` two-frame or fused (:mod:`colondepth.infer.two_frame`)
    with the checkpoint's two-frame and pose networks."""
    import numpy as np

    from colondepth.errors import UserError
    from colondepth.geometry.camera import PinholeIntrinsics
    from colondepth.infer.two_frame import iter_depths
    from colondepth.models.bundle import build_two_frame, read_bundle
    from colondepth.recon.poses import load_pose_estimator
    from colondepth.resources import default_model_path

    ckpt = args.checkpoint or default_model_path()
    entry = read_bundle(ckpt)["two_frame"]  # only this network: the predictor already holds the depth network
    if entry is None:
        raise UserError(f"{ckpt}: has no two-frame network for --method {method}; use --method sfs, or a checkpoint "
                        "from a two_frame run (curricula/two_frame.yaml) exported into the model")
    if camera is not None and not isinstance(camera, PinholeIntrinsics):
        raise UserError(f"{args.intrinsics}: --method {method} needs a pinhole camera; undistort the frames first or "
                        "use --method sfs")
    from colondepth.conventions import ImageSize

    size = ImageSize(shape0[0], shape0[1])
    K = camera if camera is not None else PinholeIntrinsics.from_fov(size, float(predictor.model.config.default_fov_deg))
    two_frame = build_two_frame(entry, ckpt).to(predictor.device)
    estimator = load_pose_estimator(ckpt, device=str(predictor.device))
    stems: dict = {}

    def rgbs():
        for k, (stem, frame) in enumerate(frames):
            if frame.shape != shape0:
                raise UserError(f"{args.input}: frame {stem} is {frame.shape[1]}x{frame.shape[0]}, the first "
                                f"{shape0[1]}x{shape0[0]}; --method {method} needs frames of one size")
            stems[k] = stem
            yield frame

    sfs = lambda batch: predictor.predict_batch(batch, intrinsics=camera, view=view)  # noqa: E731
    for r in iter_depths(rgbs(), method, sfs, two_frame, K, pose_estimator=estimator,
                         batch_size=args.batch_size):
        yield stems.pop(r.index), np.asarray(r.depth, np.float32)


def run(args: argparse.Namespace) -> int:
    import itertools
    import sys
    from pathlib import Path

    import cv2
    import numpy as np
    from tqdm import tqdm

    from colondepth.datasets.video import Crop, intrinsics_for_frames, load_intrinsics
    from colondepth.errors import UserError
    from colondepth.infer.predictor import VIEW_SAMPLE_FRAMES, DepthPredictor
    from colondepth.io import staged_files

    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    crop = Crop.parse(args.crop) if args.crop is not None else None
    if Path(args.input).is_dir() and Path(args.out).resolve() == Path(args.input).resolve():
        raise UserError(f"--out {args.out}: is the input folder; choose another folder so the depth previews "
                        f"are not mixed with the input frames")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; choose another --out")
    full_camera = check_size = None
    if args.intrinsics is not None:
        full_camera = load_intrinsics(args.intrinsics)

        def check_size(full, source):  # every frame must be the size the intrinsics describe
            intrinsics_for_frames(full_camera, full, source=args.intrinsics)

    count, frames = iter_frames(args.input, crop, check_size)
    method = args.method
    if method != "sfs" and count == 1 and not Path(args.input).is_dir():
        print(f"note: {args.input} is a single image; --method {method} needs ordered frames, so it is "
              "predicted with --method sfs", file=sys.stderr)
        method = "sfs"
    predictor = DepthPredictor.from_checkpoint(args.checkpoint, device=args.device, batch_size=args.batch_size)
    frames = iter(frames)
    try:  # decode (and crop-check) the first frame before the progress bar, so early errors stay one line
        first = [next(frames)]
    except StopIteration:
        raise UserError(f"{args.input}: no frames to predict; check --input") from None
    first += list(itertools.islice(frames, VIEW_SAMPLE_FRAMES - 1))  # the video's view box comes from these
    # the first frame passed the size and crop checks: the camera of the (cropped) frames
    camera = None if full_camera is None else intrinsics_for_frames(full_camera, full_camera.size, crop,
                                                                     source=args.intrinsics)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror}); choose a writable --out") from None

    stage = None  # outputs go to a hidden folder inside --out and are moved in only when every frame worked

    # one crop to the lit view for every frame of the first frames' size (a video), found on up to
    # VIEW_SAMPLE_FRAMES of them; frames of another size (a folder of mixed images) get their own box
    shape0 = first[0][1].shape
    view = predictor.video_view([f for _, f in first if f.shape == shape0], camera)

    def flush(batch):
        rgbs = np.stack([f for _, f in batch])
        depths = predictor.predict_batch(rgbs, intrinsics=camera, view=view if rgbs.shape[1:] == shape0 else "frame")
        for (stem, _), depth in zip(batch, depths):
            write(stem, depth)

    def write(stem, depth):
        np.save(stage / f"{stem}_depth.npy", depth.astype(np.float32))
        if not args.no_png:
            preview = colorize_depth(depth)
            if not cv2.imwrite(str(stage / f"{stem}_depth.png"), cv2.cvtColor(preview, cv2.COLOR_RGB2BGR)):
                raise UserError(f"{out}: cannot write {stem}_depth.png; check the folder is writable")

    written = 0
    batch: list = []
    try:
        with staged_files(out) as stage, \
                tqdm(total=count, desc="predict", unit="frame", file=sys.stderr, dynamic_ncols=True) as bar:
            if method != "sfs":
                for stem, depth in _sequence_depths(args, method, predictor, itertools.chain(first, frames), camera,
                                                    view, shape0):
                    write(stem, depth)
                    written += 1
                    bar.update(1)
            else:
                for stem, frame in itertools.chain(first, frames):
                    if batch and frame.shape != batch[0][1].shape:
                        flush(batch)
                        written += len(batch)
                        bar.update(len(batch))
                        batch = []
                    batch.append((stem, frame))
                    if len(batch) >= args.batch_size:
                        flush(batch)
                        written += len(batch)
                        bar.update(len(batch))
                        batch = []
                if batch:
                    flush(batch)
                    written += len(batch)
                    bar.update(len(batch))
    except BaseException:
        if created and not any(out.iterdir()):  # a failed run leaves no empty output folder behind
            out.rmdir()
        raise
    print(f"wrote {written} depth map(s) to {out}", file=sys.stderr)
    return 0
