"""Shared test fixtures.

Third-party sample data lives in ``../shared/data`` beside the repository (never copied into it);
tests that need it use the ``shared_data`` fixture and skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("COLONDEPTH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips the test when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party sample data not found at {SHARED_DATA} (set COLONDEPTH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (``benchmarks/`` goes on ``sys.path`` first, so the script's
    imports of its sibling benchmarks resolve)."""
    import importlib.util
    import sys

    folder = REPO_ROOT / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny-tensor tests on one torch thread (restored afterwards).

    OpenMP threads spin-wait; on a busy 2-core machine two threads on tiny tensors are many times slower
    than one.  Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
