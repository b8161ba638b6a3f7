"""Overview: what the root folder holds."""

from __future__ import annotations

import streamlit as st

from colondepth.app import common

root = common.start_page("ColonDepth review")
st.write("Depth predictions, 3D reconstructions and training runs found under the root folder. "
         "Pick a page in the sidebar.")
r = str(root)
ds = common.datasets(r)
runs = common.runs(r)
recons = common.reconstructions(r)
preds = common.prediction_dirs(r)

c1, c2, c3, c4 = st.columns(4)
c1.metric("Datasets", len(ds))
c2.metric("Sequences", sum(len(d.sequence_dirs) for d in ds))
c3.metric("Reconstructions", len(recons))
c4.metric("Training runs", len(runs))

if ds:
    st.subheader("Datasets")
    st.dataframe([{"dataset": d.name, "sequences": len(d.sequence_dirs)} for d in ds], hide_index=True)
if recons:
    st.subheader("Reconstructions")
    st.dataframe([{"folder": common.rel(root, p)} for p in recons], hide_index=True)
if runs:
    st.subheader("Training runs")
    st.dataframe([{"run": common.rel(root, p)} for p in runs], hide_index=True)
if preds:
    st.subheader("Depth predictions")
    st.dataframe([{"folder": common.rel(root, p)} for p in preds], hide_index=True)
if not (ds or runs or recons or preds):
    st.info(f"{root} holds no datasets, runs or reconstructions yet. Make some with 'colondepth synth', "
            "'colondepth train' or 'colondepth reconstruct --out DIR' (DIR inside this folder), "
            "or use the New video page.")
