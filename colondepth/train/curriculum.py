"""The curriculum: stages in order, checkpoints, resume, NaN stop, DistributedDataParallel.

:func:`train_curriculum` orchestrates three parts, each in its own module:

- :mod:`colondepth.train.distributed` (:class:`DistContext`): the ``torchrun`` process group and the
  collectives (all-reduce, broadcast), no-ops for one process;
- :mod:`colondepth.train.resume` (:class:`ResumeState`, :class:`RunCheckpoints`): the position of a run,
  reading ``last.pt`` for ``--resume`` and writing every checkpoint;
- :mod:`colondepth.train.runner` (:class:`StageRunner`): one stage through its stage kind
  (:mod:`colondepth.train.stage`): steps, validation, plateau promotion, ``last.pt`` rewrites.

The trainer only reads data: every level a remaining stage uses must be under ``--data`` (a missing one fails
before training with one line).  Rendering the levels of a curriculum's ``generate:`` section is the command
layer's job (``colondepth train``, :func:`colondepth.commands.train.generate_missing_levels`).

Outputs under ``RUN``:

- ``RUN/config.resolved.yaml``: the curriculum with every default filled in;
- ``RUN/metrics.jsonl``: training/validation records (:mod:`colondepth.train.logging`);
- ``RUN/checkpoints/last.pt``: rewritten every ``checkpoint.every_steps`` optimizer steps and at the end of
  each stage (holds the optimizer, schedule position, plateau state and RNG for ``--resume``);
- ``RUN/checkpoints/stage_<NN>_<name>.pt``: the weights at the end of each stage;
- ``RUN/checkpoints/final.pt``: the weights after the last stage (no training state; for inference).

Data order is a seeded ``DistributedSampler`` per stage and epoch (seed = curriculum seed + stage index),
skipping the batches already consumed when a run resumes mid-epoch, so an interrupted and resumed run
sees the same batches as an uninterrupted one.  Under ``torchrun`` (``WORLD_SIZE > 1``) the process group
is initialised (gloo on CPU, nccl on CUDA), the model is wrapped in DDP and only rank 0 writes files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from colondepth.errors import UserError
from colondepth.train.distributed import DistContext
from colondepth.train.resume import ResumeState, Resumed, RunCheckpoints, open_resume
from colondepth.train.runner import RunContext, StageRunner


@dataclass
class RunOptions:
    """Inputs of :func:`train_curriculum` (what ``colondepth train`` parses)."""

    curriculum_path: Path
    out_dir: Path
    data_dirs: list = field(default_factory=list)
    resume: bool = False
    device: Optional[str] = None
    command: str = ""
    #: Stop (without writing anything more) once this many global steps ran: simulates a kill in tests.
    stop_after_steps: Optional[int] = None
    progress: bool = True


def check_run(opts: RunOptions, report: bool = False) -> tuple:
    """Validate the inputs of a run without writing anything: ``(curriculum, resumed or None)``.

    Checks the curriculum file, that every stage kind is installed, that ``out_dir`` is not a file, that every
    ``--data`` folder holds datasets, and that a run folder is continued only with ``--resume`` and a curriculum
    of the same structure (:func:`colondepth.train.resume.open_resume`; ``report`` prints its notes).
    ``colondepth train`` calls it before rendering missing levels, so a bad input fails before anything is
    generated; :func:`train_curriculum` calls it again.
    """
    from colondepth.train.config import load_curriculum, resolved_dict
    from colondepth.train.stage import get_stage_kind

    curriculum = load_curriculum(opts.curriculum_path)
    for st in curriculum.stages:  # fail before training anything when a stage kind is not installed
        get_stage_kind(st.kind, st.name)
    out = Path(opts.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if opts.data_dirs:  # a wrong --data fails before anything is written or generated
        from colondepth.train.data import discover_datasets

        discover_datasets(list(opts.data_dirs))
    resumed: Optional[Resumed] = open_resume(out / "checkpoints" / "last.pt", resolved_dict(curriculum),
                                             Path(opts.curriculum_path), opts.resume, report=report)
    return curriculum, resumed


def required_levels(curriculum, first_stage: int = 0) -> list[str]:
    """Synthetic levels the stages from ``first_stage`` on read from the data folders, in first-use order:
    supervised and two-frame ``levels`` and the ``rehearsal.levels`` of self-supervised stages with a positive
    weight."""
    out: list[str] = []
    for s in curriculum.stages[first_stage:]:
        if s.kind in ("supervised", "two_frame"):
            levels = list(s.levels)
        else:
            reh = getattr(s, "rehearsal", None)
            levels = list(reh.levels) if reh is not None and reh.weight > 0 else []
        out += [lv for lv in levels if lv not in out]
    return out


def check_data(curriculum, curriculum_path: Path, pool, first_stage: int) -> None:
    """One-line :class:`UserError` when a stage from ``first_stage`` on needs data the folders do not hold."""
    stages = curriculum.stages[first_stage:]
    if not pool.data_dirs and any(s.kind == "supervised" for s in stages):
        raise UserError(f"{curriculum_path}: supervised stages need data; pass --data with datasets made by "
                        f"'colondepth synth' (levels {', '.join(curriculum.levels)})")
    have = set(pool.available_levels)
    for lv in required_levels(curriculum, first_stage):
        if lv not in have:
            found = ", ".join(pool.available_levels) or "none"
            if curriculum.generate is not None and lv in curriculum.generate.recipes:
                fix = f"'colondepth train' renders it from generate.recipes.{lv} before training, or "
            else:
                fix = f"add generate.recipes.{lv} to the curriculum, or "
            raise UserError(f"{curriculum_path}: level {lv}: no dataset of this level under --data (levels found: "
                            f"{found}); {fix}generate one with 'colondepth synth --recipe synth/{lv}_*.yaml "
                            f"--out DIR' and pass it with --data")


def train_curriculum(opts: RunOptions) -> dict:
    """Run (or resume) a curriculum.  Returns ``{"global_step", "checkpoint", "stopped"}``.

    Raises :class:`UserError` for bad inputs (a level missing from the data folders included) and
    :class:`TrainingDiverged` when a loss or gradient becomes NaN/inf (the last good ``last.pt`` is kept).
    Under ``torchrun`` the process group is initialised here unless the caller already did.
    """
    dist, device = DistContext.setup(opts.device)
    try:
        result = _train(opts, dist, device)
    except BaseException:
        dist.close()
        raise
    dist.close(clean=True)
    return result


def _make_monitor(curriculum, pool, curriculum_dir: Path):
    """The run's forgetting monitor (``colondepth.train.monitor``), or None when the curriculum has it off."""
    if curriculum.monitor.every_steps <= 0:
        return None
    from colondepth.train.monitor import ForgettingMonitor

    return ForgettingMonitor(curriculum.monitor, pool, Path(curriculum_dir))


def _train(opts: RunOptions, dist: DistContext, device: torch.device) -> dict:
    import yaml

    from colondepth.io import atomic_write_text
    from colondepth.models.depth_net import build_depth_net
    from colondepth.train.checkpoint import set_rng_state
    from colondepth.train.config import resolved_dict
    from colondepth.train.data import DataPool
    from colondepth.train.logging import MetricsLogger

    curriculum, resumed = check_run(opts, report=dist.is_main)
    config = resolved_dict(curriculum)
    curriculum_dir = Path(opts.curriculum_path).resolve().parent
    out = Path(opts.out_dir)
    ckpt_dir = out / "checkpoints"
    main = dist.is_main
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{out}: cannot create the run folder ({exc.strerror}); choose a writable --out") from None
        atomic_write_text(out / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False))
        if resumed is None:  # records of a run killed before its first checkpoint are stale
            (out / "metrics.jsonl").unlink(missing_ok=True)

    # -- model -----------------------------------------------------------------------------------------------
    torch.manual_seed(curriculum.seed)
    net = build_depth_net(curriculum.model.to_net_config()).to(device)
    if resumed is not None:
        net.load_state_dict(resumed.model_state)
    net, model = dist.wrap_model(net, device)
    net.train()

    logger = MetricsLogger(out / "metrics.jsonl", enabled=main)
    state = resumed.state if resumed is not None else ResumeState()
    n_stages = len(curriculum.stages)
    if resumed is not None:
        set_rng_state(state.rng)
        logger.truncate_after(state.global_step)
        if state.world_size != dist.world_size and main:
            print(f"note: resuming with {dist.world_size} process(es) instead of {state.world_size}; the data "
                  f"order differs from the interrupted run", file=sys.stderr)
        if state.stage_index >= n_stages:
            if main:
                print(f"{out}: the run is already complete (global step {state.global_step})", file=sys.stderr)
            logger.close()
            return {"global_step": state.global_step, "checkpoint": str(ckpt_dir / "final.pt"), "stopped": False}
        if main:
            print(f"resuming {out} at stage {state.stage_index + 1}/{n_stages}, step {state.stage_step} "
                  f"(global step {state.global_step})", file=sys.stderr)

    data_dirs = list(opts.data_dirs)
    pool = DataPool(data_dirs, curriculum.data.val_fraction_single_sequence,
                    curriculum.data.val_max_frames_per_level, curriculum_dir)
    check_data(curriculum, Path(opts.curriculum_path), pool, state.stage_index)

    checkpoints = RunCheckpoints(ckpt_dir, net, curriculum.name, config, opts.command, write=main,
                                 world_size=dist.world_size,
                                 last_saved_step=state.global_step if resumed is not None else None)
    run = RunContext(curriculum=curriculum, net=net, model=model, device=device, dist=dist, run_dir=out,
                     curriculum_dir=curriculum_dir, data_dirs=data_dirs, pool=pool, logger=logger,
                     checkpoints=checkpoints, progress=opts.progress, stop_after_steps=opts.stop_after_steps,
                     monitor=_make_monitor(curriculum, pool, curriculum_dir))

    global_step = state.global_step
    stage_name = curriculum.stages[min(state.stage_index, n_stages - 1)].name
    kind = None  # the last stage's kind: its pose network (if any) goes into final.pt
    carry = state.carry_steps if resumed is not None and state.stage_step == 0 else 0
    for si in range(state.stage_index, n_stages):
        stage_name = curriculum.stages[si].name
        runner = StageRunner(run, si, global_step, resume=state if resumed is not None and si == state.stage_index
                             else None, extra_steps=carry)
        result = runner.run_stage()
        # promotion.carry_over: the budget left by an early promotion goes to the next stage
        carry = (runner.total - result.stage_step) if (curriculum.stages[si].promotion.carry_over
                                                       and result.reason not in ("budget", "stopped")) else 0
        global_step, kind = result.global_step, result.kind
        if result.stopped:
            logger.close()
            return {"global_step": global_step, "checkpoint": str(checkpoints.last_path), "stopped": True}
        checkpoints.save_stage_end(si, stage_name, global_step, kind, carry_steps=carry)
        if main:
            vm = result.val_metrics
            print(f"stage {stage_name}: {result.stage_step} steps ({result.reason})"
                  + (f", val_loss {vm['val_loss']:.4f}" if "val_loss" in vm else ""), file=sys.stderr)

    final = checkpoints.save_final(n_stages - 1, stage_name, global_step, kind)
    logger.log({"type": "run_end", "global_step": global_step, "checkpoint": str(final)})
    logger.close()
    return {"global_step": global_step, "checkpoint": str(final), "stopped": False}
