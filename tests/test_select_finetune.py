"""benchmarks/select_finetune.py: the split stays away from every reported frame, the arms are real options of
`colondepth finetune`, and the comparison rule needs the mean to beat the spread."""

from __future__ import annotations


import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def sel():
    return load_benchmark("select_finetune")


def test_splits_are_disjoint_from_the_reported_frames(sel, repo_root):
    import bench_selfsup_real

    for name, (train, val, out) in sel.SPLITS.items():
        assert not (set(train) | set(val)) & set(bench_selfsup_real.TEST_FRAMES), name
        assert not set(train) & set(val), name
        assert max(train) < min(val), name  # validation after the fine-tuning frames, as the benchmark's test
    short_train, short_val, _ = sel.SPLITS["short"]
    assert max(set(short_train) | set(short_val)) < 110  # bench_transfer reports sinus frames 110-380
    assert len({out for _, _, out in sel.SPLITS.values()}) == len(sel.SPLITS)  # one JSON per split


def test_every_arm_parses_as_finetune_options(sel):
    import argparse

    from colondepth.commands import finetune

    ap = argparse.ArgumentParser()
    finetune.add_arguments(ap)
    for arm, opts in sel.ARMS.items():
        ap.parse_args(["--init", "a.pt", "--video", "v.mp4", "--out", "r", *opts])


def test_better_than_needs_the_gap_to_exceed_the_spread(sel):
    base = sel.summarize([0.150, 0.152, 0.148])
    assert base["mean"] == pytest.approx(0.150) and base["std"] == pytest.approx(0.002)
    assert sel.better_than(sel.summarize([0.140, 0.141, 0.139]), base)
    assert not sel.better_than(sel.summarize([0.140, 0.160, 0.120]), base)  # lower mean, but the spread is 0.02
    assert not sel.better_than(base, base)
    assert sel.better_than(sel.summarize([0.10]), base) is None  # one seed: no claim
