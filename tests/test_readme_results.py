"""The README's results tables agree with the committed benchmark JSON under benchmarks/results/.

The transfer table is generated (tests/test_bench_transfer.py checks it); the tables here are written by hand
from their JSON files, so every number in them is compared to the file it came from (to the printed precision).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
RESULTS = REPO / "benchmarks" / "results"


def _table_after(heading: str) -> list[list[str]]:
    """Rows (cells stripped of ``**``) of the first markdown table after ``heading`` in the README."""
    return [[c.replace("**", "") for c in row] for row in _raw_table_after(heading)]


def _close(text: str, value: float) -> bool:
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-12


def test_per_level_table_matches_heldout_json():
    doc = json.loads((RESULTS / "heldout_default_model_median.json").read_text())
    rows = _table_after("### Depth per level: the shipped default model against the baselines")
    header, body = rows[0], rows[1:]
    assert header[:4] == ["level", "abs_rel model", "abs_rel physics", "abs_rel constant"]
    seen = set()
    for cells in body:
        m = re.match(r"(L\d)\b", cells[0])
        if m:
            level = m.group(1)
            summary = doc["levels"][level]
        else:
            assert cells[0].startswith("all"), cells[0]
            level, summary = "all", doc["overall"]
            assert f"({summary['num_frames']} frames)" in cells[0]
        met = summary["metrics"]
        assert _close(cells[1], met["model"]["abs_rel"]), (level, cells[1])
        assert _close(cells[2], met["physics"]["abs_rel"]), (level, cells[2])
        assert _close(cells[3], met["constant"]["abs_rel"]), (level, cells[3])
        ratio = met["physics"]["abs_rel"] / met["model"]["abs_rel"]
        assert _close(cells[4].rstrip("×"), ratio), (level, cells[4])
        assert _close(cells[5], met["model"]["delta1"]), (level, cells[5])
        assert _close(cells[6], met["physics"]["delta1"]), (level, cells[6])
        seen.add(level)
    assert seen == set(doc["levels"]) | {"all"}  # every level of the file is in the table


def test_candidate_table_matches_model_selection_json():
    doc = json.loads((RESULTS / "model_selection.json").read_text())
    rows = _table_after("**How it was chosen.**")
    labels = {"the model it replaced": "previous", "`candidate_wide_l6`": "wide_l6",
              "`candidate_wide_l6_diverse`, step 1,000": "diverse_1000", "step 2,000": "diverse_2000",
              "step 2,500": "diverse_final", "mean of its weights": "diverse_swa"}
    assert len(rows) - 1 == len(doc["results"])
    for cells in rows[1:]:
        label = next(v for k, v in labels.items() if k in cells[0])
        r = doc["results"][label]
        mean, sd = cells[1].strip("*").split("±")
        assert _close(mean.strip(), r["abs_rel_mean"]) and _close(sd.strip(), r["abs_rel_sd"]), (label, cells[1])
        assert _close(cells[2], r["delta1_mean"]), (label, cells[2])
        assert _close(cells[3], r["levels"]["L5"]["abs_rel_mean"]), (label, cells[3])
        assert _close(cells[4], r["levels"]["L6"]["abs_rel_mean"]), (label, cells[4])
        assert _close(cells[5].strip("*"), r["real"]["abs_rel_mean"]), (label, cells[5])
        assert (cells[6] == "yes") == (doc["choice"]["chosen"] == label), (label, cells[6])


@pytest.mark.parametrize("key, text", [("sinus_abs_rel", "abs_rel 0.160 against 0.185"),
                                       ("synthetic_L5_delta1", "δ<1.25 0.908 on")])
def test_candidate_transfer_numbers_match_json(key, text):
    cand = {t["name"]: t["value"] for t in json.loads((RESULTS / "transfer_candidate_wide_l6.json").read_text())["targets"]}
    number = re.findall(r"\d+\.\d+", text)[-1 if key.startswith("synthetic") else 0]
    assert text in README and _close(number, cand[key])


def test_recon_table_matches_recon_json():
    doc = json.loads((RESULTS / "recon.json").read_text())
    rows = _table_after("### Reconstruction and coverage")
    by = {(r["level"], r["depth"], r["poses"]): r for r in doc["rows"]}
    assert len(rows) - 1 == len(doc["settings"]["levels"])
    for cells in rows[1:]:
        level = cells[0]
        gt, pred = by[(level, "gt", "gt")], by[(level, "predicted", "gt")]
        assert _close(cells[1], gt["observed_ground_truth"]["chamfer_mm"]), (level, cells[1])
        assert _close(cells[2], gt["observed_ground_truth"]["fscore@1mm"]), (level, cells[2])
        assert _close(cells[3], pred["observed_ground_truth"]["chamfer_mm"]), (level, cells[3])
        assert _close(cells[4], pred["observed_ground_truth"]["fscore@2mm"]), (level, cells[4])
        pp = by[(level, "predicted", "predicted")]
        m = re.fullmatch(r"([\d.]+) / ([\d.]+) \(([\d.]+); ×([\d.]+)\)", cells[5])
        assert m, cells[5]
        assert _close(m.group(1), pp["trajectory_ate_mm"]), (level, cells[5])
        assert _close(m.group(2), pp["trajectory_ate_similarity_mm"]), (level, cells[5])
        assert _close(m.group(3), pp["line_ate_similarity_mm"]), (level, cells[5])
        assert _close(m.group(4), pp["trajectory_scale_to_ground_truth"]), (level, cells[5])
        assert _close(cells[6], pp["observed_ground_truth"]["chamfer_mm"]), (level, cells[6])
        m = re.fullmatch(r"([\d.]+) % / ([\d.]+ %|n/a) \(([\d.]+) %\)", cells[7])
        assert m, cells[7]
        assert _close(m.group(1), 100 * gt["observed_fraction"]), (level, cells[7])
        if pp["observed_fraction"] is None:  # no estimate (e.g. a predicted path too short for a lumen fit)
            assert m.group(2) == "n/a", (level, cells[7])
        else:
            assert _close(m.group(2).rstrip(" %"), 100 * pp["observed_fraction"]), (level, cells[7])
        assert _close(m.group(3), 100 * gt["oracle_observed_fraction"]), (level, cells[7])
        assert gt["passed"] is True


def test_speed_rows_match_their_json():
    pred = json.loads((RESULTS / "predict.json").read_text())
    rec = json.loads((RESULTS / "recon.json").read_text())
    row = next(line for line in README.splitlines() if line.startswith("| default model, `predict`, 256² frames"))
    at = {(r["size"], r["threads"]): r for r in pred["rows"]}
    m = re.search(r"\| (\d+) frames/s one frame per call \(1 torch thread\), (\d+) \(2 threads\), (\d+) in batches "
                  r"of 8 \(2 threads\); (\d+) MB peak", row)
    assert m, row
    assert int(m.group(1)) == round(at[(256, 1)]["fps_single"])
    assert int(m.group(2)) == round(at[(256, 2)]["fps_single"])
    assert int(m.group(3)) == round(at[(256, 2)]["fps_batch8"])
    assert int(m.group(4)) == round(pred["peak_rss_mb"])
    row = next(line for line in README.splitlines() if line.startswith("| TSDF fusion, 128² / 256²"))
    m = re.search(r"\| (\d+) / (\d+) frames/s", row)
    fps = {r["size"]: r["fps_wall"] for r in rec["fusion_throughput"]}
    assert m and (int(m.group(1)), int(m.group(2))) == (round(fps[128]), round(fps[256]))


def test_synth_speed_row_matches_its_json():
    doc = json.loads((RESULTS / "synth.json").read_text())
    row = next(line for line in README.splitlines() if line.startswith("| synthetic frames/s (render + write)"))
    m = re.search(r"\| ([\d.]+)–([\d.]+) / ([\d.]+)–([\d.]+) frames/s; overhead over bare pyrender ([\d.]+)–([\d.]+)×",
                  row)
    assert m, row
    fps = {size: [r["generator_fps"] for r in doc["rows"] if r["size"] == size] for size in (128, 256)}
    plain = [r["overhead_wall"] for r in doc["rows"] if r["motion_blur_samples"] == 1]
    expect = [min(fps[128]), max(fps[128]), min(fps[256]), max(fps[256]), min(plain), max(plain)]
    assert all(_close(m.group(i + 1), v) for i, v in enumerate(expect)), (m.groups(), expect)
    levels = sorted({r["level"] for r in doc["rows"]})
    tri = re.search(r"triangles per level L1–L(\d): ([\d.k, ]+) \|", row)
    assert tri and int(tri.group(1)) == len(levels)
    counts = [float(x.strip().rstrip("k")) for x in tri.group(2).split(",")]
    per_level = {r["level"]: r["triangles"] for r in doc["rows"]}
    assert all(_close(f"{c:.1f}", per_level[lv] / 1000) for c, lv in zip(counts, levels))


def test_selfsup_real_table_matches_its_json():
    doc = json.loads((RESULTS / "selfsup_real.json").read_text())
    rows = _table_after("**On real video with ground truth**")
    by = {cells[0]: cells for cells in rows[1:]}
    depth = next(c for k, c in by.items() if k.startswith("depth abs_rel"))
    assert _close(depth[1], doc["before"]["depth"]["model"]["abs_rel"])
    assert _close(depth[2].strip("*").split()[0], doc["after"]["depth"]["model"]["abs_rel"])
    for key, label in (("pose_network", "our pose network"), ("opencv_vo", "OpenCV VO"), ("zero_motion", "zero motion")):
        cells = next(c for k, c in by.items() if k.endswith(label))
        for col, when in ((1, "before"), (2, "after")):
            mean, sd = cells[col].strip("*").split("±")
            assert _close(mean.strip(), doc[when]["pose"][key]["ate_mm"]), (label, when)
            assert _close(sd.strip(), doc[when]["pose"][key]["ate_mm_std"]), (label, when)


def _raw_table_after(heading: str) -> list[list[str]]:
    """Rows of the first markdown table after ``heading`` in the README, cells keeping the ``**`` that mark a winner."""
    lines = README[README.index(heading):].splitlines()
    rows, inside = [], False
    for line in lines[1:]:
        if line.startswith("|"):
            inside = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif inside:
            break
    return rows


def _readme_command(heading: str, script: str) -> str:
    """The benchmark command quoted (in backticks) in the paragraph after ``heading``."""
    text = README[README.index(heading):]
    m = re.search(r"`(python benchmarks/" + re.escape(script) + r"[^`]*)`", text)
    assert m, f"no `python benchmarks/{script} ...` after {heading!r}"
    return m.group(1)


def test_curriculum_table_matches_depth_json():
    doc = json.loads((RESULTS / "depth.json").read_text())
    heading = "### Curriculum against the mixed control (small-budget precursor)"
    assert doc["command"] == _readme_command(heading, "bench_depth.py")  # the README shows the command that ran
    summary = doc["summary"]
    rows = _raw_table_after(heading)
    assert rows[0] == ["training", "abs_rel, median-aligned", "abs_rel, metric (no alignment)"]
    names = {"curriculum L1 → L5": "curriculum", "mixed control": "mixed"}
    assert sorted(names[r[0]] for r in rows[1:]) == sorted(summary)
    for col, align in ((1, "median"), (2, "none")):
        means = {names[r[0]]: summary[names[r[0]]][align]["abs_rel_mean"] for r in rows[1:]}
        # the mean over the seeds the JSON holds, recomputed from the per-seed entries
        for name, mean in means.items():
            seeds = summary[name][align]["seeds"]
            assert len(seeds) == len(doc["settings"]["seeds"])
            assert abs(mean - sum(s["abs_rel"] for s in seeds.values()) / len(seeds)) < 1e-12
        for cells in rows[1:]:
            assert _close(cells[col].strip("*"), means[names[cells[0]]]), (cells[0], align)
            # bold marks the lower abs_rel of the column
            assert cells[col].startswith("**") == (means[names[cells[0]]] == min(means.values())), (cells[0], align)


def test_curriculum_paragraph_seed_numbers_match_depth_json():
    summary = json.loads((RESULTS / "depth.json").read_text())["summary"]
    seed = {(name, align): [summary[name][align]["seeds"][f"seed{i}"]["abs_rel"] for i in (0, 1)]
            for name in ("curriculum", "mixed") for align in ("median", "none")}
    m = re.search(r"in both seeds \(([\d.]+) and ([\d.]+)\s+against ([\d.]+) and ([\d.]+)\)", README)
    assert m, "metric per-seed sentence missing"
    expect = seed[("curriculum", "none")] + seed[("mixed", "none")]
    assert all(_close(m.group(i + 1), v) for i, v in enumerate(expect))
    assert all(c < x for c, x in zip(seed[("curriculum", "none")], seed[("mixed", "none")]))  # "wins in both seeds"
    m = re.search(r"better with seed 0\s+\(([\d.]+) against ([\d.]+)\) and worse with seed 1 \(([\d.]+) against "
                  r"([\d.]+)\), and the mixed control's mean is ([\d.]+) lower", README)
    assert m, "median-aligned per-seed sentence missing"
    c, x = seed[("curriculum", "median")], seed[("mixed", "median")]
    assert all(_close(m.group(i + 1), v) for i, v in enumerate([c[0], x[0], c[1], x[1]]))
    assert c[0] < x[0] and c[1] > x[1]
    assert _close(m.group(5), summary["curriculum"]["median"]["abs_rel_mean"] - summary["mixed"]["median"]["abs_rel_mean"])


def _finetune_variant() -> dict:
    doc = json.loads((RESULTS / "finetune.json").read_text())
    command = _readme_command("**On synthetic data**", "bench_finetune.py")
    runs = [v for v in doc["variants"].values() if v["command"] == command]
    assert len(runs) == 1, f"benchmarks/results/finetune.json has no run of {command!r}"
    return runs[0]


def test_finetune_tables_match_finetune_json():
    r = _finetune_variant()
    assert r["mode"] == "quick" and "real" in r
    # the README calls this run the `colondepth finetune` defaults: its recorded stage settings say so
    st = r["stage"]
    assert (st["anchor_weight"], st["anchor_decay_steps"], st["freeze_batchnorm"], st["automask"]) == (0.1, 200, True, False)
    assert (st["batch_size"], st["optimizer"]["lr"], st["lr_schedule"]["kind"]) == (4, 1e-4, "constant")
    rows = _raw_table_after("**On synthetic data**")
    body = {cells[0]: cells for cells in rows[1:]}
    before, after = r["depth"]["supervised_only"], r["depth"]["fine_tuned"]
    for label, key in (("abs_rel, metric", "metric"), ("abs_rel, median-aligned", "median_scaled")):
        cells = body[label]
        b, a = before[key]["abs_rel"], after[key]["abs_rel"]
        assert _close(cells[1].strip("*"), b) and _close(cells[2].strip("*"), a), label
        assert cells[1].startswith("**") == (b < a) and cells[2].startswith("**") == (a < b), label  # bold: lower
    photo = next(c for k, c in body.items() if k.startswith("photometric error"))
    assert _close(photo[1], r["real"]["supervised"]["photometric"])
    assert _close(photo[2], r["real"]["fine-tuned"]["photometric"])

    rows = _raw_table_after("| pose on held-out L5 snippets")
    pose = r["pose"]
    keys = {"our pose network": "posenet", "classical two-view VO": "classical", "zero motion": "zero_motion"}
    ates = {}
    for cells in rows:
        key = next((v for k, v in keys.items() if cells[0].startswith(k)), None)
        if key is None:
            continue
        mean, sd = cells[1].strip("*").split("±")
        assert _close(mean.strip(), pose[key]["ate_mm"]) and _close(sd.strip(), pose[key]["ate_mm_std"]), key
        ates[key] = (pose[key]["ate_mm"], cells[1].startswith("**"))
    assert set(ates) == set(keys.values())
    best = min(v[0] for v in ates.values())
    assert all(bold == (ate == best) for ate, bold in ates.values())  # bold: the lowest ATE


def test_finetune_paragraph_numbers_match_finetune_json():
    r = _finetune_variant()
    text = README[README.index("**On synthetic data**"):README.index("### Reconstruction and coverage")]
    b, a = r["depth"]["supervised_only"], r["depth"]["fine_tuned"]
    m = re.search(r"median-aligned abs_rel\s+−(\d+) %\) but makes the metric scale \*worse\* \(([\d.]+) → ([\d.]+)\)",
                  text)
    assert m, "fine-tuning paragraph changed: update this test with it"
    change = 100 * (1 - a["median_scaled"]["abs_rel"] / b["median_scaled"]["abs_rel"])
    assert int(m.group(1)) == round(change)
    assert _close(m.group(2), b["metric"]["abs_rel"]) and _close(m.group(3), a["metric"]["abs_rel"])
    assert a["metric"]["abs_rel"] > b["metric"]["abs_rel"]
    assert "beats zero motion but\nnot the classical VO" in text or "beats zero motion but not the classical VO" in text
    assert r["pose"]["zero_motion"]["ate_mm"] > r["pose"]["posenet"]["ate_mm"] > r["pose"]["classical"]["ate_mm"]
    assert f"{round(r['seconds'])} s" in text and f"({r['depth']['fine_tuned']['frames']} frames)" in text
    assert f"({r['pose']['posenet']['snippets']} snippets" in text
    assert r["real"]["fine-tuned"]["changed"] < 0.01  # "fewer than 1 % of pixels change by more than 25 %"


def test_sinus_reconstruction_numbers_match_recon_json():
    sn = json.loads((RESULTS / "recon.json").read_text())["sinus"]
    flat = " ".join(README.split())
    m = re.search(r"ATE after a similarity alignment ([\d.]+) % of the path length[^;]*?(?:no better|worse|better) "
                  r"than a straight constant-speed line \(([\d.]+) %", flat)
    assert m, "sinus sentence missing"
    assert _close(m.group(1), 100 * sn["ate_fraction_of_path"]) and _close(m.group(2), 100 * sn["line_ate_fraction_of_path"])
    m = re.search(r"the SfM points lie a median ([\d.]+) mm from the fused surface", flat)
    assert m and _close(m.group(1), sn["sfm_point_to_surface_mm"]["median"])
    assert "with the video defaults: tracked corners, no model tracking" in flat
    assert (sn["pose_guess"], sn["tracking"]) == ("features", "none")


def test_stream_row_matches_stream_json():
    doc = json.loads((RESULTS / "stream.json").read_text())
    rows = {r["loops"]: r for r in doc["rows"]}
    line = next(line for line in README.splitlines() if line.startswith("| `reconstruct --video`, memory against length"))
    m = re.search(r"\| (\d+) frames: (\d+) MB peak \(TSDF (\d+) MB\); (\d+) frames: (\d+) MB peak \(TSDF (\d+) MB\) \|", line)
    assert m, line
    for first, loops in ((1, min(rows)), (4, max(rows))):
        r = rows[loops]
        assert int(m.group(first)) == r["frames"]
        assert int(m.group(first + 1)) == round(r["peak_rss_mb"]) and int(m.group(first + 2)) == round(r["tsdf_mb"])


def test_recon_pose_selection_table_matches_its_json():
    """docs/reconstruction.md's table of trajectory settings against benchmarks/results/recon_pose_selection.json,
    and the shipped defaults are the ones that rule chose."""
    from colondepth.recon.pipeline import SEQUENCE_POSE_DEFAULTS, VIDEO_POSE_DEFAULTS

    doc = json.loads((RESULTS / "recon_pose_selection.json").read_text())
    assert doc["shipped_matches_chosen"] is True
    assert doc["arms"][doc["chosen"]["video"]]["settings"] == VIDEO_POSE_DEFAULTS
    assert doc["arms"][doc["chosen"]["sequence"]]["settings"] == SEQUENCE_POSE_DEFAULTS
    text = (REPO / "docs" / "reconstruction.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| (network|features)\+(model|none)", line)]
    assert len(rows) == len(doc["arms"]) == 4
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].split(" ")[0]
        arm = doc["arms"][name]
        assert _close(cells[1], arm["real_validation"]["ate_percent_of_path"]), line
        m = re.fullmatch(r"([\d.]+) \(([\d.]+) / ([\d.]+) / ([\d.]+)\)", cells[2])
        assert m, line
        syn = arm["synthetic_validation"]
        assert _close(m.group(1), syn["mean_ate_mm"]), line
        for g, level in zip(m.groups()[1:], ("L1", "L3", "L5")):
            assert _close(g, syn["by_level_ate_mm"][level]), line
        test = doc["real_test"].get(name)
        assert (cells[3] == "-") if test is None else _close(cells[3], test["ate_percent_of_path"]), line
        assert ("video default" in cells[0]) == (name == doc["chosen"]["video"])
        assert ("sequence default" in cells[0]) == (name == doc["chosen"]["sequence"])


def test_readme_trajectory_paragraph_matches_recon_pose_selection_json():
    doc = json.loads((RESULTS / "recon_pose_selection.json").read_text())
    flat = " ".join(README.split())
    m = re.search(r"validation frames 0-149: ([\d.]+) % of the path against ([\d.]+) % for the pose network with model "
                  r"tracking; on the test frames 150-380 ([\d.]+) % against ([\d.]+) %, a straight line ([\d.]+) %\)", flat)
    assert m, "trajectory paragraph missing"
    video, seq = doc["arms"]["features+none"], doc["arms"]["network+model"]
    assert _close(m.group(1), video["real_validation"]["ate_percent_of_path"])
    assert _close(m.group(2), seq["real_validation"]["ate_percent_of_path"])
    assert _close(m.group(3), doc["real_test"]["features+none"]["ate_percent_of_path"])
    assert _close(m.group(4), doc["real_test"]["network+model"]["ate_percent_of_path"])
    assert _close(m.group(5), doc["real_test"]["features+none"]["line_ate_percent_of_path"])
    m = re.search(r"mean ATE ([\d.]+) mm against ([\d.]+) mm for corners", flat)
    assert m and _close(m.group(1), seq["synthetic_validation"]["mean_ate_mm"])
    assert _close(m.group(2), video["synthetic_validation"]["mean_ate_mm"])


def test_frame_skip_numbers_match_finetune_selection_json():
    doc = json.loads((RESULTS / "finetune_selection.json").read_text())
    auto, base = doc["arms"]["frame_skip_auto"]["summary"]["mean"], doc["arms"]["defaults"]["summary"]["mean"]
    flat = " ".join(README.split())
    m = re.search(r"made fine-tuning far worse, ([\d.]+) against ([\d.]+),", flat)
    assert m and _close(m.group(1), auto) and _close(m.group(2), base)
    docs = (REPO / "docs" / "finetune.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in docs.splitlines() if line.startswith("| defaults | 1 |")
            or line.startswith("| `--frame-skip auto`")}
    assert _close(rows["defaults"].split("|")[3].strip(), base)
    auto_row = next(v for k, v in rows.items() if k.startswith("`--frame-skip auto`"))
    assert _close(auto_row.split("|")[3].strip(), auto)
    assert "abs_rel, frames 70-109 (initial model: 0.150) |\n|---|---:|---:|\n| defaults | 1 |" in docs
    assert _close("0.150", doc["initial"])


def test_grey_input_bullet_matches_its_selection_json():
    doc = json.loads((RESULTS / "model_selection_grey.json").read_text())
    assert doc["choice"]["chosen"] == "grey"
    inc, grey = doc["results"]["shipped"], doc["results"]["grey"]
    assert "grey" in grey["card"]["normalisation"]["input"] and "grey" not in inc["card"]["normalisation"]["input"]
    text = " ".join(README.split())
    m = re.search(r"real validation abs_rel ([\d.]+) → ([\d.]+), lower on all three blocks, synthetic validation "
                  r"(\d\.\d+) ± (\d\.\d+) → (\d\.\d+) ± (\d\.\d+)", text)
    assert m, "grey-input bullet not found"
    assert _close(m.group(1), inc["real"]["abs_rel_mean"]) and _close(m.group(2), grey["real"]["abs_rel_mean"])
    assert all(g["model"] < i["model"] for g, i in zip(grey["real"]["blocks"], inc["real"]["blocks"]))
    assert _close(m.group(3), inc["abs_rel_mean"]) and _close(m.group(4), inc["abs_rel_sd"])
    assert _close(m.group(5), grey["abs_rel_mean"]) and _close(m.group(6), grey["abs_rel_sd"])


def test_metric_scale_sentence_matches_its_json():
    doc = json.loads((RESULTS / "metric_scale.json").read_text())
    s = doc["summary"]
    flat = " ".join(README.split())
    m = re.search(r"the 36 validation sequences of seeds 5000-5002\) finds the predicted depth's median off by a factor "
                  r"whose log varies by ([\d.]+) between sequences and ([\d.]+) between the frames of one sequence, and "
                  r"`log\(pred / true\) = a ([+−]) ([\d.]+) · log\(lumen radius\)` explains (\d+) %", flat)
    assert m, "metric-scale sentence not found"
    assert s["sequences"] == 36
    assert _close(m.group(1), s["between_sequences_sd_log"]) and _close(m.group(2), s["within_sequence_sd_log_mean"])
    slope = float(m.group(4)) * (-1 if m.group(3) == "−" else 1)
    assert _close(f"{slope:.2f}", s["fit_log_ratio_vs_log_radius"]["slope"])
    assert int(m.group(5)) == round(100 * s["fit_log_ratio_vs_log_radius"]["variance_explained"])


def test_grey_trained_candidate_sentence_matches_its_json():
    doc = json.loads((RESULTS / "model_selection_grey_trained.json").read_text())
    assert doc["choice"]["chosen"] == "shipped"
    inc, cand = doc["results"]["shipped"], doc["results"]["grey_trained"]
    text = " ".join(README.split())
    m = re.search(r"did not do better under the same rule \(real validation ([\d.]+) against ([\d.]+), worse on (\w+) "
                  r"of the three blocks; synthetic (\d\.\d+) ± (\d\.\d+);", text)
    assert m, "grey-trained sentence not found"
    assert _close(m.group(1), cand["real"]["abs_rel_mean"]) and _close(m.group(2), inc["real"]["abs_rel_mean"])
    worse = sum(c["model"] > i["model"] for c, i in zip(cand["real"]["blocks"], inc["real"]["blocks"]))
    assert m.group(3) == {1: "one", 2: "two", 3: "all"}[worse]
    assert _close(m.group(4), cand["abs_rel_mean"]) and _close(m.group(5), cand["abs_rel_sd"])
