"""Structured progress events: the event type and its JSON lines (colondepth.progress), the events of the
reconstruction pipeline, and ``colondepth reconstruct --progress-events FILE|-`` on a tiny tube sequence."""

from __future__ import annotations

import json

import pytest

from colondepth import cli
from colondepth.progress import ProgressEvent, emit, progress_event_writer, read_progress_events
from colondepth.recon.pipeline import RECONSTRUCT_STAGES, ReconstructionConfig, reconstruct_sequence
from test_recon_pipeline import memory_sequence, write_tiny_dataset


# ----------------------------------------------------------------------------------------------
# The event and its JSON line
# ----------------------------------------------------------------------------------------------
class TestProgressEvent:
    def test_round_trip(self):
        ev = ProgressEvent("coverage", 3, 7, "frame 12 é")
        line = ev.to_json()
        assert json.loads(line) == {"stage": "coverage", "done": 3, "total": 7, "message": "frame 12 é"}
        assert list(json.loads(line)) == ["stage", "done", "total", "message"]
        assert ProgressEvent.from_json(line) == ev
        assert ev.fraction == pytest.approx(3 / 7) and not ev.finished
        assert ProgressEvent("write", 8, 8).finished

    @pytest.mark.parametrize("args, match", [
        (("", 0, 1), "stage must be a non-empty string"),
        (("fusion", -1, 4), r"done -1 is outside \[0, 4\]"),
        (("fusion", 5, 4), r"done 5 is outside \[0, 4\]"),
        (("fusion", 0, 0), "total must be at least 1"),
        (("fusion", 1.5, 4), "done must be an integer"),
        (("fusion", True, 4), "done must be an integer"),
    ])
    def test_invalid_values(self, args, match):
        with pytest.raises(ValueError, match=match):
            ProgressEvent(*args)

    @pytest.mark.parametrize("line, match", [
        ("fusion: 50%|##|", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"stage": "fusion", "done": 1}', "missing total"),
        ('{"stage": "fusion", "done": 1, "total": 2, "eta": 3}', "unknown eta"),
        ('{"stage": "fusion", "done": "1", "total": 2}', "done must be an integer"),
    ])
    def test_bad_lines(self, line, match):
        with pytest.raises(ValueError, match=match):
            ProgressEvent.from_json(line)

    def test_emit_without_callback_does_nothing(self):
        emit(None, "fusion", 0, 1)  # no callback, no error
        seen = []
        emit(seen.append, "fusion", 1, 1, "frame 0")
        assert seen == [ProgressEvent("fusion", 1, 1, "frame 0")]


class TestJsonLines:
    def test_writer_and_reader(self, tmp_path):
        path = tmp_path / "sub" / "events.jsonl"
        events = [ProgressEvent("fusion", k, 2, f"frame {k}") for k in range(3)]
        with progress_event_writer(path) as write:
            write(events[0])
            assert read_progress_events(path) == ([events[0]], len(events[0].to_json()) + 1)  # flushed at once
            for ev in events[1:]:
                write(ev)
        got, offset = read_progress_events(path)
        assert got == events and offset == path.stat().st_size

    def test_reader_waits_for_complete_lines(self, tmp_path):
        path = tmp_path / "events.jsonl"
        assert read_progress_events(path, 5) == ([], 5)  # not started yet
        a, b = ProgressEvent("mesh", 0, 2).to_json(), ProgressEvent("mesh", 1, 2).to_json()
        path.write_text(a + "\n\n" + b[:9])
        got, offset = read_progress_events(path)
        assert got == [ProgressEvent("mesh", 0, 2)] and offset == len(a) + 2
        assert read_progress_events(path, offset) == ([], offset)  # half a line: not consumed
        path.write_text(a + "\n\n" + b + "\n")
        assert read_progress_events(path, offset) == ([ProgressEvent("mesh", 1, 2)], offset + len(b) + 1)

    def test_reader_names_a_bad_line(self, tmp_path):
        path = tmp_path / "events.jsonl"
        good = ProgressEvent("mesh", 0, 2).to_json()
        path.write_text(good + "\nreconstruct: 10%\n")
        with pytest.raises(ValueError, match=rf"events\.jsonl at byte {len(good) + 1}: progress event: not JSON"):
            read_progress_events(path)

    def test_writer_to_stdout(self, capsys):
        with progress_event_writer("-") as write:
            write(ProgressEvent("write", 1, 1, "report.json"))
        assert capsys.readouterr().out == '{"stage": "write", "done": 1, "total": 1, "message": "report.json"}\n'


# ----------------------------------------------------------------------------------------------
# The reconstruction's events
# ----------------------------------------------------------------------------------------------
def check_reconstruct_events(events: list[ProgressEvent], frames: int, oracle: bool = False) -> None:
    """Stages in order, each starting at 0 and ending at done == total, done never decreasing, constant totals.

    Coverage counts every frame once for the estimate, and once more for the ground-truth ``oracle``.
    """
    stages = [e.stage for e in events]
    assert list(dict.fromkeys(stages)) == list(RECONSTRUCT_STAGES)
    assert stages == sorted(stages, key=RECONSTRUCT_STAGES.index)  # a stage never comes back
    for stage in RECONSTRUCT_STAGES:
        evs = [e for e in events if e.stage == stage]
        assert evs[0].done == 0 and evs[-1].done == evs[-1].total, stage
        assert len({e.total for e in evs}) == 1, stage
        assert all(b.done >= a.done for a, b in zip(evs, evs[1:])), stage
    fusion = [e for e in events if e.stage == "fusion"]
    coverage = [e for e in events if e.stage == "coverage"]
    assert [e.done for e in fusion] == list(range(frames + 1))
    assert [e.done for e in coverage] == list(range(frames * (2 if oracle else 1) + 1))
    assert events[-1] == ProgressEvent("write", events[-1].total, events[-1].total, "report.json")


def test_pipeline_calls_back_every_stage_and_keeps_tqdm_optional(tmp_path, capsys):
    seen = []
    report = reconstruct_sequence(memory_sequence(), tmp_path / "out", ReconstructionConfig(max_depth_mm=20.0),
                                  progress=False, on_progress=seen.append)
    check_reconstruct_events(seen, frames=6)
    assert capsys.readouterr().err == ""  # no bars when progress=False, callback or not
    metrics = [e for e in seen if e.stage == "metrics"]
    assert [(e.done, e.total) for e in metrics] == [(0, 1), (1, 1)] and "skipped" in metrics[-1].message
    write = [e for e in seen if e.stage == "write"]
    assert sorted(e.message for e in write[1:]) == sorted(report["outputs"])  # one event per file written
    assert [e.message for e in seen if e.stage == "fusion"][1:] == [f"frame {k}" for k in range(6)]


@pytest.fixture(scope="module")
def tiny_sequence(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("ds"))


def test_command_writes_events_to_a_file(tiny_sequence, tmp_path, capsys):
    events_path = tmp_path / "events" / "progress.jsonl"
    code = cli.main(["reconstruct", "--sequence", str(tiny_sequence), "--out", str(tmp_path / "out"),
                     "--max-depth-mm", "20", "--frames", "0:6:2", "--progress-events", str(events_path)])
    assert code == 0
    out, err = capsys.readouterr()
    assert "wrote" in out and "reconstruct" in err  # the summary and the tqdm bars are unchanged
    events, _ = read_progress_events(events_path)
    check_reconstruct_events(events, frames=3, oracle=True)
    metrics = [e for e in events if e.stage == "metrics"]
    assert [(e.done, e.total) for e in metrics] == [(0, 2), (1, 2), (2, 2)]  # the sequence has a mesh


def test_command_writes_only_events_to_stdout(tiny_sequence, tmp_path, capsys):
    code = cli.main(["reconstruct", "--sequence", str(tiny_sequence), "--out", str(tmp_path / "out"),
                     "--max-depth-mm", "20", "--frames", "0:4", "--no-progress", "--progress-events", "-"])
    assert code == 0
    out, err = capsys.readouterr()
    events = [ProgressEvent.from_json(line) for line in out.splitlines()]  # every line is an event
    check_reconstruct_events(events, frames=4, oracle=True)
    assert "wrote" in err


def test_command_refuses_a_folder_for_events(tiny_sequence, tmp_path, capsys):
    code = cli.main(["reconstruct", "--sequence", str(tiny_sequence), "--out", str(tmp_path / "out"),
                     "--progress-events", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --progress-events") and "is a folder" in err and "\n" not in err
    assert not (tmp_path / "out").exists()  # refused before any work
