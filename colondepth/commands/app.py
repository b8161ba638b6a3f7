"""``colondepth app``: start the Streamlit review app on a root folder."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

HELP = "start the review app (Streamlit) on the datasets, runs and reconstructions under a folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default="out",
                        help="folder the app browses; it never reads outside it (default: ./out)")
    parser.add_argument("--port", type=int, default=8501, help="TCP port (default: 8501)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 for all)")


def streamlit_command(script: Path, root: Path, port: int, host: str) -> list[str]:
    """The ``streamlit run`` command line (file watcher off: it overflows inotify over a virtualenv)."""
    from colondepth.app.data import MAX_UPLOAD_MB

    return [sys.executable, "-m", "streamlit", "run", str(script),
            "--server.port", str(port), "--server.address", host,
            "--server.fileWatcherType", "none", "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.maxUploadSize", str(MAX_UPLOAD_MB),
            "--client.toolbarMode", "minimal",
            "--", "--root", str(root)]


def run(args: argparse.Namespace) -> int:
    from colondepth.app.data import ROOT_ENV, resolve_root
    from colondepth.errors import UserError

    root = resolve_root(args.root)
    if importlib.util.find_spec("streamlit") is None:
        raise UserError("streamlit is not installed; install it with 'pip install streamlit' to use the review app")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be between 1 and 65535")
    from colondepth.resources import app_script

    script = app_script()
    env = dict(os.environ, **{ROOT_ENV: str(root)})
    print(f"ColonDepth review app on http://{args.host}:{args.port} (root {root}); Ctrl+C stops it", flush=True)
    proc = subprocess.Popen(streamlit_command(script, root, args.port, args.host), env=env)

    def _stop(signum, frame):  # SIGTERM to this process also stops the server
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
