"""Sequence view: RGB, predicted depth, ground-truth depth and error per frame, with metrics."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st

from colondepth.app import common
from colondepth.app import data as appdata
from colondepth.errors import UserError

root = common.start_page("Sequence")
r = str(root)

c_ds, c_seq, c_src = st.columns([2, 2, 3])
ds_name = common.choose("Dataset", {d.name: d.name for d in common.datasets(r)}, key="dataset", container=c_ds,
                        empty=f"No dataset under {root}. Make one with 'colondepth synth --out {root}/synthetic'.")
seqs = common.or_stop(common.sequences, r, ds_name)
seq = common.choose("Sequence", {s.name: s for s in seqs}, key=f"seq::{ds_name}", container=c_seq,
                    empty=f"{ds_name}: no sequences found.")
seq_name = seq.name
n = seq.num_frames

# Sources of predicted depth: prediction folders matching this sequence's frame names, then models.
stem0 = appdata.frame_stem(seq, 0)
pred_dirs = [p for p in common.prediction_dirs(r) if stem0 in appdata.prediction_index(p)]
seq_dir_name = Path(seq.extra.get("path") or seq.name).name
pred_dirs.sort(key=lambda p: (seq_dir_name not in common.rel(root, p), common.rel(root, p)))
sources = {f"Predictions: {common.rel(root, p)}": ("dir", p) for p in pred_dirs}
sources["Default model"] = ("model", None)
sources.update({f"Model: {name}": ("model", ck) for name, ck in common.checkpoints(root).items()})
sources["No prediction"] = ("none", None)
src_label = c_src.selectbox("Predicted depth", list(sources), key=f"src::{ds_name}::{seq_name}")
src_kind, src_path = sources[src_label]

# Frame selection and playback.  The frame advances before the slider is drawn.
frame_key = f"frame::{ds_name}::{seq_name}"
fps = appdata.sequence_fps(seq)
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


def _view(model):
    """The sequence's lit view box for ``model`` (DepthPredictor.video_view), once per session and sequence."""
    key = ("view", str(src_path), seq.name, int(seq.num_frames))
    if key not in st.session_state:
        st.session_state[key] = model.video_view(seq, seq.intrinsics)
    return st.session_state[key]


def predicted_depth(idx: int):
    """Predicted depth of frame ``idx`` (mm) or None, plus an error message."""
    if src_kind == "dir":
        index = appdata.prediction_index(src_path)
        stem = appdata.frame_stem(seq, idx)
        if stem not in index:
            return None, f"{common.rel(root, src_path)}: no {stem}_depth.npy"
        return appdata.load_prediction(index[stem]), None
    if src_kind == "model":  # given the sequence's camera and view box, as 'colondepth evaluate' gives them
        model = common.predictor(str(src_path) if src_path is not None else None)
        return np.asarray(model.predict(seq.rgb(idx), intrinsics=seq.intrinsics, view=_view(model)),
                          np.float32), None
    return None, None


rgb = seq.rgb(i)
gt = seq.depth_mm(i) if seq.has_depth else None
try:
    pred, pred_msg = predicted_depth(i)
except (UserError, OSError, RuntimeError, ValueError, KeyError) as exc:  # bad or missing checkpoint
    pred, pred_msg = None, " ".join(str(exc).split()) or type(exc).__name__

score = metrics = None
if pred is not None and gt is not None:
    try:
        score = appdata.score_prediction(pred, gt, fov_mask=seq.fov_mask)
        metrics = score.metrics
        pred = score.pred_mm
    except ValueError as exc:  # e.g. a prediction that is not finite or not positive where gt is valid
        st.error(f"frame {i}: cannot score the prediction ({exc})")
        pred_msg, pred = f"frame {i}: unusable prediction ({exc})", None
elif pred is not None:
    pred = appdata.resize_depth(pred, seq.intrinsics.size)
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

if pred is not None and score is not None and score.valid.any():
    emax = float(np.nanpercentile(score.error_mm, 98))
    cols[3].image(appdata.depth_panel(score.error_mm, 0.0, max(emax, 1e-3), cmap=appdata.ERROR_CMAP,
                                      valid=score.valid),
                  caption=f"|error| after median scaling ×{metrics['scale']:.3g} (mm)")
elif score is not None:
    cols[3].info("No valid ground-truth pixel in this frame.")
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
def _sequence_metrics(root_s: str, ds: str, seq_s: str, pred_dir: str):
    seq_ = {s.name: s for s in common.sequences(root_s, ds)}[seq_s]
    return appdata.prediction_sequence_metrics(seq_, pred_dir)


def _show_sequence_metrics(seq_m) -> None:
    st.write(f"Sequence ({seq_m['frames']} frames)")
    st.dataframe({k: [round(v, 4)] for k, v in seq_m.items() if k != "frames"}, hide_index=True)


if src_kind == "dir" and seq.has_depth:
    try:
        seq_m = _sequence_metrics(r, ds_name, seq_name, str(src_path))
    except (UserError, ValueError) as exc:
        seq_m = None
        st.error(str(exc))
    if seq_m is not None:
        _show_sequence_metrics(seq_m)
elif src_kind == "model" and seq.has_depth and pred is not None:
    if st.button("Score the whole sequence with this model", key="score_model",
                 help=f"the numbers of 'colondepth evaluate' on this sequence (at most "
                      f"{appdata.MAX_SCORED_FRAMES} evenly spaced frames)"):
        bar = st.progress(0.0, text="predicting…")
        model = common.predictor(str(src_path) if src_path is not None else None)
        try:
            seq_m = appdata.score_sequence_with_model(
                seq, model.predict_batch, view=_view(model),
                on_frames=lambda k, total: bar.progress(k / total, text=f"{k}/{total} frames"))
        except (UserError, ValueError) as exc:
            seq_m = None
            st.error(str(exc))
        if seq_m is not None:
            _show_sequence_metrics(seq_m)
if metrics is not None:
    with st.expander("All metrics of this frame"):
        st.dataframe({k: [round(float(v), 4)] for k, v in metrics.items()}, hide_index=True)

if st.session_state.get("playing") and n > 1:
    time.sleep(1.0 / max(fps, 0.5))
    st.session_state["_advance"] = True
    st.rerun()
