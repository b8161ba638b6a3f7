"""The review app in a real browser: ``colondepth app`` serves the fixture root, headless Chromium opens it.

Needs the Debian ``chromium`` package (``/usr/bin/chromium``) and Playwright for Python; the test skips
with a message when either is missing (it never downloads a browser).  Screenshots go to pytest's
``tmp_path`` and, when ``COLONDEPTH_SCREENSHOT_DIR`` is set, also there (as ``app_<page>.png``).
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trimesh

from test_app import REPO, make_app_root

CHROMIUM = Path(os.environ.get("COLONDEPTH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"colondepth app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the app did not answer on {url} within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop the command and the Streamlit server it started (their own process group), then reap it."""
    pgid = proc.pid
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        proc.poll()
        time.sleep(0.1)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def app_server(tmp_path):
    """Start ``colondepth app --root FIXTURE --port P`` on loopback; always stop it (and its children)."""
    root = make_app_root(tmp_path / "root")
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        cmd = [sys.executable, "-m", "colondepth.cli", "app", "--root", str(root), "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop_group(proc)


@pytest.fixture
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found; install it with 'apt-get install -y chromium' to run the browser test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed; '.venv/bin/pip install playwright' (no 'playwright install' needed)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _save(page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / f"app_{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a blank page compresses to a few kB
    extra = os.environ.get("COLONDEPTH_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(extra) / shot.name)
    return shot


@pytest.mark.slow
def test_pages_in_browser(app_server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.set_default_timeout(60_000)

    page.goto(f"{app_server}/sequence")
    page.get_by_text("Ground-truth depth (mm)").wait_for()
    page.get_by_text("abs_rel (frame)").wait_for()
    images = page.locator('[data-testid="stImage"] img')
    images.nth(3).wait_for()
    assert images.count() == 4  # RGB, predicted, ground truth, error map
    widths = [images.nth(k).evaluate("el => el.naturalWidth") for k in range(4)]
    assert widths[0] == 256 and widths[1:] == [256 + 96] * 3  # 32 px frames upscaled x8, + colour bar
    page.get_by_text("Sequence (5 frames)").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    assert page.get_by_role("link", name="3D reconstruction").count() == 1  # the navigation, not a file list
    _save(page, tmp_path, "sequence")

    page.goto(f"{app_server}/reconstruction")
    page.get_by_text("Surface triangles").wait_for()
    plot = page.locator(".js-plotly-plot")
    plot.first.wait_for()
    page.locator(".js-plotly-plot canvas").first.wait_for()  # the WebGL scene
    legend = page.locator(".js-plotly-plot .legendtext").evaluate_all("els => els.map(e => e.textContent)")
    assert legend == ["surface", "unobserved", "camera path"]
    with page.expect_download() as dl:  # the STL is made on click
        page.get_by_text("Mesh (STL)").click()
    stl = trimesh.load(dl.value.path(), file_type="stl", force="mesh")
    assert len(stl.faces) == 384 and dl.value.suggested_filename == "tube_mesh.stl"
    with page.expect_download() as dl:
        page.get_by_text("TSDF volume (NIfTI)").click()
    header = gzip.decompress(Path(dl.value.path()).read_bytes())[:348]
    assert int.from_bytes(header[:4], "little") == 348 and header[344:348] == b"n+1\x00"  # NIfTI-1
    assert [int.from_bytes(header[42 + 2 * k: 44 + 2 * k], "little") for k in range(3)] == [4, 4, 4]  # dims
    page.wait_for_timeout(1500)  # let WebGL draw before the screenshot
    _save(page, tmp_path, "reconstruction")

    page.goto(f"{app_server}/training")
    page.get_by_text("Curriculum").wait_for()
    page.locator(".js-plotly-plot").nth(3).wait_for()
    assert page.locator(".js-plotly-plot").count() == 4  # the forgetting monitor's two, then loss and abs_rel
    _save(page, tmp_path, "training")
