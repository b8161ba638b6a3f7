"""Snippets of consecutive frames for self-supervised training and pose evaluation.

A *snippet* is a target frame with ``N`` source frames around it.  With ``length = 3`` and
``frame_skip = k`` the frames are ``(t - k, t, t + k)`` of a clip (indices into the clip's kept frames,
see :func:`colondepth.datasets.video.select_clips`); the target is the centre frame.  Sources are
ordered as they appear in time, without the target.

:class:`SnippetDataset` turns snippets of :class:`~colondepth.datasets.base.Sequence` objects into
training samples letterboxed onto the network's input grid like inference does (aspect ratio kept,
zero padding, intrinsics following; :mod:`colondepth.geometry.letterbox`).

:func:`split_heldout` splits the snippets of every sequence into training snippets and held-out blocks that
share no frame with them (the held-out check of self-supervised stages, docs/finetune.md).
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


#: the largest frame skip ``frame_skip: auto`` chooses (kept frames)
MAX_AUTO_FRAME_SKIP = 16
#: frame pairs measured per candidate skip by :func:`adaptive_frame_skip`
AUTO_SKIP_PAIRS = 24


@dataclass(frozen=True)
class FrameSkipChoice:
    """``skip``: kept frames between views; ``motion_px``: median tracked motion at that skip on the network
    grid (px, NaN when nothing could be tracked); ``reached``: whether it reaches the target."""

    skip: int
    motion_px: float
    reached: bool


def adaptive_frame_skip(seq: Sequence, clips: list[list[int]], target_px: float, scale: float, length: int = 3,
                        max_skip: int = MAX_AUTO_FRAME_SKIP, pairs: int = AUTO_SKIP_PAIRS) -> FrameSkipChoice:
    """The smallest frame skip ``k`` whose views move at least ``target_px`` on the network's grid.

    The motion at ``k`` is the median, over up to ``pairs`` evenly spaced pairs ``(clip[s], clip[s + k])`` of
    the kept frames of ``clips``, of :func:`colondepth.datasets.video.tracked_motion_px` (frame px) times
    ``scale`` (grid px per frame px, the letterbox factor).  ``k`` runs from 1 to ``max_skip``, and to at most
    ``(longest clip - 1) // (2 (length - 1))`` so the longest clip keeps at least half its frames as snippet
    targets.  When no ``k`` reaches the target the largest is returned (``reached`` False); when no pair can be
    tracked (no texture), ``k = 1`` with ``motion_px`` NaN.

    A slow camera (the shared sinus video moves about 0.6 px per frame on a 128-px grid) gives a large ``k``:
    photometric view synthesis then sees parallax instead of sub-pixel shifts.
    """
    from colondepth.datasets.video import tracked_motion_px

    if not target_px > 0 or not scale > 0:
        raise ValueError(f"adaptive_frame_skip: need target_px > 0 and scale > 0, got {target_px}, {scale}")
    longest = max((len(c) for c in clips), default=0)
    cap = max(1, min(int(max_skip), (longest - 1) // (2 * (length - 1))))
    last = FrameSkipChoice(1, float("nan"), False)
    for k in range(1, cap + 1):
        candidates = [(c[s], c[s + k]) for c in clips for s in range(len(c) - k)]
        if not candidates:
            break
        pick = np.unique(np.linspace(0, len(candidates) - 1, min(pairs, len(candidates))).round().astype(int))
        moved = tracked_motion_px(seq, [candidates[i] for i in pick])
        if not np.isfinite(moved).any():
            return FrameSkipChoice(1, float("nan"), False)
        motion = float(np.nanmedian(moved)) * float(scale)
        last = FrameSkipChoice(k, motion, motion >= target_px)
        if last.reached:
            break
    return last


def require_snippets(snippets: list[Snippet], what: str, length: int, frame_skip: int) -> list[Snippet]:
    """``snippets`` or a one-line :class:`UserError` when there are none."""
    if not snippets:
        raise UserError(f"{what}: no {length}-frame snippet (frame skip {frame_skip}) after frame selection; "
                        f"use a longer video, a smaller frame skip or a lower motion threshold")
    return snippets


class SnippetDataset:
    """A torch-style dataset of snippets letterboxed onto a network's input grid.

    ``grid``: an :class:`~colondepth.geometry.letterbox.InputGrid` (the depth network's is
    ``DepthNetConfig.input_grid``), or an :class:`ImageSize` meaning ``InputGrid(size, "inside")`` (a
    fixed-size grid).  Every frame goes through the shared letterbox of inference
    (:mod:`colondepth.geometry.letterbox`): scaled with its aspect ratio kept (``"image"`` resampling),
    zero-padded; the intrinsics follow.  Sequences whose grids differ are centred on the smallest grid
    holding them all, so a batch has one size.

    Each item is a dict of tensors (``(Hp, Wp)`` the grid):

    - ``target`` (3, Hp, Wp) float in [0, 1]; ``sources`` (N, 3, Hp, Wp);
    - ``K`` (3, 3) float32 intrinsics of the grid (px);
    - ``fov_mask`` (1, Hp, Wp) bool: the sequence's field of view (all of the frame when it has none),
      False on the padding;
    - ``index`` () long, the snippet's position in the dataset;
    - when the sequence has ground truth: ``depth_mm`` (1, Hp, Wp) target z-depth (0 invalid and on the
      padding, ``"nearest"`` resampling) and/or ``src_from_tgt`` (N, 4, 4) float32 mm from its ``world_from_cam``.
    """

    def __init__(self, sequences: list[Sequence], snippets: list[Snippet], grid, with_ground_truth: bool = True):
        import torch

        from colondepth.geometry.letterbox import InputGrid, common_canvas

        if isinstance(grid, ImageSize):
            grid = InputGrid(grid, "inside")
        if not isinstance(grid, InputGrid):
            raise TypeError(f"grid must be an InputGrid or an ImageSize, got {type(grid).__name__}")
        self.sequences = sequences
        self.snippets = snippets
        self.grid = grid
        self.with_ground_truth = with_ground_truth
        boxes = [grid.layout(seq.intrinsics.size) for seq in sequences]  # intrinsics of the frames as read
        canvas = common_canvas(boxes)
        self._boxes = [b if b.padded == canvas else b.on_canvas(canvas) for b in boxes]
        self.size = canvas
        self._K, self._fov = [], []
        for seq, box in zip(sequences, self._boxes):
            self._K.append(torch.from_numpy(box.intrinsics(seq.intrinsics).K.astype(np.float32)))
            inside = box.inside()[0]
            if seq.fov_mask is not None:
                fov = box.apply(torch.from_numpy(np.asarray(seq.fov_mask, bool))[None, None], "nearest")[0]
                inside = inside & fov
            self._fov.append(inside)

    def __len__(self) -> int:
        return len(self.snippets)

    def _rgb(self, s: int, i: int):
        """Frame ``i`` of sequence ``s`` letterboxed: ``(3, Hp, Wp)`` float32 in [0, 1]."""
        import torch

        rgb = np.ascontiguousarray(np.asarray(self.sequences[s].rgb(i))[..., :3]).astype(np.float32) / np.float32(255.0)
        return self._boxes[s].apply(torch.from_numpy(rgb).permute(2, 0, 1)[None], "image")[0].contiguous()

    def __getitem__(self, idx: int) -> dict:
        import torch

        sn = self.snippets[idx]
        seq = self.sequences[sn.sequence]
        item = {
            "target": self._rgb(sn.sequence, sn.target_frame),
            "sources": torch.stack([self._rgb(sn.sequence, f) for f in sn.source_frames]),
            "K": self._K[sn.sequence].clone(),
            "fov_mask": self._fov[sn.sequence].clone(),
            "index": torch.tensor(idx, dtype=torch.long),
        }
        if self.with_ground_truth and seq.has_depth:
            d = np.ascontiguousarray(np.asarray(seq.depth_mm(sn.target_frame), dtype=np.float32))
            item["depth_mm"] = self._boxes[sn.sequence].apply(torch.from_numpy(d)[None, None], "nearest")[0]
        if self.with_ground_truth and seq.has_poses:
            T = seq.world_from_cam
            tgt_T = T[sn.target_frame]
            rel = np.stack([np.linalg.solve(T[f], tgt_T) for f in sn.source_frames]).astype(np.float32)
            item["src_from_tgt"] = torch.from_numpy(rel)
        return item


#: Share of each sequence's snippets held out (``split_heldout``).
HELDOUT_FRACTION = 0.125
#: Held-out snippets per contiguous block (a long sequence gets several blocks spread over it).
HELDOUT_BLOCK = 8
#: Fewest held-out snippets of a sequence that gets a split at all.
MIN_HELDOUT = 3


@dataclass(frozen=True)
class HeldoutSplit:
    """What :func:`split_heldout` returns.

    ``train`` and ``heldout``: snippets, in the input order; ``guard``: training snippets dropped because
    they share a frame with a held-out snippet; ``unsplit``: indices of sequences too short for a split (all
    their snippets train).
    """

    train: list
    heldout: list
    guard: list
    unsplit: tuple[int, ...]


def split_heldout(snippets: list[Snippet], fraction: float = HELDOUT_FRACTION, block: int = HELDOUT_BLOCK,
                  min_heldout: int = MIN_HELDOUT) -> HeldoutSplit:
    """A deterministic held-out split of every sequence's snippets, frame-disjoint from training.

    Per sequence, with its ``n`` snippets in the given order (clip by clip, in time):
    ``h = max(min_heldout, round(fraction * n))`` snippets are held out in ``max(1, round(h / block))``
    contiguous blocks whose centres are spread evenly (block ``i`` centred on snippet ``(i + 0.5) n / blocks``;
    one block sits in the middle of the video).  Every other snippet that uses any frame of a held-out snippet
    (as target or source) is dropped (``guard``: ``2 * frame_skip`` snippets on each side of a block), so no
    held-out frame is ever seen in training.  A sequence whose training snippets would then number fewer
    than ``2 h`` is not split (listed in ``unsplit``; all its snippets train).
    """
    if not 0 < fraction < 1 or block < 1 or min_heldout < 1:
        raise ValueError("split_heldout: need 0 < fraction < 1, block >= 1, min_heldout >= 1")
    by_seq: dict[int, list[int]] = {}
    for i, sn in enumerate(snippets):
        by_seq.setdefault(sn.sequence, []).append(i)
    held_idx: set[int] = set()
    guard_idx: set[int] = set()
    unsplit = []
    for s, idx in by_seq.items():
        n = len(idx)
        h = max(min_heldout, int(round(fraction * n)))
        n_blocks = max(1, int(round(h / block)))
        sizes = [h // n_blocks + (1 if i < h % n_blocks else 0) for i in range(n_blocks)]
        chosen: set[int] = set()
        for i, size in enumerate(sizes):
            start = int(round((i + 0.5) * n / n_blocks - size / 2))
            start = min(max(start, 0), n - size)
            chosen.update(range(start, start + size))
        if len(chosen) >= n:
            unsplit.append(s)
            continue
        frames = {f for j in chosen for f in snippets[idx[j]].frames}
        guard = {j for j in range(n) if j not in chosen and frames.intersection(snippets[idx[j]].frames)}
        if n - len(chosen) - len(guard) < 2 * len(chosen):
            unsplit.append(s)
            continue
        held_idx.update(idx[j] for j in chosen)
        guard_idx.update(idx[j] for j in guard)
    return HeldoutSplit(
        train=[sn for i, sn in enumerate(snippets) if i not in held_idx and i not in guard_idx],
        heldout=[sn for i, sn in enumerate(snippets) if i in held_idx],
        guard=[sn for i, sn in enumerate(snippets) if i in guard_idx],
        unsplit=tuple(sorted(unsplit)),
    )
