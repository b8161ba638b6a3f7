"""Shared helpers of the review app's pages: the page preamble, the root folder, cached loaders and
error display.

Everything here is thin Streamlit glue over :mod:`colondepth.app.data`.  A page starts with
:func:`start_page` (title and root folder), picks what to show with :func:`choose` (which stops the page
with a hint when there is nothing), and loads through :func:`or_stop` (a one-line error instead of a
traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Optional, TypeVar

import streamlit as st

from colondepth.app import data as appdata
from colondepth.errors import UserError


def _root_argument() -> Optional[str]:
    """``--root DIR`` from the script arguments when run by ``streamlit run review.py -- --root DIR``."""
    if Path(sys.argv[0]).name != "review.py":
        return None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--root")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.root


def get_root() -> Optional[Path]:
    """The resolved root folder, or ``None`` after showing why it is unusable."""
    raw = _root_argument() or os.environ.get(appdata.ROOT_ENV) or appdata.DEFAULT_ROOT
    try:
        return appdata.resolve_root(raw)
    except UserError as exc:
        st.error(str(exc))
        return None


def require_root() -> Path:
    """The root folder; stops the page when it is missing."""
    root = get_root()
    if root is None:
        st.stop()
    return root


T = TypeVar("T")


def start_page(title: str) -> Path:
    """Show the page title and return the root folder; stops the page when the root is missing."""
    st.title(title)
    return require_root()


def choose(label: str, options: dict[str, T], *, key: str, empty: str, container=None) -> T:
    """A select box over ``options`` (shown name -> item) returning the chosen item.

    With no options, ``empty`` (what to do to get some) is shown and the page stops.  ``container`` is
    where the box goes (a column; default the page).
    """
    if not options:
        st.info(empty)
        st.stop()
    names = list(options)
    name = (container or st).selectbox(label, names, key=key)
    return options[name]


def or_stop(load: Callable[..., T], *args, **kwargs) -> T:
    """``load(*args, **kwargs)``; a :class:`UserError` is shown as one line and stops the page."""
    try:
        return load(*args, **kwargs)
    except UserError as exc:
        st.error(str(exc))
        st.stop()


def choose_folder(root: Path, label: str, folders: list[Path], *, key: str, empty: str) -> Path:
    """:func:`choose` over folders under ``root``, shown by their path relative to it."""
    return choose(label, {rel(root, p): p for p in folders}, key=key, empty=empty)


def checkpoints(root: Path) -> dict[str, Path]:
    """Every ``RUN/checkpoints/*.pt`` of the training runs under ``root``, by path relative to it."""
    return {rel(root, ck): ck for run in runs(str(root)) for ck in appdata.list_checkpoints(run)}


def clear_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()


@st.cache_data(ttl=30, show_spinner=False)
def datasets(root: str) -> list[appdata.DatasetInfo]:
    return appdata.find_datasets(root)


@st.cache_resource(ttl=300, show_spinner="Reading sequences…", max_entries=8)
def sequences(root: str, dataset_name: str) -> list:
    info = {d.name: d for d in appdata.find_datasets(root)}[dataset_name]
    return appdata.load_sequences(info)


@st.cache_data(ttl=30, show_spinner=False)
def prediction_dirs(root: str) -> list[Path]:
    return appdata.find_prediction_dirs(root)


@st.cache_data(ttl=30, show_spinner=False)
def runs(root: str) -> list[Path]:
    return appdata.find_runs(root)


@st.cache_data(ttl=30, show_spinner=False)
def reconstructions(root: str) -> list[Path]:
    return appdata.find_reconstructions(root)


@st.cache_resource(ttl=600, show_spinner="Loading reconstruction…", max_entries=4)
def reconstruction(path: str) -> appdata.Reconstruction:
    return appdata.load_reconstruction(path)


@st.cache_resource(show_spinner="Loading depth model…", max_entries=2)
def predictor(checkpoint: Optional[str]):
    """A :class:`colondepth.infer.predictor.DepthPredictor` (default model when ``checkpoint`` is None)."""
    try:
        from colondepth.infer.predictor import DepthPredictor
    except ModuleNotFoundError as exc:
        raise UserError(f"this installation has no depth predictor ({exc}); "
                        "install the full colondepth package") from None
    return DepthPredictor.from_checkpoint(checkpoint)


def rel(root: Path, path: Path) -> str:
    return appdata.relative_name(root, path)
