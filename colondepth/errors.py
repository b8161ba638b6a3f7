"""User-facing errors.

Raise :class:`UserError` for anything the *user* can fix (missing file, bad value, corrupt
input).  The CLI prints its message on one line, prefixed with ``error:``, and exits with
status 2 (``--debug`` shows the traceback).  The message must name the thing and the fix, e.g.
``UserError(f"{path}: no such file; pass --data with a dataset folder made by 'colondepth synth'")``.

Subclasses keep the one-line message and change the exit status: :class:`TrainingDiverged` (3) and
:class:`IncompleteOutput` (4: outputs were written but part of them is missing, and the run's report says which).
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by user input; its message is shown without a traceback."""

    exit_code = 2

    def __init__(self, message: str):
        # One line only: the CLI prints str(self) as a single line.
        super().__init__(" ".join(str(message).split()))


class TrainingDiverged(UserError):
    """A loss became NaN or inf; the last good checkpoint is kept."""

    exit_code = 3


class IncompleteOutput(UserError):
    """A command wrote its outputs but part of them is missing (e.g. a mesh region marching cubes could not
    extract); the report next to them says what.  Exit status 4, so scripts do not take the run as complete."""

    exit_code = 4
