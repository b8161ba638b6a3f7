"""Training metrics: one JSON object per line in ``RUN/metrics.jsonl`` (and TensorBoard when installed).

Record types (key ``type``):

- ``train``: ``stage``, ``stage_index``, ``step`` (within the stage), ``global_step``, ``epoch``, ``lr``,
  ``loss`` and the loss parts (``silog``, ``l1``, ``grad`` for supervised stages), averaged over ranks.
- ``val``: the same position keys plus the stage kind's validation metrics (``val_loss``, ``val_abs_rel``,
  ``val_rmse_mm``, ``val_delta1``, ``val_silog``) and ``best_val_loss``, ``bad_evals``.
- ``stage_end``: ``stage``, ``steps`` run, ``reason`` (``budget`` or ``plateau``), final validation metrics.
- ``run_end``: ``global_step``, ``checkpoint``.

Only rank 0 writes.  On ``--resume`` the records after the resumed step are dropped first, so the file
reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLogger:
    """Append-only JSONL metrics writer (a no-op when ``enabled`` is False)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:  # optional: only when the tensorboard package is installed
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))
            except Exception:
                self._tb = None

    def truncate_after(self, global_step: int) -> None:
        """Drop records whose ``global_step`` is beyond ``global_step`` (used when resuming)."""
        if not self.enabled or not self.path.is_file():
            return
        from colondepth.io import atomic_write_text

        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if int(rec.get("global_step", 0)) <= global_step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{k}\n" for k in kept))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        rec = {k: _clean(v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec, sort_keys=False) + "\n")
        if self._tb is not None and "global_step" in rec:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("global_step", "step", "stage_index", "epoch"):
                    self._tb.add_scalar(f"{rec.get('type', 'train')}/{k}", v, rec["global_step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a ``metrics.jsonl`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
