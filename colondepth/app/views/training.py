"""Training view: the curriculum's stages and the loss and metric curves of a run."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from colondepth.app import common
from colondepth.app import data as appdata

root = common.start_page("Training")
run = common.choose_folder(root, "Run", common.runs(str(root)), key="run",
                           empty=f"No training run under {root}. Train one with "
                                 f"'colondepth train ... --out {root}/runs/NAME'.")
name = common.rel(root, run)
stages = common.or_stop(appdata.read_curriculum, run)
records = common.or_stop(appdata.read_metrics, run)

st.subheader("Curriculum")
if stages:
    st.dataframe(stages, hide_index=True)
else:
    st.write("No config.resolved.yaml in this run.")

ckpts = appdata.list_checkpoints(run)
st.caption("Checkpoints: " + (", ".join(p.name for p in ckpts) if ckpts else "none yet"))

mon = appdata.monitor_frame(records)
if not mon.empty:
    st.subheader("Forgetting monitor")
    st.caption("Error of the network during training on the validation frames of every level trained on so far "
               "and on the foreign sets of the run's 'monitor' section: a rising curve is forgetting.")
    grid = st.columns(2)
    for k, (col, title) in enumerate((("abs_rel_median_scaled", "abs_rel, median-scaled"),
                                      ("abs_rel", "abs_rel, metric (mm)"))):
        sub = mon[["x", "set", col]].dropna()
        if sub.empty:
            continue
        fig = px.line(sub, x="x", y=col, color="set", markers=len(sub) < 80, title=title,
                      labels={"x": "step (all stages)", col: "abs_rel"})
        fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10))
        grid[k % 2].plotly_chart(fig, width="stretch", key=f"monitor::{col}")

st.subheader("Curves")
df = appdata.metrics_frame(records)
cols = appdata.metric_columns(records)
if df.empty or not cols:
    st.write("metrics.jsonl has no numeric values yet.")
    st.stop()
done = df.groupby("stage", sort=False)["x"].max()
st.caption(f"{len(records)} logged steps; last step per stage: "
           + ", ".join(f"{s} {int(v)}" for s, v in done.items()))
chosen = st.multiselect("Curves", cols, default=cols[: min(len(cols), 4)], key=f"curves::{name}")
grid = st.columns(2)
for k, col in enumerate(chosen):
    sub = df[["x", "stage", col]].dropna()
    fig = px.line(sub, x="x", y=col, color="stage", markers=len(sub) < 60, title=col,
                  labels={"x": "step (all stages)"})
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10))
    if any(k in col for k in ("loss", "abs_rel", "rmse")) and (sub[col] > 0).all():
        fig.update_yaxes(type="log")
    grid[k % 2].plotly_chart(fig, width="stretch", key=f"curve::{col}")
