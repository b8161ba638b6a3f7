"""benchmarks/select_model.py: the selection rule (a challenger must win on every validation set) and the
committed selection result agreeing with the shipped model."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def sel():
    return load_benchmark("select_model")


def _res(sel, *abs_rels):
    assert len(abs_rels) == len(sel.SEEDS)
    return {"abs_rel_mean": sum(abs_rels) / len(abs_rels),
            "per_seed": {str(s): {"abs_rel": a} for s, a in zip(sel.SEEDS, abs_rels)}}


def test_challenger_must_win_on_every_set(sel):
    res = {"old": _res(sel, 0.10, 0.10, 0.10), "new": _res(sel, 0.05, 0.06, 0.11)}
    c = sel.choose(res)
    assert c["chosen"] == "old"  # better on average, worse on one set
    assert c["abs_rel_difference_to_incumbent"]["new"] == pytest.approx([-0.05, -0.04, 0.01])
    res["new"] = _res(sel, 0.09, 0.095, 0.099)
    assert sel.choose(res)["chosen"] == "new"


def test_best_mean_is_the_only_challenger(sel):
    res = {"old": _res(sel, 0.10, 0.10, 0.10), "a": _res(sel, 0.099, 0.099, 0.099), "b": _res(sel, 0.04, 0.04, 0.2)}
    # b has the lowest mean but loses on one set: the incumbent stays, although a beats it everywhere.
    assert min(res, key=lambda k: res[k]["abs_rel_mean"]) == "b"
    assert sel.choose(res)["chosen"] == "old"


def _with_real(res, *blocks):
    assert len(blocks) == 3
    res["real"] = {"abs_rel_mean": sum(blocks) / 3, "blocks": [{"model": b} for b in blocks]}
    return res


def test_real_video_decides_when_present(sel):
    assert [(b[0], b[-1]) for b in sel.real_blocks()] == [(0, 33), (34, 66), (67, 99)]
    old = _with_real(_res(sel, 0.10, 0.10, 0.10), 0.20, 0.20, 0.20)
    # Worse on the synthetic split (within the tolerance) but better on every real block: it replaces the old one.
    new = _with_real(_res(sel, 0.105, 0.11, 0.10), 0.15, 0.16, 0.19)
    c = sel.choose({"old": old, "new": new})
    assert c["chosen"] == "new" and c["decided_by"] == "real"
    assert c["real_abs_rel_difference_to_incumbent"]["new"] == pytest.approx([-0.05, -0.04, -0.01])
    # Better on average on the real video but worse on one block: the incumbent stays.
    new = _with_real(_res(sel, 0.10, 0.10, 0.10), 0.10, 0.10, 0.21)
    assert sel.choose({"old": old, "new": new})["chosen"] == "old"
    # Better on every real block but worse on the synthetic split than the tolerance allows: not qualified.
    new = _with_real(_res(sel, 0.12, 0.12, 0.12), 0.10, 0.10, 0.10)
    c = sel.choose({"old": old, "new": new})
    assert c["chosen"] == "old" and c["qualified_on_synthetic"] == []
    # Of two qualified challengers the one with the lower real mean is the only challenger.
    a = _with_real(_res(sel, 0.10, 0.10, 0.10), 0.19, 0.19, 0.19)
    b = _with_real(_res(sel, 0.10, 0.10, 0.10), 0.05, 0.05, 0.25)
    assert sel.choose({"old": old, "a": a, "b": b})["chosen"] == "old"


def test_committed_selection_names_the_shipped_model(sel, repo_root):
    path = repo_root / "benchmarks" / "results" / "model_selection.json"
    if not path.is_file():
        pytest.skip("no committed model selection")
    doc = json.loads(path.read_text())
    chosen = doc["results"][doc["choice"]["chosen"]]
    shipped = repo_root / "data" / "default_model.pt"
    # the shipped depth weights are the chosen ones (the file itself may since have gained pose / two-frame nets)
    if chosen.get("depth_state_sha256"):
        assert chosen["depth_state_sha256"] == sel.depth_state_sha256(shipped)
    else:
        assert chosen["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert doc["validation"]["seeds"] == list(sel.SEEDS)
