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


def write_tiny_bundle(path: Path, two_frame: bool = True) -> Path:
    """A tiny model bundle (32x32 DepthNet, a two-source pose network and, with ``two_frame``, a two-frame
    network; seeded, untrained) for tests of the inference paths."""
    import torch

    from colondepth.models.bundle import pose_entry, two_frame_entry
    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.models.pose_net import PoseNet, PoseNetConfig
    from colondepth.models.two_frame_net import TwoFrameConfig, TwoFrameDepthNet
    from colondepth.train.checkpoint import make_card, save_checkpoint

    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(input_height=32, input_width=32, min_depth_mm=1.0, max_depth_mm=150.0,
                                  encoder_channels=[8, 8, 16, 16], decoder_channels=[8, 8, 8, 8], num_scales=2,
                                  norm="group"))
    pose = PoseNet(PoseNetConfig(num_sources=2, channels=(16, 32, 64, 128), num_mask_scales=0))
    two = None
    if two_frame:
        two = two_frame_entry(TwoFrameDepthNet(TwoFrameConfig(DepthNetConfig(
            arch="basic_unet", input_height=32, input_width=32, features=[4, 4, 8, 8, 16, 4]), 2.0)))
    return save_checkpoint(path, net, make_card(net, "t", "s", 0, 0, "t"), {}, pose=pose_entry(pose, None),
                           two_frame=two)
