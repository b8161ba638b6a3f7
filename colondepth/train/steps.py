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


#: Training-log names of :func:`batch_depth_errors` -> names in :func:`colondepth.eval.depth_metrics.depth_errors`.
_LOG_NAMES = {"abs_rel": "abs_rel", "rmse_mm": "rmse", "delta1": "delta1"}


@torch.no_grad()
def batch_depth_errors(*, pred_mm: torch.Tensor, gt_mm: torch.Tensor,
                       valid: torch.Tensor | None = None) -> dict[str, float]:
    """Depth errors pooled over all valid pixels of a batch, under the training log's names:
    ``abs_rel``, ``rmse_mm``, ``delta1`` (< 1.25) and ``silog`` (``100 sqrt(var(ln p - ln g))``).

    The formulas are :func:`colondepth.eval.depth_metrics.depth_errors` and
    :func:`~colondepth.eval.depth_metrics.silog` (no alignment; the prediction is floored at 1e-6 mm).
    All NaN when no pixel is valid or the prediction is not finite there (a diverging network).
    """
    from colondepth.eval.depth_metrics import depth_errors, silog

    mask = valid_mask(gt_mm, valid)
    nan = {"abs_rel": float("nan"), "rmse_mm": float("nan"), "delta1": float("nan"), "silog": float("nan")}
    if not bool(mask.any()):
        return nan
    p = pred_mm[mask].double().clamp(min=1e-6)
    if not bool(torch.isfinite(p).all()):
        return nan
    g = gt_mm[mask].double()
    e = depth_errors(gt_mm=g, pred_mm=p)
    out = {log: e[name] for log, name in _LOG_NAMES.items()}
    out["silog"] = silog(gt_mm=g, pred_mm=p)
    return out


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
    errors = batch_depth_errors(pred_mm=torch.cat(preds), gt_mm=torch.cat(gts), valid=torch.cat(valids))
    out.update({f"val_{k}": v for k, v in errors.items()})
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
