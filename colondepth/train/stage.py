"""Stage kinds: the small interface the curriculum runner drives, and the registry that maps ``kind`` to it.

The stage runner (:class:`colondepth.train.runner.StageRunner`, driven by
:func:`colondepth.train.curriculum.train_curriculum`) owns everything common to all stages: the optimizer
(AdamW over :meth:`StageKind.parameters`), the learning-rate schedule, the data order (a seeded
``DistributedSampler`` that can restart mid-epoch), NaN/inf detection, DistributedDataParallel,
progress bars, metrics and checkpoints.  A stage kind only says what data it uses, what one step
computes and how it validates::

    class MyKind:
        def __init__(self, ctx: StageContext): ...
        def make_data(self) -> StageData: ...                 # train (and optional val) torch Datasets
        def parameters(self) -> list[torch.nn.Parameter]: ... # what the optimizer trains
        def step(self, batch) -> tuple[torch.Tensor, dict]:  # scalar loss (graph attached), float logs
        def validate(self, loader) -> dict[str, float]: ...   # must hold "val_loss" (lower is better)
        def state_dict(self) -> dict: ...                     # extra modules (e.g. a pose network)
        def load_state_dict(self, state: dict) -> None: ...

    register_stage_kind("my_kind", MyKind)

Kinds are looked up in :data:`STAGE_KINDS`: a class, or a ``"module:Class"`` string imported on first use.
``self_supervised`` points at ``colondepth.train.selfsup:SelfSupervisedKind``; until that module exists a
curriculum using it fails with a one-line :class:`UserError`.  A train dataset may define an ``epoch``
attribute: the runner sets it before each pass (for seeded augmentation).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch

from colondepth.errors import UserError


@dataclass
class StageContext:
    """Everything a stage kind may use.

    Attributes
    ----------
    curriculum : colondepth.train.config.Curriculum
    stage : the stage's config (``SupervisedStage`` or ``SelfSupervisedStage``)
    stage_index : int, 0-based position in ``curriculum.stages``
    net : colondepth.models.depth_net.DepthNet, the bare depth network (its config has the depth range)
    model : torch.nn.Module, what to call for training forwards (``net`` or its DDP wrapper)
    device : torch.device
    run_dir : Path, the run's output folder (only rank 0 writes there)
    curriculum_dir : Path, folder of the curriculum file (relative paths in it are relative to this)
    data_dirs : list of Path, the ``--data`` folders
    pool : colondepth.train.data.DataPool, the supervised data (levels, held-out sequences)
    rank, world_size : int, distributed process index and count (0, 1 without torchrun)
    seed : int, the curriculum seed
    """

    curriculum: Any
    stage: Any
    stage_index: int
    net: torch.nn.Module
    model: torch.nn.Module
    device: torch.device
    run_dir: Path
    curriculum_dir: Path
    data_dirs: list
    pool: Any
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class StageData:
    """Datasets of a stage: ``train`` (required) and ``val`` (optional); ``collate_fn`` for the DataLoader."""

    train: torch.utils.data.Dataset
    val: Optional[torch.utils.data.Dataset] = None
    collate_fn: Optional[Callable] = None


class StageKind(Protocol):
    """Interface of a stage kind (see the module docstring)."""

    def make_data(self) -> StageData: ...

    def parameters(self) -> list: ...

    def step(self, batch) -> tuple[torch.Tensor, dict]: ...

    def validate(self, loader) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


#: Model-config keys that must agree between an ``init_from`` checkpoint and the curriculum's model, per
#: architecture (keys of the other architecture do not matter).
INIT_ARCH_KEYS = {
    "dispnet": ("arch", "inputs", "input_height", "input_width", "encoder_channels", "decoder_channels",
                "num_scales", "norm"),
    "basic_unet": ("arch", "inputs", "input_height", "input_width", "features"),
}


def resolve_stage_path(path: str, base: Path) -> Path:
    """A path from a curriculum file: ``~`` expanded, relative paths taken from the curriculum's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p)


def load_init_weights(net: torch.nn.Module, path: Path) -> dict:
    """Load the depth weights of checkpoint ``path`` into ``net`` (a stage's ``init_from``); returns the raw
    checkpoint (its model card, its pose network) so that the caller need not read the file again.

    Raises :class:`UserError` naming the file when it is not a checkpoint, when its architecture differs from
    the curriculum's (the differing keys are listed) or when the weights do not fit.
    """
    from colondepth.train.checkpoint import read_checkpoint

    payload = read_checkpoint(path)
    want = net.config.to_dict()
    have = dict(payload["card"].get("model", {}))
    have.setdefault("arch", "dispnet")  # cards written before these keys existed
    have.setdefault("inputs", [])
    have["inputs"], want["inputs"] = list(have["inputs"]), list(want.get("inputs") or [])
    keys = INIT_ARCH_KEYS.get(str(want.get("arch", "dispnet")), INIT_ARCH_KEYS["dispnet"])
    diff = [k for k in keys if have.get(k) != want.get(k)]
    if diff:
        raise UserError(f"{path}: init checkpoint's model differs from the curriculum's ({', '.join(diff)}); "
                        f"set the curriculum's model section to the checkpoint's architecture")
    try:
        net.load_state_dict(payload["model_state"])
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit the depth network ({type(exc).__name__})") from None
    return payload


class SupervisedKind:
    """``kind: supervised``: SILog + L1 + gradient matching against ground-truth depth.

    Training frames: the stage's levels/datasets (minus the held-out sequences) plus a ``rehearsal``
    fraction drawn from the training frames of every earlier supervised stage.  Validation: the
    held-out frames of the stage's own levels/datasets.  ``init_from: CKPT`` starts the stage from that
    checkpoint's depth weights (e.g. to fine-tune a trained model on new levels); on ``--resume`` in the middle
    of the stage the interrupted run's weights win.
    """

    def __init__(self, ctx: StageContext):
        from colondepth.train.steps import loss_weights

        self.ctx = ctx
        self.weights = loss_weights(ctx.stage.loss)
        init = getattr(ctx.stage, "init_from", "previous")
        self._held_state = None
        if init != "previous":
            # the weights the net holds now: the interrupted run's on --resume (restored in load_state_dict)
            self._held_state = {k: v.detach().clone() for k, v in ctx.net.state_dict().items()}
            load_init_weights(ctx.net, resolve_stage_path(init, ctx.curriculum_dir))

    def make_data(self) -> StageData:
        from colondepth.train.config import SupervisedStage
        from colondepth.train.data import SupervisedFrames, rehearsal_frames

        ctx, stage = self.ctx, self.ctx.stage
        sources = ctx.pool.stage_sources(stage)
        train = [f for s in sources for f in s.train]
        val = [f for s in sources for f in s.val]
        earlier = []
        for prev in ctx.curriculum.stages[: ctx.stage_index]:
            if isinstance(prev, SupervisedStage):
                keys = {s.key for s in sources}
                earlier += [f for s in ctx.pool.stage_sources(prev) if s.key not in keys for f in s.train]
        train = train + rehearsal_frames(train, earlier, stage.rehearsal, ctx.seed + 7919 * ctx.stage_index)
        if not train:
            raise UserError(f"stage {stage.name}: no training frames (every sequence was held out for "
                            f"validation); generate at least 2 sequences per level")
        self._val_where = sorted({str(f.sequence.mesh_path.parent) if f.sequence.mesh_path else f.sequence.name
                                  for f in val})
        hw = ctx.net.config.input_size.as_hw()
        return StageData(
            train=SupervisedFrames(train, hw, seed=ctx.seed, augment=stage.augment),
            val=SupervisedFrames(val, hw) if val else None,
        )

    def parameters(self) -> list:
        return list(self.ctx.net.parameters())

    def step(self, batch) -> tuple[torch.Tensor, dict]:
        from colondepth.train.steps import supervised_step

        return supervised_step(self.ctx.model, self.ctx.net, batch, self.weights, self.ctx.device)

    def validate(self, loader) -> dict[str, float]:
        from colondepth.train.steps import supervised_validate

        metrics = supervised_validate(self.ctx.net, loader, self.weights, self.ctx.device)
        # the errors are NaN with a finite loss only when not one ground-truth pixel was usable
        if metrics and math.isnan(metrics.get("val_abs_rel", 0.0)) and math.isfinite(metrics.get("val_loss", 0.0)):
            where = ", ".join(getattr(self, "_val_where", [])[:3]) or "the validation frames"
            raise UserError(f"stage {self.ctx.stage.name}: no validation frame has valid ground-truth depth (every "
                            f"depth pixel is 0, NaN or inf) in {where}; the depth PNGs are empty or damaged, "
                            f"regenerate the dataset with 'colondepth synth'")
        return metrics

    def state_dict(self) -> dict:
        return {"initialised": True} if self._held_state is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if state and self._held_state is not None:
            # resumed mid-stage: the interrupted run's depth weights win over init_from
            self.ctx.net.load_state_dict(self._held_state)


#: kind -> class, or "module:Class" imported on first use.
STAGE_KINDS: dict[str, Any] = {
    "supervised": SupervisedKind,
    "self_supervised": "colondepth.train.selfsup:SelfSupervisedKind",
    "two_frame": "colondepth.train.two_frame:TwoFrameKind",
    "two_frame_self_supervised": "colondepth.train.two_frame:TwoFrameSelfSupervisedKind",
}


def register_stage_kind(kind: str, factory: Any) -> None:
    """Register (or replace) the implementation of a stage ``kind``: a class taking a :class:`StageContext`."""
    STAGE_KINDS[kind] = factory


def get_stage_kind(kind: str, stage_name: str = "?"):
    """The class implementing ``kind``; a one-line :class:`UserError` when it is unknown or not installed."""
    factory = STAGE_KINDS.get(kind)
    if factory is None:
        raise UserError(f"stage {stage_name}: unknown stage kind {kind!r}; known: {', '.join(sorted(STAGE_KINDS))}")
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        if importlib.util.find_spec(module_name) is None:
            raise UserError(f"stage {stage_name}: kind {kind!r} is not available in this installation "
                            f"({module_name} is missing); remove the stage from the curriculum or install "
                            f"a ColonDepth version with self-supervised fine-tuning")
        factory = getattr(importlib.import_module(module_name), attr)
        STAGE_KINDS[kind] = factory
    return factory
