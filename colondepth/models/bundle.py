"""The model bundle: one versioned file holding a depth network, optionally its pose network, and the card.

A bundle is a ``torch.save``'d dict of plain data only (tensors, dicts, lists, strings, numbers), so it loads
with ``torch.load(path, weights_only=True)``::

    {
      "format": "colondepth-model", "format_version": 2,
      "card":   {...},            # model card: architecture, preprocessing, camera, provenance (make_card)
      "config": {...},            # resolved curriculum that trained it
      "model_state": {...},       # depth network state_dict
      "pose": None | {            # the pose network trained with this depth network (self-supervised stages)
          "config": {...}, "state": {...}, "translation_norm_mm": float (-1: none)},
      "two_frame": None | {       # a two-frame depth network (two_frame stages; absent in older files)
          "config": {...}, "state": {...}},
      "training": {...} | None,   # optimizer state, stage position, RNG (resume only; None in released models)
    }

Version 1 files (``"format": "colondepth-depth-checkpoint"``: the same keys without ``pose``; their pose
network is a separate ``pose_net_<stage>.pt`` beside them, format ``"colondepth-pose-net"``) load unchanged:
:func:`read_bundle` upgrades them in memory, and :func:`load_bundle` attaches the pose network of the same
stage from beside the file when there is one.  :func:`upgrade_bundle` writes a version-2 file from them.
This module is the one reader and writer of these files; training, inference, reconstruction and the app
go through it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from colondepth.errors import UserError

FORMAT = "colondepth-model"
FORMAT_VERSION = 2
#: Version-1 depth checkpoints: read as bundles without a pose network.
LEGACY_FORMAT = "colondepth-depth-checkpoint"
#: Stand-alone pose-network files (``pose_net_<stage>.pt``) written by version-1 runs.
POSE_FORMAT = "colondepth-pose-net"
POSE_FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """A loaded bundle: ``depth`` (eval mode), ``card``, ``config``; ``pose`` (eval mode) with its
    ``translation_norm_mm`` (``None``: translations are used as predicted), or ``pose=None``; ``path``;
    ``two_frame`` (eval mode) or None."""

    depth: torch.nn.Module
    card: dict
    config: dict
    pose: Optional[torch.nn.Module]
    translation_norm_mm: Optional[float]
    path: Optional[Path]
    two_frame: Optional[torch.nn.Module] = None


def pose_entry(pose_net: torch.nn.Module, translation_norm_mm: Optional[float]) -> dict:
    """The ``pose`` entry of a bundle for ``pose_net`` (a :class:`~colondepth.models.pose_net.PoseNet`)."""
    return {"config": pose_net.config.to_dict(),
            "state": {k: v.detach().cpu() for k, v in pose_net.state_dict().items()},
            "translation_norm_mm": -1.0 if translation_norm_mm is None else float(translation_norm_mm)}


def _with_weights(make, state, message) -> torch.nn.Module:
    """``make()`` with ``state()`` loaded, in eval mode; a config or weights that do not fit (a damaged file)
    become the one-line :class:`UserError` ``message(name of the exception type)``."""
    try:
        net = make()
        net.load_state_dict(state())
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(message(type(exc).__name__)) from None
    return net.eval()


def two_frame_entry(net: torch.nn.Module) -> dict:
    """The ``two_frame`` entry of a bundle for a :class:`~colondepth.models.two_frame_net.TwoFrameDepthNet`."""
    return {"config": net.two_frame.to_dict(), "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


def build_two_frame(entry: dict, where: str | Path) -> torch.nn.Module:
    """The two-frame network (eval mode) of a bundle ``two_frame`` entry."""
    from colondepth.models.two_frame_net import TwoFrameDepthNet

    return _with_weights(lambda: TwoFrameDepthNet(entry["config"]), lambda: entry["state"],
                         lambda kind: f"{where}: two-frame network weights do not match their config ({kind}); the "
                                      "file is damaged, retrain or pass another checkpoint")


def save_bundle(path: str | Path, depth_net: torch.nn.Module, card: dict, config: Optional[dict] = None,
                pose: Optional[dict] = None, training: Optional[dict] = None,
                two_frame: Optional[dict] = None) -> Path:
    """Write a bundle atomically (a killed writer leaves the previous file intact).

    ``depth_net``: the bare depth network (not a DDP wrapper); ``pose``: a :func:`pose_entry` or ``None``;
    ``training``: resume state or ``None``; ``two_frame``: a :func:`two_frame_entry` or ``None``.
    """
    from colondepth.io import atomic_path

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "card": card,
        "config": config or {},
        "model_state": {k: v.detach().cpu() for k, v in depth_net.state_dict().items()},
        "pose": pose,
        "two_frame": two_frame,
        "training": training,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _torch_load(p: Path, map_location=None, what: str = "checkpoint"):
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a {what}; pass a .pt file such as RUN/checkpoints/final.pt")
    if not p.is_file():
        raise UserError(f"{p}: {what} not found; pass --checkpoint with a .pt file from RUN/checkpoints/")
    try:
        with warnings.catch_warnings():  # a foreign file can make the unpickler warn before it fails
            warnings.simplefilter("ignore")
            return torch.load(p, map_location=map_location or "cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with objects, not a torch file
        raise UserError(f"{p}: not a readable ColonDepth {what} ({type(exc).__name__}); "
                        f"pass a .pt file written by 'colondepth train'") from None


def read_bundle(path: str | Path, map_location=None) -> dict:
    """The raw bundle dict (``weights_only=True``), version-1 files upgraded in memory (``pose: None``).

    One-line :class:`UserError` naming the file for a missing, foreign, corrupt or too new file.
    """
    p = Path(path)
    payload = _torch_load(p, map_location)
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt == POSE_FORMAT:
        raise UserError(f"{p}: is a pose-network file, not a model; pass the depth checkpoint beside it "
                        f"(RUN/checkpoints/final.pt)")
    if fmt not in (FORMAT, LEGACY_FORMAT):
        raise UserError(f"{p}: not a ColonDepth model (no '{FORMAT}' marker); pass a .pt file written by "
                        f"'colondepth train'")
    version = int(payload.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise UserError(f"{p}: model format {version} is newer than this ColonDepth reads ({FORMAT_VERSION}); "
                        f"upgrade colondepth")
    payload.setdefault("pose", None)
    payload.setdefault("two_frame", None)
    return payload


def read_pose_file(path: str | Path, map_location=None) -> dict:
    """A version-1 stand-alone pose-network file as a bundle ``pose`` entry."""
    p = Path(path)
    payload = _torch_load(p, map_location, what="pose network")
    if not isinstance(payload, dict) or payload.get("format") != POSE_FORMAT:
        raise UserError(f"{p}: not a ColonDepth pose network file")
    version = int(payload.get("format_version", 1))  # files written before the version key are version 1
    if version > POSE_FORMAT_VERSION:
        raise UserError(f"{p}: pose network format version {version} is newer than this ColonDepth reads "
                        f"({POSE_FORMAT_VERSION}); upgrade colondepth")
    return {"config": payload["config"], "state": payload["state"],
            "translation_norm_mm": float(payload.get("translation_norm_mm", -1.0))}


def sidecar_pose_file(path: str | Path, card: dict) -> Optional[Path]:
    """``pose_net_<stage>.pt`` of the model's own stage beside a version-1 checkpoint, if it exists."""
    stage = (card or {}).get("stage")
    if not stage:
        return None
    p = Path(path).parent / f"pose_net_{stage}.pt"
    return p if p.is_file() else None


def build_pose(entry: dict, where: str | Path) -> tuple[torch.nn.Module, Optional[float]]:
    """``(PoseNet in eval mode, translation_norm_mm or None)`` from a bundle ``pose`` entry."""
    from colondepth.models.pose_net import build_pose_net

    net = _with_weights(lambda: build_pose_net(entry["config"]), lambda: entry["state"],
                        lambda kind: f"{where}: pose network weights do not match their config ({kind}); the file "
                                     "is damaged, retrain or pass another --checkpoint")
    t = float(entry.get("translation_norm_mm", -1.0))
    return net, (None if t < 0 else t)


def load_pose_file(path: str | Path, map_location=None) -> tuple[torch.nn.Module, Optional[float]]:
    """``(PoseNet in eval mode, translation_norm_mm or None)`` from a stand-alone ``pose_net_<stage>.pt``."""
    return build_pose(read_pose_file(path, map_location), path)


def build_depth(payload: dict, where: str | Path) -> torch.nn.Module:
    """The depth network of a raw bundle, weights loaded, in eval mode."""
    from colondepth.models.depth_net import build_depth_net

    return _with_weights(lambda: build_depth_net(payload["card"]["model"]), lambda: payload["model_state"],
                         lambda kind: f"{where}: checkpoint weights do not match its model card ({kind}); the file "
                                      "is damaged, retrain or pass another --checkpoint")


def pose_entry_of(payload: dict, path: str | Path, map_location=None) -> tuple[Optional[dict], Path]:
    """``(pose entry or None, file it came from)`` of a raw bundle read from ``path``: its own ``pose``, or for
    a version-1 checkpoint the ``pose_net_<stage>.pt`` of its stage beside it."""
    entry, where = payload.get("pose"), Path(path)
    if entry is None and payload.get("format") == LEGACY_FORMAT:
        side = sidecar_pose_file(where, payload["card"])
        if side is not None:
            entry, where = read_pose_file(side, map_location), side
    return entry, where


def load_bundle(path: str | Path, map_location=None, with_pose: bool = True,
                with_two_frame: bool = True) -> ModelBundle:
    """Load a model for inference: depth network and, when the bundle (or, for a version-1 checkpoint, the
    ``pose_net_<stage>.pt`` of its stage beside it) has one, the pose network, and the two-frame network when
    there is one; all in eval mode on ``map_location`` (default CPU)."""
    p = Path(path)
    payload = read_bundle(p, map_location)
    depth = build_depth(payload, p).to(map_location or "cpu")
    pose, t_norm = None, None
    if with_pose:
        entry, where = pose_entry_of(payload, p, map_location)
        if entry is not None:
            pose, t_norm = build_pose(entry, where)
            pose = pose.to(map_location or "cpu")
    two = None
    if with_two_frame and payload.get("two_frame") is not None:
        two = build_two_frame(payload["two_frame"], p).to(map_location or "cpu")
    return ModelBundle(depth=depth, card=payload["card"], config=payload.get("config") or {}, pose=pose,
                       translation_norm_mm=t_norm, path=p, two_frame=two)


def upgrade_bundle(src: str | Path, dst: str | Path, pose_file: Optional[str | Path] = None) -> Path:
    """Write ``src`` (version 1 or 2) as a version-2 bundle ``dst`` without training state, with the pose
    network of ``pose_file`` (a ``pose_net_<stage>.pt``), else the one the bundle has, else its stage's file
    beside it."""
    src = Path(src)
    payload = read_bundle(src)
    entry = payload.get("pose")
    if pose_file is not None:
        entry = read_pose_file(pose_file)
    elif entry is None:
        side = sidecar_pose_file(src, payload["card"])
        entry = read_pose_file(side) if side is not None else None
    depth = build_depth(payload, src)
    if entry is not None:
        build_pose(entry, pose_file or src)  # proves the weights fit before anything is written
    return save_bundle(dst, depth, payload["card"], payload.get("config"), pose=entry,
                       two_frame=payload.get("two_frame"))
