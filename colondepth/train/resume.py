"""Resume state of a training run and the checkpoints that carry it.

Every checkpoint is a model bundle (:mod:`colondepth.models.bundle`, through
:func:`colondepth.train.checkpoint.save_checkpoint`).  ``RUN/checkpoints/last.pt`` also holds the *training*
entry, :class:`ResumeState` as a plain dict::

    {"stage_index", "stage_step", "global_step", "stage_total_steps",
     "optimizer": AdamW state_dict or None, "plateau": {"best", "bad_evals"},
     "kind_state": the stage kind's state_dict, "rng": torch RNG states, "world_size"}

:class:`RunCheckpoints` writes the three kinds of checkpoint of a run (rank 0 only): ``last.pt`` (rewritten
during a stage and positioned at the start of the next stage when one ends), ``stage_<NN>_<name>.pt`` and
``final.pt`` (weights only).  :func:`open_resume` reads ``last.pt`` for ``--resume`` and refuses a run folder
whose curriculum differs in structure (:func:`structure`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from colondepth.errors import UserError


def stage_checkpoint_name(stage_index: int, stage_name: str) -> str:
    """File name of the checkpoint written at the end of a stage: ``stage_<NN>_<name>.pt``."""
    return f"stage_{stage_index:02d}_{stage_name}.pt"


@dataclass
class ResumeState:
    """Position of a run (stage, step within it, global optimizer step) and what a resumed run restores."""

    stage_index: int = 0
    stage_step: int = 0
    global_step: int = 0
    stage_total_steps: int = 0
    optimizer: Optional[dict] = None  # AdamW state_dict of the running stage (None between stages)
    plateau_best: float = math.inf  # best validation loss of the running stage
    plateau_bad_evals: int = 0  # evaluations since it improved
    kind_state: dict = field(default_factory=dict)  # the stage kind's state_dict (e.g. a pose network)
    rng: dict = field(default_factory=dict)
    world_size: int = 1
    carry_steps: int = 0  # between stages: steps the finished stage left to the next (promotion.carry_over)

    def to_dict(self) -> dict:
        """The ``training`` entry of a checkpoint (the layout every earlier run wrote)."""
        return {
            "stage_index": int(self.stage_index), "stage_step": int(self.stage_step),
            "global_step": int(self.global_step), "stage_total_steps": int(self.stage_total_steps),
            "optimizer": self.optimizer,
            "plateau": {"best": float(self.plateau_best), "bad_evals": int(self.plateau_bad_evals)},
            "kind_state": self.kind_state if self.kind_state is not None else {},
            "rng": self.rng, "world_size": int(self.world_size), "carry_steps": int(self.carry_steps),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ResumeState":
        plateau = d.get("plateau") or {}
        return cls(stage_index=int(d["stage_index"]), stage_step=int(d["stage_step"]),
                   global_step=int(d["global_step"]), stage_total_steps=int(d.get("stage_total_steps", 0)),
                   optimizer=d.get("optimizer"), plateau_best=float(plateau.get("best", math.inf)),
                   plateau_bad_evals=int(plateau.get("bad_evals", 0)), kind_state=d.get("kind_state") or {},
                   rng=d.get("rng") or {}, world_size=int(d.get("world_size", 1)),
                   carry_steps=int(d.get("carry_steps", 0)))


def structure(config: dict) -> tuple:
    """What a resumed run must share with the interrupted one: the model, seed and the stages' names and kinds.

    Other settings (learning rates, budgets, loss weights, intervals) may change between runs, e.g. to lower
    the learning rate after a divergence.
    """
    stages = tuple((s.get("name"), s.get("kind")) for s in config.get("stages", []))
    return (config.get("model"), config.get("seed"), stages)


@dataclass
class Resumed:
    """What :func:`open_resume` read from ``last.pt``."""

    state: ResumeState
    model_state: dict
    config: dict


def open_resume(last_path: Path, config: dict, curriculum_path: Path, resume: bool, report: bool) -> Optional[Resumed]:
    """The interrupted run in ``last_path``, or ``None`` for a fresh start.

    Raises a one-line :class:`UserError` when the folder holds a run and ``resume`` is false, when ``last.pt``
    has no training state, or when ``config`` (the resolved curriculum) differs in :func:`structure` from the
    one the run started with.  With ``report``, notes go to stderr (a changed curriculum; ``--resume`` without
    a run).
    """
    from colondepth.train.checkpoint import read_checkpoint

    out = last_path.parent.parent
    if not last_path.is_file():
        if resume and report:
            print(f"note: {last_path} not found; starting a fresh run", file=sys.stderr)
        return None
    if not resume:
        raise UserError(f"{out}: already holds a training run ({last_path}); pass --resume to continue it "
                        f"or choose another --out")
    payload = read_checkpoint(last_path)
    training = payload.get("training")
    if training is None:
        raise UserError(f"{last_path}: has no training state to resume from; choose another --out")
    old_config = payload.get("config") or {}
    if structure(old_config) != structure(config):
        raise UserError(f"{curriculum_path}: its model or stage list differs from the curriculum {out} was "
                        f"started with ({out / 'config.resolved.yaml'}); resume with the same file or choose "
                        f"another --out")
    if old_config != config and report:
        print(f"note: {curriculum_path} changed since the run started (e.g. learning rate); continuing "
              f"with the new settings", file=sys.stderr)
    return Resumed(state=ResumeState.from_dict(training), model_state=payload["model_state"], config=old_config)


class RunCheckpoints:
    """The checkpoints of one run under ``RUN/checkpoints`` (written by the main process only).

    ``net`` is the bare depth network (not a DDP wrapper); ``command`` goes into every model card.
    :attr:`last_saved_step` is the global step of the newest ``last.pt`` (``None`` before the first), which the
    NaN stop reports.
    """

    def __init__(self, ckpt_dir: Path, net, curriculum_name: str, config: dict, command: str, write: bool,
                 world_size: int = 1, last_saved_step: Optional[int] = None):
        self.dir = Path(ckpt_dir)
        self.net = net
        self.curriculum_name = curriculum_name
        self.config = config
        self.command = command
        self.write = write
        self.world_size = world_size
        self.last_saved_step = last_saved_step

    @property
    def last_path(self) -> Path:
        return self.dir / "last.pt"

    @property
    def final_path(self) -> Path:
        return self.dir / "final.pt"

    def stage_path(self, stage_index: int, stage_name: str) -> Path:
        return self.dir / stage_checkpoint_name(stage_index, stage_name)

    def save(self, path: Path, *, stage_index: int, stage_name: str, global_step: int, kind: Any = None,
             state: Optional[ResumeState] = None) -> None:
        """Write one checkpoint: weights, model card, resolved curriculum, the pose network of ``kind`` (if it
        has one) and, with ``state``, the resume state (its RNG entry taken now)."""
        if not self.write:
            return
        from colondepth.train.checkpoint import make_card, rng_state, save_checkpoint

        card = make_card(self.net, self.curriculum_name, stage_name, stage_index, global_step, self.command)
        kept = kind.card_entry() if hasattr(kind, "card_entry") else None
        if kept:  # which weights the stage ended with (e.g. the initial model kept by keep_best)
            card["keep_best"] = dict(kept)
        pose = kind.bundle_pose() if hasattr(kind, "bundle_pose") else None  # a self-supervised stage's pose net
        two = kind.bundle_two_frame() if hasattr(kind, "bundle_two_frame") else None  # a two_frame stage's net
        training = None
        if state is not None:
            training = dataclasses.replace(state, rng=rng_state(), world_size=self.world_size).to_dict()
        save_checkpoint(path, self.net, card, self.config, training, pose=pose, two_frame=two)
        if Path(path) == self.last_path:
            self.last_saved_step = global_step

    def save_progress(self, state: ResumeState, stage_name: str, kind: Any, optimizer) -> None:
        """``last.pt`` in the middle of a stage: the position, optimizer, plateau and the kind's state."""
        if not self.write:  # the other processes skip collecting state dicts
            return
        state = dataclasses.replace(state, optimizer=optimizer.state_dict() if optimizer is not None else None,
                                    kind_state=kind.state_dict() if kind is not None else {})
        self.save(self.last_path, stage_index=state.stage_index, stage_name=stage_name,
                  global_step=state.global_step, kind=kind, state=state)

    def save_stage_end(self, stage_index: int, stage_name: str, global_step: int, kind: Any,
                       carry_steps: int = 0) -> None:
        """``stage_<NN>_<name>.pt`` (weights and pose network) and ``last.pt`` positioned at the start of the next
        stage, so that a resume after this point skips the finished stage (and still gives the next stage the
        ``carry_steps`` the finished one left)."""
        self.save(self.stage_path(stage_index, stage_name), stage_index=stage_index, stage_name=stage_name,
                  global_step=global_step, kind=kind)
        self.save(self.last_path, stage_index=stage_index + 1, stage_name=stage_name, global_step=global_step,
                  state=ResumeState(stage_index=stage_index + 1, stage_step=0, global_step=global_step,
                                    carry_steps=int(carry_steps)))

    def save_final(self, stage_index: int, stage_name: str, global_step: int, kind: Any) -> Path:
        """``final.pt``: the weights after the last stage (and its pose network), no training state."""
        self.save(self.final_path, stage_index=stage_index, stage_name=stage_name, global_step=global_step,
                  kind=kind)
        return self.final_path
