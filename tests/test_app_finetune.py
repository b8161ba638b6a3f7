"""Fine-tuning on a video before reconstructing it, from the review app's New-video page.

The pure helpers of :mod:`colondepth.app.data` (``finetune_command``, ``finetune_step`` /
``finetune_fraction``, ``run_finetune``), the page with stand-in commands (failure, reuse), and one real run of
``colondepth finetune --steps 2`` and ``colondepth reconstruct`` on a tiny rendered video.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

from colondepth.app import data as appdata
from colondepth.errors import UserError

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "colondepth" / "app" / "review.py"
#: A tiny depth network (as tests/test_finetune.py's) whose depth range holds the rendered tube's walls.
TINY_MODEL = dict(input_height=32, input_width=32, min_depth_mm=8.0, max_depth_mm=40.0,
                  encoder_channels=[8, 8, 16, 16], decoder_channels=[8, 8, 8, 8], num_scales=2, norm="group")
SCOPE_YAML = "fx: 40\nfy: 40\ncx: 31.5\ncy: 31.5\nwidth: 64\nheight: 64\n"


def _root(tmp_path: Path) -> Path:
    """A root with a (not decoded here) video, a camera file, a training run's checkpoint and a sequence folder."""
    root = tmp_path / "root"
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / "my clip.mp4").write_bytes(b"x")
    (root / "scope.yaml").write_text(SCOPE_YAML)
    (root / "runs" / "sfs" / "checkpoints").mkdir(parents=True)
    (root / "runs" / "sfs" / "checkpoints" / "final.pt").write_bytes(b"x")
    seq = root / "synthetic" / "seq_00000"
    (seq / "rgb").mkdir(parents=True)
    (seq / "meta.yaml").write_text("width: 8\n")
    return root


def _write_command_curriculum(argv: list[str]) -> Path:
    """Write the ``finetune.curriculum.yaml`` that ``colondepth finetune`` itself writes for ``argv``."""
    from colondepth.cli import build_parser
    from colondepth.commands.finetune import build_curriculum

    args = build_parser().parse_args(argv[3:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune.curriculum.yaml").write_text(yaml.safe_dump(build_curriculum(args, {"model": TINY_MODEL}),
                                                                 sort_keys=False))
    return out


# ----------------------------------------------------------------------------------------------
# finetune_command
# ----------------------------------------------------------------------------------------------
class TestFinetuneCommand:
    def test_video_with_crop_and_intrinsics(self, tmp_path):
        root = _root(tmp_path)
        r = root.resolve()
        argv, run_dir = appdata.finetune_command(root, "uploads/my clip.mp4", 50, "runs/sfs/checkpoints/final.pt",
                                                 intrinsics="scope.yaml", crop=" 0 0 40 40 ")
        assert run_dir == r / "runs" / "my_clip_finetune"
        assert argv == [sys.executable, "-m", "colondepth.cli", "finetune",
                        "--init", str(r / "runs" / "sfs" / "checkpoints" / "final.pt"),
                        "--video", str(r / "uploads" / "my clip.mp4"),
                        "--intrinsics", str(r / "scope.yaml"), "--crop", "0", "0", "40", "40",
                        "--out", str(run_dir), "--steps", "50", "--no-progress"]
        from colondepth.cli import build_parser

        args = build_parser().parse_args(argv[3:])  # the command accepts it as it is
        assert (args.steps, args.crop, args.resume) == (50, [0, 0, 40, 40], False)
        assert appdata.finetuned_checkpoint(run_dir) == run_dir / "checkpoints" / "final.pt"
        assert not appdata.finetune_finished(run_dir)

    def test_default_model_and_no_camera(self, tmp_path):
        from colondepth.resources import default_model_path

        if not default_model_path().is_file():
            pytest.skip("no default model in this installation")
        root = _root(tmp_path)
        argv, _ = appdata.finetune_command(root, "uploads/my clip.mp4", 300, None, intrinsics=" ", crop="")
        assert argv[argv.index("--init") + 1] == str(default_model_path().resolve())
        assert "--intrinsics" not in argv and "--crop" not in argv and "--resume" not in argv

    @pytest.mark.parametrize("source, kw, match", [
        ("synthetic/seq_00000", {}, "synthetic/seq_00000: a sequence folder, not a video file"),
        ("runs", {}, "runs: a folder, not a video file"),
        ("../outside.mp4", {}, "../outside.mp4: outside the app root"),
        ("uploads/missing.mp4", {}, "uploads/missing.mp4: no such video file inside the app root"),
        ("scope.yaml", {}, "scope.yaml: not a video file"),
        ("uploads/my clip.mp4", {"checkpoint": "../elsewhere.pt"}, "../elsewhere.pt: outside the app root"),
        ("uploads/my clip.mp4", {"checkpoint": "runs/sfs/checkpoints/nope.pt"}, "nope.pt: checkpoint not found"),
        ("uploads/my clip.mp4", {"intrinsics": "../scope.yaml"}, "../scope.yaml: outside the app root"),
        ("uploads/my clip.mp4", {"crop": "0 0 40"}, "expected four integers"),
        ("uploads/my clip.mp4", {"steps": 0}, "fine-tuning steps 0: must be a positive number"),
        ("uploads/my clip.mp4", {"steps": 2.5}, "fine-tuning steps 2.5: must be a whole number"),
        ("uploads/my clip.mp4", {"steps": True}, "fine-tuning steps True: must be a whole number"),
    ])
    def test_refusals_are_one_line(self, tmp_path, source, kw, match):
        root = _root(tmp_path)
        kw = {"steps": 10, **kw}
        with pytest.raises(UserError, match=match) as info:
            appdata.finetune_command(root, source, **kw)
        assert "\n" not in str(info.value)
        assert not (root / "runs" / "my_clip_finetune").exists()

    def test_symlink_leaving_the_root_is_refused(self, tmp_path):
        root = _root(tmp_path)
        (tmp_path / "outside.mp4").write_bytes(b"x")
        (root / "link.mp4").symlink_to(tmp_path / "outside.mp4")
        with pytest.raises(UserError, match="link.mp4: outside the app root"):
            appdata.finetune_command(root, "link.mp4", 10)

    def test_run_folder_is_reused_resumed_or_new(self, tmp_path):
        """Same settings: the same folder (``--resume`` once it holds ``last.pt``; finished once ``final.pt``);
        other settings or other contents: the next free folder; an empty folder is free."""
        root = _root(tmp_path)
        kw = dict(checkpoint="runs/sfs/checkpoints/final.pt", intrinsics="scope.yaml", crop="0 0 40 40")
        argv, run_dir = appdata.finetune_command(root, "uploads/my clip.mp4", 50, **kw)
        _write_command_curriculum(argv)  # started, killed before its first checkpoint: run again afresh
        assert appdata.finetune_command(root, "uploads/my clip.mp4", 50, **kw) == (argv, run_dir)
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
        argv2, dir2 = appdata.finetune_command(root, "uploads/my clip.mp4", 50, **kw)
        assert dir2 == run_dir and argv2 == argv + ["--resume"] and not appdata.finetune_finished(run_dir)
        (run_dir / "checkpoints" / "final.pt").write_bytes(b"x")
        assert appdata.finetune_command(root, "uploads/my clip.mp4", 50, **kw)[1] == run_dir
        assert appdata.finetune_finished(run_dir)
        # other steps, crop, intrinsics or model: a new folder, the finished run stays as it is
        (root / "runs" / "sfs" / "checkpoints" / "other.pt").write_bytes(b"x")
        for other in ({"steps": 60}, {"crop": "0 0 32 32"}, {"intrinsics": ""},
                      {"checkpoint": "runs/sfs/checkpoints/other.pt"}):
            args = {"steps": 50, **kw, **other}
            argv3, dir3 = appdata.finetune_command(root, "uploads/my clip.mp4", **args)
            assert dir3 == root.resolve() / "runs" / "my_clip_finetune_2" and "--resume" not in argv3
        _write_command_curriculum(appdata.finetune_command(root, "uploads/my clip.mp4", 60, **kw)[0])
        assert appdata.finetune_command(root, "uploads/my clip.mp4", 70, **kw)[1].name == "my_clip_finetune_3"
        assert appdata.finetune_command(root, "uploads/my clip.mp4", 60, **kw)[1].name == "my_clip_finetune_2"
        assert appdata.finetune_command(root, "uploads/my clip.mp4", 50, **kw)[1].name == "my_clip_finetune"
        # a folder of that name holding something else is never taken; an empty one is
        (root / "runs" / "scope_finetune").mkdir()
        (root / "uploads" / "scope.mp4").write_bytes(b"x")
        assert appdata.finetune_command(root, "uploads/scope.mp4", 5, **kw)[1].name == "scope_finetune"
        (root / "runs" / "scope_finetune" / "notes.txt").write_text("mine")
        assert appdata.finetune_command(root, "uploads/scope.mp4", 5, **kw)[1].name == "scope_finetune_2"


# ----------------------------------------------------------------------------------------------
# Progress from metrics.jsonl
# ----------------------------------------------------------------------------------------------
def _train(step: int) -> str:
    return json.dumps({"type": "train", "stage": "finetune", "step": step, "global_step": step, "loss": 0.1}) + "\n"


class TestFinetuneProgress:
    def test_fraction_from_metrics(self, tmp_path):
        run = tmp_path / "run"
        run.mkdir()
        assert appdata.finetune_step(run) == 0 and appdata.finetune_fraction(run, 300) == 0.0  # no file yet
        metrics = run / "metrics.jsonl"
        metrics.write_text(_train(10) + _train(20))
        assert appdata.finetune_step(run) == 20 and appdata.finetune_fraction(run, 300) == pytest.approx(20 / 300)
        with open(metrics, "a") as f:
            f.write(_train(30)[:25])  # the run is writing its next record
        assert appdata.finetune_fraction(run, 300) == pytest.approx(20 / 300)
        metrics.write_text(_train(10) + _train(20) + _train(30))
        assert appdata.finetune_fraction(run, 300) == pytest.approx(0.1)
        with open(metrics, "a") as f:  # validation and stage records carry no training step of their own
            f.write(json.dumps({"type": "val", "step": 999, "val_loss": 0.2}) + "\n")
            f.write(json.dumps({"type": "stage_end", "steps": 300, "global_step": 300}) + "\n")
        assert appdata.finetune_step(run) == 30
        with open(metrics, "a") as f:
            f.write(json.dumps({"type": "run_end", "global_step": 300, "checkpoint": "final.pt"}) + "\n")
        assert appdata.finetune_fraction(run, 300) == 1.0
        assert appdata.finetune_fraction(run, 100) == 1.0  # never more than the whole run
        with pytest.raises(ValueError, match="at least one step"):
            appdata.finetune_fraction(run, 0)

    def test_bad_line_before_the_last_is_one_line(self, tmp_path):
        (tmp_path / "metrics.jsonl").write_text(_train(10) + "garbage\n" + _train(20))
        with pytest.raises(UserError, match=r"metrics.jsonl:2: not a JSON object"):
            appdata.finetune_step(tmp_path)


# ----------------------------------------------------------------------------------------------
# run_finetune with stand-in commands
# ----------------------------------------------------------------------------------------------
_STAND_IN = """\
import json, sys, time
from pathlib import Path
assert '--progress-events' not in sys.argv and '--no-progress' in sys.argv
out = Path(sys.argv[sys.argv.index('--out') + 1])
steps = int(sys.argv[sys.argv.index('--steps') + 1])
out.mkdir(parents=True, exist_ok=True)
def record(step):
    line = json.dumps({'type': 'train', 'stage': 'finetune', 'step': step, 'global_step': step, 'loss': 0.5})
    with open(out / 'metrics.jsonl', 'a') as f:
        f.write(line[:20]); f.flush(); time.sleep(0.05)  # half a line for a while
        f.write(line[20:] + '\\n')
record(10)
t0 = time.time()
while WAIT and not (out / 'seen_10').exists():  # the runner's callback answers while the command still runs
    if time.time() - t0 > 20:
        sys.exit(4)
    time.sleep(0.01)
record(20)
FAIL
(out / 'checkpoints').mkdir(exist_ok=True)
(out / 'checkpoints' / 'final.pt').write_bytes(b'x')
with open(out / 'metrics.jsonl', 'a') as f:
    f.write(json.dumps({'type': 'run_end', 'global_step': steps}) + '\\n')
print('done: fine-tuned weights in', out / 'checkpoints' / 'final.pt')
"""


def _stand_in(tmp_path: Path, fail: bool, wait: bool = True) -> Path:
    """The stand-in fine-tuning command; with ``wait`` it goes on after step 10 only once ``RUN/seen_10`` exists."""
    fail_code = ("sys.stderr.write('error: clip.mp4: 2 frames; fine-tuning needs at least 3\\n'); sys.exit(2)"
                 if fail else "")
    path = tmp_path / ("fail.py" if fail else "ok.py")
    path.write_text(_STAND_IN.replace("FAIL", fail_code).replace("WAIT", str(wait)))
    return path


class TestRunFinetune:
    def _run(self, tmp_path, fail):
        run_dir = tmp_path / "runs" / "clip_finetune"
        seen = []

        def on_event(ev):
            seen.append(ev)
            if ev.done == 10:
                (run_dir / "seen_10").write_text("")

        argv = [sys.executable, str(_stand_in(tmp_path, fail)), "--out", str(run_dir), "--steps", "30",
                "--no-progress"]
        run = appdata.run_finetune(argv, run_dir, 30, on_event, poll_s=0.01)
        return run, run_dir, seen

    def test_follows_steps_and_succeeds(self, tmp_path):
        run, run_dir, seen = self._run(tmp_path, fail=False)
        assert run.return_code == 0, run.output
        assert "done: fine-tuned weights" in run.output and appdata.error_line(run.output) is None
        assert appdata.finetune_finished(run_dir)
        done = [e.done for e in seen]
        assert done == sorted(set(done)) and done[-1] == 30 and 10 in done  # half lines never count
        assert set(done) <= {0, 10, 20, 30}
        assert all(e.stage == "finetune" and e.total == 30 and e.message == f"step {e.done}/30" for e in seen)
        assert run.events == seen

    def test_failure_is_reported(self, tmp_path):
        run, run_dir, seen = self._run(tmp_path, fail=True)
        assert run.return_code == 2
        assert appdata.error_line(run.output) == "error: clip.mp4: 2 frames; fine-tuning needs at least 3"
        assert not appdata.finetune_finished(run_dir)
        assert seen[-1].done == 20  # progress as far as it went, and no further

    def test_bad_steps(self, tmp_path):
        with pytest.raises(ValueError, match="at least one step"):
            appdata.run_finetune([sys.executable, "-c", "pass"], tmp_path, 0)


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------
def _app(root: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(appdata.ROOT_ENV, str(root))
    return AppTest.from_file(str(APP), default_timeout=30)


def _page_root(tmp_path: Path) -> Path:
    """A root with a decodable 3-frame video and a training run with a (stand-in) checkpoint."""
    root = tmp_path / "root"
    root.mkdir()
    iio.imwrite(root / "clip.mp4", np.zeros((3, 32, 48, 3), np.uint8), fps=5, codec="libx264")
    run = root / "runs" / "sfs"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "final.pt").write_bytes(b"x")
    (run / "metrics.jsonl").write_text(_train(1))
    return root


def _recording_reconstruct(monkeypatch, tmp_path) -> Path:
    """Replace the reconstruct command by a stand-in that records its arguments and ends with one event."""
    log = tmp_path / "reconstruct_argv.json"
    fake = tmp_path / "fake_reconstruct.py"
    fake.write_text("import json, sys\n"
                    f"open({str(log)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                    "path = sys.argv[sys.argv.index('--progress-events') + 1]\n"
                    "open(path, 'w').write(json.dumps({'stage': 'write', 'done': 1, 'total': 1}) + '\\n')\n")
    real = appdata.reconstruct_command

    def patched(*a, **k):
        argv, out = real(*a, **k)
        return [sys.executable, str(fake)] + argv[3:], out

    monkeypatch.setattr(appdata, "reconstruct_command", patched)
    return log


class TestPage:
    def test_checkbox_for_videos_only(self, tmp_path, monkeypatch):
        root = _page_root(tmp_path)
        seq = root / "synthetic" / "seq_00000"
        (seq / "rgb").mkdir(parents=True)
        (seq / "meta.yaml").write_text("width: 8\n")
        at = _app(root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        at.text_input(key="source_path").set_value("synthetic/seq_00000").run()
        assert not at.exception and len(at.checkbox) == 0
        at.text_input(key="source_path").set_value("clip.mp4").run()
        assert not at.error and len(at.number_input) == 0  # steps only once ticked
        at.checkbox(key="finetune").check().run()
        steps = at.number_input(key="finetune_steps")
        assert steps.value == appdata.DEFAULT_FINETUNE_STEPS
        assert any("self-supervised" in c.value and "no labels" in c.value and "minutes" in c.value
                   for c in at.caption)
        assert "Fine-tuned weights go to runs/clip_finetune." in [c.value for c in at.caption]
        assert at.button(key="go").label == "Fine-tune, predict and reconstruct"
        at.text_input(key="crop").set_value("0 0 32").run()
        assert "expected four integers" in at.error[0].value and at.button(key="go").disabled

    def test_failed_finetune_stops_before_reconstructing(self, tmp_path, monkeypatch):
        root = _page_root(tmp_path)
        log = _recording_reconstruct(monkeypatch, tmp_path)
        fake = _stand_in(tmp_path, fail=True, wait=False)
        real = appdata.finetune_command

        def patched(*a, **k):
            argv, run_dir = real(*a, **k)
            return [sys.executable, str(fake)] + argv[3:], run_dir

        monkeypatch.setattr(appdata, "finetune_command", patched)
        at = _app(root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        at.text_input(key="source_path").set_value("clip.mp4").run()
        at.checkbox(key="finetune").check().run()
        at.number_input(key="finetune_steps").set_value(30).run()
        at.button(key="go").click().run()
        assert not at.exception
        assert [e.value for e in at.error] == ["error: clip.mp4: 2 frames; fine-tuning needs at least 3"]
        # nothing reported done, no reconstruction started
        assert [s.value for s in at.success] == ["clip.mp4: video, 48×32 px."] and not log.exists()
        assert "fine-tuning: step 20/30" in [t.value for t in at.text]

    def test_finished_run_is_reused(self, tmp_path, monkeypatch):
        root = _page_root(tmp_path)
        log = _recording_reconstruct(monkeypatch, tmp_path)
        argv, run_dir = appdata.finetune_command(root, "clip.mp4", 40, "runs/sfs/checkpoints/final.pt")
        _write_command_curriculum(argv)
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")

        def no_finetune(*a, **k):
            raise AssertionError("a finished fine-tuning run was run again")

        at = _app(root, monkeypatch)
        at.switch_page("views/new_video.py").run()
        at.text_input(key="source_path").set_value("clip.mp4").run()
        at.selectbox(key="checkpoint").set_value("runs/sfs/checkpoints/final.pt").run()
        at.checkbox(key="finetune").check().run()
        at.number_input(key="finetune_steps").set_value(40).run()
        assert "unfinished fine-tuning run" in at.info[0].value and "it will be resumed" in at.info[0].value
        (run_dir / "checkpoints" / "final.pt").write_bytes(b"x")
        monkeypatch.setattr(appdata, "run_finetune", no_finetune)
        at.run()
        assert at.info[0].value == ("runs/clip_finetune holds a finished fine-tuning run for this video and these "
                                    "settings; its weights will be reused.")
        at.button(key="go").click().run()
        assert not at.exception and not at.error
        assert any(i.value.startswith("Reusing the fine-tuned model of runs/clip_finetune") for i in at.info)
        args = json.loads(log.read_text())
        assert args[args.index("--checkpoint") + 1] == str(run_dir / "checkpoints" / "final.pt")
        assert args[args.index("--out") + 1] == str(root.resolve() / "reconstructions" / "clip_finetune")
        assert at.success[-1].value == ("Reconstruction written to reconstructions/clip_finetune with the model "
                                        "fine-tuned in runs/clip_finetune; open the 3D reconstruction page.")


# ----------------------------------------------------------------------------------------------
# The real commands, end to end
# ----------------------------------------------------------------------------------------------
def test_page_finetunes_then_reconstructs_a_tiny_video(tmp_path, monkeypatch):
    """``colondepth finetune --steps 2`` from a tiny model on an 8-frame rendered tube video (crop and
    intrinsics given), then ``colondepth reconstruct`` with the fine-tuned bundle; the page follows both."""
    import torch
    from scipy.spatial.transform import Rotation

    from colondepth.models.depth_net import DepthNet, DepthNetConfig
    from colondepth.train.checkpoint import make_card, save_checkpoint
    from test_finetune import _render_tube

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = tmp_path / "root"
    root.mkdir()
    frames = []
    for i in range(8):
        world_from_cam = np.eye(4)
        world_from_cam[:3, :3] = Rotation.from_rotvec([0.02 * np.sin(i), 0.03, 0.0]).as_matrix()
        world_from_cam[:3, 3] = [3.0, -2.0, 1.5 * i]
        frames.append(_render_tube(world_from_cam))
    iio.imwrite(root / "clip.mp4", np.stack(frames), fps=10, codec="libx264")
    (root / "scope.yaml").write_text(SCOPE_YAML)
    run = root / "runs" / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(_train(1))
    torch.manual_seed(0)
    net = DepthNet(DepthNetConfig(**TINY_MODEL))
    save_checkpoint(run / "checkpoints" / "init.pt", net, make_card(net, "test", "sup", 0, 0, "test"), {})

    at = _app(root, monkeypatch)
    at.switch_page("views/new_video.py").run()
    at.text_input(key="source_path").set_value("clip.mp4").run()
    at.text_input(key="intrinsics_path").set_value("scope.yaml").run()
    at.text_input(key="crop").set_value("0 0 64 64").run()
    at.selectbox(key="checkpoint").set_value("runs/tiny/checkpoints/init.pt").run()
    at.checkbox(key="finetune").check().run()
    at.number_input(key="finetune_steps").set_value(2).run()
    assert not at.error
    at.button(key="go").click().run(timeout=240)
    assert not at.exception and not at.error, [e.value for e in at.error]
    ft_dir = root.resolve() / "runs" / "clip_finetune"
    final = ft_dir / "checkpoints" / "final.pt"
    assert appdata.finetune_finished(ft_dir) and appdata.finetune_fraction(ft_dir, 2) == 1.0
    assert "fine-tuning: step 2/2" in [t.value for t in at.text]
    stage = yaml.safe_load((ft_dir / "finetune.curriculum.yaml").read_text())["stages"][0]
    assert stage["crop"] == [0, 0, 64, 64] and stage["intrinsics"] == str(root.resolve() / "scope.yaml")
    assert stage["init_from"] == str(run.resolve() / "checkpoints" / "init.pt") and stage["budget"]["steps"] == 2
    report = json.loads((root / "reconstructions" / "clip_finetune" / "report.json").read_text())
    assert report["config"]["checkpoint"] == str(final)
    assert at.success[-1].value.startswith("Reconstruction written to reconstructions/clip_finetune with the model "
                                           "fine-tuned in runs/clip_finetune")
    # the same settings again: the finished run is announced for reuse, not rerun
    at.run()
    assert any("holds a finished fine-tuning run" in i.value for i in at.info)
