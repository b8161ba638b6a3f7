"""A regular, non-editable install works without the checkout: the wheel is built, installed into a fresh
virtual environment, and ``colondepth predict`` (the shipped default model), a smoke ``demo`` (shipped recipes
and curriculum) and the review app's health endpoint run from a folder outside the checkout.

The fresh environment gets the already installed dependencies (torch, ...) through a ``.pth`` line instead of
downloading them again; the package itself comes only from the wheel, which the test checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from test_app import REPO, make_app_root
from test_app_browser import _free_port, _stop_group, _wait_healthy

pytestmark = pytest.mark.slow
pytest.importorskip("setuptools", reason="building the wheel needs setuptools (installed with torch)")


def _run(cmd, cwd, env, timeout=600):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(python, colondepth, env, workdir)`` of a fresh virtual environment holding only the built wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLONDEPTH_SHARED_DATA", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", REPO],
         cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("colondepth-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    # Install before the dependencies become visible, so pip sees no other colondepth to replace.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], cwd=tmp, env=env)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp, env=env).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp / "outside"
    work.mkdir()
    return python, venv / "bin" / "colondepth", env, work


def test_the_package_comes_from_the_wheel(installed):
    python, _, env, work = installed
    code = ("import colondepth, colondepth.resources as r; print(colondepth.__file__); "
            "print(r.default_model_path()); print(r.recipe_path('L5')); print(r.curriculum_path('smoke')); "
            "print(r.app_script()); print(r.checkout_root())")
    lines = _run([python, "-c", code], cwd=work, env=env).stdout.split()
    venv = python.parent.parent
    for line in lines[:5]:
        assert Path(line).is_file() and Path(line).resolve().is_relative_to(venv.resolve()), line
    assert lines[5] == "None"  # an installed package has no checkout
    assert Path(lines[1]).read_bytes() == (REPO / "data" / "default_model.pt").read_bytes()


def test_predict_without_checkpoint(installed):
    import imageio.v3 as iio

    _, colondepth, env, work = installed
    yy, xx = np.mgrid[0:64, 0:80]
    r = np.hypot(yy - 31.5, xx - 39.5) / 40.0
    lumen = (np.clip(r, 0.05, 1.0) ** 1.5 * 230).astype(np.uint8)
    iio.imwrite(work / "frame.png", np.stack([lumen, lumen // 2, lumen // 2], -1))
    _run([colondepth, "predict", "--input", "frame.png", "--out", "pred", "--device", "cpu"], cwd=work, env=env)
    depth = np.load(work / "pred" / "frame_depth.npy")
    assert depth.shape == (64, 80) and np.isfinite(depth).all() and depth.min() > 0


def test_smoke_demo(installed):
    _, colondepth, env, work = installed
    res = _run([colondepth, "demo", "--out", "demo", "--size", "32", "32", "--sequences", "2", "--frames", "6",
                "--curriculum", "smoke", "--finetune-steps", "2", "--device", "cpu"], cwd=work, env=env, timeout=900)
    assert "ColonDepth demo finished" in res.stdout
    assert (work / "demo" / "data" / "L5" / "dataset.yaml").is_file()


def test_app_health_endpoint(installed, tmp_path):
    _, colondepth, env, work = installed
    root = make_app_root(work / "app_root")
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(colondepth), "app", "--root", str(root), "--port", str(port)], cwd=work, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
    finally:
        _stop_group(proc)
    assert str(REPO) not in log.read_text()  # nothing ran from the checkout
