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
            path = ctx.run_dir / "checkpoints" / f"stage_{i:02d}_{ctx.curriculum.stages[i].name}.pt"
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
