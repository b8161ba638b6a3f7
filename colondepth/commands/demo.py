"""``colondepth demo``: the main job end to end on a small embedded default.

generate (synthetic levels L1..L5 + a held-out L5 test set) → train (``curricula/demo.yaml``) →
fine-tune self-supervised (the real colon video sample when ``../shared/data`` is present, else the
held-out synthetic frames) → evaluate → predict → reconstruct (ground truth and predicted) → a summary
that says where every output is and how to open it in the app.

Each step runs the same code as its own subcommand (the exact command is printed, so any step can be
rerun by hand).  A step whose output is already complete is skipped, so rerunning ``make demo`` after an
interruption continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

HELP = "run the whole pipeline on a small embedded default (generate, train, fine-tune, predict, reconstruct)"

REAL_VIDEO = Path("real_colon_video") / "colonoscopy_side_by_side.mp4"
REAL_VIDEO_CROP = ("0", "0", "192", "192")  # the left half is the endoscope image

#: (level, recipe) of the embedded default, in curriculum order.
LEVELS = [
    ("L1", "L1_straight"),
    ("L2", "L2_curved"),
    ("L3", "L3_haustra"),
    ("L4", "L4_flexures"),
    ("L5", "L5_tortuous"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output folder (default out/demo)")
    from colondepth.resources import default_shared_data

    shared = default_shared_data()
    parser.add_argument("--shared-data", default=None if shared is None else str(shared), metavar="DIR",
                        help="third-party sample data; the real video there is used for fine-tuning when present")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                        help="synthetic frame size (default 64 64)")
    parser.add_argument("--sequences", type=int, default=3, metavar="N",
                        help="training sequences per level (default 3)")
    parser.add_argument("--frames", type=int, default=24, metavar="F", help="frames per sequence (default 24)")
    parser.add_argument("--finetune-steps", type=int, default=60, metavar="N",
                        help="self-supervised fine-tuning steps (default 60)")
    parser.add_argument("--curriculum", default="demo", metavar="FILE",
                        help="training curriculum: a YAML file or a shipped curriculum's name (default demo)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--fresh", action="store_true", help="delete DIR first instead of continuing")


def _is_done(marker: Path | None) -> bool:
    """A step is done when its marker exists; a reconstruction's ``report.json`` must also not say
    ``"complete": false`` (an incomplete mesh is redone on the next run)."""
    if marker is None or not marker.exists():
        return False
    if marker.name != "report.json":
        return True
    try:
        return json.loads(marker.read_text()).get("complete", True) is not False
    except (OSError, ValueError, AttributeError):
        return False


class _Step:
    """Runs one pipeline step through the CLI, prints its command, times it, and skips finished ones."""

    def __init__(self, out: Path):
        self.out = out
        self.log: list[dict] = []
        self.t0 = time.monotonic()

    def run(self, title: str, argv: list[str], done_marker: Path | None = None) -> None:
        from colondepth import cli
        from colondepth.errors import UserError

        n = len(self.log) + 1
        cmd = "colondepth " + " ".join(shlex.quote(a) for a in argv)
        print(f"\n=== [{n}] {title}\n$ {cmd}", flush=True)
        if _is_done(done_marker):
            print(f"    already done ({done_marker}); skipping", flush=True)
            self.log.append({"step": title, "command": cmd, "seconds": 0.0, "skipped": True})
            return
        t = time.monotonic()
        parsed = cli.build_parser().parse_args(argv)
        try:
            code = int(parsed._run(parsed) or 0)
        except UserError as exc:  # one line: the step's own message, then how to continue
            err = UserError(f"demo step '{title}' failed: {exc}; fix it and rerun 'colondepth demo' to continue "
                            f"from this step")
            err.exit_code = exc.exit_code
            raise err from exc
        if code != 0:
            raise UserError(f"demo step '{title}' failed (exit {code}); see the message above, fix it and rerun "
                            f"'colondepth demo' to continue from this step")
        self.log.append({"step": title, "command": cmd, "seconds": round(time.monotonic() - t, 1),
                         "skipped": False})


def run(args: argparse.Namespace) -> int:
    import shutil

    from colondepth.errors import UserError
    from colondepth.io import ensure_output_dir
    from colondepth.resources import curriculum_path, recipe_path
    from colondepth.train.config import load_curriculum

    # every argument is checked before anything is written or deleted, so a typo fails in seconds
    out = Path(args.out).expanduser().resolve()
    h, w = args.size
    if h < 32 or w < 32:
        raise UserError(f"--size {h} {w}: frames must be at least 32x32 pixels; use e.g. --size 64 64")
    for flag, value in (("--sequences", args.sequences), ("--frames", args.frames),
                        ("--finetune-steps", args.finetune_steps)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    curriculum = curriculum_path(Path(args.curriculum).expanduser()).resolve()
    load_curriculum(curriculum)  # syntax and keys, before any data is generated
    if out.exists() and not out.is_dir():  # before --fresh deletes anything
        raise UserError(f"--out {out}: exists and is not a folder; choose another --out")
    if args.fresh and out.exists():
        shutil.rmtree(out)
    ensure_output_dir(out, "--out")
    step = _Step(out)
    data = out / "data"

    # 1. synthetic data: every level for training, and a held-out L5 set (other seed) for testing.
    for level, recipe in LEVELS:
        d = data / level
        step.run(f"generate synthetic level {level}",
                 ["synth", "--recipe", str(recipe_path(recipe)), "--out", str(d), "--sequences",
                  str(args.sequences), "--frames", str(args.frames), "--size", str(h), str(w), "--seed", "0"],
                 done_marker=d / f"seq_{args.sequences - 1:05d}" / "meta.yaml")  # sequences appear in order
    test = out / "test_L5"
    step.run("generate held-out test set (L5, unseen seed)",
             ["synth", "--recipe", str(recipe_path(LEVELS[-1][1])), "--out", str(test), "--sequences", "1",
              "--frames", str(2 * args.frames), "--size", str(h), str(w), "--seed", "1000"],
             done_marker=test / "seq_00000" / "meta.yaml")

    # 2. curriculum training.
    run_dir = out / "runs" / "curriculum"
    dev = ["--device", args.device] if args.device else []
    final = run_dir / "checkpoints" / "final.pt"
    train_argv = ["train", "--curriculum", str(curriculum), "--out", str(run_dir), "--data", str(data)] + dev
    if (run_dir / "checkpoints" / "last.pt").exists() and not final.exists():
        train_argv.append("--resume")
    step.run("train the depth network through the curriculum", train_argv, done_marker=final)

    # 3. self-supervised fine-tuning: real video when available, else the held-out synthetic frames.
    video = Path(args.shared_data) / REAL_VIDEO if args.shared_data else None
    if video is not None and not video.is_file():
        video = None
    ft_dir = out / "runs" / "finetune"
    ft_final = ft_dir / "checkpoints" / "final.pt"
    if video is not None:
        ft_input = ["--video", str(video), "--crop", *REAL_VIDEO_CROP]
        ft_what = f"the real colonoscopy video ({video})"
    else:
        # meta.yaml carries fx fy cx cy width height: the exact intrinsics of these frames.
        ft_input = ["--video", str(test / "seq_00000" / "rgb"), "--intrinsics", str(test / "seq_00000" / "meta.yaml")]
        ft_what = "the held-out synthetic L5 frames (no real video found)"
    ft_argv = ["finetune", "--init", str(final), *ft_input, "--out", str(ft_dir),
               "--steps", str(args.finetune_steps), "--batch-size", "2", "--checkpoint-every", "20"] + dev
    if (ft_dir / "checkpoints" / "last.pt").exists() and not ft_final.exists():
        ft_argv.append("--resume")
    step.run(f"fine-tune self-supervised on {ft_what}", ft_argv, done_marker=ft_final)

    # 4. evaluation of the supervised model on the held-out set, against the baselines.
    eval_json = out / "eval_test_L5.json"
    step.run("evaluate depth on the held-out L5 set (model vs physics and constant baselines)",
             ["evaluate", "--checkpoint", str(final), "--data", str(test), "--json", str(eval_json)] + dev,
             done_marker=eval_json)

    # 5. depth prediction on the fine-tuning input.
    pred_dir = out / "predictions"
    if video is not None:
        pred_argv = ["predict", "--checkpoint", str(ft_final), "--input", str(video), "--crop", *REAL_VIDEO_CROP,
                     "--out", str(pred_dir / "real_video")]
    else:
        pred_argv = ["predict", "--checkpoint", str(ft_final), "--input", str(test / "seq_00000" / "rgb"),
                     "--out", str(pred_dir / "test_L5")]
    step.run("predict depth maps", pred_argv + dev, done_marker=None)

    # 6. reconstruction: ground truth (the reference) and the networks' depth on the same sequence.
    seq = test / "seq_00000"
    rec = out / "reconstructions"
    step.run("reconstruct the held-out colon from ground-truth depth and poses",
             ["reconstruct", "--sequence", str(seq), "--out", str(rec / "test_L5_gt"), "--depth", "gt",
              "--poses", "gt"], done_marker=rec / "test_L5_gt" / "report.json")
    step.run("reconstruct the held-out colon from predicted depth (ground-truth poses)",
             ["reconstruct", "--sequence", str(seq), "--out", str(rec / "test_L5_predicted"), "--depth",
              "predicted", "--poses", "gt", "--checkpoint", str(ft_final)],
             done_marker=rec / "test_L5_predicted" / "report.json")

    _summary(out, step, eval_json, rec)
    return 0


def _summary(out: Path, step: _Step, eval_json: Path, rec: Path) -> None:
    from colondepth.io import atomic_write_text

    lines = ["", "=" * 72, "ColonDepth demo finished in "
             f"{(time.monotonic() - step.t0) / 60:.1f} min. Outputs under {out}:", ""]
    for name, rel in [("synthetic training data (L1..L5)", "data"), ("held-out test set (L5)", "test_L5"),
                      ("curriculum run (checkpoints, metrics.jsonl)", "runs/curriculum"),
                      ("fine-tuning run", "runs/finetune"), ("depth predictions (.npy + .png)", "predictions"),
                      ("reconstructions (mesh, coverage, NIfTI)", "reconstructions"),
                      ("evaluation table (JSON)", eval_json.name)]:
        lines.append(f"  {name:<45} {out / rel}")
    lines.append("")
    try:
        overall = json.loads(eval_json.read_text())["overall"]["metrics"]
        lines.append("Held-out L5 depth, median-aligned (colondepth evaluate):")
        for name, m in overall.items():
            lines.append(f"  {name:<10} abs_rel {m['abs_rel']:.3f}   rmse {m['rmse']:.2f} mm   "
                         f"delta<1.25 {m['delta1']:.3f}")
    except (OSError, ValueError, KeyError, TypeError):
        lines.append(f"  (no evaluation table in {eval_json})")
    lines.append("")
    for name in ("test_L5_gt", "test_L5_predicted"):
        try:
            rep = json.loads((rec / name / "report.json").read_text())
            frac = rep["coverage"]["observed_fraction"]
            cd = rep["metrics"]["observed_ground_truth"]["chamfer_mm"]
            lines.append(f"  reconstruction {name:<18} Chamfer {cd:.2f} mm to the seen ground-truth surface; "
                         f"{100 * frac:.1f} % of the colon surface observed")
        except (OSError, ValueError, KeyError, TypeError):
            lines.append(f"  (no reconstruction report in {rec / name})")
    lines += ["", "Open everything in the review app:", f"  .venv/bin/colondepth app --root {out}", ""]
    text = "\n".join(lines)
    print(text)
    atomic_write_text(out / "summary.txt", text + "\n")
    atomic_write_text(out / "steps.json", json.dumps(step.log, indent=2) + "\n")
