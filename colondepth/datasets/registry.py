"""Open any supported dataset layout as a list of :class:`colondepth.datasets.base.Sequence`.

Formats and the module that reads each (every module exposes ``read_sequences(path) -> list[Sequence]``):

- ``colondepth``: our own layout (``colondepth.datasets.synthetic``)
- ``simcol3d``: SimCol3D as distributed (``colondepth.datasets.simcol3d``)
- ``c3vd``: C3VD (``colondepth.datasets.c3vd``)
"""

from __future__ import annotations

import importlib
from pathlib import Path

from colondepth.errors import UserError

FORMATS = {
    "colondepth": "colondepth.datasets.synthetic",
    "simcol3d": "colondepth.datasets.simcol3d",
    "c3vd": "colondepth.datasets.c3vd",
}


def open_sequences(path, fmt: str = "colondepth"):
    """Read every sequence under ``path`` in layout ``fmt``.

    Raises :class:`UserError` for an unknown format, a missing path or a folder with no sequences.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown dataset format; choose one of {', '.join(FORMATS)}")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such dataset folder; pass a folder made by 'colondepth synth' or a {fmt} dataset")
    try:
        module = importlib.import_module(FORMATS[fmt])
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a reader is missing
        raise UserError(f"--format {fmt}: this installation has no reader for it ({exc})") from exc
    sequences = module.read_sequences(p)
    if not sequences:
        raise UserError(f"{p}: no {fmt} sequences found; check the folder and --format")
    return sequences
