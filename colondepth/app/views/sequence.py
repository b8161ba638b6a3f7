"""Sequence view: RGB, predicted depth, ground-truth depth and error per frame, with metrics."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st

from colondepth.app import common
from colondepth.app import data as appdata
from colondepth.errors import UserError

st.title("Sequence")
root = common.require_root()
r = str(root)

datasets = common.datasets(r)
if not datasets:
    st.info(f"No dataset under {root}. Make one with 'colondepth synth --out {root}/synthetic'.")
    st.stop()

c_ds, c_seq, c_src = st.columns([2, 2, 3])
ds_name = c_ds.selectbox("Dataset", [d.name for d in datasets], key="dataset")
try:
    seqs = common.sequences(r, ds_name)
except UserError as exc:
    st.error(str(exc))
    st.stop()
if not seqs:
    st.warning(f"{ds_name}: no sequences found.")
    st.stop()
seq_names = [s.name for s in seqs]
seq_name = c_seq.selectbox("Sequence", seq_names, key=f"seq::{ds_name}")
seq = seqs[seq_names.index(seq_name)]
n = seq.num_frames
if n == 0:
    st.warning(f"{seq.name}: the sequence has no frames.")
    st.stop()

# Sources of predicted depth: prediction folders matching this sequence's frame names, then models.
stem0 = appdata.frame_stem(seq, 0)
pred_dirs = [p for p in common.prediction_dirs(r) if stem0 in appdata.prediction_index(p)]
seq_dir_name = Path(seq.extra.get("path") or seq.name).name
pred_dirs.sort(key=lambda p: (seq_dir_name not in common.rel(root, p), common.rel(root, p)))
sources = {f"Predictions: {common.rel(root, p)}": ("dir", p) for p in pred_dirs}
sources["Default model"] = ("model", None)
for run in common.runs(r):
    for ck in appdata.list_checkpoints(run):
        sources[f"Model: {common.rel(root, ck)}"] = ("model", ck)
sources["No prediction"] = ("none", None)
src_label = c_src.selectbox("Predicted depth", list(sources), key=f"src::{ds_name}::{seq_name}")
src_kind, src_path = sources[src_label]

# Frame selection and playback.  The frame advances before the slider is drawn.
frame_key = f"frame::{ds_name}::{seq_name}"
fps = float(seq.extra.get("fps") or 10.0)
if frame_key not in st.session_state and "frame" in st.query_params:  # link to a frame: ?frame=N
    try:
        st.session_state[frame_key] = min(max(int(st.query_params["frame"]), 0), n - 1)
    except ValueError:
        pass
if st.session_state.get("playing"):
    cur = int(st.session_state.get(frame_key, 0))
    if st.session_state.pop("_advance", False):
        cur += 1
    elif cur >= n - 1:  # Play pressed on the last frame: start over
        cur = 0
    if cur >= n - 1:  # show the last frame, then stop
        cur = n - 1
        st.session_state["playing"] = False
    st.session_state[frame_key] = cur
c_slider, c_play = st.columns([6, 1])
i = c_slider.slider("Frame", 0, max(n - 1, 0), key=frame_key, disabled=n == 1)
c_play.toggle("Play", key="playing", help=f"play at up to {fps:g} frames/s")


def predicted_depth(idx: int):
    """Predicted depth of frame ``idx`` (mm) or None, plus an error message."""
    if src_kind == "dir":
        index = appdata.prediction_index(src_path)
        stem = appdata.frame_stem(seq, idx)
        if stem not in index:
            return None, f"{common.rel(root, src_path)}: no {stem}_depth.npy"
        return appdata.load_prediction(index[stem]), None
    if src_kind == "model":
        model = common.predictor(str(src_path) if src_path is not None else None)
        return np.asarray(model.predict(seq.rgb(idx)), np.float32), None
    return None, None


rgb = seq.rgb(i)
gt = seq.depth_mm(i) if seq.has_depth else None
try:
    pred, pred_msg = predicted_depth(i)
except (UserError, OSError, RuntimeError, ValueError, KeyError) as exc:  # bad or missing checkpoint
    pred, pred_msg = None, " ".join(str(exc).split()) or type(exc).__name__
if pred is not None:
    pred = appdata.resize_depth(pred, rgb.shape[:2])

metrics = None
if pred is not None and gt is not None:
    try:
        err, valid, scale = appdata.depth_error_mm(pred, gt)
        metrics = appdata.frame_metrics(pred, gt)
    except ValueError as exc:  # e.g. a prediction that is not finite or not positive where gt is valid
        st.error(f"frame {i}: cannot score the prediction ({exc})")
        pred_msg, pred = f"frame {i}: unusable prediction ({exc})", None
scaled = st.session_state.get("scale_display", True) and metrics is not None
vmin, vmax = appdata.depth_display_range(gt if gt is not None else pred)
cols = st.columns(4)
cols[0].image(appdata.upscale_nearest(rgb, 256), caption=f"RGB, frame {i} of 0–{n - 1}")
if pred is not None:
    shown = pred * np.float32(metrics["scale"]) if scaled else pred
    if gt is None:
        vmin, vmax = appdata.depth_display_range(shown)
    cols[1].image(appdata.depth_panel(shown, vmin, vmax, valid=np.isfinite(shown) & (shown > 0)),
                  caption=f"Predicted depth, median-scaled ×{metrics['scale']:.3g} (mm)" if scaled
                  else "Predicted depth (mm)")
elif pred_msg:
    cols[1].error(pred_msg)
else:
    cols[1].info("No predicted depth selected.")
if gt is not None:
    cols[2].image(appdata.depth_panel(gt, vmin, vmax, valid=gt > 0), caption="Ground-truth depth (mm)")
else:
    cols[2].info("This sequence has no ground-truth depth.")

if pred is not None and gt is not None:
    emax = float(np.nanpercentile(err, 98)) if valid.any() else 1.0
    cols[3].image(appdata.depth_panel(err, 0.0, max(emax, 1e-3), cmap=appdata.ERROR_CMAP, valid=valid),
                  caption=f"|error| after median scaling ×{scale:.3g} (mm)")
else:
    cols[3].info("The error map needs predicted and ground-truth depth.")

if metrics is not None:
    st.checkbox("Show the prediction median-scaled to the ground truth", value=True, key="scale_display",
                help="monocular depth has an unknown scale; metrics always use median scaling")
st.subheader("Metrics")
st.caption("Median-scaled prediction against ground truth (monodepth2 definitions; rmse in mm).")
if metrics is not None:
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("abs_rel (frame)", f"{metrics['abs_rel']:.4f}")
    m2.metric("rmse mm (frame)", f"{metrics['rmse']:.3f}")
    m3.metric("δ<1.25 (frame)", f"{metrics['delta1']:.3f}")
    m4.metric("scale (frame)", f"{metrics['scale']:.4g}")
elif pred is not None and gt is not None:
    st.write("No valid ground-truth pixel in this frame.")
else:
    st.write("Metrics need predicted and ground-truth depth.")


@st.cache_data(ttl=300, show_spinner="Scoring the sequence…", max_entries=16)
def _sequence_metrics(root_s: str, ds: str, seq_s: str, pred_dir: str, max_frames: int = 300):
    seq_ = {s.name: s for s in common.sequences(root_s, ds)}[seq_s]
    index = appdata.prediction_index(pred_dir)
    idxs = np.unique(np.linspace(0, seq_.num_frames - 1, min(seq_.num_frames, max_frames)).astype(int))
    pairs = ((appdata.load_prediction(index[appdata.frame_stem(seq_, k)]), seq_.depth_mm(int(k)))
             for k in idxs if appdata.frame_stem(seq_, k) in index)
    return appdata.sequence_metrics(pairs)


if src_kind == "dir" and seq.has_depth:
    try:
        seq_m = _sequence_metrics(r, ds_name, seq_name, str(src_path))
    except (UserError, ValueError) as exc:
        seq_m = None
        st.error(str(exc))
    if seq_m is not None:
        st.write(f"Sequence ({seq_m['frames']} frames)")
        table = {k: [round(v, 4)] for k, v in seq_m.items() if k != "frames"}
        st.dataframe(table, hide_index=True)
elif src_kind == "model" and seq.has_depth and pred is not None:
    if st.button("Score the whole sequence with this model", key="score_model"):
        idxs = np.unique(np.linspace(0, n - 1, min(n, 300)).astype(int))
        bar = st.progress(0.0, text="predicting…")
        model = common.predictor(str(src_path) if src_path is not None else None)
        rows = []
        for k, idx in enumerate(idxs):
            rows.append((np.asarray(model.predict(seq.rgb(int(idx))), np.float32), seq.depth_mm(int(idx))))
            bar.progress((k + 1) / len(idxs), text=f"frame {idx} ({k + 1}/{len(idxs)})")
        seq_m = appdata.sequence_metrics(rows)
        if seq_m is not None:
            st.write(f"Sequence ({seq_m['frames']} frames)")
            st.dataframe({k: [round(v, 4)] for k, v in seq_m.items() if k != "frames"}, hide_index=True)
if metrics is not None:
    with st.expander("All metrics of this frame"):
        st.dataframe({k: [round(float(v), 4)] for k, v in metrics.items()}, hide_index=True)

if st.session_state.get("playing") and n > 1:
    time.sleep(1.0 / max(fps, 0.5))
    st.session_state["_advance"] = True
    st.rerun()
