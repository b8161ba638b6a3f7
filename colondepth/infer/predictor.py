"""Depth inference from a trained checkpoint: RGB uint8 frames in, z-depth in millimetres out.

>>> # predictor = DepthPredictor.from_checkpoint("runs/sfs/checkpoints/final.pt", device="cpu")
>>> # depth_mm = predictor.predict(rgb)            # (H, W, 3) uint8 RGB -> (H, W) float32 mm

The device is chosen explicitly (``device=`` or :func:`colondepth.device.default_device`), input is RGB
(not BGR), and the output is z-depth in mm along the OpenCV camera +Z axis on the input's pixel grid
(not disparity).  Preprocessing (resize to the network's input size, normalisation) comes from the
checkpoint's model card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from colondepth.errors import UserError

#: The repository root (``colondepth/infer/predictor.py`` -> two levels up from the package).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where the released default model lives; ``from_checkpoint()`` without a path loads it.
DEFAULT_MODEL_PATH = REPO_ROOT / "data" / "default_model.pt"


class DepthPredictor:
    """Run a :class:`colondepth.models.depth_net.DepthNet` on uint8 RGB frames.

    Attributes
    ----------
    model : DepthNet in eval mode on :attr:`device`
    card : dict, the checkpoint's model card (input size, normalisation, depth range, provenance)
    device : torch.device
    batch_size : int, frames per forward pass in :meth:`predict_batch`
    """

    def __init__(self, model, card: dict, device=None, batch_size: int = 8):
        from colondepth.device import default_device

        self.device = default_device(str(device) if device is not None else None)
        self.model = model.to(self.device).eval()
        self.card = card
        self.batch_size = int(batch_size)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device=None, batch_size: int = 8) -> "DepthPredictor":
        """Load ``path`` (default :data:`DEFAULT_MODEL_PATH`) with ``torch.load(weights_only=True)``."""
        from colondepth.train.checkpoint import load_checkpoint

        if path is None:
            path = DEFAULT_MODEL_PATH
            if not path.is_file():
                raise UserError(f"{path}: the default model is not installed; pass --checkpoint with a .pt file "
                                f"from 'colondepth train' (RUN/checkpoints/final.pt)")
        model, card, _ = load_checkpoint(path, map_location="cpu")
        return cls(model, card, device=device, batch_size=batch_size)

    @property
    def depth_range_mm(self) -> tuple[float, float]:
        lo, hi = self.card["depth_range_mm"]
        return float(lo), float(hi)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Depth of one frame: ``(H, W, 3) uint8`` RGB -> ``(H, W) float32`` z-depth in mm."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3:
            raise UserError(f"predict expects one (H, W, 3) uint8 RGB frame, got shape {rgb.shape}; "
                            f"use predict_batch for (B, H, W, 3)")
        return self.predict_batch(rgb[None])[0]

    def predict_batch(self, rgbs: np.ndarray) -> np.ndarray:
        """Depth of frames of one size: ``(B, H, W, 3) uint8`` RGB -> ``(B, H, W) float32`` z-depth in mm."""
        import torch

        rgbs = np.asarray(rgbs)
        if rgbs.ndim != 4 or rgbs.shape[-1] != 3 or rgbs.dtype != np.uint8:
            raise UserError(f"predict_batch expects (B, H, W, 3) uint8 RGB frames, got shape {rgbs.shape} "
                            f"dtype {rgbs.dtype}; convert to 8-bit RGB first")
        out = np.empty(rgbs.shape[:3], dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(rgbs), self.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(rgbs[start:start + self.batch_size]))
                x = chunk.to(self.device).permute(0, 3, 1, 2).float() / 255.0
                depth = self.model.predict_depth(x)[:, 0]
                out[start:start + len(chunk)] = depth.float().cpu().numpy()
        return out
