"""Structured progress events: what a long command has done, as JSON lines a program can read.

A long-running function (e.g. :func:`colondepth.recon.pipeline.reconstruct_sequence`) takes an optional
callback ``on_progress(event)`` and calls it with :class:`ProgressEvent` objects; it knows nothing about
files.  A command writes them, one JSON object per line, with :func:`progress_event_writer`
(``colondepth reconstruct --progress-events FILE|-``), and a reader follows the file with
:func:`read_progress_events`.  Human-readable tqdm bars are separate and unaffected.

One event per line, flushed as soon as it is written::

    {"stage": "fusion", "done": 3, "total": 40, "message": "frame 3"}

- ``stage``: a non-empty name; the command documents its stages and their order.
- ``done``, ``total``: integers with ``0 <= done <= total`` and ``total >= 1`` (units of the stage: frames,
  chunks, files).  Within a stage ``done`` never decreases, and every stage ends with ``done == total``.
- ``message``: free text for people (may be empty).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

#: Version of the event line format (changes only when a field changes meaning).
PROGRESS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ProgressEvent:
    """One step of progress inside a named stage.

    Attributes
    ----------
    stage : str, non-empty name of the stage (e.g. ``fusion``).
    done : int, units finished in this stage, ``0 <= done <= total``.
    total : int, units in this stage, ``>= 1``.
    message : str, free text for people.

    Raises
    ------
    ValueError
        An empty stage name, non-integer counts, ``total < 1`` or ``done`` outside ``[0, total]``.

    >>> ProgressEvent("fusion", 2, 4, "frame 2").fraction
    0.5
    >>> ProgressEvent("fusion", 5, 4)
    Traceback (most recent call last):
    ValueError: progress event fusion: done 5 is outside [0, 4]
    """

    stage: str
    done: int
    total: int
    message: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.stage, str) or not self.stage:
            raise ValueError(f"progress event: stage must be a non-empty string, got {self.stage!r}")
        for name in ("done", "total"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"progress event {self.stage}: {name} must be an integer, got {v!r}")
        if self.total < 1:
            raise ValueError(f"progress event {self.stage}: total must be at least 1, got {self.total}")
        if not 0 <= self.done <= self.total:
            raise ValueError(f"progress event {self.stage}: done {self.done} is outside [0, {self.total}]")
        if not isinstance(self.message, str):
            raise ValueError(f"progress event {self.stage}: message must be a string, got {self.message!r}")

    @property
    def fraction(self) -> float:
        """``done / total`` in ``[0, 1]``."""
        return self.done / self.total

    @property
    def finished(self) -> bool:
        """True when the stage is complete (``done == total``)."""
        return self.done == self.total

    def to_json(self) -> str:
        """The event as one JSON line (no trailing newline), keys in the documented order.

        >>> ProgressEvent("write", 1, 8, "mesh.ply").to_json()
        '{"stage": "write", "done": 1, "total": 8, "message": "mesh.ply"}'
        """
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> "ProgressEvent":
        """Parse one event line.

        Raises
        ------
        ValueError
            The line is not a JSON object with exactly ``stage``, ``done``, ``total`` and ``message``
            (``message`` may be left out), or the values are invalid (see the class).

        >>> ProgressEvent.from_json('{"stage": "mesh", "done": 1, "total": 2}')
        ProgressEvent(stage='mesh', done=1, total=2, message='')
        """
        try:
            data = json.loads(line)
        except ValueError:
            raise ValueError(f"progress event: not JSON: {line.strip()[:80]!r}") from None
        if not isinstance(data, dict):
            raise ValueError(f"progress event: expected a JSON object, got {line.strip()[:80]!r}")
        unknown = set(data) - {"stage", "done", "total", "message"}
        missing = {"stage", "done", "total"} - set(data)
        if unknown or missing:
            what = "; ".join(x for x in (f"missing {', '.join(sorted(missing))}" if missing else "",
                                          f"unknown {', '.join(sorted(unknown))}" if unknown else "") if x)
            raise ValueError(f"progress event: {what} in {line.strip()[:80]!r}")
        return cls(stage=data["stage"], done=data["done"], total=data["total"], message=data.get("message", ""))


#: A progress callback: called with each :class:`ProgressEvent` as the work advances.
ProgressCallback = Callable[[ProgressEvent], None]


def emit(on_progress: Optional[ProgressCallback], stage: str, done: int, total: int, message: str = "") -> None:
    """Call ``on_progress(ProgressEvent(stage, done, total, message))`` unless ``on_progress`` is None."""
    if on_progress is not None:
        on_progress(ProgressEvent(stage, int(done), int(total), message))


@contextlib.contextmanager
def progress_event_writer(target: str | os.PathLike) -> Iterator[ProgressCallback]:
    """Yield a callback that writes each event as one flushed JSON line to ``target``.

    ``target`` is a file path (created or truncated; its folder is created) or ``"-"`` for standard
    output.  The file is written as the work goes, not atomically: a reader may follow it while it grows
    and sees only complete lines (:func:`read_progress_events`).

    Raises
    ------
    UserError
        The file cannot be opened for writing.
    """
    if str(target) == "-":
        def write_stdout(event: ProgressEvent) -> None:
            sys.stdout.write(event.to_json() + "\n")
            sys.stdout.flush()

        yield write_stdout
        return
    from colondepth.errors import UserError

    path = Path(target)
    if path.is_dir():
        raise UserError(f"--progress-events {path}: is a folder; give a file name such as {path / 'progress.jsonl'} "
                        "or - for standard output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--progress-events {path}: cannot write there ({exc.strerror or exc}); "
                        "choose a writable file or - for standard output") from None

    def write_file(event: ProgressEvent) -> None:
        stream.write(event.to_json() + "\n")
        stream.flush()

    try:
        yield write_file
    finally:
        stream.close()


def read_progress_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[ProgressEvent], int]:
    """The complete event lines of ``path`` from byte ``offset`` on, and the offset to continue from.

    A last line without its newline (still being written) is not consumed: the returned offset stays at
    its start, so the next call reads it once it is complete.  A missing file gives ``([], offset)``
    (the writer has not started yet).  Blank lines are skipped.

    Raises
    ------
    ValueError
        A complete line is not a valid event (see :meth:`ProgressEvent.from_json`); the message names the
        file and the byte offset of the line.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    pos = offset
    for raw in data[: end + 1].split(b"\n")[:-1]:
        if raw.strip():
            try:
                events.append(ProgressEvent.from_json(raw.decode("utf-8")))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{p} at byte {pos}: {exc}") from None
        pos += len(raw) + 1
    return events, offset + end + 1
