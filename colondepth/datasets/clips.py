"""Snippets of consecutive frames for self-supervised training and pose evaluation.

A *snippet* is a target frame with ``N`` source frames around it.  With ``length = 3`` and
``frame_skip = k`` the frames are ``(t - k, t, t + k)`` of a clip (indices into the clip's kept frames,
see :func:`colondepth.datasets.video.select_clips`); the target is the centre frame.  Sources are
ordered as they appear in time, without the target.

:class:`SnippetDataset` turns snippets of :class:`~colondepth.datasets.base.Sequence` objects into
training samples resized to the network input size (intrinsics rescaled with them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.datasets.base import Sequence
from colondepth.errors import UserError


@dataclass(frozen=True)
class Snippet:
    """``frames``: sequence frame indices in time order; ``target``: position of the target in ``frames``."""

    sequence: int
    frames: tuple[int, ...]
    target: int

    @property
    def target_frame(self) -> int:
        return self.frames[self.target]

    @property
    def source_frames(self) -> tuple[int, ...]:
        return tuple(f for i, f in enumerate(self.frames) if i != self.target)


def make_snippets(clip: list[int], length: int = 3, frame_skip: int = 1, stride: int = 1,
                  sequence: int = 0) -> list[Snippet]:
    """All snippets of ``length`` frames (odd, target in the centre) spaced ``frame_skip`` apart in ``clip``.

    ``clip`` holds sequence frame indices (e.g. one clip of :func:`select_clips`); consecutive snippets
    start ``stride`` kept frames apart.  A clip too short for one snippet gives ``[]``.
    """
    if length < 2:
        raise ValueError(f"snippet length must be >= 2, got {length}")
    if frame_skip < 1 or stride < 1:
        raise ValueError("frame_skip and stride must be >= 1")
    span = (length - 1) * frame_skip
    out = []
    for start in range(0, len(clip) - span, stride):
        frames = tuple(int(clip[start + j * frame_skip]) for j in range(length))
        out.append(Snippet(sequence=sequence, frames=frames, target=(length - 1) // 2))
    return out


def sequence_snippets(sequences: list[Sequence], clips: Optional[list[list[list[int]]]] = None, length: int = 3,
                      frame_skip: int = 1, stride: int = 1) -> list[Snippet]:
    """Snippets over several sequences; ``clips[s]`` lists the clips of sequence ``s`` (default: all frames)."""
    out: list[Snippet] = []
    for s, seq in enumerate(sequences):
        seq_clips = clips[s] if clips is not None else [list(range(seq.num_frames))]
        for c in seq_clips:
            out += make_snippets(c, length, frame_skip, stride, sequence=s)
    return out


def require_snippets(snippets: list[Snippet], what: str, length: int, frame_skip: int) -> list[Snippet]:
    """``snippets`` or a one-line :class:`UserError` when there are none."""
    if not snippets:
        raise UserError(f"{what}: no {length}-frame snippet (frame skip {frame_skip}) after frame selection; "
                        f"use a longer video, a smaller frame skip or a lower motion threshold")
    return snippets


def _resize_rgb(img: np.ndarray, size: ImageSize) -> np.ndarray:
    import cv2

    if img.shape[:2] == size.as_hw():
        return img
    return cv2.resize(img, (size.width, size.height), interpolation=cv2.INTER_AREA)


def _resize_nearest(x: np.ndarray, size: ImageSize) -> np.ndarray:
    import cv2

    if x.shape[:2] == size.as_hw():
        return x
    return cv2.resize(x, (size.width, size.height), interpolation=cv2.INTER_NEAREST)


class SnippetDataset:
    """A torch-style dataset of snippets resized to ``size``.

    Each item is a dict of tensors:

    - ``target`` (3, H, W) float in [0, 1]; ``sources`` (N, 3, H, W);
    - ``K`` (3, 3) float32 intrinsics of the resized frames (px);
    - ``fov_mask`` (1, H, W) bool (all True when the sequence has none);
    - ``index`` () long, the snippet's position in the dataset;
    - when the sequence has ground truth: ``depth_mm`` (1, H, W) target z-depth (0 invalid, nearest
      resampling) and/or ``src_from_tgt`` (N, 4, 4) float32 mm from its ``world_from_cam``.
    """

    def __init__(self, sequences: list[Sequence], snippets: list[Snippet], size: ImageSize,
                 with_ground_truth: bool = True):
        self.sequences = sequences
        self.snippets = snippets
        self.size = size
        self.with_ground_truth = with_ground_truth
        self._K = [seq.intrinsics.resized(size).K.astype(np.float32) for seq in sequences]
        self._fov = []
        for seq in sequences:
            m = np.ones(size.as_hw(), bool) if seq.fov_mask is None else _resize_nearest(
                seq.fov_mask.astype(np.uint8), size) > 0
            self._fov.append(m)

    def __len__(self) -> int:
        return len(self.snippets)

    def _rgb(self, seq: Sequence, i: int) -> np.ndarray:
        return _resize_rgb(seq.rgb(i), self.size).astype(np.float32) / 255.0

    def __getitem__(self, idx: int) -> dict:
        import torch

        sn = self.snippets[idx]
        seq = self.sequences[sn.sequence]
        tgt = self._rgb(seq, sn.target_frame)
        srcs = np.stack([self._rgb(seq, f) for f in sn.source_frames])
        item = {
            "target": torch.from_numpy(tgt).permute(2, 0, 1).contiguous(),
            "sources": torch.from_numpy(srcs).permute(0, 3, 1, 2).contiguous(),
            "K": torch.from_numpy(self._K[sn.sequence]),
            "fov_mask": torch.from_numpy(self._fov[sn.sequence])[None],
            "index": torch.tensor(idx, dtype=torch.long),
        }
        if self.with_ground_truth and seq.has_depth:
            d = _resize_nearest(seq.depth_mm(sn.target_frame).astype(np.float32), self.size)
            item["depth_mm"] = torch.from_numpy(np.ascontiguousarray(d))[None]
        if self.with_ground_truth and seq.has_poses:
            T = seq.world_from_cam
            tgt_T = T[sn.target_frame]
            rel = np.stack([np.linalg.solve(T[f], tgt_T) for f in sn.source_frames]).astype(np.float32)
            item["src_from_tgt"] = torch.from_numpy(rel)
        return item
