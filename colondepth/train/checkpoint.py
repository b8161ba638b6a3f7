"""Checkpoints of training runs: model bundles (:mod:`colondepth.models.bundle`) with training state.

A checkpoint is a model bundle (depth network, model card, resolved curriculum, the pose network of a
self-supervised stage) plus, for ``--resume``, the training state (optimizer, stage position, plateau
state, RNG).  The file format, its version and every reader live in :mod:`colondepth.models.bundle`; this
module adds what only training needs: the model card (:func:`make_card`) and the RNG state.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import torch

from colondepth.models.bundle import load_bundle, save_bundle
from colondepth.models.bundle import read_bundle as read_checkpoint  # noqa: F401  (the one reader)


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


def input_words(cfg) -> str:
    """What the network is fed, for the model card's ``normalisation.input``."""
    if cfg.colour == "grey":
        return "RGB float in [0, 1], made grey (linear Rec. 709 luminance, display gamma) before the network"
    return "RGB float in [0, 1]"


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
        "normalisation": {"input": input_words(cfg), "mean": [float(v) for v in cfg.mean],
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


def save_checkpoint(path: str | Path, net, card: dict, config: dict, training: dict | None = None,
                    pose: dict | None = None, two_frame: dict | None = None) -> Path:
    """Write a checkpoint atomically; ``net`` is the bare depth network (not a DDP wrapper), ``pose`` a
    :func:`colondepth.models.bundle.pose_entry` or ``None``, ``two_frame`` a
    :func:`colondepth.models.bundle.two_frame_entry` or ``None``."""
    return save_bundle(path, net, card, config, pose=pose, training=training, two_frame=two_frame)


def load_checkpoint(path: str | Path, map_location=None):
    """Load a checkpoint's depth network for inference: ``(model in eval mode, card: dict, config: dict)``."""
    b = load_bundle(path, map_location, with_pose=False)
    return b.depth, b.card, b.config


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
