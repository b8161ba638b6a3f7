"""The curriculum runner: stages in order, checkpoints, resume, NaN stop, DistributedDataParallel.

:func:`train_curriculum` runs every stage of a curriculum through its stage kind
(:mod:`colondepth.train.stage`).  Outputs under ``RUN``:

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

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from colondepth.errors import TrainingDiverged, UserError


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


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_request: Optional[str]) -> tuple[_Dist, torch.device]:
    from colondepth.device import default_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = default_device(device_request)
    if world <= 1:
        return _Dist(), device
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        here = True
    return _Dist(rank=rank, world_size=world, local_rank=local, initialised_here=here), device


class _SkipSampler(torch.utils.data.Sampler):
    """The indices of ``base`` (for the current epoch) without the first ``skip``."""

    def __init__(self, base, skip: int):
        self.base = base
        self.skip = skip

    def __iter__(self):
        return iter(list(iter(self.base))[self.skip:])

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


def _all_reduce_max(x: float, dist_info: _Dist) -> float:
    if dist_info.world_size <= 1:
        return x
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def _average_gradients(params: list, dist_info: _Dist) -> None:
    """Average ``p.grad`` over processes for parameters DDP does not synchronise (missing grads count as 0)."""
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(dist_info.world_size)


def _all_reduce_mean(values: dict, dist_info: _Dist) -> dict:
    if dist_info.world_size <= 1 or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / dist_info.world_size for k, v in zip(keys, t.tolist())}


def _structure(config: dict) -> tuple:
    """What a resumed run must share with the interrupted one: the model, seed and the stages' names and kinds.

    Other settings (learning rates, budgets, loss weights, intervals) may change between runs, e.g. to lower
    the learning rate after a divergence.
    """
    stages = tuple((s.get("name"), s.get("kind")) for s in config.get("stages", []))
    return (config.get("model"), config.get("seed"), stages)


def _broadcast_metrics(metrics: dict, dist_info: _Dist) -> dict:
    """Rank 0's validation metrics on every rank, so promotion decisions agree (BatchNorm running statistics
    differ slightly between ranks)."""
    if dist_info.world_size <= 1:
        return metrics
    import torch.distributed as dist

    box = [metrics]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _stage_steps(stage, steps_per_epoch: int) -> int:
    if stage.budget.steps is not None:
        return int(stage.budget.steps)
    return max(1, int(math.ceil(stage.budget.epochs * steps_per_epoch)))


def train_curriculum(opts: RunOptions) -> dict:
    """Run (or resume) a curriculum.  Returns ``{"global_step", "checkpoint", "stopped"}``.

    Raises :class:`UserError` for bad inputs and :class:`TrainingDiverged` when a loss or gradient
    becomes NaN/inf (the last good ``last.pt`` is kept).
    """
    dist_info, device = _setup_distributed(opts.device)
    try:
        return _run(opts, dist_info, device)
    finally:
        if dist_info.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(opts: RunOptions, dist_info: _Dist, device: torch.device) -> dict:
    import yaml
    from tqdm import tqdm

    from colondepth.io import atomic_write_text
    from colondepth.models.depth_net import build_depth_net
    from colondepth.train.checkpoint import make_card, read_checkpoint, rng_state, save_checkpoint, set_rng_state
    from colondepth.train.config import load_curriculum, resolved_dict
    from colondepth.train.data import DataPool
    from colondepth.train.logging import MetricsLogger
    from colondepth.train.stage import StageContext, get_stage_kind
    from colondepth.train.steps import lr_factor

    curriculum = load_curriculum(opts.curriculum_path)
    config = resolved_dict(curriculum)
    for st in curriculum.stages:  # fail before training anything when a stage kind is not installed
        get_stage_kind(st.kind, st.name)
    out = Path(opts.out_dir)
    ckpt_dir = out / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    main = dist_info.is_main
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if opts.data_dirs:  # a wrong --data fails before anything is written or generated
        from colondepth.train.data import discover_datasets

        discover_datasets(list(opts.data_dirs))

    # -- resume or fresh start ------------------------------------------------------------------------------
    resume_state = None
    resume_payload = None
    if last_path.is_file():
        if not opts.resume:
            raise UserError(f"{out}: already holds a training run ({last_path}); pass --resume to continue it "
                            f"or choose another --out")
        resume_payload = read_checkpoint(last_path)
        resume_state = resume_payload.get("training")
        if resume_state is None:
            raise UserError(f"{last_path}: has no training state to resume from; choose another --out")
        old_config = resume_payload.get("config") or {}
        if _structure(old_config) != _structure(config):
            raise UserError(f"{opts.curriculum_path}: its model or stage list differs from the curriculum {out} was "
                            f"started with ({out / 'config.resolved.yaml'}); resume with the same file or choose "
                            f"another --out")
        if old_config != config and main:
            print(f"note: {opts.curriculum_path} changed since the run started (e.g. learning rate); continuing "
                  f"with the new settings", file=sys.stderr)
    elif opts.resume and main:
        print(f"note: {last_path} not found; starting a fresh run", file=sys.stderr)

    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{out}: cannot create the run folder ({exc.strerror}); choose a writable --out") from None
        atomic_write_text(out / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False))
        if resume_state is None:  # records of a run killed before its first checkpoint are stale
            (out / "metrics.jsonl").unlink(missing_ok=True)

    # -- model -----------------------------------------------------------------------------------------------
    torch.manual_seed(curriculum.seed)
    net = build_depth_net(curriculum.model.to_net_config()).to(device)
    if resume_payload is not None:
        net.load_state_dict(resume_payload["model_state"])
    model: torch.nn.Module = net
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        if device.type == "cuda":  # batch statistics over all processes (SyncBatchNorm needs CUDA)
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # find_unused_parameters: a stage kind may use only some heads, or freeze the depth net for a while
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=True)
    net.train()

    logger = MetricsLogger(out / "metrics.jsonl", enabled=main)
    pos = {"stage_index": 0, "stage_step": 0, "global_step": 0}
    if resume_state is not None:
        pos = {k: int(resume_state[k]) for k in pos}
        set_rng_state(resume_state.get("rng", {}))
        logger.truncate_after(pos["global_step"])
        if int(resume_state.get("world_size", 1)) != dist_info.world_size and main:
            print(f"note: resuming with {dist_info.world_size} process(es) instead of "
                  f"{resume_state.get('world_size')}; the data order differs from the interrupted run",
                  file=sys.stderr)
        if pos["stage_index"] >= len(curriculum.stages):
            if main:
                print(f"{out}: the run is already complete (global step {pos['global_step']})", file=sys.stderr)
            logger.close()
            return {"global_step": pos["global_step"], "checkpoint": str(ckpt_dir / "final.pt"), "stopped": False}
        if main:
            print(f"resuming {out} at stage {pos['stage_index'] + 1}/{len(curriculum.stages)}, "
                  f"step {pos['stage_step']} (global step {pos['global_step']})", file=sys.stderr)

    data_dirs = _generate_missing_levels(curriculum, Path(opts.curriculum_path).resolve().parent, out,
                                         list(opts.data_dirs), dist_info, opts.progress)
    pool = DataPool(data_dirs, curriculum.data.val_fraction_single_sequence,
                    curriculum.data.val_max_frames_per_level, Path(opts.curriculum_path).resolve().parent)
    if not data_dirs and any(s.kind == "supervised" for s in curriculum.stages[pos["stage_index"]:]):
        raise UserError(f"{opts.curriculum_path}: supervised stages need data; pass --data with datasets made by "
                        f"'colondepth synth' (levels {', '.join(curriculum.levels)})")

    global_step = pos["global_step"]
    last_saved_step = global_step if resume_state is not None else None
    n_stages = len(curriculum.stages)
    stage_name = curriculum.stages[min(pos["stage_index"], n_stages - 1)].name

    def training_state(si, s_step, optimizer, best, bad, kind, total):
        return {
            "stage_index": si, "stage_step": s_step, "global_step": global_step,
            "stage_total_steps": total,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "plateau": {"best": float(best), "bad_evals": int(bad)},
            "kind_state": kind.state_dict() if kind is not None else {},
            "rng": rng_state(), "world_size": dist_info.world_size,
        }

    def save(path, si, s_step, optimizer, best, bad, kind, total, name, with_training=True):
        nonlocal last_saved_step
        if not main:
            return
        card = make_card(net, curriculum.name, name, si, global_step, opts.command)
        pose = kind.bundle_pose() if hasattr(kind, "bundle_pose") else None  # a self-supervised stage's pose net
        save_checkpoint(path, net, card, config,
                        training_state(si, s_step, optimizer, best, bad, kind, total) if with_training else None,
                        pose=pose)
        if Path(path) == last_path:
            last_saved_step = global_step

    kind = None  # the last stage's kind: its pose network (if any) goes into final.pt
    for si in range(pos["stage_index"], n_stages):
        stage = curriculum.stages[si]
        stage_name = stage.name
        resuming_here = resume_state is not None and si == pos["stage_index"]
        stage_step = pos["stage_step"] if resuming_here else 0
        kind_cls = get_stage_kind(stage.kind, stage.name)
        ctx = StageContext(curriculum=curriculum, stage=stage, stage_index=si, net=net, model=model,
                           device=device, run_dir=out, curriculum_dir=Path(opts.curriculum_path).resolve().parent,
                           data_dirs=list(data_dirs), pool=pool, rank=dist_info.rank,
                           world_size=dist_info.world_size, seed=curriculum.seed)
        kind = kind_cls(ctx)
        data = kind.make_data()
        params = [p for p in kind.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=stage.optimizer.lr, betas=tuple(stage.optimizer.betas),
                                      weight_decay=stage.optimizer.weight_decay)
        best, bad = float("inf"), 0
        if resuming_here:
            if resume_state.get("optimizer") is not None:
                optimizer.load_state_dict(resume_state["optimizer"])
            best = float(resume_state["plateau"]["best"])
            bad = int(resume_state["plateau"]["bad_evals"])
            kind.load_state_dict(resume_state.get("kind_state") or {})

        sampler = torch.utils.data.DistributedSampler(data.train, num_replicas=dist_info.world_size,
                                                      rank=dist_info.rank, shuffle=True,
                                                      seed=curriculum.seed + si, drop_last=False)
        steps_per_epoch = int(math.ceil(len(sampler) / stage.batch_size))
        if steps_per_epoch == 0:
            raise UserError(f"stage {stage.name}: no training samples; check the stage's data sources")
        # parameters outside the DDP-wrapped depth net (e.g. a pose network) get their gradients averaged here
        net_ids = {id(p) for p in net.parameters()}
        extra_params = [p for p in params if id(p) not in net_ids] if dist_info.world_size > 1 else []
        total = _stage_steps(stage, steps_per_epoch)
        val_loader = None
        if data.val is not None and len(data.val) > 0:
            val_loader = torch.utils.data.DataLoader(data.val, batch_size=stage.batch_size, shuffle=False,
                                                     num_workers=curriculum.data.num_workers,
                                                     collate_fn=data.collate_fn)
        if stage.promotion.rule == "plateau" and val_loader is None:
            raise UserError(f"stage {stage.name}: promotion 'plateau' needs validation frames, but this stage "
                            f"has none; use promotion rule 'budget' or add data")

        where = {"stage": stage.name, "stage_index": si, "kind": stage.kind}
        bar = tqdm(total=total, initial=stage_step, desc=f"stage {si + 1}/{n_stages} {stage.name}",
                   disable=not (main and opts.progress), dynamic_ncols=True, file=sys.stderr)
        reason = "budget"
        val_metrics: dict = {}
        while stage_step < total and reason == "budget":
            epoch = stage_step // steps_per_epoch
            skip = (stage_step % steps_per_epoch) * stage.batch_size
            sampler.set_epoch(epoch)
            if hasattr(data.train, "epoch"):
                data.train.epoch = epoch
            loader = torch.utils.data.DataLoader(
                data.train, batch_size=stage.batch_size, sampler=_SkipSampler(sampler, skip),
                num_workers=curriculum.data.num_workers, collate_fn=data.collate_fn, drop_last=False)
            for batch in loader:
                factor = lr_factor(stage.lr_schedule, stage_step, total)
                for g in optimizer.param_groups:
                    g["lr"] = stage.optimizer.lr * factor
                loss, parts = kind.step(batch)
                bad_value = 0.0 if bool(torch.isfinite(loss.detach())) else 1.0
                if _all_reduce_max(bad_value, dist_info) > 0:
                    _diverged(stage.name, stage_step, global_step, f"loss {float(loss.detach())}",
                              last_path, last_saved_step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if extra_params:
                    _average_gradients(extra_params, dist_info)
                if stage.optimizer.grad_clip is not None:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(params, stage.optimizer.grad_clip))
                else:
                    gnorm = float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
                if _all_reduce_max(0.0 if math.isfinite(gnorm) else 1.0, dist_info) > 0:
                    _diverged(stage.name, stage_step, global_step, f"gradient norm {gnorm}", last_path,
                              last_saved_step)
                optimizer.step()
                stage_step += 1
                global_step += 1
                bar.update(1)
                if stage_step % curriculum.checkpoint.log_every_steps == 0 or stage_step == total:
                    logs = _all_reduce_mean({"loss": float(loss.detach()), **parts}, dist_info)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    logger.log({"type": "train", **where, "step": stage_step, "global_step": global_step,
                                "epoch": epoch, "lr": stage.optimizer.lr * factor, **logs})
                if opts.stop_after_steps is not None and global_step >= opts.stop_after_steps:
                    bar.close()
                    logger.close()
                    return {"global_step": global_step, "checkpoint": str(last_path), "stopped": True}
                if (stage.promotion.rule == "plateau" and stage_step % stage.promotion.eval_every_steps == 0
                        and stage_step < total):
                    val_metrics = _broadcast_metrics(kind.validate(val_loader), dist_info)
                    v = val_metrics["val_loss"]
                    if v < best - stage.promotion.min_delta:
                        best, bad = v, 0
                    else:
                        bad += 1
                    logger.log({"type": "val", **where, "step": stage_step, "global_step": global_step,
                                **val_metrics, "best_val_loss": best, "bad_evals": bad})
                    if bad >= stage.promotion.patience and stage_step >= stage.promotion.min_steps:
                        reason = "plateau"
                if global_step % curriculum.checkpoint.every_steps == 0 and stage_step < total and reason == "budget":
                    save(last_path, si, stage_step, optimizer, best, bad, kind, total, stage.name)
                if stage_step >= total or reason != "budget":
                    break
        bar.close()
        if val_loader is not None:
            val_metrics = _broadcast_metrics(kind.validate(val_loader), dist_info)
            logger.log({"type": "val", **where, "step": stage_step, "global_step": global_step, **val_metrics,
                        "best_val_loss": min(best, val_metrics.get("val_loss", best)), "bad_evals": bad})
        logger.log({"type": "stage_end", **where, "steps": stage_step, "global_step": global_step,
                    "reason": reason, **val_metrics})
        save(ckpt_dir / f"stage_{si:02d}_{stage.name}.pt", si, stage_step, None, best, bad, kind, total,
             stage.name, with_training=False)
        # position "start of the next stage": a resume after this point skips the finished stage
        save(last_path, si + 1, 0, None, float("inf"), 0, None, 0, stage.name)
        if main:
            print(f"stage {stage.name}: {stage_step} steps ({reason})"
                  + (f", val_loss {val_metrics['val_loss']:.4f}" if "val_loss" in val_metrics else ""),
                  file=sys.stderr)

    final = ckpt_dir / "final.pt"
    save(final, n_stages - 1, 0, None, float("inf"), 0, kind, 0, stage_name, with_training=False)
    logger.log({"type": "run_end", "global_step": global_step, "checkpoint": str(final)})
    logger.close()
    return {"global_step": global_step, "checkpoint": str(final), "stopped": False}


def _generate_missing_levels(curriculum, curriculum_dir: Path, out: Path, data_dirs: list, dist_info: _Dist,
                             progress: bool) -> list:
    """Generate the levels of ``curriculum.generate.recipes`` that no ``--data`` folder provides.

    Datasets go to ``RUN/data/<level>`` (rank 0 renders; the others wait).  ``generate_dataset`` resumes
    unfinished datasets, so an interrupted generation continues on the next run.  Returns the data folders
    to use (``RUN/data`` appended when anything is generated there).
    """
    gen = curriculum.generate
    if gen is None:
        return data_dirs
    from colondepth.train.data import discover_datasets

    have = {i.level for i in discover_datasets(data_dirs)} if data_dirs else set()
    missing = [lv for lv in curriculum.levels if lv not in have and lv in gen.recipes]
    if not missing:
        return data_dirs
    root = out / "data"
    recipes = {}
    for lv in missing:  # checked on every rank, so a bad path fails everywhere instead of blocking the others
        recipe = Path(gen.recipes[lv])
        recipes[lv] = recipe if recipe.is_absolute() else (curriculum_dir / recipe)
        if not recipes[lv].is_file():
            raise UserError(f"{recipes[lv]}: recipe for level {lv} (generate.recipes.{lv}) not found; paths are "
                            f"relative to the curriculum file")
    if dist_info.is_main:
        try:
            from colondepth.synth import generate_dataset
        except ImportError:  # older layout: the function lives in its module only
            from colondepth.synth.generate import generate_dataset

        for lv in missing:
            recipe = recipes[lv]
            print(f"generating level {lv} from {recipe} into {root / lv}", file=sys.stderr)
            generate_dataset(recipe, root / lv, sequences=gen.sequences, frames=gen.frames, size=gen.size,
                             seed=gen.seed, progress=progress)
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
    return data_dirs + [root]


def _diverged(stage_name: str, stage_step: int, global_step: int, what: str, last_path: Path,
              last_saved_step: Optional[int]) -> None:
    kept = (f"last good checkpoint kept: {last_path} (global step {last_saved_step})"
            if last_saved_step is not None else "no checkpoint had been written yet")
    raise TrainingDiverged(f"stage {stage_name}, step {stage_step + 1} (global step {global_step + 1}): {what} is "
                           f"not finite; training stopped, {kept}; lower optimizer.lr or set optimizer.grad_clip "
                           f"and rerun with --resume")
