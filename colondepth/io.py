"""Atomic file and folder writing: an output is either complete or absent.

Every writer in ColonDepth goes through these helpers so a killed run never leaves a
half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, suffix: str = "") -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give the final file the permissions a plain open() would.
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the final suffix (``.x.png.tmp123.png``) so libraries that
    pick a format from the extension still work.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    >>> (d / "a.txt").read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path, suffix=path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it to ``path`` only on success.

    An existing ``path`` is replaced.  On failure the temporary folder is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder inside the existing folder ``folder``; move what was written there
    into ``folder`` only on success.

    For commands that write many files into a folder that may already hold other files (so
    :func:`atomic_dir` would replace too much): on success every entry of the temporary folder is renamed
    into ``folder`` (replacing same-named files, each rename atomic) and the temporary folder removed; on
    failure the temporary folder and everything in it is removed, so a failed run adds nothing.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with staged_files(d) as tmp:
    ...     _ = (tmp / "a.txt").write_text("hi")
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt']
    """
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        for entry in sorted(tmp.iterdir()):
            os.replace(entry, folder / entry.name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def require_file(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Return ``path`` as a Path if it is an existing file, else raise a one-line UserError."""
    from colondepth.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: {what} not found; {fix}")
    return p


def require_dir(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Return ``path`` as a Path if it is an existing folder, else raise a one-line UserError."""
    from colondepth.errors import UserError

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: {what} not found; {fix}")
    return p


def load_yaml(path: str | os.PathLike, fix: str = "fix the syntax"):
    """Parse the YAML file ``path``; a syntax error becomes one UserError line naming the file and position.

    The message reads ``<path>: not valid YAML at line L, column C (<problem>); <fix>``: the parser's
    multi-line dump is not pasted in.  Callers check existence first (their messages name their own flag).
    """
    import yaml

    from colondepth.errors import UserError

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"{p}: not valid YAML{where} ({problem}); {fix}") from None


def ensure_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the output folder ``path`` (and parents) or raise a one-line UserError naming ``flag``.

    Call it before long work so an unusable output location fails at once, not after the work.
    """
    from colondepth.errors import UserError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: exists and is not a folder; choose another {flag}")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {p}: cannot create the folder ({exc.strerror or exc}); choose a writable {flag}") from None
    if not os.access(p, os.W_OK):
        raise UserError(f"{flag} {p}: folder is not writable; choose a writable {flag}")
    return p


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """Check that a file can later be written at ``path`` (creating its parent folder) or raise a UserError.

    Nothing is written at ``path`` itself.
    """
    from colondepth.errors import UserError

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {p}: is a folder; give a file name such as {p / 'results.json'}")
    parent = p.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{flag} {p}: {parent} is a file, not a folder; choose another {flag}")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {p}: cannot create its folder ({exc.strerror or exc}); choose a writable {flag}") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=p.parent)
    except OSError as exc:
        raise UserError(f"{flag} {p}: cannot write there ({exc.strerror or exc}); choose a writable location") from None
    os.close(fd)
    os.unlink(probe)
    return p


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check, without creating anything, that the output folder ``path`` can be created or written.

    Raises a one-line UserError naming ``flag`` and ``path`` when it is a file, lies under a file, or its
    nearest existing parent is not writable (probed by creating and removing a temporary folder there).
    """
    from colondepth.errors import UserError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{flag} {p}: exists and is not a folder; choose another {flag}")
    anchor = p if p.exists() else next((a for a in p.absolute().parents if a.exists()), Path("/"))
    if not anchor.is_dir():
        raise UserError(f"{flag} {p}: {anchor} is a file, not a folder; choose another {flag}")
    try:
        probe = tempfile.mkdtemp(prefix=".colondepth-probe.", dir=anchor)
    except OSError as exc:
        raise UserError(f"{flag} {p}: cannot create it ({exc.strerror or exc}); choose a writable {flag}") from None
    os.rmdir(probe)
    return p
