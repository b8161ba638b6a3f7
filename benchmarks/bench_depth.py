#!/usr/bin/env python
"""Depth benchmarks; prints markdown tables.

Sections (``--sections``, default all):

``curriculum``
    Curriculum (``curricula/sfs_curriculum.yaml``: levels L1 -> L5 in stages) against the mixed control
    (``curricula/sfs_mixed.yaml``: all levels at once), both rescaled to the *same number of training
    samples* (optimizer steps x batch size), evaluated on held-out L5 sequences generated with a different
    seed (the claim of Ruano et al. 2023: a curriculum generalises better to the hardest level).
``baseline``
    The trained curriculum model against the inverse-square-light baseline (and a constant depth) on the
    held-out sequences of every level and, when present, on the SimCol3D sample in ``../shared/data``.
    Target: at least 2x lower abs_rel than the physics baseline.
``speed``
    Inference frames/s and peak memory (max RSS of a fresh process) at 128x128 and 256x256 (and at the
    training size), for the trained weights, plus abs_rel on held-out L5 at each inference size.

Modes: ``--quick`` (tiny data, 64 px, 800 samples per run: a pipeline check) and the default full mode
(128 px, 16 000 samples per run, two seeds).  All data,
runs and a ``results.json`` go under ``--work`` (default ``out/bench_depth/<mode>``); generated data is reused
when a rerun asks for the same thing.  The same numbers, with a per-curriculum summary (mean over seeds), are
written to ``--json`` (default ``benchmarks/results/depth.json``, committed; the README's curriculum table is
checked against it).

    .venv/bin/python benchmarks/bench_depth.py --quick
    .venv/bin/python benchmarks/bench_depth.py --sections speed --checkpoint RUN/checkpoints/final.pt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEVELS = ("L1", "L2", "L3", "L4", "L5")
HARDEST = "L5"
CURRICULA = {"curriculum": REPO / "curricula" / "sfs_curriculum.yaml", "mixed": REPO / "curricula" / "sfs_mixed.yaml"}
SIMCOL3D_SAMPLE = Path(os.environ.get("COLONDEPTH_SHARED_DATA", REPO.parent / "shared" / "data")) / "simcol3d_sample"

MODES = {
    # size: training/held-out image size (px); train_*: per level; heldout_*: per level, other seed.
    "quick": dict(size=64, train_sequences=3, train_frames=12, heldout_sequences=2, heldout_frames=8,
                  train_samples=800, seeds=[0], speed_frames=16),
    "full": dict(size=128, train_sequences=5, train_frames=32, heldout_sequences=3, heldout_frames=24,
                 train_samples=16000, seeds=[0, 1], speed_frames=64),
}
TRAIN_SEED_BASE = 1000
HELDOUT_SEED_BASE = 9000
SPEED_SIZES = (128, 256)


def log(msg: str) -> None:
    print(f"[bench_depth {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_cli(args: list[str], log_path: Path) -> float:
    """Run ``colondepth ARGS`` in a child process, output to ``log_path``; returns wall seconds."""
    cmd = [sys.executable, "-m", "colondepth.cli"] + [str(a) for a in args]
    log("$ colondepth " + " ".join(str(a) for a in args))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"command failed (exit {proc.returncode}): colondepth {' '.join(map(str, args))}\n{tail}")
    return dt


# -- data ---------------------------------------------------------------------------------------------
def recipe_for(level: str) -> Path:
    exact = REPO / "synth" / f"{level}.yaml"
    if exact.is_file():
        return exact
    found = sorted((REPO / "synth").glob(f"{level}_*.yaml"))
    if not found:
        raise SystemExit(f"no generator recipe for {level} in synth/ (expected synth/{level}.yaml)")
    return found[0]


def generate(level: str, out: Path, sequences: int, frames: int, size: int, seed: int, logs: Path) -> float:
    """``colondepth synth`` into ``out`` unless an identical request already produced it."""
    request = {"recipe": str(recipe_for(level)), "sequences": sequences, "frames": frames, "size": size, "seed": seed}
    stamp = out / ".bench_request.json"
    if (out / "dataset.yaml").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == request:
        log(f"reusing {out}")
        return 0.0
    if out.exists():  # another request (or a killed run) made it: start again, never mix two requests
        import shutil

        shutil.rmtree(out)
    dt = run_cli(["synth", "--recipe", request["recipe"], "--out", out, "--sequences", sequences,
                  "--frames", frames, "--size", size, size, "--seed", seed], logs / f"synth_{out.parent.name}_{level}.log")
    stamp.write_text(json.dumps(request))
    return dt


def make_data(work: Path, mode: dict, levels=LEVELS) -> dict:
    times = {}
    for k, level in enumerate(levels):
        times[f"train/{level}"] = generate(level, work / "data" / level, mode["train_sequences"], mode["train_frames"],
                                           mode["size"], TRAIN_SEED_BASE + 10 * k, work / "logs")
        times[f"heldout/{level}"] = generate(level, work / "heldout" / level, mode["heldout_sequences"],
                                             mode["heldout_frames"], mode["size"], HELDOUT_SEED_BASE + 10 * k,
                                             work / "logs")
    return times


# -- curricula ----------------------------------------------------------------------------------------
def stage_samples(stage: dict, frames_per_level: dict) -> float:
    """Training samples a stage of a resolved curriculum draws (steps x batch, or epochs x frames)."""
    budget = stage["budget"]
    if budget.get("steps"):
        return float(budget["steps"]) * stage["batch_size"]
    frames = sum(frames_per_level.get(lv, 0) for lv in stage.get("levels", []))
    return float(budget["epochs"]) * frames


def rescale_curriculum(src: Path, total_samples: int, size: int, frames_per_level: dict) -> tuple[dict, int]:
    """A copy of curriculum ``src`` whose supervised stages draw ``total_samples`` samples in all.

    Each stage keeps its share of the original's samples; budgets become ``steps``; plateau promotion is
    replaced by the budget rule (an early promotion would break the equal-samples comparison);
    self-supervised stages are dropped (this benchmark is about supervised shape-from-shading); the
    ``generate`` section is dropped (the benchmark generates the data).  Returns (curriculum dict, samples).
    """
    from colondepth.train.config import load_curriculum, parse_curriculum, resolved_dict

    d = resolved_dict(load_curriculum(src))
    d.pop("generate", None)
    d["model"]["input_size"] = [size, size]
    stages = [s for s in d["stages"] if s["kind"] == "supervised"]
    if not stages:
        raise SystemExit(f"{src}: no supervised stage to benchmark")
    shares = [stage_samples(s, frames_per_level) for s in stages]
    total = 0
    for s, share in zip(stages, shares):
        steps = max(1, round(total_samples * share / sum(shares) / s["batch_size"]))
        s["budget"] = {"steps": steps, "epochs": None}
        s["promotion"]["rule"] = "budget"
        s["datasets"] = [str((src.parent / p).resolve()) for p in s.get("datasets", [])]
        total += steps * s["batch_size"]
    d["stages"] = stages
    d["name"] = f"{d['name']}-bench"
    parse_curriculum(d, f"{src} (rescaled)")  # still valid
    return d, total


def find_checkpoint(run: Path) -> Path:
    for name in ("final.pt", "model.pt", "best.pt", "last.pt"):
        for cand in (run / name, run / "checkpoints" / name):
            if cand.is_file():
                return cand
    found = sorted(run.rglob("*.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{run}: training finished but wrote no .pt checkpoint")
    return found[-1]


def train(work: Path, name: str, src: Path, mode: dict, seed: int, frames_per_level: dict) -> dict:
    import yaml

    cur, samples = rescale_curriculum(src, mode["train_samples"], mode["size"], frames_per_level)
    cur["seed"] = seed
    cur_path = work / "curricula" / f"{name}_seed{seed}.yaml"
    cur_path.parent.mkdir(parents=True, exist_ok=True)
    cur_path.write_text(yaml.safe_dump(cur, sort_keys=False))
    run = work / "runs" / f"{name}_seed{seed}"
    done = run / ".bench_done.json"
    if done.is_file() and json.loads(done.read_text()).get("curriculum") == cur:
        log(f"reusing {run}")
        info = json.loads(done.read_text())
    else:
        if run.exists():  # an unfinished or different earlier run: train from scratch
            import shutil

            shutil.rmtree(run)
        dt = run_cli(["train", "--curriculum", cur_path, "--out", run, "--data", work / "data"],
                     work / "logs" / f"train_{name}_seed{seed}.log")
        info = {"curriculum": cur, "seconds": dt}
        done.write_text(json.dumps(info))
    steps = [s["budget"]["steps"] for s in cur["stages"]]
    return {"name": name, "seed": seed, "checkpoint": str(find_checkpoint(run)), "samples": samples,
            "stages": [f"{s['name']}:{'+'.join(s['levels'])}x{s['budget']['steps']}" for s in cur["stages"]],
            "steps": sum(steps), "seconds": info["seconds"]}


# -- evaluation ---------------------------------------------------------------------------------------
def predictor_at_size(checkpoint: str, size: int | None = None):
    """``predict_batch`` of the checkpoint's network, optionally run at another square input size.

    The network is fully convolutional, so the same weights run at any multiple of its stride; the model
    resizes every frame to its input size and the depth back (``DepthNet.predict_depth``).
    """
    import numpy as np
    import torch

    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.train.checkpoint import load_checkpoint

    net, card, _ = load_checkpoint(checkpoint)
    if size is not None:
        cfg = DepthNetConfig.from_dict({**net.config.to_dict(), "input_height": size, "input_width": size})
        resized = DepthNet(cfg)
        resized.load_state_dict(net.state_dict())
        net = resized.eval()

    def predict_batch(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            return net.predict_depth(x)[:, 0].numpy()

    return predict_batch


def evaluate(checkpoint, data: Path, fmt: str, align: str, constant_mm=None, size=None, physics_kwargs=None):
    from colondepth.datasets.registry import open_sequences
    from colondepth.eval.evaluate import evaluate_sequences

    predict = None
    if checkpoint is not None:
        if size is None:
            try:
                from colondepth.infer.predictor import DepthPredictor
            except ModuleNotFoundError:  # the predictor module is not installed: run the network directly
                log("colondepth.infer.predictor missing: running DepthNet.predict_depth directly")
                predict = predictor_at_size(checkpoint, None)
            else:
                predict = DepthPredictor.from_checkpoint(checkpoint, device="cpu").predict_batch
        else:
            predict = predictor_at_size(checkpoint, size)
    return evaluate_sequences(open_sequences(data, fmt), predict, align=align, constant_mm=constant_mm,
                              physics_kwargs=physics_kwargs, progress=False)


def training_median_mm(work: Path) -> float:
    from colondepth.datasets.registry import open_sequences
    from colondepth.eval.baselines import dataset_median_depth_mm

    maps = (s.depth_mm(i) for lv in LEVELS for s in open_sequences(work / "data" / lv, "colondepth") for i in range(len(s)))
    return dataset_median_depth_mm(maps)


COLS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")
HEAD = "| abs_rel | sq_rel (mm) | rmse (mm) | rmse_log | δ<1.25 | δ<1.25² | δ<1.25³ |"


def metric_cells(m: dict) -> str:
    return " | ".join(f"{m[c]:.3f}" for c in COLS)


def section_curriculum(work: Path, mode: dict, runs: list[dict], const_mm: float) -> tuple[str, dict]:
    heldout = work / "heldout" / HARDEST
    out = {}
    lines = [f"### Curriculum vs mixed, held-out {HARDEST} ({mode['heldout_sequences']} sequences x "
             f"{mode['heldout_frames']} frames, seed {HELDOUT_SEED_BASE + 10 * LEVELS.index(HARDEST)}, "
             f"{mode['size']}x{mode['size']})", ""]
    for align in ("median", "none"):
        lines += [f"alignment: **{align}**", "", "| model | seed | train samples | train time (s) " + HEAD,
                  "|---|---:|---:|---:" + "|---:" * len(COLS) + "|"]
        per_name: dict = {}
        base = None
        for r in runs:
            rep = evaluate(r["checkpoint"], heldout, "colondepth", align, constant_mm=const_mm)
            s = rep.summary()
            per_name.setdefault(r["name"], []).append(s["metrics"]["model"])
            out[f"{align}/{r['name']}/seed{r['seed']}"] = s
            base = s
            lines.append(f"| {r['name']} | {r['seed']} | {r['samples']} | {r['seconds']:.0f} | "
                         + metric_cells(s["metrics"]["model"]) + " |")
        for name, ms in per_name.items():
            if len(ms) > 1:
                import numpy as np

                mean = {c: float(np.mean([m[c] for m in ms])) for c in COLS}
                lines.append(f"| **{name} (mean)** | {len(ms)} seeds | | | " + metric_cells(mean) + " |")
        lines.append("| physics baseline (median-aligned) | | | | " + metric_cells(base["metrics"]["physics"]) + " |")
        const_label = "constant (training median)" if align == "none" else "constant (median-aligned)"
        lines.append(f"| {const_label} | | | | " + metric_cells(base["metrics"]["constant"]) + " |")
        lines.append("")
    stages = {f"{r['name']} seed {r['seed']}": ", ".join(r["stages"]) for r in runs}
    lines += ["Stages (level sets x steps): " + "; ".join(f"{k}: {v}" for k, v in stages.items()), ""]
    return "\n".join(lines), out


def section_baseline(work: Path, checkpoint: str, const_mm: float, name: str) -> tuple[str, dict]:
    rows, out = [], {}
    targets = [(f"held-out {lv}", work / "heldout" / lv, "colondepth") for lv in LEVELS]
    if SIMCOL3D_SAMPLE.is_dir():
        targets.append(("SimCol3D sample (10 frames, 475 px)", SIMCOL3D_SAMPLE, "simcol3d"))
    for label, path, fmt in targets:
        rep = evaluate(checkpoint, path, fmt, "median")
        m = rep.summary()["metrics"]
        # The same baseline with gamma 1 (brightness used as encoded): not the physical model, but it
        # partly absorbs the cos(theta) and light-cone fall-off the model ignores; shown for honesty.
        g1 = evaluate(None, path, fmt, "median", physics_kwargs={"gamma": 1.0}).summary()["metrics"]["physics"]
        out[label] = {**rep.summary(), "physics_gamma1": g1}
        ratio = m["physics"]["abs_rel"] / m["model"]["abs_rel"]
        rows.append(f"| {label} | {rep.summary()['num_frames']} | {m['model']['abs_rel']:.3f} | "
                    f"{m['physics']['abs_rel']:.3f} | {g1['abs_rel']:.3f} | {m['constant']['abs_rel']:.3f} | "
                    f"{ratio:.2f}x | {m['model']['delta1']:.3f} | {m['physics']['delta1']:.3f} |")
    text = "\n".join([
        f"### Model ({name}) vs physics baseline, median alignment", "",
        "| data | frames | abs_rel model | abs_rel physics (γ 2.2) | abs_rel physics (γ 1) | abs_rel constant "
        "| physics (γ 2.2) / model | δ<1.25 model | δ<1.25 physics (γ 2.2) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
        "Target: physics / model >= 2.00x.", ""])
    return text, out


def speed_worker(size: int, checkpoint: str | None, frames: int, batch: int) -> None:
    """Child process: time inference at ``size``x``size`` and print one JSON line (fresh RSS)."""
    import numpy as np
    import torch

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from colondepth.models.depth_net import DepthNet, DepthNetConfig

    if checkpoint:
        from colondepth.train.checkpoint import load_checkpoint

        net, _, _ = load_checkpoint(checkpoint)
        cfg = DepthNetConfig.from_dict({**net.config.to_dict(), "input_height": size, "input_width": size})
        state = net.state_dict()
        net = DepthNet(cfg)
        net.load_state_dict(state)
    else:
        net = DepthNet(DepthNetConfig(input_height=size, input_width=size))
    net.eval()
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8)

    def step():
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            return net.predict_depth(x)[:, 0].numpy()

    for _ in range(3):
        step()
    # Median step time over at least `frames` frames and 2 s: robust to other work on a shared CPU.
    times = []
    t_begin = time.perf_counter()
    while len(times) * batch < frames or time.perf_counter() - t_begin < 2.0:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    print(json.dumps({
        "size": size, "batch": batch, "frames": len(times) * batch, "steps": len(times),
        "fps": batch / step_s, "ms_per_frame": 1000 * step_s / batch,
        "fps_mean": len(times) * batch / sum(times), "fps_best": batch / min(times),
        "rss_start_mb": rss0 / 1024, "rss_model_mb": rss_loaded / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(), "params": sum(p.numel() for p in net.parameters()),
    }))


def section_speed(work: Path | None, checkpoint: str | None, mode: dict, train_size: int) -> tuple[str, dict]:
    sizes = sorted(set(SPEED_SIZES) | {train_size})
    rows, out = [], {}
    load_before = os.getloadavg()
    for size in sizes:
        acc = None
        if checkpoint and work is not None and (work / "heldout" / HARDEST).is_dir():
            rep = evaluate(checkpoint, work / "heldout" / HARDEST, "colondepth", "median", size=size)
            acc = rep.summary()["metrics"]["model"]
        for batch in (1, 8):
            cmd = [sys.executable, __file__, "--speed-worker", str(size), "--frames", str(mode["speed_frames"]),
                   "--batch", str(batch)] + (["--checkpoint", checkpoint] if checkpoint else [])
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if res.returncode != 0:
                raise SystemExit(f"speed worker failed at {size}px:\n{res.stderr[-2000:]}")
            r = json.loads(res.stdout.strip().splitlines()[-1])
            out[f"{size}/b{batch}"] = {**r, "abs_rel_L5": acc and acc["abs_rel"]}
            acc_cells = (f"{acc['abs_rel']:.3f} | {acc['delta1']:.3f}" if acc else "n/a | n/a")
            rows.append(f"| {size}x{size}{' (training size)' if size == train_size else ''} | {batch} | "
                        f"{r['fps']:.1f} | {r['fps_best']:.1f} | {r['ms_per_frame']:.1f} | {r['rss_model_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                        f"{acc_cells} |")
    load_after = os.getloadavg()
    params = next(iter(out.values()))["params"]
    text = "\n".join([
        f"### Inference speed and memory (CPU, {os.cpu_count()} cores, torch threads "
        f"{next(iter(out.values()))['threads']}, {params} parameters)", "",
        "| input | batch | frames/s (median step) | frames/s (best step) | ms/frame (median) | RSS after load (MB) | peak RSS (MB) | abs_rel held-out L5 "
        "| δ<1.25 held-out L5 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
        f"Same weights at every size (the network is fully convolutional; frames are resized to the input size). "
        f"Peak RSS is the maximum resident set of a fresh process (ru_maxrss), torch included. "
        f"The CPU was shared while measuring: 1-min load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after.", ""])
    return text, out


def curriculum_summary(section: dict) -> dict:
    """Per training curriculum: abs_rel and delta1 on held-out L5 per seed and their mean over seeds, for both
    alignments (``median``: shape; ``none``: metric depth).  ``section`` is ``results["curriculum"]``."""
    import numpy as np

    out: dict = {}
    for key, summary in section.items():
        align, name, seed = key.split("/")
        m = summary["metrics"]["model"]
        entry = out.setdefault(name, {}).setdefault(align, {"seeds": {}})
        entry["seeds"][seed] = {"abs_rel": m["abs_rel"], "delta1": m["delta1"]}
    for name, per_align in out.items():
        for entry in per_align.values():
            for metric in ("abs_rel", "delta1"):
                entry[f"{metric}_mean"] = float(np.mean([s[metric] for s in entry["seeds"].values()]))
    return out


def repo_relative(value):
    """``value`` with absolute paths inside the repository written relative to it (the JSON is committed)."""
    if isinstance(value, dict):
        return {k: repo_relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repo_relative(v) for v in value]
    if isinstance(value, str) and value.startswith(str(REPO) + os.sep):
        return os.path.relpath(value, REPO)
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny data and short training (a few minutes)")
    ap.add_argument("--work", type=Path, default=None,
                    help="data, runs and results (default out/bench_depth/quick or out/bench_depth/full)")
    ap.add_argument("--sections", default="curriculum,baseline,speed", help="comma list of sections")
    ap.add_argument("--checkpoint", default=None, help="for 'baseline'/'speed' without training: use this model")
    ap.add_argument("--train-samples", type=int, default=None, help="override the training samples per run")
    ap.add_argument("--seeds", type=str, default=None, help="override the training seeds, e.g. 0,1")
    ap.add_argument("--curricula", default=None,
                    help="compare other curriculum files: curriculum=PATH,mixed=PATH (default: curricula/sfs_*.yaml)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "depth.json",
                    help="committed copy of the results (default benchmarks/results/depth.json)")
    ap.add_argument("--speed-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.speed_worker is not None:
        speed_worker(args.speed_worker, args.checkpoint, args.frames, args.batch)
        return 0

    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    if args.train_samples:
        mode["train_samples"] = args.train_samples
    if args.seeds:
        mode["seeds"] = [int(s) for s in args.seeds.split(",")]
    curricula = dict(CURRICULA)
    if args.curricula:
        for item in args.curricula.split(","):
            key, _, value = item.partition("=")
            if key not in CURRICULA or not value:
                raise SystemExit(f"--curricula: expected curriculum=PATH,mixed=PATH, got {item!r}")
            curricula[key] = Path(value).resolve()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - {"curriculum", "baseline", "speed"}
    if unknown:
        raise SystemExit(f"--sections: unknown {', '.join(sorted(unknown))}; use curriculum, baseline, speed")
    work = (args.work or REPO / "out" / "bench_depth" / mode_name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"mode": mode_name, "settings": mode,
                     "command": " ".join(["python", "benchmarks/bench_depth.py", *(argv if argv is not None
                                                                                   else sys.argv[1:])]),
                     "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                     "load_average_start": os.getloadavg()[0]}
    t_start = time.perf_counter()
    print(f"## Depth benchmarks ({mode_name} mode)\n")

    checkpoint = args.checkpoint
    train_size = mode["size"]
    if checkpoint is None and ("curriculum" in sections or "baseline" in sections):
        for key, path in curricula.items():
            if not path.is_file():
                raise SystemExit(f"{path}: curriculum file not found (the {key} run of the benchmark)")
        results["data_seconds"] = make_data(work, mode)
        from colondepth.datasets.registry import open_sequences

        frames_per_level = {lv: sum(len(s) for s in open_sequences(work / "data" / lv, "colondepth")) for lv in LEVELS}
        runs = []
        for seed in mode["seeds"]:
            for name, src in curricula.items():
                runs.append(train(work, name, src, mode, seed, frames_per_level))
        results["runs"] = runs
        const_mm = training_median_mm(work)
        results["training_median_depth_mm"] = const_mm
        if "curriculum" in sections:
            text, results["curriculum"] = section_curriculum(work, mode, runs, const_mm)
            print(text)
        checkpoint = next(r["checkpoint"] for r in runs if r["name"] == "curriculum")
        if "baseline" in sections:
            text, results["baseline"] = section_baseline(work, checkpoint, const_mm, f"curriculum, seed {mode['seeds'][0]}")
            print(text)
    elif "baseline" in sections:
        make_data(work, mode)
        text, results["baseline"] = section_baseline(work, checkpoint, None, Path(checkpoint).name)
        print(text)
    if "speed" in sections:
        if checkpoint:
            from colondepth.train.checkpoint import load_checkpoint

            train_size = int(load_checkpoint(checkpoint)[1]["input_size"][0])
        text, results["speed"] = section_speed(work, checkpoint, mode, train_size)
        print(text)
    results["total_seconds"] = time.perf_counter() - t_start
    from colondepth.io import atomic_write_text

    if "curriculum" in results:
        results["summary"] = curriculum_summary(results["curriculum"])
    text = json.dumps(repo_relative(results), indent=2, default=str) + "\n"
    atomic_write_text(work / "results.json", text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, text)
    print(f"Total wall time {results['total_seconds'] / 60:.1f} min; numbers in {work / 'results.json'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
