"""Camera trajectories for reconstruction: ground truth, or chained predictions of a pose network.

A pose estimator is any callable ``estimator(rgb_src, rgb_tgt) -> src_from_tgt`` taking two
``(H, W, 3) uint8`` RGB frames and returning the ``(4, 4)`` rigid transform (mm) mapping points of the
target camera into the source camera (OpenCV frames), the convention of
:mod:`colondepth.models.pose_net`.  With ``src = i`` and ``tgt = i + 1`` this is
``cam_i_from_cam_{i+1}``, so the trajectory is chained as
``world_from_cam_{i+1} = world_from_cam_i @ src_from_tgt`` with the first camera as world.

The network is loaded lazily by :func:`load_pose_estimator` from a checkpoint holding a pose
network (keys ``pose_model_config`` and ``pose_model_state``); without one, ``--poses predicted``
stops with a clear :class:`UserError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence as Seq

import numpy as np

from colondepth.errors import UserError

PoseEstimator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def chain_relative_poses(src_from_tgt: Seq[np.ndarray], world_from_first: Optional[np.ndarray] = None) -> np.ndarray:
    """Trajectory ``(N + 1, 4, 4)`` world_from_cam from ``N`` consecutive ``cam_i_from_cam_{i+1}``.

    ``world_from_first`` (default identity) is the first camera's pose.
    """
    import torch

    from colondepth.geometry.pose import compose_pose
    from colondepth.recon.pointcloud import check_pose

    first = np.eye(4) if world_from_first is None else check_pose(world_from_first, "first pose")
    out = [torch.from_numpy(first)]
    for i, rel in enumerate(src_from_tgt):
        rel_t = torch.from_numpy(check_pose(rel, f"relative pose {i}"))
        out.append(compose_pose(out[-1], rel_t))
    return torch.stack(out).numpy()


def predict_trajectory(rgbs: Seq[np.ndarray], estimator: PoseEstimator, progress: bool = True) -> np.ndarray:
    """``(N, 4, 4)`` world_from_cam of ``N`` frames from pairwise predictions (first camera = world)."""
    from tqdm import tqdm

    if len(rgbs) == 0:
        raise UserError("no frames to estimate poses for; check --frames")
    rel = []
    for i in tqdm(range(len(rgbs) - 1), desc="poses", unit="pair", disable=not progress):
        rel.append(np.asarray(estimator(rgbs[i], rgbs[i + 1]), dtype=np.float64))
    return chain_relative_poses(rel)


def load_pose_estimator(checkpoint: Optional[str | Path], device=None) -> PoseEstimator:
    """A :data:`PoseEstimator` from a checkpoint that holds a pose network.

    Raises :class:`UserError` when the pose network code is missing or the checkpoint has none.
    """
    try:
        import torch

        from colondepth.models.pose_net import build_pose_net
    except ImportError as exc:  # pragma: no cover - only on an installation without the pose network
        raise UserError(f"--poses predicted needs the pose network (colondepth.models.pose_net): {exc}; "
                        "use --poses gt with a dataset that has poses") from None
    from colondepth.device import default_device

    if checkpoint is None:
        raise UserError("--poses predicted needs --checkpoint with a pose network (saved by self-supervised "
                        "fine-tuning); use --poses gt with a dataset that has poses")
    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; pass --checkpoint with a .pt file")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "pose_model_state" not in ckpt or "pose_model_config" not in ckpt:
        raise UserError(f"{path}: this checkpoint holds no pose network (keys pose_model_config, "
                        "pose_model_state); use a checkpoint from self-supervised fine-tuning or --poses gt")
    cfg = dict(ckpt["pose_model_config"])
    net = build_pose_net(cfg)
    net.load_state_dict(ckpt["pose_model_state"])
    dev = default_device(str(device) if device is not None else None)
    net = net.to(dev).eval()
    if net.config.num_sources != 1:
        raise UserError(f"{path}: the pose network takes {net.config.num_sources} source frames; "
                        "reconstruction chains pairs and needs num_sources = 1")
    size = ckpt.get("pose_input_size")

    def estimator(rgb_src: np.ndarray, rgb_tgt: np.ndarray) -> np.ndarray:
        import torch.nn.functional as F

        def prep(img):
            t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).to(dev).permute(2, 0, 1)[None].float() / 255.0
            if size is not None:
                t = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
            return t

        with torch.inference_mode():
            out = net(prep(rgb_tgt), prep(rgb_src)[:, None])
        return out.src_from_tgt[0, 0].double().cpu().numpy()

    return estimator
