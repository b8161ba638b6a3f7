"""Checkpoints: weights + model card + resolved curriculum (+ training state for ``--resume``).

A checkpoint is a ``torch.save``'d dict of plain data only (tensors, dicts, lists, strings, numbers),
so it loads with ``torch.load(path, weights_only=True)``::

    {
      "format": "colondepth-depth-checkpoint", "format_version": 1,
      "card":   {...},            # model card, see make_card()
      "config": {...},            # resolved curriculum (also RUN/config.resolved.yaml)
      "model_state": {...},       # DepthNet state_dict
      "training": {...} | None,   # optimizer state, stage position, plateau state, RNG (resume only)
    }

Files are written atomically (:func:`colondepth.io.atomic_path`): a killed run leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from pathlib import Path

import torch

from colondepth.errors import UserError

FORMAT = "colondepth-depth-checkpoint"
FORMAT_VERSION = 1


def camera_card(cfg) -> dict:
    """What the model expects of the camera (the ``camera`` entry of a model card)."""
    rays = "rays" in getattr(cfg, "inputs", [])
    return {
        "model": "pinhole",
        "fisheye": "undistorted to a pinhole camera before the network (give --intrinsics with model: fisheye)",
        "aspect_ratio": "kept: frames are scaled and zero-padded, never stretched",
        "uses_intrinsics": bool(rays),
        "without_intrinsics": (f"a {float(getattr(cfg, 'default_fov_deg', 140.0)):g} degree horizontal field of view "
                               "is assumed" if rays else "the network does not use intrinsics"),
        "input_short_side_px": int(min(cfg.input_height, cfg.input_width)),
    }


def make_card(net, curriculum_name: str, stage_name: str, stage_index: int, global_step: int,
              command: str) -> dict:
    """The model card: everything needed to run and interpret the network, as plain data.

    Keys: ``architecture`` ("DepthNet"), ``model`` (the full :class:`DepthNetConfig` dict),
    ``input_size`` ``[height, width]`` px, ``normalisation`` (``mean``/``std`` applied to RGB in [0, 1]),
    ``depth_range_mm`` ``[min, max]``, ``output`` (what the numbers mean), ``conventions_version``,
    ``colondepth_version``, ``curriculum``, ``stage``, ``stage_index``, ``step`` (global optimizer step),
    ``command`` (the exact command line), ``created_utc`` (ISO 8601).
    """
    from colondepth import __version__
    from colondepth.conventions import CONVENTIONS_VERSION

    cfg = net.config
    return {
        "architecture": "UNetDepthNet" if getattr(cfg, "arch", "dispnet") == "basic_unet" else "DepthNet",
        "model": cfg.to_dict(),
        "input_size": [int(cfg.input_height), int(cfg.input_width)],
        "normalisation": {"input": "RGB float in [0, 1]", "mean": [float(v) for v in cfg.mean],
                          "std": [float(v) for v in cfg.std]},
        "depth_range_mm": [float(cfg.min_depth_mm), float(cfg.max_depth_mm)],
        "output": "z-depth in mm along the OpenCV camera +Z axis, same pixel grid as the input",
        "camera": camera_card(cfg),
        "conventions_version": CONVENTIONS_VERSION,
        "colondepth_version": __version__,
        "curriculum": str(curriculum_name),
        "stage": str(stage_name),
        "stage_index": int(stage_index),
        "step": int(global_step),
        "command": str(command),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def save_checkpoint(path: str | Path, net, card: dict, config: dict, training: dict | None = None) -> Path:
    """Write a checkpoint atomically; ``net`` is the bare DepthNet (not a DDP wrapper)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "card": card,
        "config": config,
        "model_state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "training": training,
    }
    from colondepth.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path, map_location=None) -> dict:
    """The raw checkpoint dict (``weights_only=True``); one-line UserError for a missing or foreign file."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a checkpoint; pass a .pt file such as RUN/checkpoints/final.pt")
    if not p.is_file():
        raise UserError(f"{p}: checkpoint not found; pass --checkpoint with a .pt file from RUN/checkpoints/")
    try:
        with warnings.catch_warnings():  # a foreign file can make the unpickler warn before it fails
            warnings.simplefilter("ignore")
            payload = torch.load(p, map_location=map_location or "cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with objects, not a torch file
        raise UserError(f"{p}: not a readable ColonDepth checkpoint ({type(exc).__name__}); "
                        f"pass a .pt file written by 'colondepth train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{p}: not a ColonDepth depth checkpoint (no '{FORMAT}' marker); "
                        f"pass a .pt file written by 'colondepth train'")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{p}: checkpoint format {payload['format_version']} is newer than this ColonDepth "
                        f"reads ({FORMAT_VERSION}); upgrade colondepth")
    return payload


def load_checkpoint(path: str | Path, map_location=None):
    """Load a checkpoint for inference: ``(model in eval mode, card: dict, config: dict)``.

    The model is a :class:`colondepth.models.depth_net.DepthNet` rebuilt from the card and moved to
    ``map_location`` (default CPU).
    """
    from colondepth.models.depth_net import build_depth_net

    payload = read_checkpoint(path, map_location)
    card = payload["card"]
    try:
        net = build_depth_net(card["model"])
        net.load_state_dict(payload["model_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: checkpoint weights do not match its model card ({type(exc).__name__}); "
                        f"the file is damaged, retrain or pass another --checkpoint") from None
    net.to(map_location or "cpu").eval()
    return net, card, payload.get("config") or {}


def rng_state() -> dict:
    """Torch RNG states (CPU and, when present, every CUDA device) as tensors."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
