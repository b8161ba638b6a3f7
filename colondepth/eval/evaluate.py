"""Score a depth predictor and the reference baselines on sequences with ground-truth depth.

The runner is independent of how predictions are made: it takes a ``predict_batch`` callable
``(B, H, W, 3) uint8 RGB -> (B, h, w) float32 depth_mm`` (e.g.
``colondepth.infer.predictor.DepthPredictor.predict_batch``; with ``cameras`` it is called as
``predict_batch(rgbs, intrinsics=camera)``) and scores, for every selected frame,

- ``model``: the prediction, resized (bilinear, pixel centres aligned) to the ground-truth
  resolution, with the requested alignment;
- ``physics``: :func:`colondepth.eval.baselines.physics_depth_mm`, always median-aligned (its
  scale is unknown);
- ``constant``: :func:`colondepth.eval.baselines.constant_depth_mm`; with ``align="none"`` the
  value is ``constant_mm`` (the training-set median), or, when not given, the median of the
  evaluated ground truth itself, which is an oracle value and labelled as such.

Numbers are per-frame metrics (:mod:`colondepth.eval.depth_metrics`) averaged over frames, per
synthetic level and overall, as monodepth2 reports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence as TypingSequence

import numpy as np

from colondepth.conventions import ImageSize
from colondepth.errors import UserError
from colondepth.eval.alignment import ALIGN_MODES
from colondepth.eval.baselines import (
    DEFAULT_GAMMA,
    constant_depth_mm,
    dataset_median_depth_mm,
    physics_depth_mm,
)
from colondepth.eval.depth_metrics import DEPTH_METRICS, METRIC_LABELS, frame_depth_metrics, mean_metrics

#: ``(B, H, W, 3) uint8 RGB -> (B, h, w) float32 depth_mm``.
PredictBatch = Callable[[np.ndarray], np.ndarray]

#: Row order of the tables.
METHOD_ORDER = ("model", "physics", "constant")

#: Group name of the all-frames average.
OVERALL = "overall"

#: Version of the JSON written by :func:`write_report_json`.
REPORT_FORMAT_VERSION = 1


def resize_depth(depth: np.ndarray, size: "ImageSize | tuple[int, int]") -> np.ndarray:
    """Bilinear resize of a ``(h, w)`` depth map to ``size`` (an ImageSize or an ``(H, W)`` shape; pixel
    centres aligned): the ``"dense"`` resampling of :func:`colondepth.geometry.letterbox.resize_image_np`.

    >>> resize_depth(np.array([[1.0, 3.0]], np.float32), ImageSize(1, 4)).tolist()
    [[1.0, 1.5, 2.5, 3.0]]
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    from colondepth.geometry.letterbox import resize_image_np

    if not isinstance(size, ImageSize):  # an (H, W) shape, e.g. ``gt.shape``
        size = ImageSize(*(int(v) for v in size))
    return resize_image_np(d, size, "dense")


def select_frames(lengths: TypingSequence[int], max_frames: Optional[int] = None) -> list[tuple[int, int]]:
    """``(sequence index, frame index)`` pairs to evaluate.

    All frames, or, with ``max_frames``, that many pairs evenly spaced over the concatenation of
    all sequences (so every sequence and level keeps its share).

    >>> select_frames([3, 2])
    [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    >>> select_frames([3, 2], max_frames=2)
    [(0, 0), (1, 1)]
    """
    pairs = [(s, f) for s, n in enumerate(lengths) for f in range(int(n))]
    if max_frames is None or max_frames >= len(pairs):
        return pairs
    if max_frames <= 0:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    idx = np.unique(np.round(np.linspace(0, len(pairs) - 1, int(max_frames))).astype(int))
    return [pairs[i] for i in idx]


@dataclass
class EvaluationReport:
    """Per-frame metrics of every method, with the settings that produced them.

    Attributes
    ----------
    align : str
        Alignment of the model (and of the constant baseline).
    min_mm, max_mm : float or None
        Scored ground-truth depth range.
    methods : dict
        ``name -> {"align": str, "description": str}`` in table order.
    frames : list of dict
        One entry per scored frame: ``sequence``, ``level``, ``frame``, ``num_valid`` and
        ``metrics`` (``method -> {metric -> value}``) and ``scale`` (``method -> alignment scale``).
    skipped_frames : int
        Selected frames without any valid ground-truth pixel (left out of every average).
    inputs : dict
        Free-form description of the inputs (checkpoint, data, format), copied to the JSON.
    """

    align: str
    min_mm: Optional[float]
    max_mm: Optional[float]
    methods: dict
    frames: list = field(default_factory=list)
    skipped_frames: int = 0
    inputs: dict = field(default_factory=dict)

    @property
    def levels(self) -> list[str]:
        """Sorted names of the synthetic levels present (frames without a level are not listed)."""
        return sorted({f["level"] for f in self.frames if f["level"] is not None})

    def summary(self, level: Optional[str] = None) -> dict:
        """Frame-averaged metrics of one level (or of all frames when ``level`` is None).

        Returns ``{"num_frames": n, "metrics": {method: {metric: value}}}``.
        """
        rows = [f for f in self.frames if level is None or f["level"] == level]
        if not rows:
            raise ValueError(f"no scored frames for level {level!r}")
        return {
            "num_frames": len(rows),
            "metrics": {m: mean_metrics(r["metrics"][m] for r in rows) for m in self.methods},
        }

    def to_dict(self) -> dict:
        """The JSON document written by :func:`write_report_json` (aggregates only)."""
        return {
            "format_version": REPORT_FORMAT_VERSION,
            "align": self.align,
            "depth_range_mm": [self.min_mm, self.max_mm],
            "metric_names": list(DEPTH_METRICS),
            "methods": self.methods,
            "num_frames": len(self.frames),
            "num_sequences": len({f["sequence"] for f in self.frames}),
            "skipped_frames": self.skipped_frames,
            "inputs": self.inputs,
            "levels": {lv: self.summary(lv) for lv in self.levels},
            OVERALL: self.summary(None),
        }


def evaluate_sequences(
    sequences,
    predict_batch: Optional[PredictBatch] = None,
    *,
    align: str = "median",
    min_mm: Optional[float] = None,
    max_mm: Optional[float] = None,
    max_frames: Optional[int] = None,
    batch_size: int = 8,
    constant_mm: Optional[float] = None,
    physics_kwargs: Optional[dict] = None,
    progress: bool = True,
    cameras: Optional[TypingSequence] = None,
    views: Optional[TypingSequence] = None,
) -> EvaluationReport:
    """Score ``predict_batch`` and the baselines on every selected frame with ground truth.

    Parameters
    ----------
    sequences : list of colondepth.datasets.base.Sequence
        Each must have ground-truth depth.
    predict_batch : callable, optional
        ``(B, H, W, 3) uint8 -> (B, h, w) float32 depth_mm``; ``None`` scores the baselines only.
    align : {"median", "none"}
        Alignment of the model and of the constant baseline (the physics baseline is always
        median-aligned).
    min_mm, max_mm : float, optional
        Ground-truth depth range to score.
    max_frames : int, optional
        Evaluate at most this many frames, evenly spaced (:func:`select_frames`).
    batch_size : int
        Frames per ``predict_batch`` call (frames of one sequence only).
    constant_mm : float, optional
        Constant baseline value for ``align="none"`` (the training-set median depth).
    physics_kwargs : dict, optional
        Keyword arguments for :func:`colondepth.eval.baselines.physics_depth_mm`.
    progress : bool
        Show a tqdm progress bar.
    cameras : list, optional
        One camera per sequence (PinholeIntrinsics or FisheyeIntrinsics of its RGB frames): passed to
        ``predict_batch(rgbs, intrinsics=camera)`` and used by the physics baseline instead of
        ``seq.intrinsics``.  ``None``: ``predict_batch(rgbs)`` and each sequence's own intrinsics.
    views : list, optional
        One crop per sequence, passed as ``predict_batch(rgbs, view=...)`` (e.g. the video's lit box,
        :meth:`colondepth.infer.predictor.DepthPredictor.video_view`); ``None``: no ``view`` argument.
    """
    from tqdm import tqdm

    if align not in ALIGN_MODES:
        raise UserError(f"--align {align}: unknown alignment; choose one of {', '.join(ALIGN_MODES)}")
    if batch_size <= 0:
        raise UserError(f"--batch-size {batch_size}: must be a positive number of frames")
    if max_frames is not None and max_frames <= 0:
        raise UserError(f"--max-frames {max_frames}: must be a positive number of frames")
    if min_mm is not None and max_mm is not None and min_mm >= max_mm:
        raise UserError(f"depth range [{min_mm}, {max_mm}] mm is empty; pass --min-depth-mm below --max-depth-mm")
    sequences = list(sequences)
    if cameras is not None and len(cameras) != len(sequences):
        raise ValueError(f"cameras has {len(cameras)} entries for {len(sequences)} sequences")
    if views is not None and len(views) != len(sequences):
        raise ValueError(f"views has {len(views)} entries for {len(sequences)} sequences")
    for seq in sequences:
        if not seq.has_depth:
            raise UserError(
                f"{seq.name}: has no ground-truth depth; evaluation needs a dataset with depth "
                "(a 'colondepth synth' folder, SimCol3D or C3VD)"
            )
    physics_kwargs = dict(physics_kwargs or {})
    pairs = select_frames([len(s) for s in sequences], max_frames)
    if not pairs:
        raise UserError("the dataset has no frames to evaluate")

    methods: dict = {}
    if predict_batch is not None:
        methods["model"] = {"align": align, "description": f"network prediction, {_align_words(align)}"}
    methods["physics"] = {
        "align": "median",
        "description": "depth ∝ 1/sqrt(linear luminance) (inverse-square light at the lens, "
        f"gamma {physics_kwargs.get('gamma', DEFAULT_GAMMA):g}); always median-aligned because its scale is unknown",
    }
    if align == "median":
        const_value = 1.0
        const_desc = "any constant depth, median-aligned (equals the per-frame ground-truth median)"
    elif constant_mm is not None:
        const_value = float(constant_mm)
        const_desc = f"constant {const_value:.2f} mm (given; e.g. the training-set median depth), no alignment"
    else:
        const_value = dataset_median_depth_mm(
            (sequences[s].depth_mm(f) for s, f in pairs), min_mm=min_mm, max_mm=max_mm
        )
        const_desc = (
            f"constant {const_value:.2f} mm = median of the evaluated ground truth "
            "(an oracle value; pass the training-set median for a fair baseline), no alignment"
        )
    methods["constant"] = {"align": align, "description": const_desc, "value_mm": const_value}

    report = EvaluationReport(align=align, min_mm=min_mm, max_mm=max_mm, methods=methods)
    score = dict(min_mm=min_mm, max_mm=max_mm)
    with tqdm(total=len(pairs), desc="evaluate", unit="frame", disable=not progress) as bar:
        for chunk in _chunks_by_sequence(pairs, batch_size):
            seq = sequences[chunk[0][0]]
            camera = seq.intrinsics if cameras is None else cameras[chunk[0][0]]
            rgbs = [seq.rgb(f) for _, f in chunk]
            preds = None
            if predict_batch is not None:
                batch = np.stack(rgbs, axis=0)
                kw = {} if cameras is None else {"intrinsics": camera}
                if views is not None:
                    kw["view"] = views[chunk[0][0]]
                preds = np.asarray(predict_batch(batch, **kw))
                if preds.ndim != 3 or preds.shape[0] != len(chunk):
                    raise ValueError(
                        f"predict_batch returned shape {preds.shape} for {len(chunk)} frames; expected (B, H, W)"
                    )
            for j, (_, f) in enumerate(chunk):
                gt = np.asarray(seq.depth_mm(f), dtype=np.float32)
                size = ImageSize(*gt.shape)
                fov = _fov_for(seq, size)
                outputs = {}
                if preds is not None:
                    outputs["model"] = (resize_depth(preds[j], size), align)
                rgb = rgbs[j]
                if rgb.shape[:2] != gt.shape:  # the shared "image" resampling, RGB in [0, 1]
                    from colondepth.geometry.letterbox import resize_image_np

                    rgb = resize_image_np(np.asarray(rgb, np.float32) / np.float32(255.0), size, "image")
                outputs["physics"] = (physics_depth_mm(rgb, camera, **physics_kwargs), "median")
                outputs["constant"] = (constant_depth_mm(size, const_value), align)
                scored = {
                    m: frame_depth_metrics(p, gt, align=a, fov_mask=fov, **score) for m, (p, a) in outputs.items()
                }
                first = next(iter(scored.values()))
                if first is None:
                    report.skipped_frames += 1
                else:
                    report.frames.append(
                        {
                            "sequence": seq.name,
                            "level": seq.level,
                            "frame": int(f),
                            "num_valid": first.num_valid,
                            "metrics": {m: r.metrics for m, r in scored.items()},
                            "scale": {m: r.scale for m, r in scored.items()},
                        }
                    )
                bar.update(1)
    if not report.frames:
        raise UserError(
            "no evaluated frame has valid ground-truth depth"
            + (f" within [{min_mm}, {max_mm}] mm; widen --min-depth-mm/--max-depth-mm" if min_mm or max_mm else "")
        )
    return report


def _align_words(align: str) -> str:
    return "median-aligned per frame" if align == "median" else "metric (no alignment)"


def _chunks_by_sequence(pairs, batch_size):
    chunk: list = []
    for pair in pairs:
        if chunk and (pair[0] != chunk[0][0] or len(chunk) == batch_size):
            yield chunk
            chunk = []
        chunk.append(pair)
    if chunk:
        yield chunk


def _fov_for(seq, size: ImageSize) -> Optional[np.ndarray]:
    if seq.fov_mask is None:
        return None
    fov = np.asarray(seq.fov_mask, dtype=bool)
    from colondepth.geometry.letterbox import resize_image_np

    return resize_image_np(fov, size, "nearest")


def format_table(summary: dict, methods: dict, *, digits: int = 3) -> str:
    """A markdown table of one :meth:`EvaluationReport.summary`: rows = methods, columns = metrics."""
    header = ["method", "align"] + [METRIC_LABELS[m] for m in DEPTH_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(DEPTH_METRICS)) + "|"]
    for name in [m for m in METHOD_ORDER if m in methods] + [m for m in methods if m not in METHOD_ORDER]:
        values = summary["metrics"][name]
        cells = [name, methods[name]["align"]] + [f"{values[m]:.{digits}f}" for m in DEPTH_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(report: EvaluationReport) -> str:
    """Markdown tables per level and overall, followed by the method descriptions."""
    rng = ""
    if report.min_mm is not None or report.max_mm is not None:
        lo = "0" if report.min_mm is None else f"{report.min_mm:g}"
        hi = "inf" if report.max_mm is None else f"{report.max_mm:g}"
        rng = f", ground truth in [{lo}, {hi}] mm"
    parts = []
    for level in report.levels + [None]:
        s = report.summary(level)
        title = f"level {level}" if level is not None else OVERALL
        parts.append(f"### {title} ({s['num_frames']} frames{rng})\n\n" + format_table(s, report.methods))
    notes = [f"- {name}: {m['description']}" for name, m in report.methods.items()]
    if report.skipped_frames:
        notes.append(f"- {report.skipped_frames} selected frame(s) had no valid ground truth and were skipped")
    notes.append("- numbers are per-frame metrics averaged over frames (monodepth2 definitions)")
    return "\n\n".join(parts) + "\n\n" + "\n".join(notes) + "\n"


def write_report_json(report: EvaluationReport, path) -> Path:
    """Write :meth:`EvaluationReport.to_dict` to ``path`` atomically (complete or absent)."""
    from colondepth.io import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
