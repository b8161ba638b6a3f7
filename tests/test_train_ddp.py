"""The smoke curriculum under torchrun with 2 CPU processes (gloo): one run folder, written by rank 0 only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

import test_train_scenes as sfs_scenes
from colondepth.train.logging import read_metrics

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_cpu(tmp_path):
    data = tmp_path / "data"
    sfs_scenes.write_dataset(data / "planes", "L1", sequences=2, frames=6, size=32, seed=0)
    sfs_scenes.write_dataset(data / "tubes", "L2", sequences=2, frames=6, size=32, seed=1)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "colondepth.cli", "train", "--no-progress",
           "--curriculum", str(REPO / "curricula" / "smoke.yaml"), "--out", str(run), "--data", str(data),
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("done: ") == 1  # rank 0 reports alone
    records = read_metrics(run / "metrics.jsonl")
    assert sum(r["type"] == "run_end" for r in records) == 1
    train_steps = [r["global_step"] for r in records if r["type"] == "train"]
    assert train_steps == sorted(set(train_steps))  # one writer: no interleaved duplicates
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["training"]["world_size"] == 2
    final = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert final["card"]["step"] == records[-1]["global_step"]
    assert final["card"]["command"].startswith("torchrun --nproc_per_node 2 -m colondepth.cli train")
    assert all(torch.isfinite(v.float()).all() for v in final["model_state"].values())
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())  # no temp files left
