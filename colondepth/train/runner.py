"""The stage runner: one stage of a curriculum, from its first optimizer step to its promotion.

:class:`StageRunner` owns what every stage kind (:mod:`colondepth.train.stage`) shares: AdamW over the kind's
parameters, the learning-rate schedule, the data order (a seeded ``DistributedSampler`` per epoch that restarts
mid-epoch on ``--resume``), the NaN/inf stop, gradient averaging of parameters outside DDP, progress bar,
training and validation records, plateau promotion and the ``last.pt`` rewrites during the stage.  The
curriculum (:func:`colondepth.train.curriculum.train_curriculum`) runs one ``StageRunner`` per stage and writes
the end-of-stage checkpoints.

Three optional stage-kind methods let a kind choose the weights a stage ends with (the self-supervised kind
keeps the model of lowest held-out photometric error, :mod:`colondepth.train.selfsup`):

- ``validation_due(stage_step) -> bool``: validate after this many steps (``0``: before the first step), in
  addition to plateau promotion's evaluations and the one at the end;
- ``observe_validation(stage_step, metrics) -> dict``: sees every validation; its keys join the ``val`` record;
- ``finish_stage(stage_step) -> dict``: after the final validation; may load other weights into the networks
  (what the end-of-stage checkpoints then hold); its keys join the ``stage_end`` record and
  :attr:`StageResult.summary`, and a ``warning`` entry is printed as one ``warning:`` line.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from colondepth.errors import TrainingDiverged, UserError
from colondepth.train.distributed import DistContext
from colondepth.train.resume import ResumeState, RunCheckpoints


@dataclass
class RunContext:
    """What every stage of one run shares.

    Attributes
    ----------
    curriculum : colondepth.train.config.Curriculum
    net : the bare depth network (its weights are saved); model : what training forwards call (``net`` or DDP)
    device : torch.device
    dist : DistContext
    run_dir, curriculum_dir : Path (relative paths of the curriculum are taken from ``curriculum_dir``)
    data_dirs : list of Path, the data folders; pool : colondepth.train.data.DataPool over them
    logger : colondepth.train.logging.MetricsLogger
    checkpoints : RunCheckpoints
    progress : bool, show progress bars (main process only)
    stop_after_steps : int or None, stop once this many global steps ran (simulates a kill)
    monitor : colondepth.train.monitor.ForgettingMonitor or None (the curriculum's ``monitor`` section)
    """

    curriculum: Any
    net: torch.nn.Module
    model: torch.nn.Module
    device: torch.device
    dist: DistContext
    run_dir: Path
    curriculum_dir: Path
    data_dirs: list
    pool: Any
    logger: Any
    checkpoints: RunCheckpoints
    progress: bool = True
    stop_after_steps: Optional[int] = None
    monitor: Any = None


@dataclass
class StageResult:
    """How a stage ended: ``reason`` is ``"budget"``, ``"plateau"``, ``"competence"`` (the validation error reached
    ``promotion.threshold``) or ``"stopped"`` (``stop_after_steps``);
    ``summary``: what the kind's ``finish_stage`` reported (e.g. which weights were kept)."""

    stage_step: int
    global_step: int
    reason: str
    val_metrics: dict
    kind: Any
    summary: dict = field(default_factory=dict)

    @property
    def stopped(self) -> bool:
        return self.reason == "stopped"


class _SkipSampler(torch.utils.data.Sampler):
    """The indices of ``base`` (for the current epoch) without the first ``skip``."""

    def __init__(self, base, skip: int):
        self.base = base
        self.skip = skip

    def __iter__(self):
        return iter(list(iter(self.base))[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def stage_steps(stage, steps_per_epoch: int) -> int:
    """Optimizer steps of ``stage``: its ``budget.steps``, or ``ceil(budget.epochs * steps_per_epoch)``."""
    if stage.budget.steps is not None:
        return int(stage.budget.steps)
    return max(1, int(math.ceil(stage.budget.epochs * steps_per_epoch)))


def run_total_steps(curriculum) -> int:
    """The run's total step budget (the sum of every stage's ``steps``): the span of a ``scope: run``
    learning-rate schedule (the schema requires ``steps`` budgets for it)."""
    return int(sum(int(s.budget.steps or 0) for s in curriculum.stages))


def diverged(stage_name: str, stage_step: int, global_step: int, what: str, last_path: Path,
             last_saved_step: Optional[int]) -> TrainingDiverged:
    """The one-line error of the NaN/inf stop (saying which checkpoint was kept and how to continue)."""
    kept = (f"last good checkpoint kept: {last_path} (global step {last_saved_step})"
            if last_saved_step is not None else "no checkpoint had been written yet")
    return TrainingDiverged(f"stage {stage_name}, step {stage_step + 1} (global step {global_step + 1}): {what} is "
                            f"not finite; training stopped, {kept}; lower optimizer.lr or set optimizer.grad_clip "
                            f"and rerun with --resume")


class StageRunner:
    """Runs stage ``stage_index`` of ``run.curriculum`` from ``global_step`` (or from ``resume``'s position)."""

    def __init__(self, run: RunContext, stage_index: int, global_step: int, resume: Optional[ResumeState] = None,
                 extra_steps: int = 0):
        from colondepth.train.stage import StageContext, get_stage_kind

        self.run = run
        self.si = stage_index
        self.stage = run.curriculum.stages[stage_index]
        self.global_step = int(resume.global_step if resume is not None else global_step)
        self.stage_step = int(resume.stage_step) if resume is not None else 0
        stage, dist = self.stage, run.dist
        kind_cls = get_stage_kind(stage.kind, stage.name)
        ctx = StageContext(curriculum=run.curriculum, stage=stage, stage_index=stage_index, net=run.net,
                           model=run.model, device=run.device, run_dir=run.run_dir,
                           curriculum_dir=run.curriculum_dir, data_dirs=list(run.data_dirs), pool=run.pool,
                           rank=dist.rank, world_size=dist.world_size, seed=run.curriculum.seed)
        self.kind = kind_cls(ctx)
        self.data = self.kind.make_data()
        self.params = [p for p in self.kind.parameters() if p.requires_grad]
        opt = stage.optimizer
        self.optimizer = torch.optim.AdamW(self.params, lr=opt.lr, betas=tuple(opt.betas),
                                           weight_decay=opt.weight_decay)
        self.best, self.bad = float("inf"), 0
        if resume is not None:
            if resume.optimizer is not None:
                self.optimizer.load_state_dict(resume.optimizer)
            self.best, self.bad = float(resume.plateau_best), int(resume.plateau_bad_evals)
            self.kind.load_state_dict(resume.kind_state or {})

        cur = run.curriculum
        self.sampler = torch.utils.data.DistributedSampler(self.data.train, num_replicas=dist.world_size,
                                                           rank=dist.rank, shuffle=True,
                                                           seed=cur.seed + stage_index, drop_last=False)
        self.steps_per_epoch = int(math.ceil(len(self.sampler) / stage.batch_size))
        if self.steps_per_epoch == 0:
            raise UserError(f"stage {stage.name}: no training samples; check the stage's data sources")
        # parameters outside the DDP-wrapped depth net (e.g. a pose network) get their gradients averaged here
        net_ids = {id(p) for p in run.net.parameters()}
        self.extra_params = [p for p in self.params if id(p) not in net_ids] if dist.distributed else []
        # extra_steps: the budget an earlier stage promoted early left over (promotion.carry_over)
        self.total = stage_steps(stage, self.steps_per_epoch) + int(extra_steps)
        if resume is not None and resume.stage_total_steps > 0:
            self.total = int(resume.stage_total_steps)
        self.val_loader = None
        if self.data.val is not None and len(self.data.val) > 0:
            self.val_loader = torch.utils.data.DataLoader(self.data.val, batch_size=stage.batch_size, shuffle=False,
                                                          num_workers=cur.data.num_workers,
                                                          collate_fn=self.data.collate_fn)
        if stage.promotion.rule in ("plateau", "competence") and self.val_loader is None:
            raise UserError(f"stage {stage.name}: promotion '{stage.promotion.rule}' needs validation frames, but "
                            f"this stage has none; use promotion rule 'budget' or add data")
        self.where = {"stage": stage.name, "stage_index": stage_index, "kind": stage.kind}
        self._monitored_at: Optional[int] = None  # global step of the last forgetting-monitor evaluation

    # -- one stage ------------------------------------------------------------------------------------------
    def run_stage(self) -> StageResult:
        """Train until the budget is spent, validation plateaus or ``stop_after_steps``; validate at the end."""
        from tqdm import tqdm

        run, stage = self.run, self.stage
        n_stages = len(run.curriculum.stages)
        bar = tqdm(total=self.total, initial=self.stage_step, desc=f"stage {self.si + 1}/{n_stages} {stage.name}",
                   disable=not (run.dist.is_main and run.progress), dynamic_ncols=True, file=sys.stderr)
        reason = "budget"
        val_metrics: dict = {}
        if self.stage_step == 0 and self._kind_validation_due(0):
            val_metrics = self._validate(plateau=False)  # the initial model, before the first step
        try:
            while self.stage_step < self.total and reason == "budget":
                epoch = self.stage_step // self.steps_per_epoch
                for batch in self._epoch_loader(epoch):
                    loss, parts, lr = self._step(batch)
                    bar.update(1)
                    if run.monitor is not None and run.monitor.due(self.global_step):
                        self._monitor()
                    if self.stage_step % run.curriculum.checkpoint.log_every_steps == 0 or self.stage_step == self.total:
                        logs = run.dist.all_reduce_mean({"loss": float(loss.detach()), **parts})
                        bar.set_postfix(loss=f"{logs['loss']:.4f}")
                        run.logger.log({"type": "train", **self.where, "step": self.stage_step,
                                        "global_step": self.global_step, "epoch": epoch, "lr": lr, **logs})
                    if run.stop_after_steps is not None and self.global_step >= run.stop_after_steps:
                        return StageResult(self.stage_step, self.global_step, "stopped", val_metrics, self.kind)
                    promo = stage.promotion
                    plateau_due = (promo.rule in ("plateau", "competence") and self.stage_step < self.total
                                   and self.stage_step % promo.eval_every_steps == 0)
                    if plateau_due or (self.stage_step < self.total and self._kind_validation_due(self.stage_step)):
                        val_metrics = self._validate(plateau=plateau_due)
                        if plateau_due and self.stage_step >= promo.min_steps:
                            if self.bad >= promo.patience:
                                reason = "plateau"
                            elif (promo.rule == "competence" and promo.threshold is not None
                                  and val_metrics.get("val_abs_rel", math.inf) <= promo.threshold):
                                reason = "competence"
                    if (self.global_step % run.curriculum.checkpoint.every_steps == 0 and self.stage_step < self.total
                            and reason == "budget"):
                        self._save_progress()
                    if self.stage_step >= self.total or reason != "budget":
                        break
        finally:
            bar.close()
        if self.val_loader is not None:
            val_metrics = run.dist.broadcast_from_main(self.kind.validate(self.val_loader))
            run.logger.log({"type": "val", **self.where, "step": self.stage_step, "global_step": self.global_step,
                            **val_metrics, **self._observe(val_metrics),
                            "best_val_loss": min(self.best, val_metrics.get("val_loss", self.best)),
                            "bad_evals": self.bad})
        finish = getattr(self.kind, "finish_stage", None)
        summary = dict(finish(self.stage_step) or {}) if finish is not None else {}
        if run.monitor is not None and run.monitor.enabled:
            self._monitor()  # the stage's final weights (the kept ones when the kind keeps the best)
        warning = summary.pop("warning", None)
        if warning and run.dist.is_main:
            print(f"warning: {warning}", file=sys.stderr)
        run.logger.log({"type": "stage_end", **self.where, "steps": self.stage_step, "global_step": self.global_step,
                        "reason": reason, **val_metrics, **summary})
        return StageResult(self.stage_step, self.global_step, reason, val_metrics, self.kind, summary)

    def _monitor(self) -> None:
        """Score the depth network on every level seen so far and on the foreign sets (main process only;
        ``colondepth.train.monitor``); one ``monitor`` record per set."""
        run = self.run
        if not run.dist.is_main or self._monitored_at == self.global_step:
            return
        from colondepth.train.checkpoint import make_card
        from colondepth.train.monitor import print_results

        self._monitored_at = self.global_step
        card = make_card(run.net, run.curriculum.name, self.stage.name, self.si, self.global_step, "monitor")
        results = run.monitor.evaluate(run.net, card, run.curriculum, self.si, run.device)
        for r in results:
            run.logger.log({"type": "monitor", **self.where, "step": self.stage_step, "global_step": self.global_step,
                            **r.record()})
        if results and not run.progress:
            print_results(results, self.global_step)

    def _kind_validation_due(self, stage_step: int) -> bool:
        due = getattr(self.kind, "validation_due", None)
        return self.val_loader is not None and due is not None and bool(due(stage_step))

    def _observe(self, val_metrics: dict) -> dict:
        observe = getattr(self.kind, "observe_validation", None)
        return dict(observe(self.stage_step, val_metrics) or {}) if observe is not None else {}

    def _epoch_loader(self, epoch: int):
        """The epoch's batches in the seeded order, without those this stage already consumed."""
        skip = (self.stage_step % self.steps_per_epoch) * self.stage.batch_size
        self.sampler.set_epoch(epoch)
        if hasattr(self.data.train, "epoch"):
            self.data.train.epoch = epoch
        return torch.utils.data.DataLoader(
            self.data.train, batch_size=self.stage.batch_size, sampler=_SkipSampler(self.sampler, skip),
            num_workers=self.run.curriculum.data.num_workers, collate_fn=self.data.collate_fn, drop_last=False)

    def _step(self, batch) -> tuple[torch.Tensor, dict, float]:
        """One optimizer step (stops the run on a non-finite loss or gradient on any process)."""
        from colondepth.train.steps import lr_factor

        stage, dist, ckpts = self.stage, self.run.dist, self.run.checkpoints
        if stage.lr_schedule.scope == "run":  # one shape over the whole run (config.LRSchedule)
            lr = stage.optimizer.lr * lr_factor(stage.lr_schedule, self.global_step,
                                                run_total_steps(self.run.curriculum))
        else:
            lr = stage.optimizer.lr * lr_factor(stage.lr_schedule, self.stage_step, self.total)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss, parts = self.kind.step(batch)
        bad_value = 0.0 if bool(torch.isfinite(loss.detach())) else 1.0
        if dist.all_reduce_max(bad_value) > 0:
            raise diverged(stage.name, self.stage_step, self.global_step, f"loss {float(loss.detach())}",
                           ckpts.last_path, ckpts.last_saved_step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.extra_params:
            dist.average_gradients(self.extra_params)
        if stage.optimizer.grad_clip is not None:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, stage.optimizer.grad_clip))
        else:
            gnorm = float(torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None]))
        if dist.all_reduce_max(0.0 if math.isfinite(gnorm) else 1.0) > 0:
            raise diverged(stage.name, self.stage_step, self.global_step, f"gradient norm {gnorm}",
                           ckpts.last_path, ckpts.last_saved_step)
        self.optimizer.step()
        self.stage_step += 1
        self.global_step += 1
        return loss, parts, lr

    def _validate(self, plateau: bool) -> dict:
        """A validation during the stage; with ``plateau`` it updates the best loss and the count of evaluations
        without gain (plateau promotion)."""
        stage = self.stage
        val_metrics = self.run.dist.broadcast_from_main(self.kind.validate(self.val_loader))
        if plateau:
            v = val_metrics["val_loss"]
            if v < self.best - stage.promotion.min_delta:
                self.best, self.bad = v, 0
            else:
                self.bad += 1
        self.run.logger.log({"type": "val", **self.where, "step": self.stage_step, "global_step": self.global_step,
                             **val_metrics, **self._observe(val_metrics),
                             "best_val_loss": min(self.best, val_metrics.get("val_loss", self.best)) if not plateau
                             else self.best, "bad_evals": self.bad})
        return val_metrics

    def resume_state(self) -> ResumeState:
        """The position and plateau state now (optimizer and kind state are added when saving)."""
        return ResumeState(stage_index=self.si, stage_step=self.stage_step, global_step=self.global_step,
                           stage_total_steps=self.total, plateau_best=self.best, plateau_bad_evals=self.bad)

    def _save_progress(self) -> None:
        self.run.checkpoints.save_progress(self.resume_state(), self.stage.name, self.kind, self.optimizer)
