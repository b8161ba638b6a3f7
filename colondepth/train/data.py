"""Training data for supervised stages: dataset discovery, the validation hold-out, frame datasets.

How ``colondepth train`` finds data
    Each ``--data DIR`` is either a dataset (a folder holding ``dataset.yaml``, DESIGN section 3) or a
    parent folder whose direct children are datasets.  A dataset's level is the ``level`` key of its
    ``dataset.yaml``; a stage's ``levels: [L2]`` uses every dataset of level ``L2``.  A stage's
    ``datasets:`` entries name dataset folders directly (any level).

Validation hold-out (deterministic)
    Per level (or per named dataset), sequences are sorted by ``(dataset path, sequence name)`` and the
    *last* sequence is held out for validation.  A level with a single sequence holds out the last
    ``val_fraction_single_sequence`` of its frames instead (at least one frame).  Validation uses at most
    ``val_max_frames_per_level`` evenly spaced held-out frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from colondepth.errors import UserError


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset folder on disk and its level (``None`` when its dataset.yaml has none)."""

    path: Path
    level: str | None


def _read_level(path: Path) -> str | None:
    import yaml

    try:
        meta = yaml.safe_load((path / "dataset.yaml").read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{path / 'dataset.yaml'}: not valid YAML; regenerate it with 'colondepth synth'") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path / 'dataset.yaml'}: expected a mapping; regenerate it with 'colondepth synth'")
    level = meta.get("level")
    return None if level is None else str(level)


def discover_datasets(data_dirs: list[str | Path]) -> list[DatasetInfo]:
    """Datasets named by ``--data`` folders (each a dataset or a parent of datasets), sorted by path."""
    found: dict[Path, DatasetInfo] = {}
    for d in data_dirs:
        p = Path(d)
        if not p.is_dir():
            raise UserError(f"{p}: --data folder not found; pass a dataset made by 'colondepth synth' or its parent")
        if (p / "dataset.yaml").is_file():
            candidates = [p]
        else:
            candidates = sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")
                                and (c / "dataset.yaml").is_file())  # hidden: unfinished temporary output
            if not candidates:
                raise UserError(f"{p}: no dataset.yaml in it or its sub-folders; pass a dataset made by "
                                f"'colondepth synth' (or its parent folder) to --data")
        for c in candidates:
            found[c.resolve()] = DatasetInfo(c.resolve(), _read_level(c))
    return [found[k] for k in sorted(found)]


def open_dataset(path: Path):
    """Sequences of one dataset in our layout, sorted by name."""
    from colondepth.datasets.registry import open_sequences

    seqs = list(open_sequences(path, "colondepth"))
    return sorted(seqs, key=lambda s: s.name)


@dataclass
class FrameRef:
    """One frame: a sequence and a frame index."""

    sequence: object  # colondepth.datasets.base.Sequence
    index: int


@dataclass
class SourceSplit:
    """Train and validation frames of one level or named dataset."""

    key: str
    train: list[FrameRef] = field(default_factory=list)
    val: list[FrameRef] = field(default_factory=list)


def split_sequences(key: str, sequences: list, val_fraction_single: float, val_max_frames: int) -> SourceSplit:
    """Hold out the last sequence (or the last frames of a single sequence); see the module docstring."""
    seqs = [s for s in sequences if s.has_depth]
    if not seqs:
        raise UserError(f"{key}: no sequence with ground-truth depth; supervised stages need depth")
    out = SourceSplit(key)
    if len(seqs) >= 2:
        for s in seqs[:-1]:
            out.train += [FrameRef(s, i) for i in range(len(s))]
        val_all = [FrameRef(seqs[-1], i) for i in range(len(seqs[-1]))]
    else:
        s = seqs[0]
        n_val = max(1, int(math.ceil(len(s) * val_fraction_single)))
        if len(s) - n_val < 1:
            raise UserError(f"{key}: a single sequence of {len(s)} frame(s) cannot be split into train and "
                            f"validation; generate more frames or sequences")
        out.train = [FrameRef(s, i) for i in range(len(s) - n_val)]
        val_all = [FrameRef(s, i) for i in range(len(s) - n_val, len(s))]
    if len(val_all) > val_max_frames:
        pick = np.linspace(0, len(val_all) - 1, val_max_frames).round().astype(int)
        val_all = [val_all[i] for i in pick]
    out.val = val_all
    return out


class DataPool:
    """All supervised data a curriculum can use, split once, keyed by level or dataset path."""

    def __init__(self, data_dirs: list, val_fraction_single: float, val_max_frames: int, base_dir: Path):
        self.data_dirs = list(data_dirs)
        self.infos = discover_datasets(data_dirs) if data_dirs else []
        self.base_dir = base_dir
        self.val_fraction_single = val_fraction_single
        self.val_max_frames = val_max_frames
        self._cache: dict[str, SourceSplit] = {}

    @property
    def available_levels(self) -> list[str]:
        return sorted({i.level for i in self.infos if i.level is not None})

    def level(self, level: str) -> SourceSplit:
        key = f"level:{level}"
        if key not in self._cache:
            infos = [i for i in self.infos if i.level == level]
            if not infos and self.data_dirs:  # datasets written under --data since the run started
                self.infos = discover_datasets(self.data_dirs)
                infos = [i for i in self.infos if i.level == level]
            if not infos:
                have = ", ".join(self.available_levels) or "none"
                raise UserError(f"level {level}: no dataset of this level under --data (levels found: {have}); "
                                f"generate one with 'colondepth synth --recipe synth/{level}_*.yaml --out DIR' "
                                f"and pass it with --data")
            seqs = [s for i in infos for s in open_dataset(i.path)]
            self._cache[key] = split_sequences(key, seqs, self.val_fraction_single, self.val_max_frames)
        return self._cache[key]

    def dataset(self, name: str) -> SourceSplit:
        p = Path(name)
        if not p.is_absolute():
            p = (self.base_dir / p)
        key = f"dataset:{p.resolve()}"
        if key not in self._cache:
            if not (p / "dataset.yaml").is_file():
                raise UserError(f"{p}: dataset folder (from the curriculum's 'datasets') not found or has no "
                                f"dataset.yaml; paths are relative to the curriculum file")
            self._cache[key] = split_sequences(key, open_dataset(p), self.val_fraction_single, self.val_max_frames)
        return self._cache[key]

    def stage_sources(self, stage) -> list[SourceSplit]:
        return [self.level(lv) for lv in stage.levels] + [self.dataset(d) for d in stage.datasets]


def rehearsal_frames(current: list[FrameRef], earlier: list[FrameRef], ratio: float, seed: int) -> list[FrameRef]:
    """Frames of earlier stages to mix in so they make up ``ratio`` of the stage's training set.

    Picks ``round(len(current) * ratio / (1 - ratio))`` frames by a seeded permutation of ``earlier``
    (repeating it when it is shorter).
    """
    if ratio <= 0 or not earlier:
        return []
    n = int(round(len(current) * ratio / (1.0 - ratio)))
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(earlier), generator=g).tolist()
    return [earlier[perm[i % len(perm)]] for i in range(n)]


def albedo_field(hw: tuple[int, int], rng: np.random.Generator, std: float, cells: int = 4) -> np.ndarray:
    """A smooth random multiplicative albedo field ``(H, W, 3)`` float32 (mean about 1).

    Real mucosa is not uniformly bright: redness, vessels, blood, bile and mucus change its albedo over
    regions of the image, so brightness is not distance alone.  The field is ``exp(a + c_k)``: ``a`` a
    luminance log-gain of standard deviation ``std`` drawn on a ``cells x cells`` grid (the number of cells
    drawn from 2..``cells``) and bicubically interpolated over the image, ``c_k`` a per-channel part of a third
    of that, so the network cannot read depth from brightness alone.
    """
    import cv2

    h, w = hw
    n = int(rng.integers(2, max(2, cells) + 1))
    grid = rng.standard_normal((n, n, 4)).astype(np.float32)
    grid[..., :3] *= np.float32(std / 3.0)
    grid[..., 3] *= np.float32(std)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.exp(up[..., 3:4] + up[..., :3]).astype(np.float32)


def augment_photometric(rgb01: np.ndarray, rng: np.random.Generator, augment) -> np.ndarray:
    """Camera-like jitter of one ``(H, W, 3)`` float32 image in [0, 1] (values drawn from ``rng``).

    In linear light (display gamma 2.2 undone): a smooth random albedo field (``albedo_std``, see
    :func:`albedo_field`), a global ``gain`` and per-channel ``colour`` gains, then the clip and re-encoding,
    an extra exponent ``gamma``, a Gaussian blur and additive noise.
    """
    import cv2

    lin = np.power(rgb01, 2.2)
    if float(getattr(augment, "albedo_std", 0.0)) > 0:  # no draw when off: earlier runs keep their samples
        lin = lin * albedo_field(lin.shape[:2], rng, float(augment.albedo_std), int(augment.albedo_cells))
    gain = rng.uniform(*augment.gain) * np.exp(float(augment.colour) * rng.standard_normal(3))
    lin = np.clip(lin * gain.astype(np.float32), 0.0, 1.0)
    out = np.power(lin, np.float32(1.0 / 2.2) * np.float32(rng.uniform(*augment.gamma)))
    sigma = rng.uniform(*augment.blur_sigma_px)
    if sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), float(sigma))
    noise = rng.uniform(*augment.noise_std)
    if noise > 0:
        out = out + np.float32(noise) * rng.standard_normal(out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class SupervisedFrames(torch.utils.data.Dataset):
    """RGB + depth frames at the model's input size, with their intrinsics.

    Items are dicts: ``rgb`` ``(3, H, W)`` float32 in [0, 1]; ``depth_mm`` ``(1, H, W)`` float32 z-depth in
    mm, 0 = invalid (nearest-neighbour resized, so no invalid/valid mixing; pixels outside the sequence's
    ``fov_mask`` are invalid); ``valid`` ``(1, H, W)`` bool; ``K`` ``(3, 3)`` float32 pinhole intrinsics
    of the returned ``(H, W)`` grid (after crop, resize and flips: a flip maps ``cx`` to ``W - 1 - cx``).
    Augmentation (``augment``, a curriculum ``Augment`` section, or the ``hflip``/``vflip`` flags) is drawn
    from a generator seeded by ``(seed, epoch, index)``, so a resumed run sees exactly the same samples; set
    :attr:`epoch` before each pass.  Frames are never stretched: a frame is cropped to the input's aspect
    ratio first (centre crop without augmentation; random position and ``zoom`` with it), then resized by
    the shared letterbox of inference (:mod:`colondepth.geometry.letterbox`: ``"image"`` resampling for RGB
    in [0, 1], ``"nearest"`` for depth), so a frame with the input's aspect ratio gives exactly the
    predictor's input (:func:`colondepth.models.depth_net.prepare_frames`).
    """

    def __init__(self, frames: list[FrameRef], input_hw: tuple[int, int], hflip: bool = False,
                 vflip: bool = False, seed: int = 0, augment=None):
        self.frames = frames
        self.input_hw = input_hw
        self.hflip = hflip if augment is None else bool(augment.hflip)
        self.vflip = vflip if augment is None else bool(augment.vflip)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames)

    def _crop_box(self, h: int, w: int, rng: np.random.Generator | None) -> tuple[int, int, int, int]:
        """``(y0, x0, ch, cw)``: the input's aspect ratio, shrunk by a random zoom, at a random place."""
        H, W = self.input_hw
        scale = min(h / H, w / W)
        ch, cw = int(round(H * scale)), int(round(W * scale))
        if rng is not None and self.augment is not None and self.augment.zoom[1] > 1.0:
            z = rng.uniform(*self.augment.zoom)
            ch, cw = max(8, int(round(ch / z))), max(8, int(round(cw / z)))
        if rng is None:
            return (h - ch) // 2, (w - cw) // 2, ch, cw
        return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw

    def __getitem__(self, idx: int) -> dict:
        from colondepth.conventions import ImageSize
        from colondepth.geometry.letterbox import letterbox_layout

        ref = self.frames[idx]
        rgb = np.asarray(ref.sequence.rgb(ref.index))
        depth = np.asarray(ref.sequence.depth_mm(ref.index), dtype=np.float32)
        fov = getattr(ref.sequence, "fov_mask", None)
        if fov is not None:  # pixels outside the endoscope's field of view carry no image signal
            depth = np.where(fov, depth, 0.0).astype(np.float32)
        rng = None
        if self.augment is not None or self.hflip or self.vflip:
            rng = np.random.default_rng([int(self.seed), int(self.epoch), int(idx)])
        h, w = depth.shape
        y0, x0, ch, cw = self._crop_box(h, w, rng if self.augment is not None else None)
        k = ref.sequence.intrinsics
        if k.size.as_hw() != (h, w):
            k = k.resized(ImageSize(h, w))
        # the shared letterbox (colondepth.geometry.letterbox), as at inference: the crop has the input's
        # aspect ratio, so it fills the input grid (a rounding pixel at most is padding)
        box = letterbox_layout(ImageSize(ch, cw), ImageSize(*self.input_hw), fit="inside")
        k = box.intrinsics(k.cropped(x0, y0, ImageSize(ch, cw)))
        crop = np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw, :3]).astype(np.float32) / np.float32(255.0)
        rgb_t = box.apply(torch.from_numpy(crop).permute(2, 0, 1)[None], "image")[0]
        depth_t = box.apply(torch.from_numpy(np.ascontiguousarray(depth[y0:y0 + ch, x0:x0 + cw]))[None, None],
                            "nearest")[0]
        aug = self.augment
        if aug is not None and rng is not None and aug.photometric and rng.uniform() < aug.probability:
            rgb01 = augment_photometric(np.ascontiguousarray(rgb_t.permute(1, 2, 0).numpy()), rng, aug)
            rgb_t = torch.from_numpy(np.ascontiguousarray(rgb01)).permute(2, 0, 1)
        rgb_t, depth_t = rgb_t.float().contiguous(), depth_t.float().contiguous()
        K = torch.tensor(k.K, dtype=torch.float32)
        H, W = self.input_hw
        if rng is not None:
            flips = rng.uniform(size=2)
            if self.hflip and flips[0] < 0.5:
                rgb_t, depth_t = rgb_t.flip(-1), depth_t.flip(-1)
                K[0, 2] = (W - 1) - K[0, 2]
            if self.vflip and flips[1] < 0.5:
                rgb_t, depth_t = rgb_t.flip(-2), depth_t.flip(-2)
                K[1, 2] = (H - 1) - K[1, 2]
        valid = torch.isfinite(depth_t) & (depth_t > 0)
        depth_t = torch.where(valid, depth_t, torch.zeros_like(depth_t))
        return {"rgb": rgb_t, "depth_mm": depth_t, "valid": valid, "K": K}
