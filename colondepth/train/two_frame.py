"""``kind: two_frame``: supervised depth from two frames (DepthNet, Pinard et al. 2017) on synthetic video.

Training pairs come from the stage's levels / datasets (the same train / held-out sequence split as supervised
stages, :class:`colondepth.train.data.DataPool`): every frame ``i`` of a sequence with depth and poses is a
target, its partner ``i + g`` or ``i - g`` with ``g`` in ``frame_gap``; pairs whose camera moved less than
``min_displacement_mm`` (no parallax) or turned more than ``max_rotation_deg`` (a rotation-free stage) are left
out.  Both frames are letterboxed onto the curriculum model's input grid by the shared transform
(:class:`colondepth.datasets.clips.SnippetDataset`); the label is the target's depth times ``D0 / |t|``
(:func:`colondepth.models.two_frame_net.pair_depth_label`), the loss the supervised one
(:func:`colondepth.losses.supervised.supervised_loss`: SILog, L1 on inverse depth, gradient matching).

The kind owns a :class:`~colondepth.models.two_frame_net.TwoFrameDepthNet`: fresh, or the previous two_frame
stage's (``init_from: previous``), or the ``two_frame`` entry of a checkpoint (``init_from: PATH``); it goes
into every checkpoint's bundle (``two_frame`` entry) and into the resume state.  The curriculum's own
(shape-from-shading) depth network is not trained by this stage kind.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from colondepth.errors import UserError
from colondepth.train.stage import StageData, resolve_stage_path

__all__ = ["TwoFrameKind", "pair_snippets"]


def _rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


def pair_snippets(sequences: list, frames_of, gaps: tuple[int, int], min_displacement_mm: float,
                  max_rotation_deg, seed: int):
    """Target/partner snippets (:class:`colondepth.datasets.clips.Snippet` of two frames, target first in time
    order or second) of ``sequences`` (each with ``world_from_cam``): for every frame of ``frames_of(s)`` one
    partner at a gap drawn from ``gaps`` (inclusive, either direction, seeded), kept when the camera moved at
    least ``min_displacement_mm`` and turned at most ``max_rotation_deg`` (None: any)."""
    from colondepth.datasets.clips import Snippet

    rng = np.random.default_rng(seed)
    out = []
    for s, seq in enumerate(sequences):
        T = np.asarray(seq.world_from_cam, dtype=np.float64)
        allowed = set(frames_of(s))
        for i in sorted(allowed):
            g = int(rng.integers(gaps[0], gaps[1] + 1)) * (1 if rng.uniform() < 0.5 else -1)
            j = i + g
            if j not in allowed:
                j = i - g
                if j not in allowed:
                    continue
            rel = np.linalg.solve(T[j], T[i])  # partner_from_target
            if np.linalg.norm(rel[:3, 3]) < min_displacement_mm:
                continue
            if max_rotation_deg is not None and _rotation_deg(rel[:3, :3]) > max_rotation_deg:
                continue
            frames = (i, j) if i < j else (j, i)
            out.append(Snippet(sequence=s, frames=frames, target=frames.index(i)))
    return out


class TwoFrameKind:
    """The ``two_frame`` stage kind (module docstring)."""

    def __init__(self, ctx):
        from colondepth.models.two_frame_net import TwoFrameConfig, TwoFrameDepthNet
        from colondepth.models.depth_net import DepthNetConfig
        from colondepth.train.steps import loss_weights

        self.ctx = ctx
        stage = ctx.stage
        net_cfg = stage.network
        h, w = ctx.net.config.input_size.as_hw()
        depth_cfg = DepthNetConfig(arch="basic_unet", input_height=h, input_width=w, features=list(net_cfg.features),
                                   inputs=list(net_cfg.inputs), min_depth_mm=net_cfg.min_depth_mm,
                                   max_depth_mm=net_cfg.max_depth_mm,
                                   default_fov_deg=float(ctx.net.config.default_fov_deg))
        cfg = TwoFrameConfig(depth=depth_cfg, reference_displacement_mm=net_cfg.reference_displacement_mm)
        torch.manual_seed(int(ctx.seed) + 104729 * int(ctx.stage_index))
        self.net = TwoFrameDepthNet(cfg).to(ctx.device)
        self._init(stage.init_from, cfg)
        self.weights = loss_weights(stage.loss)

    def _init(self, init_from: str, cfg) -> None:
        """Start from the previous two_frame stage's network, a checkpoint's, or fresh (see the module doc)."""
        from colondepth.models.bundle import read_bundle

        ctx = self.ctx
        if init_from == "none":
            return
        if init_from == "previous":
            prev = [i for i in range(ctx.stage_index) if ctx.curriculum.stages[i].kind == "two_frame"]
            if not prev:
                return
            i = prev[-1]
            from colondepth.train.resume import stage_checkpoint_name

            path = ctx.run_dir / "checkpoints" / stage_checkpoint_name(i, ctx.curriculum.stages[i].name)
            if not path.is_file():
                raise UserError(f"stage {ctx.stage.name}: init_from previous needs {path} (the end of stage "
                                f"{ctx.curriculum.stages[i].name}); resume the run from its folder")
        else:
            path = resolve_stage_path(init_from, ctx.curriculum_dir)
        entry = read_bundle(path).get("two_frame")
        if entry is None:
            raise UserError(f"{path}: has no two-frame network to start stage {ctx.stage.name} from; "
                            "use init_from: none or a checkpoint written by a two_frame stage")
        if entry["config"] != cfg.to_dict():
            raise UserError(f"{path}: its two-frame network differs from stage {ctx.stage.name}'s 'network' "
                            "section; give the same network settings or init_from: none")
        self.net.load_state_dict(entry["state"])

    # -- data ----------------------------------------------------------------------------------------------
    def make_data(self) -> StageData:
        from colondepth.datasets.clips import SnippetDataset

        ctx, stage = self.ctx, self.ctx.stage
        sources = ctx.pool.stage_sources(stage)
        data = {}
        for part in ("train", "val"):
            seqs, frames = [], {}  # the sequences in first-use order, their frames of this part
            for r in (f for s in sources for f in getattr(s, part)):
                if id(r.sequence) not in frames:
                    if not r.sequence.has_poses:
                        raise UserError(f"stage {stage.name}: {r.sequence.name} has no camera poses; two-frame "
                                        "training needs synthetic video with poses (colondepth synth)")
                    seqs.append(r.sequence)
                    frames[id(r.sequence)] = set()
                frames[id(r.sequence)].add(r.index)
            pairs = pair_snippets(seqs, lambda k: frames[id(seqs[k])], tuple(stage.frame_gap), stage.min_displacement_mm,
                                  stage.max_rotation_deg, ctx.seed + 31 * ctx.stage_index + (part == "val"))
            data[part] = SnippetDataset(seqs, pairs, self.net.config.input_grid) if pairs else None
        if data["train"] is None:
            raise UserError(f"stage {stage.name}: no training pair (frames {list(stage.frame_gap)} apart, camera "
                            f"moved >= {stage.min_displacement_mm} mm"
                            + (f", turned <= {stage.max_rotation_deg} deg" if stage.max_rotation_deg is not None
                               else "") + "); widen frame_gap or relax the limits")
        return StageData(train=data["train"], val=data["val"])

    def parameters(self) -> list:
        return list(self.net.parameters())

    # -- training ------------------------------------------------------------------------------------------
    def _batch(self, batch):
        from colondepth.models.two_frame_net import pair_depth_label

        dev = self.ctx.device
        tgt, partner = batch["target"].to(dev), batch["sources"][:, 0].to(dev)
        K = batch["K"].to(dev)
        rel = batch["src_from_tgt"][:, 0].to(dev)
        disp = rel[:, :3, 3].norm(dim=-1)
        depth = batch["depth_mm"].to(dev)
        label = pair_depth_label(depth, disp, self.net.two_frame.reference_displacement_mm)
        valid = (depth > 0) & batch["fov_mask"].to(dev)
        c = self.net.config
        valid = valid & (label >= c.min_depth_mm) & (label <= c.max_depth_mm)
        return self.net.inputs(tgt, partner, K), label, valid, disp

    def step(self, batch) -> tuple[torch.Tensor, dict]:
        from colondepth.losses.supervised import supervised_loss

        self.net.train()
        x, label, valid, _ = self._batch(batch)
        pred = self.net(x)
        c = self.net.config
        loss, parts = supervised_loss([pred], label, self.weights, c.min_depth_mm, c.max_depth_mm, valid)
        parts["valid_fraction"] = float(valid.float().mean())
        return loss, parts

    @torch.no_grad()
    def validate(self, loader) -> dict[str, float]:
        """Validation loss and abs_rel of the *metric* depth (prediction times ``|t| / D0`` against the depth)."""
        from colondepth.losses.supervised import supervised_loss

        self.net.eval()
        c = self.net.config
        total, n, rel_err, pix = 0.0, 0, 0.0, 0
        for batch in loader:
            x, label, valid, disp = self._batch(batch)
            pred = self.net(x)
            loss, _ = supervised_loss([pred], label, self.weights, c.min_depth_mm, c.max_depth_mm, valid)
            total += float(loss) * len(x)
            n += len(x)
            scale = (disp / self.net.two_frame.reference_displacement_mm).view(-1, 1, 1, 1)
            gt = label * scale
            err = ((pred * scale - gt).abs() / gt.clamp(min=1e-6))[valid]
            rel_err += float(err.sum())
            pix += int(valid.sum())
        self.net.train()
        if n == 0:
            return {}
        return {"val_loss": total / n, "val_abs_rel": rel_err / pix if pix else math.nan}

    # -- state ---------------------------------------------------------------------------------------------
    def bundle_two_frame(self) -> dict:
        from colondepth.models.bundle import two_frame_entry

        return two_frame_entry(self.net)

    def state_dict(self) -> dict:
        return {"two_frame": {k: v.detach().cpu() for k, v in self.net.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        if state and "two_frame" in state:
            self.net.load_state_dict(state["two_frame"])


class TwoFrameSelfSupervisedKind:
    """``kind: two_frame_self_supervised`` (:class:`colondepth.train.config.TwoFrameSelfSupervisedStage`).

    Snippets of three views (previous, target, next; ``frame_skip`` apart) of the stage's videos, letterboxed
    like inference.  The pose network predicts both neighbours' ``src_from_tgt``; with
    ``translation_normalisation`` each snippet's translations are rescaled to the mean norm the *initial*
    pose network (a frozen copy) predicts for it, the measured speed (Pinard et al. 2018), so the depth scale
    cannot drift.  The two-frame network sees the target and its next view; its output times ``|t_next| / D0``
    is the target's depth, which must warp both neighbours into the target (``photometric_loss``: SSIM + L1,
    per-pixel minimum over the sources, affine brightness alignment) plus edge-aware disparity smoothness.
    Held-out snippets (``split_heldout``) give ``val_loss``; sources with depth add the median-scaled abs_rel.
    The bundle's depth network is loaded into the run's (the curriculum's ``model`` must match it) and saved
    unchanged with the trained two-frame and pose networks.
    """

    def __init__(self, ctx):
        from colondepth.losses.photometric import PhotometricOptions
        from colondepth.models.bundle import build_pose, build_two_frame, read_bundle

        self.ctx = ctx
        stage = ctx.stage
        path = resolve_stage_path(stage.init_from, ctx.curriculum_dir)
        payload = read_bundle(path)
        if payload.get("two_frame") is None or payload.get("pose") is None:
            raise UserError(f"{path}: stage {stage.name} needs a model with a two-frame and a pose network; "
                            "export them into one bundle (benchmarks/export_default_model.py --pose --two-frame)")
        from colondepth.train.stage import load_init_weights

        load_init_weights(ctx.net, path)  # the bundle's depth network rides along unchanged into every checkpoint
        self.net = build_two_frame(payload["two_frame"], path).to(ctx.device).train()
        self.pose_net, _ = build_pose(payload["pose"], path)
        self.pose_net = self.pose_net.to(ctx.device).train()
        if int(self.pose_net.config.num_sources) != 2:
            raise UserError(f"{path}: its pose network takes {self.pose_net.config.num_sources} sources; this stage "
                            "needs one for (previous, next) views")
        self.ref_pose, _ = build_pose(payload["pose"], path)
        self.ref_pose = self.ref_pose.to(ctx.device).eval()
        for p in self.ref_pose.parameters():
            p.requires_grad_(False)
        w_ssim, w_l1 = float(stage.loss.ssim_weight), float(stage.loss.l1_weight)
        if w_ssim + w_l1 <= 0:
            raise UserError(f"stage {stage.name}: loss.ssim_weight + loss.l1_weight must be positive")
        self.photo_weight = w_ssim + w_l1
        self.smooth_weight = float(stage.loss.smoothness_weight)
        self.options = PhotometricOptions(alpha=w_ssim / (w_ssim + w_l1), reduction="min", automask=False,
                                          brightness="affine")

    def make_data(self) -> StageData:
        from colondepth.datasets.clips import SnippetDataset, require_snippets, sequence_snippets, split_heldout
        from colondepth.train.selfsup import SNIPPET_LENGTH, open_stage_sequences

        stage = self.ctx.stage
        sequences, clips, where = open_stage_sequences(stage, self.ctx.curriculum_dir)
        snippets = sequence_snippets(sequences, clips, SNIPPET_LENGTH, frame_skip=stage.frame_skip)
        require_snippets(snippets, f"stage {stage.name} ({', '.join(where)})", SNIPPET_LENGTH, stage.frame_skip)
        split = split_heldout(snippets)
        grid = self.net.config.input_grid
        return StageData(train=SnippetDataset(sequences, split.train, grid),
                         val=SnippetDataset(sequences, split.heldout, grid) if split.heldout else None)

    def parameters(self) -> list:
        return list(self.net.parameters()) + (list(self.pose_net.parameters()) if self.ctx.stage.train_pose else [])

    def _depth_and_pose(self, batch):
        from colondepth.losses.photometric import normalize_translation

        dev = self.ctx.device
        tgt, src = batch["target"].to(dev), batch["sources"].to(dev)
        K, fov = batch["K"].to(dev), batch["fov_mask"].to(dev)
        pose = self.pose_net(tgt, src).src_from_tgt  # (B, 2, 4, 4): previous, next
        if self.ctx.stage.translation_normalisation:
            with torch.no_grad():
                ref = self.ref_pose(tgt, src).src_from_tgt[..., :3, 3].norm(dim=-1).mean(dim=-1, keepdim=True)
            pose = normalize_translation(pose, ref)
        disp = pose[:, 1, :3, 3].norm(dim=-1)
        d0 = float(self.net.two_frame.reference_displacement_mm)
        depth = self.net(self.net.inputs(tgt, src[:, 1], K)) * (disp / d0).view(-1, 1, 1, 1)
        return tgt, src, K, fov, depth, pose

    def _loss(self, tgt, src, K, fov, depth, pose):
        from colondepth.geometry.projection import depth_to_disp
        from colondepth.losses.photometric import photometric_loss
        from colondepth.losses.smoothness import edge_aware_smoothness

        photo, info = photometric_loss(tgt, src, [depth], pose, K, fov_mask=fov, options=self.options)
        smooth = edge_aware_smoothness(depth_to_disp(depth), tgt, fov)
        total = self.photo_weight * photo + self.smooth_weight * smooth
        return total, {"photometric": float(photo.detach()), "smoothness": float(smooth.detach()),
                       "valid_warp_fraction": info["valid_warp_fraction"]}

    def step(self, batch) -> tuple[torch.Tensor, dict]:
        self.net.train()
        self.pose_net.train()
        tgt, src, K, fov, depth, pose = self._depth_and_pose(batch)
        total, parts = self._loss(tgt, src, K, fov, depth, pose)
        parts["translation_mm"] = float(pose[..., :3, 3].detach().norm(dim=-1).mean())
        return total, parts

    @torch.no_grad()
    def validate(self, loader) -> dict[str, float]:
        from colondepth.train.selfsup import _frame_abs_rel

        self.net.eval()
        self.pose_net.eval()
        total, n, abs_rel = 0.0, 0, []
        for batch in loader:
            tgt, src, K, fov, depth, pose = self._depth_and_pose(batch)
            loss, _ = self._loss(tgt, src, K, fov, depth, pose)
            total += float(loss) * len(tgt)
            n += len(tgt)
            if "depth_mm" in batch:
                gt = batch["depth_mm"].to(tgt.device)
                for b in range(len(gt)):
                    v = (gt[b] > 0) & fov[b]
                    if v.sum() >= 10:
                        abs_rel.append(_frame_abs_rel(gt_mm=gt[b][v], pred_mm=depth[b][v])[1])
        self.net.train()
        self.pose_net.train()
        out = {"val_loss": total / max(n, 1)} if n else {}
        if abs_rel:
            out["val_abs_rel_median_scaled"] = float(np.nanmean(abs_rel))
        return out

    def bundle_two_frame(self) -> dict:
        from colondepth.models.bundle import two_frame_entry

        return two_frame_entry(self.net)

    def bundle_pose(self) -> dict:
        from colondepth.models.bundle import pose_entry

        return pose_entry(self.pose_net, None)

    def state_dict(self) -> dict:
        return {"two_frame": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "pose_net": {k: v.detach().cpu() for k, v in self.pose_net.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.net.load_state_dict(state["two_frame"])
            self.pose_net.load_state_dict(state["pose_net"])
