"""``kind: self_supervised``: photometric fine-tuning of the depth network on unlabelled video.

Plugs into the curriculum runner through the stage-kind interface (:mod:`colondepth.train.stage`): the
runner owns the optimizer, schedule, NaN stop, checkpoints and resume; this module says what the data
are, what one step computes and how to validate.

Data
    Every ``sources`` entry of the stage is opened as :class:`~colondepth.datasets.base.Sequence` objects:
    ``video`` / ``frames`` through :func:`colondepth.datasets.video.read_video` (stage ``crop`` and
    ``intrinsics``; field-of-view mask; near-static frames dropped and clips split at cuts by
    :func:`~colondepth.datasets.video.select_clips`), ``colondepth`` / ``simcol3d`` / ``c3vd`` through
    :func:`colondepth.datasets.registry.open_sequences` (all frames, ground truth used for validation
    only).  Snippets are ``(t - k, t, t + k)`` with ``k = frame_skip`` kept frames; ``frame_skip: auto`` picks
    ``k`` per video, the smallest whose views move ``target_motion_px`` on the network grid
    (:func:`~colondepth.datasets.clips.adaptive_frame_skip`).  Frames go through the letterbox of
    inference onto the depth network's input grid (:class:`~colondepth.datasets.clips.SnippetDataset`,
    ``DepthNetConfig.input_grid``: aspect ratio kept, zero padding outside the FOV mask); the pose network
    sees the same frames.

Held-out split and keeping the better model
    :func:`colondepth.datasets.clips.split_heldout` holds out about 12.5 % of every video's snippets (at least
    3) in contiguous blocks spread over the video, and drops the training snippets that share a frame with
    them, so no held-out frame is ever trained on; a video of fewer than about 14 snippets is not split (with
    a warning).  Validation runs on the held-out snippets and reports ``val_loss`` (the full training
    objective, for plateau promotion) and ``heldout_photometric``: the stage's photometric term alone (same
    function, options, FOV/specular masks and auto-mask as training; no smoothness, anchor or explainability
    terms, and the learned explainability masks are not applied, since a mask near 0 would hide any error),
    averaged over snippets.  With ``keep_best`` (the default) the reference is the *initial* model: evaluated
    before the first step with the ``init_from`` bundle's pose network when it has one of this stage's
    configuration, otherwise (a fresh pose network is untrained at step 0) after the pose warm-up, when the
    depth network still holds the initial weights bit for bit.  The held-out split is evaluated again every
    ``promotion.eval_every_steps`` steps and at the end; the stage ends with the weights (depth and pose
    networks) of the lowest held-out error, the reference included, and when no fine-tuned evaluation beat the
    reference it ends with the reference and says so in one warning line.

Step
    depth (multi-scale, mm) from the depth network on the target; ``src_from_tgt`` and optional
    explainability masks from a :class:`~colondepth.models.pose_net.PoseNet`; loss =
    ``(ssim_weight + l1_weight) * photometric`` (min reprojection, auto-mask, brightness alignment,
    specular and FOV masks; :func:`colondepth.losses.photometric.photometric_loss`) +
    ``smoothness_weight * sum_s edge_aware_smoothness_s / 2**s`` + ``explainability_weight * BCE(masks, 1)``;
    after the pose warm-up, optionally + ``w_anchor(t) * log_depth_anchor_loss(depth, initial model's depth)``
    (``anchor_weight``, linear decay over ``anchor_decay_steps``) and + ``rehearsal.weight * supervised loss``
    of a synthetic batch with depth (``rehearsal``).  ``freeze_batchnorm`` keeps the depth network's BatchNorm
    layers in eval mode; ``freeze_encoder_steps`` trains only the decoder for the first joint steps.

Scale
    Photometric losses cannot see a joint scaling of depth and translation.  To keep the metric scale the
    depth network learned from synthetic data, the first :data:`POSE_WARMUP_STEPS` steps (or half of a
    ``steps`` budget if smaller) train only the pose network, with the depth network frozen; the mean
    predicted translation norm over the last quarter of that warm-up becomes a fixed per-frame-step
    translation scale (see docs/finetune.md for the measured warm-up).  With ``translation_normalisation``
    (Pinard et al. 2018) every later step rescales the predicted translations to that norm, which pins the
    depth scale against drift.  A warm-up mean below ``min_translation_norm_mm`` (default
    :data:`MIN_TRANSLATION_NORM_MM`) turns normalisation off for the stage, with a warning; a warm-up mean of 0
    always does.  ``train_depth: false`` makes the whole stage a warm-up: only the pose
    network learns, its translations take the frozen depth network's (metric) scale, and no normalisation is
    applied: how a pose network is trained for a finished depth model.

    ``depth_scale_anchor`` lets the scale follow the video instead of a constant speed: after the warm-up every
    predicted depth map is rescaled, per image, so that its median over the field of view equals the initial
    (supervised) model's median on the same frame (a factor without gradient), and ``(log median - log
    initial median)^2`` keeps the network's own output at that scale.  The photometric loss then sees depth
    whose scale is the supervised model's on every snippet, translations are learned at that scale and are
    not normalised (``translation_normalisation`` is ignored), and a paused camera may predict zero motion.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from colondepth.errors import UserError
from colondepth.train.stage import load_init_weights, resolve_stage_path

#: Steps at the start of a stage during which only the pose network learns (see module doc).
POSE_WARMUP_STEPS = 100
#: The validation split before the held-out blocks of :func:`colondepth.datasets.clips.split_heldout` (every
#: VAL_EVERY-th snippet); benchmarks/bench_finetune.py still scores its real-video proxies on it.
VAL_EVERY = 10
SNIPPET_LENGTH = 3
#: A warm-up mean translation below this (mm per frame step) is treated as "the pose network did not learn".
MIN_TRANSLATION_NORM_MM = 1e-2
#: A fine-tuned evaluation is a keep-best candidate only when its photometric error counts at least this share
#: of the held-out pixels the initial model's counted: the masked mean ignores pixels without a valid warp, and
#: a diverged model whose warps all leave the field of view scores 0 (measured: lr 0.03 on a tiny model).
MIN_HELDOUT_COVERAGE_RATIO = 0.9
#: The kept fine-tuned model must explain the held-out frames at least this much better (relative) than the
#: un-warped neighbours, or the stage warns that the video does not confirm it.  On the sinus video the default
#: fine-tuning kept a model 0.6 % below no motion (0.01229 against 0.01237; its pose network had collapsed to no
#: motion, its depth got worse: 0.176 -> 0.207 at the SfM points), the shipped model's warp being 5x worse (0.059).
NO_MOTION_MARGIN = 0.05


def set_batchnorm_eval(net: torch.nn.Module) -> int:
    """Put every BatchNorm layer of ``net`` in eval mode (running statistics used and no longer updated);
    returns how many layers there are.  The affine weights still train."""
    n = 0
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n


def open_stage_sequences(stage, base_dir: Path, min_frames: int = SNIPPET_LENGTH):
    """``(sequences, clips, where)`` for the stage's sources; ``clips[s]`` is a list of frame-index lists and
    ``where[s]`` names sequence ``s`` for messages (its video file or frame folder; ``folder: name`` for the
    sequences of a dataset)."""
    import warnings

    from colondepth.datasets.registry import open_sequences
    from colondepth.datasets.video import read_video, select_clips

    sequences, clips, where = [], [], []
    for src in stage.sources:
        path = resolve_stage_path(src.path, base_dir)
        if src.format in ("video", "frames"):
            intr = resolve_stage_path(stage.intrinsics, base_dir) if stage.intrinsics else None
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                seq = read_video(path, crop=stage.crop, intrinsics=intr, min_frames=min_frames)
            sequences.append(seq)
            clips.append(select_clips(seq, min_clip_frames=min_frames))
            where.append(str(path))
        else:
            for seq in open_sequences(path, src.format):
                sequences.append(seq)
                clips.append([list(range(seq.num_frames))])
                where.append(f"{path}: {seq.name}")
    return sequences, clips, where


def _frame_abs_rel(*, gt_mm: torch.Tensor, pred_mm: torch.Tensor) -> tuple[float, float]:
    """``(abs_rel, abs_rel after per-frame median scaling)`` of one frame's valid pixels, both from
    :func:`colondepth.eval.depth_metrics.depth_errors` (median scaling as ``colondepth evaluate`` does it,
    :func:`colondepth.eval.alignment.align_depth`); NaN when the prediction is not finite and positive there."""
    from colondepth.eval.alignment import align_depth
    from colondepth.eval.depth_metrics import PRED_FLOOR_MM, depth_errors

    g = gt_mm.detach().double().cpu().numpy()
    p = pred_mm.detach().double().cpu().numpy()
    if not (np.all(np.isfinite(p)) and np.median(p) > 0):
        return float("nan"), float("nan")
    metric = depth_errors(gt_mm=g, pred_mm=np.maximum(p, PRED_FLOOR_MM))["abs_rel"]
    aligned, _ = align_depth(p, g, "median")
    return metric, depth_errors(gt_mm=g, pred_mm=np.maximum(aligned, PRED_FLOOR_MM))["abs_rel"]


class SelfSupervisedKind:
    """Stage kind ``self_supervised`` (see the module docstring)."""

    def __init__(self, ctx):
        from colondepth.losses.photometric import PhotometricOptions
        from colondepth.models.pose_net import PoseNet, PoseNetConfig

        self.ctx = ctx
        stage = ctx.stage
        net = ctx.net
        # Weights the net holds now: the previous stage's, or the interrupted run's on --resume (restored
        # in load_state_dict, which the runner calls only when resuming).
        self._held_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        init_path = init_payload = None
        if stage.init_from != "previous":
            init_path = resolve_stage_path(stage.init_from, ctx.curriculum_dir)
            init_payload = load_init_weights(net, init_path)

        n_scales = int(net.config.num_scales)
        n_levels = min(5, len(net.config.encoder_channels))
        pose_channels = (16, 32, 64, 128, 256)[:n_levels]
        if n_levels < 2:
            pose_channels = (16, 32)
        self.explain_weight = float(stage.loss.explainability_weight)
        self.pose_config = PoseNetConfig(
            num_sources=SNIPPET_LENGTH - 1, channels=pose_channels,
            num_mask_scales=min(n_scales, len(pose_channels)) if self.explain_weight > 0 else 0,
        )
        self.pose_net = PoseNet(self.pose_config).to(ctx.device)
        self.init_pose_loaded = False
        self._init_translation_norm_mm: float | None = None
        if init_payload is not None:  # a model bundle with a pose network: start from it as well
            self._init_pose_from(init_payload.get("pose"), init_path)
        self.pose_model = self.pose_net
        if ctx.world_size > 1:  # average pose gradients across processes, like the runner does for depth
            from torch.nn.parallel import DistributedDataParallel

            self.pose_model = DistributedDataParallel(
                self.pose_net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        w_ssim, w_l1 = float(stage.loss.ssim_weight), float(stage.loss.l1_weight)
        if w_ssim + w_l1 <= 0:
            raise UserError(f"stage {stage.name}: loss.ssim_weight + loss.l1_weight must be positive")
        self.photo_weight = w_ssim + w_l1
        self.options = PhotometricOptions(
            alpha=w_ssim / (w_ssim + w_l1),
            reduction="min" if stage.min_reprojection else "mean",
            automask=bool(stage.automask),
            brightness="affine" if stage.brightness_alignment else "none",
            invalid_warp=stage.invalid_warp,
            light=stage.light,
            light_gamma=float(stage.light_gamma),
        )
        self.smooth_weight = float(stage.loss.smoothness_weight)
        budget_steps = stage.budget.steps
        self.warmup_steps = POSE_WARMUP_STEPS if budget_steps is None else min(POSE_WARMUP_STEPS,
                                                                             max(1, budget_steps // 2))
        self.steps_done = 0
        self.trans_sum = 0.0
        self.trans_count = 0
        self.translation_norm_mm: float | None = None
        self.scale_unset = False
        # prior anchoring: a frozen copy of the initial (supervised) depth network
        self.anchor_weight = float(stage.anchor_weight)
        self.anchor_decay_steps = int(stage.anchor_decay_steps)
        self.anchor_net = None
        self.depth_scale_anchor = bool(stage.depth_scale_anchor) and bool(stage.train_depth)
        #: translations rescaled to the warm-up's norm after the warm-up (off with the depth-scale anchor)
        self.normalise_translation = bool(stage.translation_normalisation) and not self.depth_scale_anchor
        if self.anchor_weight > 0 or self.depth_scale_anchor:
            self.anchor_net = copy.deepcopy(net).eval()
            for p in self.anchor_net.parameters():
                p.requires_grad_(False)
        # CoopNet-style co-training: an optical-flow network and the non-rigid mask (colondepth.losses.flow)
        self.coop = stage.coopnet
        self.flow_net = None
        if self.coop.enabled:
            from colondepth.models.flow_net import FlowNet, FlowNetConfig

            self.flow_net = FlowNet(FlowNetConfig(features=tuple(self.coop.features))).to(ctx.device)
        self.freeze_encoder_steps = int(stage.freeze_encoder_steps)
        self.rehearsal_weight = float(stage.rehearsal.weight)
        self._rehearsal_iter = None
        self._rehearsal_loader = None
        # keeping the better model (module docstring): switched off in make_data when nothing is held out
        self.keep_best = bool(stage.keep_best)
        self.eval_every = int(stage.promotion.eval_every_steps)
        self.reference_step = 0 if self.init_pose_loaded else self.warmup_steps
        self.heldout_init: float | None = None  # held-out error of the reference (initial) model
        self.coverage_init: float | None = None  # share of its held-out FOV pixels that error counted
        # the same error of the un-warped neighbours ("no motion"): a model whose warp does not beat it has not
        # shown that the video supports its depth and poses (a pose network collapsing to no motion does this)
        self.heldout_identity: float | None = None
        self.fine_tuned_evals = 0  # fine-tuned evaluations seen, and those below the coverage floor
        self.low_coverage_evals = 0
        self._last_observed: int | None = None
        # lowest candidate error once the depth network trains (after the pose warm-up), and its step
        self.heldout_best_joint: float | None = None
        self.heldout_best_joint_step: int | None = None
        self.heldout_best: float | None = None  # lowest held-out error of a fine-tuned evaluation
        self.heldout_best_step: int | None = None
        self.kept_step: int | None = None  # stage step of the kept weights (reference_step: the initial model)
        self.kept_error: float | None = None
        self._kept_weights: dict | None = None  # {"depth", "pose", "translation_norm_mm"}
        self.finished_record: dict | None = None  # finish_stage's summary, for the model card

    # -- interface -----------------------------------------------------------------------------------------
    def make_data(self):
        from colondepth.datasets.clips import SnippetDataset, make_snippets, require_snippets
        from colondepth.train.stage import StageData

        stage = self.ctx.stage
        sequences, clips, self.sequence_names = open_stage_sequences(stage, self.ctx.curriculum_dir)
        if stage.pose_supervision_weight > 0:
            missing = [name for name, seq in zip(self.sequence_names, sequences) if not seq.has_poses]
            if missing:
                raise UserError(f"stage {stage.name}: pose_supervision_weight {stage.pose_supervision_weight:g} "
                                f"needs poses, but {missing[0]} has none ({len(missing)} sequence(s) without); "
                                "use synthetic sources or set pose_supervision_weight: 0")
        grid = self.ctx.net.config.input_grid  # the letterbox of inference (DepthNetConfig.input_grid)
        self.frame_skips = self._frame_skips(sequences, clips, grid)
        snippets = [sn for s, k in enumerate(self.frame_skips) for c in clips[s]
                    for sn in make_snippets(c, SNIPPET_LENGTH, k, sequence=s)]
        names = ", ".join(s.path for s in stage.sources)
        require_snippets(snippets, f"stage {stage.name} ({names})", SNIPPET_LENGTH, stage.frame_skip)
        train, val = self._split(snippets)
        if self.rehearsal_weight > 0:
            self._make_rehearsal()
        bs = int(stage.batch_size) * max(1, int(self.ctx.world_size))
        per_epoch = max(1, -(-len(train) // bs))
        self.total_steps = int(stage.budget.steps) if stage.budget.steps is not None else max(
            1, int(np.ceil(stage.budget.epochs * per_epoch)))
        return StageData(
            train=SnippetDataset(sequences, train, grid),
            val=SnippetDataset(sequences, val, grid) if val else None,
        )

    def _frame_skips(self, sequences, clips, grid) -> list[int]:
        """The frame skip of every sequence: the stage's ``frame_skip``, or with ``frame_skip: auto`` the one
        :func:`colondepth.datasets.clips.adaptive_frame_skip` measures on the sequence for
        ``target_motion_px`` on the network grid (one line per video says what was chosen)."""
        import warnings

        from colondepth.datasets.clips import adaptive_frame_skip

        stage = self.ctx.stage
        if stage.frame_skip != "auto":
            return [int(stage.frame_skip)] * len(sequences)
        skips = []
        for seq, seq_clips, name in zip(sequences, clips, self.sequence_names):
            box = grid.layout(seq.intrinsics.size)
            choice = adaptive_frame_skip(seq, seq_clips, stage.target_motion_px,
                                         scale=box.resized.width / box.frame.width, length=SNIPPET_LENGTH)
            skips.append(choice.skip)
            if not np.isfinite(choice.motion_px):
                warnings.warn(f"stage {stage.name}: {name}: no trackable texture to measure its motion; "
                              "frame skip 1 (set frame_skip to an integer to choose it)", stacklevel=2)
            elif not choice.reached:
                warnings.warn(f"stage {stage.name}: {name}: moves {choice.motion_px:.1f} px at the largest frame "
                              f"skip allowed ({choice.skip}), short of target_motion_px "
                              f"{stage.target_motion_px:g}; a longer video gives more parallax", stacklevel=2)
            if self.ctx.rank == 0:
                print(f"{name}: frame skip {choice.skip} (median motion {choice.motion_px:.1f} px on the "
                      f"network grid, target {stage.target_motion_px:g})", flush=True)
        return skips

    def _split(self, snippets) -> tuple[list, list]:
        """``(train, held-out)`` snippets (:func:`colondepth.datasets.clips.split_heldout`), with a warning naming
        every video too short to hold snippets out; ``keep_best`` is switched off when nothing is held out."""
        import warnings

        from colondepth.datasets.clips import split_heldout

        split = split_heldout(snippets)
        stage = self.ctx.stage
        self.heldout_snippets, self.guard_snippets = split.heldout, split.guard
        if split.unsplit:
            counts = {s: sum(1 for sn in snippets if sn.sequence == s) for s in split.unsplit}
            names = ", ".join(f"{self.sequence_names[s]} ({counts[s]} snippet{'s' if counts[s] != 1 else ''})"
                              for s in split.unsplit)
            what = ("its frames all train and are not checked" if split.heldout else
                    "nothing is held out, so the stage cannot check that fine-tuning helps (keep_best is off)")
            if self.keep_best or split.heldout:
                warnings.warn(f"stage {stage.name}: {names}: too short for a held-out split; {what}", stacklevel=2)
        if not split.heldout:
            self.keep_best = False
        return split.train, split.heldout

    def _make_rehearsal(self) -> None:
        """Supervised frames of the stage's ``rehearsal`` levels/datasets (training split), cycled forever."""
        from colondepth.train.data import SupervisedFrames
        from colondepth.train.steps import loss_weights

        reh = self.ctx.stage.rehearsal
        frames = [f for s in self.ctx.pool.stage_sources(reh) for f in s.train]
        if not frames:
            raise UserError(f"stage {self.ctx.stage.name}: rehearsal found no training frames in "
                            f"{reh.levels + reh.datasets}; generate at least 2 sequences per level")
        hw = self.ctx.net.config.input_size.as_hw()
        ds = SupervisedFrames(frames, hw, hflip=True, vflip=True, seed=self.ctx.seed)
        g = torch.Generator().manual_seed(int(self.ctx.seed) + 104729)
        self._rehearsal_loader = torch.utils.data.DataLoader(
            ds, batch_size=int(reh.batch_size), shuffle=True, drop_last=len(ds) >= int(reh.batch_size),
            generator=g, num_workers=0)
        self.rehearsal_weights = loss_weights(reh.loss)
        self.rehearsal_frames = len(frames)

    def _rehearsal_batch(self) -> dict:
        if self._rehearsal_iter is not None:
            batch = next(self._rehearsal_iter, None)
            if batch is not None:
                return batch
        self._rehearsal_iter = iter(self._rehearsal_loader)
        return next(self._rehearsal_iter)

    def anchor_weight_at(self, joint_step: int) -> float:
        """Weight of the anchoring term at ``joint_step`` steps after the pose warm-up (linear decay)."""
        if self.anchor_weight <= 0:
            return 0.0
        if self.anchor_decay_steps <= 0:
            return self.anchor_weight
        return self.anchor_weight * max(0.0, 1.0 - joint_step / self.anchor_decay_steps)

    def _set_encoder_trainable(self, flag: bool) -> None:
        for p in self.ctx.net.encoder.parameters():
            p.requires_grad_(flag)

    def parameters(self) -> list:
        flow = [] if self.flow_net is None else list(self.flow_net.parameters())
        if not self.ctx.stage.train_depth:
            return list(self.pose_net.parameters()) + flow
        return list(self.ctx.net.parameters()) + list(self.pose_net.parameters()) + flow

    def _coop(self, tgt, src, K, fov, depth, pose, use_mask: bool) -> tuple[torch.Tensor, dict, torch.Tensor | None]:
        """The flow network's loss on every (target, source) pair, and, with ``use_mask``, the rigid mask
        ``(B, N, H, W)`` bool for the photometric loss (CoopNetSection)."""
        from colondepth.losses.flow import flow_photometric_loss, nonrigid_mask, rigid_flow

        c = self.coop
        N = src.shape[1]
        loss = tgt.new_zeros(())
        parts: dict = {}
        masks = []
        for n in range(N):
            flow = self.flow_net(tgt, src[:, n])
            l, info = flow_photometric_loss(tgt, src[:, n], flow, fov, smoothness_weight=c.flow_smoothness)
            loss = loss + l / N
            parts["flow_photometric"] = parts.get("flow_photometric", 0.0) + info["flow_photometric"] / N
            if use_mask:
                rigid = rigid_flow(depth.detach(), K, pose[:, n].detach())
                nonrigid = nonrigid_mask(flow, rigid, c.threshold_px, c.threshold_rel) & fov.to(torch.bool)
                share = nonrigid.flatten(1).float().sum(1) / fov.flatten(1).float().sum(1).clamp(min=1.0)
                trusted = (share <= c.max_nonrigid_fraction).view(-1, 1, 1, 1)
                masks.append(~(nonrigid & trusted))
                parts["nonrigid_fraction"] = parts.get("nonrigid_fraction", 0.0) + float(
                    (nonrigid & trusted).float().mean()) / N
        return loss, parts, (torch.cat(masks, 1) if masks else None)

    def _forward(self, batch, train_depth: bool):
        dev = self.ctx.device
        tgt = batch["target"].to(dev)
        src = batch["sources"].to(dev)
        K = batch["K"].to(dev)
        fov = batch["fov_mask"].to(dev)
        net = self.ctx.net
        x = net.normalise(tgt, K)  # the frames' own camera (ray channels of models that take them)
        if train_depth:
            if self.ctx.stage.freeze_batchnorm:
                set_batchnorm_eval(net)
            depths = self.ctx.model(x)
        else:
            was_training = net.training
            net.eval()
            with torch.no_grad():
                depths = net(x)
            net.train(was_training)
        pose_out = self.pose_model(tgt, src)
        return tgt, src, K, fov, depths, pose_out

    def _losses(self, tgt, src, K, fov, depths, pose_out, src_from_tgt, rigid_mask=None):
        from colondepth.losses.photometric import explainability_regularization, photometric_loss
        from colondepth.losses.smoothness import edge_aware_smoothness
        from colondepth.conventions import ImageSize
        from colondepth.geometry.letterbox import resize_image
        from colondepth.geometry.projection import depth_to_disp

        masks = pose_out.masks if self.explain_weight > 0 else None
        if masks is not None:
            masks = masks[: len(depths)]
            depths_used = depths[: len(masks)]
        else:
            depths_used = depths
        photo, info = photometric_loss(tgt, src, depths_used, src_from_tgt, K, fov_mask=fov,
                                       explainability=masks, options=self.options, rigid_mask=rigid_mask)
        smooth = tgt.new_zeros(())
        for s, d in enumerate(depths):
            hw = ImageSize(*d.shape[-2:])
            img, m = resize_image(tgt, hw, "image"), resize_image(fov, hw, "nearest")
            smooth = smooth + edge_aware_smoothness(depth_to_disp(d), img, m) / (2 ** s)
        total = self.photo_weight * photo + self.smooth_weight * smooth
        parts = {"photometric": float(photo.detach()), "smoothness": float(smooth.detach()),
                 "automask_fraction": info["automask_fraction"], "valid_warp_fraction": info["valid_warp_fraction"]}
        if masks is not None:
            reg = explainability_regularization(masks)
            total = total + self.explain_weight * reg
            parts["explainability"] = float(reg.detach())
        return total, parts

    def _initial_depth(self, tgt: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        """The initial (supervised) model's depth (B, 1, H, W) mm of the target frames, no gradient."""
        with torch.no_grad():
            return self.anchor_net(self.ctx.net.normalise(tgt, K))[0]

    def _anchor_scale(self, depths: list, init: torch.Tensor, fov: torch.Tensor) -> tuple[list, torch.Tensor]:
        """The depth-scale anchor (module docstring): ``(depths rescaled per image, gauge loss)``."""
        from colondepth.losses.photometric import median_scale_to

        scale, gauge = median_scale_to(depths[0], init, fov)
        return [d * scale for d in depths], gauge

    def step(self, batch) -> tuple[torch.Tensor, dict]:
        from colondepth.losses.photometric import normalize_translation

        # a pose-only stage (train_depth: false) stays in the warm-up: frozen depth, no normalisation
        warm = self.steps_done < self.warmup_steps or not self.ctx.stage.train_depth
        if self.freeze_encoder_steps > 0:
            self._set_encoder_trainable(
                not warm and self.steps_done - self.warmup_steps >= self.freeze_encoder_steps)
        tgt, src, K, fov, depths, pose_out = self._forward(batch, train_depth=not warm)
        pose = pose_out.src_from_tgt
        t_norm = float(pose[..., :3, 3].detach().norm(dim=-1).mean())
        if warm:
            if self.steps_done >= (3 * self.warmup_steps) // 4:
                self.trans_sum += t_norm
                self.trans_count += 1
        elif self.normalise_translation and not self.scale_unset:
            self._settle_translation_scale()
            if self.translation_norm_mm is not None:
                pose = normalize_translation(pose, self.translation_norm_mm)
        init = None
        gauge = None
        if not warm and self.depth_scale_anchor:
            init = self._initial_depth(tgt, K)
            depths, gauge = self._anchor_scale(depths, init, fov)
        coop_loss, coop_parts, rigid_mask = None, {}, None
        if self.flow_net is not None:  # the mask waits for the pose warm-up (the flow learns meanwhile)
            coop_loss, coop_parts, rigid_mask = self._coop(tgt, src, K, fov, depths[0], pose, use_mask=not warm)
        total, parts = self._losses(tgt, src, K, fov, depths, pose_out, pose, rigid_mask=rigid_mask)
        if coop_loss is not None:
            total = total + float(self.coop.flow_weight) * coop_loss
            parts.update(coop_parts)
        if gauge is not None:
            total = total + gauge
            parts["depth_scale_gauge"] = float(gauge.detach())
        if self.ctx.stage.pose_supervision_weight > 0:
            from colondepth.losses.pose import relative_pose_loss

            sup = relative_pose_loss(pose_out.src_from_tgt, batch["src_from_tgt"].to(tgt.device),
                                     self.ctx.stage.pose_supervision_rotation_mm)
            total = total + float(self.ctx.stage.pose_supervision_weight) * sup
            parts["pose_supervision"] = float(sup.detach())
        if not warm:
            from colondepth.losses.photometric import log_depth_anchor_loss

            joint = self.steps_done - self.warmup_steps
            w_anchor = self.anchor_weight_at(joint)
            if w_anchor > 0:
                init = self._initial_depth(tgt, K) if init is None else init
                anchor = log_depth_anchor_loss(depths[0], init, fov)
                total = total + w_anchor * anchor
                parts["anchor"] = float(anchor.detach())
                parts["anchor_weight"] = w_anchor
            if self.rehearsal_weight > 0:
                from colondepth.train.steps import supervised_step

                sup, _ = supervised_step(self.ctx.model, self.ctx.net, self._rehearsal_batch(),
                                         self.rehearsal_weights, self.ctx.device)
                total = total + self.rehearsal_weight * sup
                parts["rehearsal"] = float(sup.detach())
        self.steps_done += 1
        parts["translation_mm"] = t_norm
        parts["pose_warmup"] = 1.0 if warm else 0.0
        return total, parts

    def _settle_translation_scale(self) -> None:
        """Fix the translation scale from the pose warm-up (once, after it; see the module docstring)."""
        stage = self.ctx.stage
        if (self.translation_norm_mm is not None or self.scale_unset or not self.normalise_translation
                or not stage.train_depth or self.steps_done < self.warmup_steps):
            return
        c = self.trans_sum / max(self.trans_count, 1)
        if c <= 0 or c < float(stage.min_translation_norm_mm):
            import warnings

            warnings.warn(f"stage {stage.name}: the pose network barely moved during its "
                          f"{self.warmup_steps}-step warm-up (mean translation {c:.4f} mm, under "
                          f"min_translation_norm_mm {float(stage.min_translation_norm_mm):g}); translation "
                          "normalisation is off for this stage; give the stage more steps", stacklevel=3)
            self.scale_unset = True
        else:
            self.translation_norm_mm = c

    def _eval_translation_norm(self) -> float | None:
        """The translation norm validation applies: the stage's once fixed; before the first step, that of the
        ``init_from`` bundle's pose network (the initial model as it was saved)."""
        if self.steps_done == 0 and self.init_pose_loaded:
            return self._init_translation_norm_mm
        return self.translation_norm_mm if self.normalise_translation else None

    def _heldout_photometric(self, tgt, src, K, fov, depths, pose_out, pose) -> tuple[list, list]:
        """Per snippet of the batch: the stage's photometric term (no regularisers, no explainability masks)
        and the share of field-of-view pixels it counted."""
        from colondepth.losses.photometric import photometric_loss

        n_scales = len(pose_out.masks) if self.explain_weight > 0 and pose_out.masks is not None else len(depths)
        errors, coverage = [], []
        for b in range(len(tgt)):
            sl = slice(b, b + 1)
            photo, info = photometric_loss(tgt[sl], src[sl], [d[sl] for d in depths[:n_scales]], pose[sl], K[sl],
                                           fov_mask=fov[sl], explainability=None, options=self.options)
            errors.append(float(photo))
            coverage.append(float(info["mask"].sum()) / max(1.0, float(fov[sl].sum())))
        return errors, coverage

    @torch.no_grad()
    def validate(self, loader) -> dict[str, float]:
        from colondepth.losses.photometric import normalize_translation

        net, pose_net = self.ctx.net, self.pose_net
        was = (net.training, pose_net.training)
        net.eval()
        pose_net.eval()
        if self.steps_done >= self.warmup_steps and self.normalise_translation:
            self._settle_translation_scale()  # the reference after the warm-up uses the scale of later steps
        t_norm = self._eval_translation_norm()
        losses, abs_rel, abs_rel_med, n = [], [], [], 0
        photo, coverage, pose_err, identity = [], [], [], []
        try:
            for batch in loader:
                tgt, src, K, fov, depths, pose_out = self._forward(batch, train_depth=True)
                pose = pose_out.src_from_tgt
                if t_norm is not None:
                    pose = normalize_translation(pose, t_norm)
                if self.depth_scale_anchor:  # as in training (the initial model is its own reference)
                    depths, _ = self._anchor_scale(depths, self._initial_depth(tgt, K), fov)
                total, _ = self._losses(tgt, src, K, fov, depths, pose_out, pose)
                losses.append(float(total) * len(tgt))
                n += len(tgt)
                e, c = self._heldout_photometric(tgt, src, K, fov, depths, pose_out, pose)
                photo += e
                coverage += c
                still = torch.eye(4, dtype=pose.dtype, device=pose.device).expand_as(pose).contiguous()
                identity += self._heldout_photometric(tgt, src, K, fov, depths, pose_out, still)[0]
                if "src_from_tgt" in batch:  # exact poses (synthetic video): the raw network's pose error
                    from colondepth.losses.pose import relative_pose_loss

                    pose_err.append(float(relative_pose_loss(
                        pose_out.src_from_tgt, batch["src_from_tgt"].to(tgt.device),
                        self.ctx.stage.pose_supervision_rotation_mm)) * len(tgt))
                if "depth_mm" in batch:
                    gt = batch["depth_mm"].to(tgt.device)
                    pred = depths[0]
                    for b in range(len(gt)):
                        v = (gt[b] > 0) & torch.isfinite(gt[b]) & fov[b]
                        if v.sum() < 10:
                            continue
                        metric, median_scaled = _frame_abs_rel(gt_mm=gt[b][v], pred_mm=pred[b][v])
                        abs_rel.append(metric)
                        abs_rel_med.append(median_scaled)
        finally:
            net.train(was[0])
            pose_net.train(was[1])
        out = {"val_loss": sum(losses) / max(n, 1)}
        if photo:
            out["heldout_photometric"] = float(np.mean(photo))
            out["heldout_coverage"] = float(np.mean(coverage))
            out["heldout_photometric_identity"] = float(np.mean(identity))
        if pose_err:
            out["val_pose_error_mm"] = sum(pose_err) / max(n, 1)
        if abs_rel:
            out["val_abs_rel"] = float(np.mean(abs_rel))
            out["val_abs_rel_median_scaled"] = float(np.mean(abs_rel_med))
        return out

    # -- keeping the better model (driven by the runner: StageRunner.run_stage) ------------------------------
    def validation_due(self, stage_step: int) -> bool:
        """Whether the runner should validate after ``stage_step`` steps (0: before the first): the reference
        point, the end of the pose warm-up (the last weights with the initial depth network) and every
        ``promotion.eval_every_steps`` after the reference, when ``keep_best`` is on."""
        if not self.keep_best:
            return False
        return stage_step in (self.reference_step, self.warmup_steps) or (stage_step > self.reference_step
                                                                        and stage_step % self.eval_every == 0)

    def _snapshot(self, translation_norm_mm: float | None) -> dict:
        return {"depth": {k: v.detach().cpu().clone() for k, v in self.ctx.net.state_dict().items()},
                "pose": {k: v.detach().cpu().clone() for k, v in self.pose_net.state_dict().items()},
                "translation_norm_mm": -1.0 if translation_norm_mm is None else float(translation_norm_mm)}

    def observe_validation(self, stage_step: int, metrics: dict) -> dict:
        """Take the validation of the weights after ``stage_step`` steps: the reference (initial) model at the
        reference point, afterwards a candidate kept when its held-out error is below every earlier one.
        Returns the keep-best keys for the validation record."""
        err, cov = metrics.get("heldout_photometric"), metrics.get("heldout_coverage")
        if not self.keep_best or err is None or stage_step < self.reference_step:
            return {}
        if stage_step == self.reference_step and self.heldout_init is None:
            self.heldout_init, self.coverage_init = float(err), float(cov)
            ident = metrics.get("heldout_photometric_identity")
            self.heldout_identity = None if ident is None else float(ident)
            self.kept_step, self.kept_error = stage_step, float(err)
            t = self._eval_translation_norm() if stage_step == 0 else self.translation_norm_mm
            self._kept_weights = self._snapshot(t)
            return self._keep_best_record()
        if stage_step <= self.reference_step or self.heldout_init is None:
            return {}
        if stage_step == self._last_observed:
            return self._keep_best_record()  # the same weights validated twice (plateau and end of stage)
        self._last_observed = stage_step
        self.fine_tuned_evals += 1
        eligible = bool(np.isfinite(err)) and float(cov) >= MIN_HELDOUT_COVERAGE_RATIO * self.coverage_init
        if not eligible:
            self.low_coverage_evals += 1
        else:
            if self._depth_trains_at(stage_step) and (self.heldout_best_joint is None or err < self.heldout_best_joint):
                self.heldout_best_joint, self.heldout_best_joint_step = float(err), int(stage_step)
            if self.heldout_best is not None and err >= self.heldout_best:
                return {**self._keep_best_record(), "heldout_candidate": eligible}
            self.heldout_best, self.heldout_best_step = float(err), int(stage_step)
            if not np.isfinite(self.kept_error) or err < self.kept_error:
                self.kept_step, self.kept_error = int(stage_step), float(err)
                self._kept_weights = self._snapshot(self.translation_norm_mm)
        return {**self._keep_best_record(), "heldout_candidate": eligible}

    def _depth_trains_at(self, stage_step: int) -> bool:
        """Whether the depth weights after ``stage_step`` steps may differ from the initial ones."""
        return bool(self.ctx.stage.train_depth) and stage_step > self.warmup_steps

    def _kept_label(self):
        if self.kept_step is None:
            return None
        return "init" if self.kept_step == self.reference_step else int(self.kept_step)

    def _keep_best_record(self) -> dict:
        return {"heldout_photometric_init": self.heldout_init, "heldout_photometric_best": self.heldout_best,
                "heldout_best_step": self.heldout_best_step, "kept": self._kept_label(),
                "heldout_photometric_kept": self.kept_error,
                "heldout_reference": "init" if self.reference_step == 0 else "pose_warmup_end",
                "heldout_photometric_identity": self.heldout_identity,
                "heldout_low_coverage_evals": self.low_coverage_evals}

    def finish_stage(self, stage_step: int) -> dict:
        """End of the stage after ``stage_step`` steps: load the kept weights into the depth and pose networks
        (when they are not the last ones) and return the summary for the ``stage_end`` record, with a
        ``warning`` line when fine-tuning never beat the initial model."""
        if not self.keep_best or self._kept_weights is None:
            return {}
        out = self._keep_best_record()
        if self.kept_step != stage_step:
            w = self._kept_weights
            self.ctx.net.load_state_dict(w["depth"])
            self.pose_net.load_state_dict(w["pose"])
            t = float(w["translation_norm_mm"])
            self.translation_norm_mm = None if t < 0 else t
        if self.kept_step == self.reference_step and self.fine_tuned_evals > 0:
            names = ", ".join(sorted({self.sequence_names[sn.sequence] for sn in self.heldout_snippets}))
            last = self.ctx.stage_index == len(self.ctx.curriculum.stages) - 1
            where = "final.pt keeps the initial model" if last else \
                f"stage {self.ctx.stage.name} ends with its initial model"
            ref = "" if self.reference_step == 0 else \
                f" after the {self.reference_step}-step pose warm-up, the initial bundle having no pose network"
            best = (f"best {self.heldout_best:.5f} at step {self.heldout_best_step}" if self.heldout_best is not None
                    else "best: none")
            if self.low_coverage_evals:
                best += (f"; {self.low_coverage_evals} of {self.fine_tuned_evals} evaluations counted under "
                         f"{MIN_HELDOUT_COVERAGE_RATIO:.0%} of the initial model's pixels")
            out["warning"] = (f"fine-tuning did not lower the held-out photometric error of {names} "
                              f"(init {self.heldout_init:.5f}{ref}, {best}): {where}")
        elif (self.kept_step != self.reference_step and not self._depth_trains_at(self.kept_step)
              and self._depth_trains_at(stage_step)):
            # only the pose network's adaptation helped: every evaluation with a fine-tuned depth network was worse
            names = ", ".join(sorted({self.sequence_names[sn.sequence] for sn in self.heldout_snippets}))
            joint = (f"best with fine-tuned depth {self.heldout_best_joint:.5f} at step {self.heldout_best_joint_step}"
                     if self.heldout_best_joint is not None else "no fine-tuned depth evaluation was a candidate")
            out["warning"] = (f"fine-tuning the depth network did not lower the held-out photometric error of {names} "
                              f"(initial depth network {self.kept_error:.5f} at step {self.kept_step}, after the pose "
                              f"warm-up; init {self.heldout_init:.5f}; {joint}): the checkpoint keeps the initial depth "
                              f"network with the pose network of step {self.kept_step}")
        if (self.heldout_identity is not None and self.kept_step != self.reference_step
                and self.kept_error >= (1.0 - NO_MOTION_MARGIN) * self.heldout_identity):  # kept on no real evidence
            names = ", ".join(sorted({self.sequence_names[sn.sequence] for sn in self.heldout_snippets}))
            note = (f"the kept model explains the held-out frames of {names} no better than no motion at all "
                    f"(held-out photometric error {self.kept_error:.5f}, un-warped neighbours "
                    f"{self.heldout_identity:.5f}): the video does not confirm its depth and poses; compare its depth "
                    f"with the initial model's before relying on it")
            out["warning"] = f"{out['warning']}; {note}" if out.get("warning") else note
        out["kept_beats_no_motion"] = (None if self.heldout_identity is None else
                                       bool(self.kept_error < (1.0 - NO_MOTION_MARGIN) * self.heldout_identity))
        out["kept_depth_is_initial"] = not self._depth_trains_at(self.kept_step)
        self.finished_record = dict(out)
        return out

    def card_entry(self) -> dict | None:
        """The ``keep_best`` entry of the model card of the end-of-stage checkpoints (which weights they hold)."""
        return self.finished_record

    def _keep_best_state(self) -> dict:
        if self._kept_weights is None:
            return {}
        return {"heldout_init": self.heldout_init, "coverage_init": self.coverage_init,
                "heldout_identity": -1.0 if self.heldout_identity is None else self.heldout_identity,
                "heldout_best": -1.0 if self.heldout_best is None else self.heldout_best,
                "heldout_best_step": -1 if self.heldout_best_step is None else self.heldout_best_step,
                "fine_tuned_evals": int(self.fine_tuned_evals), "low_coverage_evals": int(self.low_coverage_evals),
                "heldout_best_joint": -1.0 if self.heldout_best_joint is None else self.heldout_best_joint,
                "heldout_best_joint_step": -1 if self.heldout_best_joint_step is None else self.heldout_best_joint_step,
                "kept_step": int(self.kept_step), "kept_error": float(self.kept_error),
                "weights": self._kept_weights}

    def _load_keep_best_state(self, state: dict) -> None:
        if not state:
            return
        self.heldout_init, self.coverage_init = float(state["heldout_init"]), float(state["coverage_init"])
        ident = float(state.get("heldout_identity", -1.0))
        self.heldout_identity = None if ident < 0 else ident
        self.fine_tuned_evals = int(state["fine_tuned_evals"])
        self.low_coverage_evals = int(state["low_coverage_evals"])
        joint_step = int(state.get("heldout_best_joint_step", -1))
        self.heldout_best_joint = None if joint_step < 0 else float(state["heldout_best_joint"])
        self.heldout_best_joint_step = None if joint_step < 0 else joint_step
        self.heldout_best = None if int(state["heldout_best_step"]) < 0 else float(state["heldout_best"])
        self.heldout_best_step = None if int(state["heldout_best_step"]) < 0 else int(state["heldout_best_step"])
        self.kept_step, self.kept_error = int(state["kept_step"]), float(state["kept_error"])
        self._kept_weights = state["weights"]

    def _init_pose_from(self, entry, path) -> None:
        """Load the pose network ``entry`` of the ``init_from`` bundle ``path`` when it has this stage's
        configuration."""
        from colondepth.models.pose_net import PoseNetConfig

        if entry is None:
            return
        if PoseNetConfig(**entry["config"]).to_dict() != self.pose_config.to_dict():
            import warnings

            warnings.warn(f"{path}: its pose network has another configuration than stage "
                          f"{self.ctx.stage.name!r} needs (explainability masks on/off?); a new one is trained",
                          stacklevel=2)
            return
        self.pose_net.load_state_dict(entry["state"])
        self.init_pose_loaded = True
        t = float(entry.get("translation_norm_mm", -1.0))
        self._init_translation_norm_mm = None if t < 0 else t

    def bundle_pose(self) -> dict:
        """The pose network as the ``pose`` entry of the model bundle saved with every checkpoint."""
        from colondepth.models.bundle import pose_entry

        return pose_entry(self.pose_net, self.translation_norm_mm)

    def state_dict(self) -> dict:
        return {
            "pose_net": {k: v.detach().cpu() for k, v in self.pose_net.state_dict().items()},
            "flow_net": None if self.flow_net is None else {k: v.detach().cpu()
                                                             for k, v in self.flow_net.state_dict().items()},
            "pose_config": self.pose_config.to_dict(),
            "steps_done": int(self.steps_done),
            "trans_sum": float(self.trans_sum),
            "trans_count": int(self.trans_count),
            "translation_norm_mm": -1.0 if self.translation_norm_mm is None else float(self.translation_norm_mm),
            "scale_unset": bool(self.scale_unset),
            "keep_best": self._keep_best_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return  # resumed at the very start of this stage: keep the init_from weights
        # resumed mid-stage: the interrupted run's depth weights win over init_from
        self.ctx.net.load_state_dict(self._held_state)
        self.pose_net.load_state_dict(state["pose_net"])
        if self.flow_net is not None and state.get("flow_net") is not None:
            self.flow_net.load_state_dict(state["flow_net"])
        self.steps_done = int(state["steps_done"])
        self.trans_sum = float(state["trans_sum"])
        self.trans_count = int(state["trans_count"])
        t = float(state["translation_norm_mm"])
        self.translation_norm_mm = None if t < 0 else t
        self.scale_unset = bool(state.get("scale_unset", False))
        self._load_keep_best_state(state.get("keep_best") or {})

    def pose_network(self):
        """A copy of the trained :class:`~colondepth.models.pose_net.PoseNet` in eval mode."""
        return copy.deepcopy(self.pose_net).eval()
