"""``colondepth finetune``: self-supervised photometric fine-tuning of a trained depth model on real video.

Example::

    colondepth finetune --init runs/sfs/checkpoints/final.pt \\
        --video ../shared/data/real_colon_video/colonoscopy_side_by_side.mp4 --crop 0 0 192 192 \\
        --out runs/finetune_real --steps 2000

It writes a one-stage curriculum (``kind: self_supervised``) to ``RUN/finetune.curriculum.yaml`` and runs it
with the curriculum runner, so checkpoints, ``--resume``, progress bars, metrics and the NaN stop behave as
for ``colondepth train``.  The model architecture is taken from the ``--init`` checkpoint's model card.
With ``--intrinsics`` (see :func:`colondepth.datasets.video.load_intrinsics`) a fisheye video is undistorted
to a pinhole camera before training, as ``predict`` does before the network.  The option defaults are read from
the ``self_supervised`` stage schema (:data:`SCHEMA_DEFAULTS`), the one place the measured setting is written.
"""

from __future__ import annotations

import argparse

HELP = "fine-tune a trained depth model on unlabelled video with photometric self-supervision"


#: Option (argparse dest) -> where its default lives in the curriculum schema: ``("stage", key, ...)`` in
#: :class:`colondepth.train.config.SelfSupervisedStage`, ``("checkpoint", key)`` in ``CheckpointSection``,
#: ``("curriculum", key)`` in ``Curriculum``.  The command's defaults are read from there, so they are the stage
#: defaults (tests/test_finetune_defaults.py).
SCHEMA_DEFAULTS = {
    "batch_size": ("stage", "batch_size"),
    "lr": ("stage", "optimizer", "lr"),
    "frame_skip": ("stage", "frame_skip"),
    "target_motion": ("stage", "target_motion_px"),
    "smoothness": ("stage", "loss", "smoothness_weight"),
    "explainability": ("stage", "loss", "explainability_weight"),
    "translation_normalisation": ("stage", "translation_normalisation"),
    "min_translation_norm": ("stage", "min_translation_norm_mm"),
    "depth_scale_anchor": ("stage", "depth_scale_anchor"),
    "invalid_warp": ("stage", "invalid_warp"),
    "light": ("stage", "light"),
    "coopnet": ("stage", "coopnet", "enabled"),
    "anchor": ("stage", "anchor_weight"),
    "anchor_decay_steps": ("stage", "anchor_decay_steps"),
    "freeze_batchnorm": ("stage", "freeze_batchnorm"),
    "automask": ("stage", "automask"),
    "freeze_encoder_steps": ("stage", "freeze_encoder_steps"),
    "rehearsal_weight": ("stage", "rehearsal", "weight"),
    "keep_best": ("stage", "keep_best"),
    "eval_every": ("stage", "promotion", "eval_every_steps"),
    "checkpoint_every": ("checkpoint", "every_steps"),
    "seed": ("curriculum", "seed"),
}
#: ``--steps`` when not given (the schema requires a budget, so it has no default of its own).
DEFAULT_STEPS = 1000


def schema_default(dest: str):
    """The curriculum-schema default behind option ``dest`` (see :data:`SCHEMA_DEFAULTS`)."""
    from colondepth.train.config import CheckpointSection, Curriculum, SelfSupervisedStage

    section, key, *rest = SCHEMA_DEFAULTS[dest]
    model = {"stage": SelfSupervisedStage, "checkpoint": CheckpointSection, "curriculum": Curriculum}[section]
    value = model.model_fields[key].get_default(call_default_factory=True)
    for attr in rest:
        value = getattr(value, attr)
    return value


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = schema_default
    parser.add_argument("--init", required=True, metavar="CKPT", help="checkpoint to start from (colondepth train)")
    parser.add_argument("--video", required=True, action="append", metavar="PATH",
                        help="video file (mp4/avi/mov) or folder of frames; repeatable")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder: checkpoints/, metrics.jsonl")
    parser.add_argument("--crop", nargs=4, type=int, default=None, metavar=("X", "Y", "W", "H"),
                        help="region of interest in source pixels (e.g. 0 0 192 192 for a side-by-side video)")
    from colondepth.datasets.video import INTRINSICS_HELP

    parser.add_argument("--intrinsics", default=None, metavar="FILE",
                        help=f"camera of the videos: {INTRINSICS_HELP}; fisheye frames are undistorted to a "
                             "pinhole camera before training (default: a 140 degree field-of-view guess, with a "
                             "warning)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help=f"optimizer steps (default {DEFAULT_STEPS})")
    parser.add_argument("--batch-size", type=int, default=d("batch_size"), metavar="B",
                        help=f"snippets per step (default {d('batch_size')})")
    parser.add_argument("--lr", type=float, default=d("lr"), help=f"learning rate, constant (default {d('lr'):g})")
    parser.add_argument("--frame-skip", type=_frame_skip, default=d("frame_skip"), metavar="K|auto",
                        help="kept frames between target and source views; 'auto': per video, the smallest skip "
                             "whose views move --target-motion pixels on the network's grid (a slow camera gets "
                             f"a larger skip) (default {d('frame_skip')})")
    parser.add_argument("--target-motion", type=float, default=d("target_motion"), metavar="PX",
                        help="with --frame-skip auto: median image motion between views to reach, in pixels of "
                             f"the network's input grid (default {d('target_motion'):g})")
    parser.add_argument("--smoothness", type=float, default=d("smoothness"), metavar="W",
                        help=f"edge-aware smoothness weight (default {d('smoothness'):g})")
    parser.add_argument("--explainability", type=float, default=d("explainability"), metavar="W",
                        help=f"explainability-mask regulariser weight; 0 disables the masks (default "
                             f"{d('explainability'):g})")
    parser.add_argument("--translation-normalisation", action=argparse.BooleanOptionalAction,
                        default=d("translation_normalisation"),
                        help="pin the translation scale after the pose warm-up; --no-translation-normalisation lets "
                             f"the depth scale float (default {_on_off(d('translation_normalisation'))})")
    parser.add_argument("--min-translation-norm", type=float, default=d("min_translation_norm"), metavar="MM",
                        help="a pose warm-up mean translation below MM per frame step switches translation "
                             f"normalisation off (default {d('min_translation_norm'):g}; 0: always normalise)")
    parser.add_argument("--depth-scale-anchor", action=argparse.BooleanOptionalAction,
                        default=d("depth_scale_anchor"),
                        help="per image, rescale the predicted depth to the --init model's median: the scale "
                             "follows the supervised depth on every snippet and translations are not normalised "
                             f"(default {_on_off(d('depth_scale_anchor'))})")
    parser.add_argument("--invalid-warp", choices=("skip", "identity"), default=d("invalid_warp"),
                        help="target pixels with no valid warp: skip them, or count the un-warped source's error so "
                             f"that warping out of view never lowers the loss (default {d('invalid_warp')})")
    parser.add_argument("--light", choices=("none", "tip"), default=d("light"),
                        help="view synthesis with the light at the endoscope tip (inverse-square fall-off and "
                             "incidence angle from the predicted depth and pose, in linear intensity) before the "
                             f"affine brightness alignment (default {d('light')})")
    parser.add_argument("--coopnet", action=argparse.BooleanOptionalAction, default=d("coopnet"),
                        help="co-train an optical-flow network and leave pixels whose flow disagrees with the rigid "
                             "flow of depth and pose (moving debris, fluid, deforming wall, instruments) out of the "
                             f"photometric loss (default {_on_off(d('coopnet'))})")
    parser.add_argument("--anchor", type=float, default=d("anchor"), metavar="W",
                        help="weight of the scale-invariant log-depth anchor to the --init model's prediction "
                             f"(keeps its depth shape; default {d('anchor'):g}; 0: off)")
    parser.add_argument("--anchor-decay-steps", type=int, default=d("anchor_decay_steps"), metavar="N",
                        help="decay the anchor weight linearly to 0 over N steps after the pose warm-up "
                             "(0: constant; default: all steps after the warm-up)")
    parser.add_argument("--freeze-batchnorm", action=argparse.BooleanOptionalAction, default=d("freeze_batchnorm"),
                        help="keep the --init model's BatchNorm statistics; --no-freeze-batchnorm re-estimates them "
                             f"from the video's small batches (default {_on_off(d('freeze_batchnorm'))})")
    parser.add_argument("--automask", action=argparse.BooleanOptionalAction, default=d("automask"),
                        help="monodepth2 auto-masking of pixels the un-warped source explains (default "
                             f"{_on_off(d('automask'))}: on the shared real sample it let the depth drift, see "
                             "docs/finetune.md)")
    parser.add_argument("--freeze-encoder-steps", type=int, default=d("freeze_encoder_steps"), metavar="N",
                        help=f"train only the depth decoder for N steps after the pose warm-up (default "
                             f"{d('freeze_encoder_steps')})")
    parser.add_argument("--rehearsal-data", action="append", default=None, metavar="DIR",
                        help="synthetic dataset folder (colondepth synth) whose supervised batches are mixed into "
                             "every step; repeatable; needs --rehearsal-weight")
    parser.add_argument("--rehearsal-weight", type=float, default=d("rehearsal_weight"), metavar="W",
                        help=f"weight of the supervised rehearsal loss (default {d('rehearsal_weight'):g}: off)")
    parser.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=d("keep_best"),
                        help="end with the model of lowest photometric error on held-out snippets of the videos, the "
                             "--init model included, and warn when fine-tuning never beat it; --no-keep-best ends "
                             f"with the last weights (default {_on_off(d('keep_best'))})")
    parser.add_argument("--eval-every", type=int, default=d("eval_every"), metavar="N",
                        help=f"evaluate the held-out snippets every N steps (default {d('eval_every')})")
    parser.add_argument("--checkpoint-every", type=int, default=d("checkpoint_every"), metavar="N",
                        help=f"rewrite RUN/checkpoints/last.pt every N steps (default {d('checkpoint_every')})")
    parser.add_argument("--seed", type=int, default=d("seed"), metavar="S",
                        help=f"seed of the data order and of the networks' random parts (default {d('seed')})")
    parser.add_argument("--two-frame", action="store_true",
                        help="re-train the checkpoint's two-frame (DepthNet) and pose networks instead of its "
                             "depth network (stage kind two_frame_self_supervised, Pinard 2018), for 'predict "
                             "--method fused'; takes --steps, --batch-size, --lr, --frame-skip, --smoothness, "
                             "--explainability, --translation-normalisation and the general options; an option "
                             "left at its default takes that stage's default (docs/depthnet.md)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                        help="stop after N steps without a final checkpoint (simulates an interruption)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_curriculum(args: argparse.Namespace, model_card: dict) -> dict:
    """The one-stage curriculum (plain YAML-able dict) that ``finetune`` runs.

    Every stage setting the options carry is written out; what the schema resolves (``anchor_decay_steps``
    left unset: every step after the pose warm-up) is filled in by the schema itself.
    """
    from pathlib import Path

    from colondepth.train.config import ModelSection

    m = model_card.get("model", {})
    sources = []
    for v in args.video:
        p = Path(v).expanduser().resolve()
        sources.append({"path": str(p), "format": "frames" if p.is_dir() else "video"})
    stage = {
        "name": "finetune",
        "kind": "self_supervised",
        "init_from": str(Path(args.init).expanduser().resolve()),
        "sources": sources,
        "budget": {"steps": int(args.steps)},
        "batch_size": int(args.batch_size),
        "optimizer": {"lr": float(args.lr)},
        "frame_skip": args.frame_skip,
        "target_motion_px": float(args.target_motion),
        "loss": {"smoothness_weight": float(args.smoothness), "explainability_weight": float(args.explainability)},
        "translation_normalisation": bool(args.translation_normalisation),
        "min_translation_norm_mm": float(args.min_translation_norm),
        "depth_scale_anchor": bool(args.depth_scale_anchor),
        "invalid_warp": str(args.invalid_warp),
        "light": str(args.light),
        "coopnet": {"enabled": bool(args.coopnet)},
        "anchor_weight": float(args.anchor),
        "freeze_batchnorm": bool(args.freeze_batchnorm),
        "automask": bool(args.automask),
        "freeze_encoder_steps": int(args.freeze_encoder_steps),
        "keep_best": bool(args.keep_best),
        "promotion": {"eval_every_steps": int(args.eval_every)},
    }
    if args.anchor_decay_steps is not None:
        stage["anchor_decay_steps"] = int(args.anchor_decay_steps)
    if args.rehearsal_weight > 0 or args.rehearsal_data:
        stage["rehearsal"] = {"datasets": [str(Path(d).expanduser().resolve()) for d in args.rehearsal_data or []],
                              "weight": float(args.rehearsal_weight), "batch_size": int(args.batch_size)}
    if args.crop is not None:
        stage["crop"] = [int(v) for v in args.crop]
    if args.intrinsics is not None:
        stage["intrinsics"] = str(Path(args.intrinsics).expanduser().resolve())
    return {
        "name": "finetune",
        "description": "self-supervised photometric fine-tuning (colondepth finetune)",
        "seed": int(args.seed),
        "model": ModelSection.dict_from_card(m),
        "checkpoint": {"every_steps": int(args.checkpoint_every), "log_every_steps": 10},
        "stages": [stage],
    }


#: ``--two-frame``: options (argparse dest) -> the key they set in a ``two_frame_self_supervised`` stage.
TWO_FRAME_OPTIONS = {
    "batch_size": ("batch_size",),
    "lr": ("optimizer", "lr"),
    "frame_skip": ("frame_skip",),
    "smoothness": ("loss", "smoothness_weight"),
    "explainability": ("loss", "explainability_weight"),
    "translation_normalisation": ("translation_normalisation",),
}
#: Options that only the depth network's fine-tuning has: with ``--two-frame`` they must stay at their default.
DEPTH_ONLY_OPTIONS = ("target_motion", "min_translation_norm", "depth_scale_anchor", "invalid_warp", "light",
                      "coopnet", "anchor", "anchor_decay_steps", "freeze_batchnorm", "automask",
                      "freeze_encoder_steps", "rehearsal_weight", "keep_best", "eval_every")


def _frame_skip(text: str):
    """``--frame-skip``: a whole number of kept frames, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number of frames (e.g. 2) or 'auto'") from None


def _option_flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def build_two_frame_curriculum(args: argparse.Namespace, model_card: dict) -> dict:
    """``finetune --two-frame``'s one-stage curriculum: a ``two_frame_self_supervised`` stage on the videos.

    An option of :data:`TWO_FRAME_OPTIONS` is written only when it differs from the command's (depth
    fine-tuning) default, so an option left alone takes the two-frame stage's own default
    (:class:`colondepth.train.config.TwoFrameSelfSupervisedStage`).  A depth-only option set to anything but its
    default is a one-line error (it would otherwise be silently ignored).
    """
    from colondepth.errors import UserError

    for dest in DEPTH_ONLY_OPTIONS:
        if getattr(args, dest) != schema_default(dest):
            raise UserError(f"{_option_flag(dest)} applies to the depth network's fine-tuning, not to --two-frame; "
                            f"leave it out")
    if args.rehearsal_data:
        raise UserError("--rehearsal-data applies to the depth network's fine-tuning, not to --two-frame; leave it out")
    doc = build_curriculum(args, model_card)
    depth_stage = doc["stages"][0]
    stage = {"name": "finetune_two_frame", "kind": "two_frame_self_supervised"}
    for key in ("init_from", "sources", "budget", "crop", "intrinsics"):
        if key in depth_stage:
            stage[key] = depth_stage[key]
    for dest, path in TWO_FRAME_OPTIONS.items():
        value = getattr(args, dest)
        if value == schema_default(dest):
            continue
        node = stage
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    doc.update(name="finetune_two_frame",
               description="self-supervised re-training of the two-frame and pose networks (colondepth finetune "
                           "--two-frame)",
               stages=[stage])
    return doc


def _resolved_file(path) -> dict | None:
    """The resolved curriculum of an earlier run's ``finetune.curriculum.yaml`` (``None`` if it no longer
    validates), so that a resume compares settings, not text (defaults written out or left to the schema)."""
    from colondepth.errors import UserError
    from colondepth.train.config import load_curriculum, resolved_dict

    try:
        return resolved_dict(load_curriculum(path))
    except UserError:
        return None


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    from pathlib import Path

    import yaml

    from colondepth.errors import UserError
    from colondepth.io import atomic_write_text
    from colondepth.train.checkpoint import read_checkpoint
    from colondepth.train.config import parse_curriculum, resolved_dict
    from colondepth.train.curriculum import RunOptions, train_curriculum

    if args.steps <= 0:
        raise UserError(f"--steps {args.steps}: must be a positive number of optimizer steps")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size {args.batch_size}: must be positive")
    if not args.lr > 0:
        raise UserError(f"--lr {args.lr:g}: the learning rate must be positive (e.g. 1e-4)")
    if args.frame_skip != "auto" and args.frame_skip < 1:
        raise UserError(f"--frame-skip {args.frame_skip}: must be at least 1, or 'auto'")
    if args.two_frame and args.frame_skip == "auto":
        raise UserError("--frame-skip auto applies to the depth network's fine-tuning, not to --two-frame; give a "
                        "number of frames (e.g. --frame-skip 2)")
    if not args.target_motion > 0:
        raise UserError(f"--target-motion {args.target_motion:g}: must be a positive number of pixels (e.g. 3)")
    if not args.min_translation_norm >= 0:
        raise UserError(f"--min-translation-norm {args.min_translation_norm:g}: must be 0 or more mm per frame step")
    if args.checkpoint_every < 1:
        raise UserError(f"--checkpoint-every {args.checkpoint_every}: must be at least 1 step")
    if args.eval_every < 1:
        raise UserError(f"--eval-every {args.eval_every}: must be at least 1 step")
    if args.smoothness < 0 or args.explainability < 0:
        raise UserError("--smoothness and --explainability weights must be >= 0")
    from colondepth.io import check_output_dir

    check_output_dir(args.out)
    for v in args.video:
        if not Path(v).exists():
            raise UserError(f"{v}: no such video file or frame folder; check --video")
    if args.anchor < 0 or (args.anchor_decay_steps or 0) < 0 or args.freeze_encoder_steps < 0:
        raise UserError("--anchor, --anchor-decay-steps and --freeze-encoder-steps must be >= 0")
    if args.rehearsal_weight < 0 or (args.rehearsal_weight > 0) != bool(args.rehearsal_data):
        raise UserError("--rehearsal-weight W (> 0) and --rehearsal-data DIR go together; pass both or neither")
    for d in args.rehearsal_data or []:
        if not (Path(d) / "dataset.yaml").is_file():
            raise UserError(f"{d}: not a synthetic dataset (no dataset.yaml); make one with 'colondepth synth'")
    if args.intrinsics is not None:
        from colondepth.datasets.video import load_intrinsics

        load_intrinsics(args.intrinsics)  # a bad file fails here, in one line, before anything is written
    init = read_checkpoint(args.init)
    card = init["card"]
    if "model" not in card:
        raise UserError(f"{args.init}: checkpoint has no model card; pass a checkpoint written by 'colondepth train'")
    if args.two_frame and (init.get("two_frame") is None or init.get("pose") is None):
        raise UserError(f"{args.init}: has no two-frame and pose network for --two-frame; pass a model bundle with "
                        f"both (e.g. the default model data/default_model.pt)")
    curriculum = (build_two_frame_curriculum if args.two_frame else build_curriculum)(args, card)
    out = Path(args.out)
    cur_path = out / "finetune.curriculum.yaml"
    resolved = resolved_dict(parse_curriculum(curriculum, cur_path))  # validate before writing anything
    text = yaml.safe_dump(curriculum, sort_keys=False)
    has_run = (out / "checkpoints" / "last.pt").is_file()
    if has_run and not args.resume:
        raise UserError(f"{out}: already holds a fine-tuning run; pass --resume to continue it or choose another --out")
    if has_run and cur_path.is_file() and _resolved_file(cur_path) != resolved:
        raise UserError(f"{out}: was started with other arguments ({cur_path}); resume with the same arguments "
                        f"or choose another --out")
    atomic_write_text(cur_path, text)
    command = " ".join(shlex.quote(a) for a in ["colondepth", *sys.argv[1:]]) if sys.argv else "colondepth finetune"
    opts = RunOptions(curriculum_path=cur_path, out_dir=out, data_dirs=[], resume=args.resume, device=args.device,
                      command=command, stop_after_steps=args.stop_after_steps, progress=not args.no_progress)
    result = train_curriculum(opts)
    if result["stopped"]:
        print(f"stopped after step {result['global_step']}; continue with --resume", file=sys.stderr)
    elif args.two_frame:
        print(f"done: {result['global_step']} steps; weights in {result['checkpoint']}; use them with "
              f"'colondepth predict --method fused --checkpoint {result['checkpoint']}'", file=sys.stderr)
    else:
        print(f"done: {result['global_step']} steps; {_kept_note(out)}weights in {result['checkpoint']}",
              file=sys.stderr)
    return 0


def _kept_note(out) -> str:
    """Which weights ``final.pt`` holds, from the run's last ``stage_end`` record (``"fine-tuned "`` when the
    stage did not keep the better model: ``--no-keep-best`` or nothing held out)."""
    from colondepth.train.logging import read_metrics

    path = out / "metrics.jsonl"
    ends = [r for r in read_metrics(path) if r.get("type") == "stage_end"] if path.is_file() else []
    if not ends or ends[-1].get("kept") is None:
        return "fine-tuned "
    end = ends[-1]

    def err(key: str) -> str:
        v = end.get(key)
        return "n/a" if v is None else f"{v:.5f}"

    if end["kept"] == "init":
        best = end.get("heldout_photometric_best")
        tuned = f"; best fine-tuned {err('heldout_photometric_best')}" if best is not None else ""
        return f"initial model kept (held-out photometric error {err('heldout_photometric_init')}{tuned}); "
    return (f"kept the step-{end['kept']} model (held-out photometric error {err('heldout_photometric_init')} -> "
            f"{err('heldout_photometric_kept')}); ")
