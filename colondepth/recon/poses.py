"""Camera trajectories for reconstruction: ground truth, or chained predictions of a pose network.

A pose estimator is any callable ``estimator(rgb_prev, rgb_cur, rgb_next=None) -> prev_from_cur``
taking ``(H, W, 3) uint8`` RGB frames (``rgb_next`` is ``None`` at the last frame) and returning the
``(4, 4)`` rigid transform (mm) mapping points of the current camera into the previous camera
(OpenCV frames): the pose network's ``src_from_tgt`` with the previous frame as source.  The
trajectory is chained as ``world_from_cam_k = world_from_cam_{k-1} @ prev_from_cur`` with the first
camera as world.

:func:`load_pose_estimator` loads the pose network of a model bundle (:mod:`colondepth.models.bundle`):
the default model's or a checkpoint's written by ``colondepth finetune``; for runs written before bundles held
the pose network, the stand-alone ``RUN/checkpoints/pose_net_<stage>.pt`` of the checkpoint's stage.
It runs on snippets ``(k-1, k, k+1)`` as in training (target ``k`` in the centre; at the last frame the
previous frame stands in for the missing next one), on frames letterboxed onto the depth checkpoint's
input grid exactly as self-supervised training letterboxes them (:func:`pose_input`: aspect ratio kept,
black padding, never stretched; a depth checkpoint that cannot be read is a :class:`UserError` naming it,
not a silent guess), and
rescales translations to the network's training norm when it has one (the scale the depth
network was fine-tuned with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence as Seq

import numpy as np

from colondepth.errors import UserError

PoseEstimator = Callable[..., np.ndarray]


def chain_relative_poses(prev_from_cur: Seq[np.ndarray], world_from_first: Optional[np.ndarray] = None) -> np.ndarray:
    """Trajectory ``(N + 1, 4, 4)`` world_from_cam from ``N`` consecutive ``cam_{k-1}_from_cam_k``.

    ``world_from_first`` (default identity) is the first camera's pose.
    """
    import torch

    from colondepth.geometry.pose import compose_pose
    from colondepth.recon.pointcloud import check_pose

    first = np.eye(4) if world_from_first is None else check_pose(world_from_first, "first pose")
    out = [torch.from_numpy(first)]
    for i, rel in enumerate(prev_from_cur):
        rel_t = torch.from_numpy(_orthonormalised(check_pose(rel, f"relative pose {i}")))
        out.append(torch.from_numpy(_orthonormalised(compose_pose(out[-1], rel_t).numpy())))
    return torch.stack(out).numpy()


def _orthonormalised(T: np.ndarray) -> np.ndarray:
    """``T`` with its rotation projected onto SO(3) (SVD), so float32 round-off cannot pile up over
    thousands of chained poses."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    out = T.astype(np.float64, copy=True)
    out[:3, :3] = R
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


def find_pose_network(checkpoint: Optional[str | Path], card: Optional[dict] = None) -> Path:
    """The pose-network file for ``checkpoint``: the file itself when it is one, else the pose network of the
    same stage beside it: ``pose_net_<stage>.pt`` with ``<stage>`` from the depth checkpoint's model card
    (``colondepth finetune`` writes both into ``RUN/checkpoints/``).  A folder with a single pose network and a
    card without a stage falls back to that one file; anything ambiguous is a one-line error listing the
    candidates (never a guess by modification time).  ``card``: the checkpoint's model card when the caller
    has read it already."""
    if checkpoint is None:
        raise UserError("--poses predicted needs a model with a pose network: pass --checkpoint from 'colondepth "
                        "finetune', or use --poses gt with a dataset that has poses")
    p = Path(checkpoint)
    if not p.is_file():
        raise UserError(f"{p}: checkpoint not found; pass --checkpoint with a .pt file")
    if p.name.startswith("pose_net"):
        return p
    if card is None:
        from colondepth.models.bundle import read_bundle

        card = read_bundle(p).get("card")
    stage = (card or {}).get("stage")
    if stage:
        same = p.parent / f"pose_net_{stage}.pt"
        if same.is_file():
            return same
    found = sorted(p.parent.glob("pose_net_*.pt"))
    if not found:
        raise UserError(f"{p}: no pose network (pose_net_*.pt) beside this checkpoint; use a checkpoint folder "
                        "written by 'colondepth finetune', or --poses gt")
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise UserError(f"{p}: its stage {stage!r} has no pose_net_{stage}.pt and the folder holds several pose "
                        f"networks ({names}); pass the one to use as --checkpoint")
    return found[0]


def depth_input_size(checkpoint: Path) -> Optional[tuple[int, int]]:
    """The network input size ``(h, w)`` of the depth checkpoint ``checkpoint``; ``None`` for a pose-network
    file (no depth checkpoint: frames are then only rounded down to the network's divisor).

    Raises a one-line :class:`UserError` naming the file when it cannot be read or its model card has no
    valid ``input_size``: the pose network must see frames at the size it was trained with, so guessing
    would give wrong poses silently.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.name.startswith("pose_net"):
        return None
    from colondepth.models.bundle import read_bundle

    return _card_input_size(read_bundle(checkpoint).get("card"), checkpoint)  # UserError naming an unreadable file


def _card_input_size(card: Optional[dict], checkpoint: Path) -> tuple[int, int]:
    """``(h, w)`` from a model card's ``input_size``; the one-line errors of :func:`depth_input_size`."""
    try:
        h, w = (int(x) for x in card["input_size"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{checkpoint}: the checkpoint's model card has no valid input_size [height, width], so the "
                        "pose network's input size is unknown; pass a checkpoint written by 'colondepth finetune' "
                        "or the pose_net_<stage>.pt file itself") from None
    if h <= 0 or w <= 0:
        raise UserError(f"{checkpoint}: the model card's input_size {card['input_size']} is not a positive size; "
                        "pass a checkpoint written by 'colondepth finetune'")
    return h, w


def _card_input_grid(card: Optional[dict], checkpoint: Path):
    """The depth network's :class:`~colondepth.geometry.letterbox.InputGrid` from its model card: the
    card's ``model`` configuration, or for a card with only ``input_size`` a fixed grid of that size
    (``fit="inside"``).  The one-line errors of :func:`depth_input_size`."""
    from colondepth.conventions import ImageSize
    from colondepth.geometry.letterbox import InputGrid
    from colondepth.models.depth_net import DepthNetConfig

    h, w = _card_input_size(card, checkpoint)
    model = card.get("model") if isinstance(card, dict) else None
    if isinstance(model, dict):
        try:
            cfg = DepthNetConfig.from_dict(model)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{checkpoint}: the model card's model configuration is not valid ({exc}); pass a "
                            "checkpoint written by 'colondepth finetune'") from None
        if cfg.input_size.as_hw() == (h, w):
            return cfg.input_grid
    return InputGrid(ImageSize(h, w), "inside")


def pose_network(checkpoint: Optional[str | Path]):
    """``(PoseNet in eval mode, translation_norm_mm or None, depth input grid or None, source path)``.

    The depth input grid is the :class:`~colondepth.geometry.letterbox.InputGrid` of the bundle's depth
    network (``None`` for a ``pose_net_*.pt`` file: frames are then used at their own size), onto which
    the pose network's frames are letterboxed exactly as the depth network's.

    ``checkpoint``: a model bundle with a pose network, a version-1 checkpoint with its stage's
    ``pose_net_<stage>.pt`` beside it (see :func:`find_pose_network`), a ``pose_net_*.pt`` file itself, or
    ``None`` for the shipped default model.  A one-line :class:`UserError` when there is no pose network.
    """
    from colondepth.models.bundle import build_pose, load_pose_file, pose_entry_of, read_bundle

    default = checkpoint is None
    if default:
        from colondepth.resources import default_model_path

        checkpoint = default_model_path()
        if not checkpoint.is_file():
            raise UserError(f"{checkpoint}: the default model is not installed; pass --checkpoint with a model from "
                            "'colondepth finetune', or use --poses gt")
    p = Path(checkpoint)
    if not p.is_file():
        raise UserError(f"{p}: checkpoint not found; pass --checkpoint with a .pt file")
    if p.name.startswith("pose_net"):
        net, translation_norm_mm = load_pose_file(p)
        return net, translation_norm_mm, None, p
    payload = read_bundle(p)  # read once: an unreadable checkpoint fails before any work
    depth_hw = _card_input_grid(payload.get("card"), p)
    entry, where = pose_entry_of(payload, p)
    if entry is not None:
        net, translation_norm_mm = build_pose(entry, where)
        return net, translation_norm_mm, depth_hw, where
    if default:
        raise UserError("--poses predicted: the default model has no pose network; pass --checkpoint from "
                        "'colondepth finetune', or use --poses gt with a dataset that has poses")
    path = find_pose_network(p, card=payload.get("card"))
    net, translation_norm_mm = load_pose_file(path)
    return net, translation_norm_mm, depth_hw, path


def load_pose_estimator(checkpoint: Optional[str | Path], device=None) -> PoseEstimator:
    """A :data:`PoseEstimator` from the pose network that belongs to ``checkpoint`` (see :func:`pose_network`).

    Raises :class:`UserError` when no pose network can be found or read.
    """
    import torch

    from colondepth.conventions import ImageSize
    from colondepth.device import default_device

    net, translation_norm_mm, grid, path = pose_network(checkpoint)
    dev = default_device(str(device) if device is not None else None)
    net = net.to(dev).eval()
    n_src = int(net.config.num_sources)
    if n_src not in (1, 2):
        raise UserError(f"{path}: the pose network takes {n_src} source frames; reconstruction supports 1 or 2")

    def prep(img: np.ndarray) -> "torch.Tensor":
        """``(H, W, 3) uint8`` -> ``(1, 3, Hp, Wp)`` in [0, 1] on the depth network's grid (the letterbox of
        training, :func:`pose_input`), or at the frame's own size without a depth network."""
        t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).to(dev).permute(2, 0, 1)[None].float() / 255.0
        return t if grid is None else pose_input(grid, t)

    def estimator(rgb_prev: np.ndarray, rgb_cur: np.ndarray, rgb_next: Optional[np.ndarray] = None) -> np.ndarray:
        from colondepth.losses.photometric import normalize_translation

        if n_src == 1:
            sources = [rgb_prev]
        else:
            sources = [rgb_prev, rgb_prev if rgb_next is None else rgb_next]
        for s in sources:
            if s.shape[:2] != rgb_cur.shape[:2]:
                raise UserError(f"pose estimation needs frames of one size, got {ImageSize(*rgb_cur.shape[:2])} "
                                f"and {ImageSize(*s.shape[:2])}")
        with torch.inference_mode():
            src = torch.stack([prep(s)[0] for s in sources])[None]  # (1, N, 3, Hp, Wp)
            pose = net(prep(rgb_cur), src).src_from_tgt  # (1, N, 4, 4)
            if translation_norm_mm is not None:
                pose = normalize_translation(pose, translation_norm_mm)
        return pose[0, 0].double().cpu().numpy()

    return estimator


def pose_input(grid, rgb01):
    """``(B, 3, h, w)`` float RGB in [0, 1] -> ``(B, 3, Hp, Wp)``: frames letterboxed onto the depth
    network's ``grid`` (an :class:`~colondepth.geometry.letterbox.InputGrid`), the transform self-supervised
    training gives both networks (:class:`~colondepth.datasets.clips.SnippetDataset`); the aspect ratio is
    kept, the padding is black.  The pose network pads further to its divisor itself."""
    from colondepth.conventions import ImageSize

    return grid.layout(ImageSize(int(rgb01.shape[-2]), int(rgb01.shape[-1]))).apply(rgb01, "image")
