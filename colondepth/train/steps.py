"""Pure training/validation step functions for supervised stages, and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from colondepth.losses.supervised import SupervisedLossWeights, supervised_loss, valid_mask


def loss_weights(loss_cfg) -> SupervisedLossWeights:
    """:class:`SupervisedLossWeights` from a curriculum ``loss`` section."""
    return SupervisedLossWeights(**loss_cfg.model_dump())


def supervised_step(model, net, batch: dict, weights: SupervisedLossWeights, device) -> tuple[torch.Tensor, dict]:
    """Forward one batch and return ``(loss, logs)``; the caller does backward and the optimizer step.

    ``model`` is what is called (possibly a DistributedDataParallel wrapper), ``net`` the bare
    :class:`colondepth.models.depth_net.DepthNet` (normalisation, depth range).  ``batch`` holds ``rgb``
    ``(B, 3, H, W)`` in [0, 1], ``depth_mm`` and ``valid`` ``(B, 1, H, W)`` at the input size.
    """
    rgb = batch["rgb"].to(device, non_blocking=True)
    gt = batch["depth_mm"].to(device, non_blocking=True)
    valid = batch["valid"].to(device, non_blocking=True)
    K = batch.get("K")
    preds = model(net.normalise(rgb, None if K is None else K.to(device)))
    cfg = net.config
    loss, parts = supervised_loss(preds, gt, weights, cfg.min_depth_mm, cfg.max_depth_mm, valid)
    return loss, parts


@torch.no_grad()
def depth_errors(pred_mm: torch.Tensor, gt_mm: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    """Standard depth errors over all valid pixels of a batch: abs_rel, rmse_mm, delta1 (< 1.25), silog.

    ``silog`` here is the Eigen metric ``sqrt(var(log pred - log gt)) * 100`` (lambda = 1).
    """
    mask = valid_mask(gt_mm, valid)
    if not bool(mask.any()):
        return {"abs_rel": float("nan"), "rmse_mm": float("nan"), "delta1": float("nan"), "silog": float("nan")}
    p = pred_mm[mask].double().clamp(min=1e-6)
    g = gt_mm[mask].double()
    ratio = torch.maximum(p / g, g / p)
    d = torch.log(p) - torch.log(g)
    return {
        "abs_rel": float(((p - g).abs() / g).mean()),
        "rmse_mm": float(((p - g) ** 2).mean().sqrt()),
        "delta1": float((ratio < 1.25).double().mean()),
        "silog": float(((d ** 2).mean() - d.mean() ** 2).clamp(min=0).sqrt() * 100.0),
    }


@torch.no_grad()
def supervised_validate(net, loader, weights: SupervisedLossWeights, device) -> dict[str, float]:
    """Mean validation loss (finest scale, same weights as training) and pixel-pooled depth errors.

    Runs ``net`` in eval mode and restores its previous mode.  Returns ``{}`` for an empty loader.
    """
    was_training = net.training
    net.eval()
    total, n = 0.0, 0
    preds, gts, valids = [], [], []
    try:
        for batch in loader:
            rgb = batch["rgb"].to(device)
            gt = batch["depth_mm"].to(device)
            valid = batch["valid"].to(device)
            K = batch.get("K")
            pred = net(net.normalise(rgb, None if K is None else K.to(device)), num_outputs=1)[0]
            loss, _ = supervised_loss([pred], gt, weights, net.config.min_depth_mm, net.config.max_depth_mm, valid)
            total += float(loss) * rgb.shape[0]
            n += rgb.shape[0]
            preds.append(pred.cpu())
            gts.append(gt.cpu())
            valids.append(valid.cpu())
    finally:
        net.train(was_training)
    if n == 0:
        return {}
    out = {"val_loss": total / n}
    out.update({f"val_{k}": v for k, v in depth_errors(torch.cat(preds), torch.cat(gts), torch.cat(valids)).items()})
    return out


def lr_factor(schedule, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at 0-based ``step`` of a stage of ``total_steps`` steps.

    Linear warm-up over ``warmup_steps`` (from ``1 / warmup_steps``), then ``constant`` (1), ``cosine``
    (from 1 down to ``min_factor`` at the last step) or ``step`` (``step_gamma ** (step // step_every)``).

    >>> from colondepth.train.config import LRSchedule
    >>> lr_factor(LRSchedule(kind="cosine", min_factor=0.0), 0, 11), lr_factor(LRSchedule(kind="cosine", min_factor=0.0), 10, 11)
    (1.0, 0.0)
    """
    if schedule.warmup_steps and step < schedule.warmup_steps:
        return (step + 1) / schedule.warmup_steps
    if schedule.kind == "constant":
        return 1.0
    if schedule.kind == "step":
        return schedule.step_gamma ** (step // schedule.step_every)
    span = max(1, total_steps - 1 - schedule.warmup_steps)
    t = min(1.0, max(0.0, (step - schedule.warmup_steps) / span))
    return schedule.min_factor + (1.0 - schedule.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
