"""The forgetting monitor: during training, the depth network's error on every level seen so far and on
foreign data sets.

A curriculum's ``monitor`` section (:class:`colondepth.train.config.MonitorSection`) turns it on.  Every
``every_steps`` optimizer steps and at the end of every stage, :class:`ForgettingMonitor` scores the network
as it is on

- the validation frames (the held-out sequence of :class:`colondepth.train.data.DataPool`, never trained on)
  of every level the supervised stages so far trained on, in order of first appearance: a level learnt early
  and forgotten later shows as a rising curve;
- each ``foreign`` set: dense ground truth (``colondepth``, ``simcol3d``, ``c3vd`` layouts) or the sparse
  structure-from-motion points of a real video (``sinus_sfm``), optionally restricted to a frame range.

Scoring is the product's own: a :class:`colondepth.infer.predictor.DepthPredictor` around the network (one
view box per sequence), :func:`colondepth.eval.evaluate.evaluate_sequences` for dense sets (median-scaled
and metric abs_rel, mean over frames) and :func:`colondepth.eval.sparse_depth.score_sparse_frames` for sparse
ones (median-scaled abs_rel pooled over the points, as ``benchmarks/bench_transfer.py``).  Each result is one
``{"type": "monitor", "set", "set_kind", "abs_rel_median_scaled", "abs_rel", "frames", ...}`` record of
``metrics.jsonl`` (``abs_rel`` is None where the ground truth has no metric scale); the app's Training page
draws them per set.  A foreign set that cannot be read is skipped with one warning.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["ForgettingMonitor", "MonitorResult", "levels_seen"]


@dataclass
class MonitorResult:
    """One set's score: ``set`` name, ``set_kind`` ("level" or "foreign"), median-scaled and metric abs_rel
    (metric None for scale-free ground truth), frames scored."""

    set: str
    set_kind: str
    abs_rel_median_scaled: float
    abs_rel: Optional[float]
    frames: int

    def record(self) -> dict:
        return {"set": self.set, "set_kind": self.set_kind, "abs_rel_median_scaled": self.abs_rel_median_scaled,
                "abs_rel": self.abs_rel, "frames": self.frames}


def levels_seen(curriculum, stage_index: int) -> list[str]:
    """Levels trained on by the supervised stages ``0..stage_index``, in order of first appearance."""
    out: list[str] = []
    for stage in curriculum.stages[: stage_index + 1]:
        for lv in getattr(stage, "levels", []) if stage.kind == "supervised" else []:
            if lv not in out:
                out.append(lv)
    return out


def _evenly(items: list, n: int) -> list:
    """At most ``n`` of ``items``, evenly spaced: the frame selection of ``colondepth evaluate``
    (:func:`colondepth.eval.evaluate.select_frames`)."""
    from colondepth.eval.evaluate import select_frames

    return [items[i] for _, i in select_frames([len(items)], n)]


def _frames_as_sequences(refs) -> list:
    """:class:`colondepth.train.data.FrameRef` s grouped into one view per source sequence
    (:func:`colondepth.datasets.video.subsequence`)."""
    from colondepth.datasets.video import subsequence

    groups: dict = {}
    for r in refs:
        groups.setdefault(id(r.sequence), (r.sequence, []))[1].append(r.index)
    return [subsequence(seq, idx) for seq, idx in groups.values()]


@dataclass
class ForgettingMonitor:
    """Scores a depth network on the levels seen so far and on the foreign sets (see the module docstring).

    ``section``: the curriculum's :class:`~colondepth.train.config.MonitorSection`; ``pool``: the run's
    :class:`~colondepth.train.data.DataPool`; ``base_dir``: the curriculum's folder (foreign paths are relative
    to it).
    """

    section: object
    pool: object
    base_dir: Path
    batch_size: int = 8
    _foreign: Optional[list] = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return int(self.section.every_steps) > 0

    def due(self, global_step: int) -> bool:
        return self.enabled and global_step > 0 and global_step % int(self.section.every_steps) == 0

    # -- the sets ------------------------------------------------------------------------------------------
    def _load_foreign(self) -> list:
        """``[(MonitorSet, sequences)]`` of the foreign sets that can be read (once per run)."""
        if self._foreign is None:
            from colondepth.errors import UserError

            self._foreign = []
            for fs in self.section.foreign:
                p = Path(fs.path) if Path(fs.path).is_absolute() else self.base_dir / fs.path
                try:
                    if fs.format == "sinus_sfm":
                        from colondepth.datasets import sinus_sfm

                        if not p.is_dir():
                            raise UserError(f"{p}: no such folder")
                        seqs = [sinus_sfm.read_sequence(p)]
                    else:
                        from colondepth.datasets.registry import open_sequences

                        seqs = open_sequences(p, fs.format)
                except (UserError, OSError, ValueError) as exc:
                    warnings.warn(f"monitor: foreign set {fs.name} ({p}) skipped: {exc}", stacklevel=2)
                    continue
                self._foreign.append((fs, seqs))
        return self._foreign

    # -- scoring -------------------------------------------------------------------------------------------
    def evaluate(self, net, card: dict, curriculum, stage_index: int, device) -> list[MonitorResult]:
        """Score ``net`` (restored to its train/eval mode afterwards) on every set; ``card`` is its model card
        (:func:`colondepth.train.checkpoint.make_card`)."""
        from colondepth.infer.predictor import DepthPredictor

        was_training = net.training
        try:
            predictor = DepthPredictor(net, card, device=device, batch_size=self.batch_size)
            levels = levels_seen(curriculum, stage_index) if self.pool is not None else []
            out = [self._score_dense(predictor, lv, "level", _frames_as_sequences(
                _evenly(self.pool.level(lv).val, int(self.section.max_frames)))) for lv in levels]
            for fs, seqs in self._load_foreign():
                if fs.format == "sinus_sfm":
                    out.append(self._score_sparse(predictor, fs, seqs[0]))
                else:
                    out.append(self._score_dense(predictor, fs.name, "foreign", self._restrict(seqs, fs.frames)))
        finally:
            net.train(was_training)
        return [r for r in out if r is not None]

    def _restrict(self, seqs, frames) -> list:
        from colondepth.train.data import FrameRef

        if frames is None:
            refs = [FrameRef(s, i) for s in seqs for i in range(len(s))]
        else:
            refs = [FrameRef(s, i) for s in seqs for i in range(frames[0], min(frames[1], len(s) - 1) + 1)]
        return _frames_as_sequences(_evenly(refs, int(self.section.max_frames)))

    def _score_dense(self, predictor, name: str, kind: str, sequences: list) -> Optional[MonitorResult]:
        from colondepth.eval.evaluate import evaluate_sequences

        if not sequences:
            return None
        views = [predictor.video_view(s, s.intrinsics) for s in sequences]

        def predict_for(seq_index):
            seq = sequences[seq_index]
            return lambda rgbs: predictor.predict_batch(rgbs, intrinsics=seq.intrinsics, view=views[seq_index])

        scores = {}
        for align in ("median", "none"):
            frames = []
            for k, seq in enumerate(sequences):  # each sequence with its own camera and view box
                rep = evaluate_sequences([seq], predict_for(k), align=align, batch_size=self.batch_size,
                                         progress=False)
                frames += rep.frames
            vals = [f["metrics"]["model"]["abs_rel"] for f in frames]
            vals = [v for v in vals if np.isfinite(v)]
            scores[align] = (float(np.mean(vals)) if vals else float("nan"), len(vals))
        return MonitorResult(name, kind, scores["median"][0], scores["none"][0], scores["median"][1])

    def _score_sparse(self, predictor, fs, seq) -> Optional[MonitorResult]:
        from colondepth.datasets import sinus_sfm
        from colondepth.eval.sparse_depth import score_sparse_frames

        n = len(seq)
        frames = range(n) if fs.frames is None else range(fs.frames[0], min(fs.frames[1], n - 1) + 1)
        frames = _evenly(list(frames), int(self.section.max_frames))
        if not frames:
            return None
        view = predictor.video_view(seq, seq.intrinsics)
        scores = score_sparse_frames(
            frames, seq.rgb, lambda f: sinus_sfm.sparse_points(seq, f),
            {"model": lambda rgbs: predictor.predict_batch(rgbs, intrinsics=seq.intrinsics, view=view)},
            batch_size=self.batch_size)["model"]
        if scores.num_frames == 0:
            return None
        return MonitorResult(fs.name, "foreign", float(scores.summary()["pooled"]["abs_rel"]), None,
                             scores.num_frames)


def print_results(results: list, step: int, file=None) -> None:
    """One line per monitor evaluation: ``monitor @ step: L1 0.081, L2 0.094, simcol3d 0.120`` (to ``file``,
    default the current ``sys.stderr``)."""
    parts = [f"{r.set} {r.abs_rel_median_scaled:.3f}" for r in results]
    print(f"monitor @ {step}: " + ", ".join(parts), file=file or sys.stderr)
