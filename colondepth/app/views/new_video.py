"""New video: upload a video (or pick one inside the root), then predict depth and reconstruct."""

from __future__ import annotations

import streamlit as st

from colondepth.app import common
from colondepth.app import data as appdata
from colondepth.errors import UserError

root = common.start_page("New video")
st.write("Depth is predicted with the default model (or a checkpoint you pick) and fused into a 3D surface by "
         "`colondepth reconstruct`. Results are written under "
         f"`{root / 'reconstructions'}` and appear on the 3D reconstruction page.")

upload = st.file_uploader(f"Upload a video (at most {appdata.MAX_UPLOAD_MB} MB)",
                          type=[s.lstrip(".") for s in appdata.VIDEO_SUFFIXES], key="upload")
typed = st.text_input("…or a video file or sequence folder inside the root (relative to it or absolute)",
                      key="source_path")

source = None
if upload is not None:
    try:
        appdata.check_upload(upload.name, upload.size)
        key = f"saved::{upload.file_id}"
        if key not in st.session_state:  # save each upload once, not on every rerun
            saved = appdata.save_upload(root, upload.name, upload.getvalue())
            st.session_state[key] = (saved, appdata.probe_video(saved))
        saved, info = st.session_state[key]
        st.success(f"Saved {common.rel(root, saved)} ({info['width']}×{info['height']} px).")
        source = saved
    except UserError as exc:
        st.error(str(exc))
elif typed.strip():
    try:
        candidate = appdata.safe_path(root, typed.strip())
        if not candidate.exists():
            raise UserError(f"{typed.strip()}: no such file or folder inside the app root {root}")
        if candidate.is_file():
            info = appdata.probe_video(candidate)
            st.success(f"{common.rel(root, candidate)}: video, {info['width']}×{info['height']} px.")
        source = candidate
    except UserError as exc:
        st.error(str(exc))

is_sequence = source is not None and source.is_dir()
c1, c2, c3 = st.columns(3)
depth = c1.selectbox("Depth", ["predicted", "gt"] if is_sequence else ["predicted"], key="depth")
poses = c2.selectbox("Poses", ["predicted", "gt"] if is_sequence else ["predicted"], key="poses")
ckpts = {"Default model": None, **common.checkpoints(root)}
ck_label = c3.selectbox("Model", list(ckpts), key="checkpoint")

intrinsics, crop = "", ""
if not is_sequence:
    st.caption("Camera: without an intrinsics file a 140° field of view is assumed, so depth scale and geometry "
               "are approximate. The file is YAML with `width height fx fy cx cy` (px, OpenCV) of the uncropped "
               "frame; for a fisheye lens add `model: fisheye` and `k1 k2 k3 k4` (frames are then undistorted).")
    k1, k2 = st.columns(2)
    intrinsics = k1.text_input("Intrinsics file inside the root (optional)", key="intrinsics_path",
                               placeholder="e.g. scope.yaml")
    crop = k2.text_input("Crop X Y W H in pixels (optional)", key="crop", placeholder="e.g. 0 0 192 192")

if source is not None:
    try:
        _, planned = appdata.reconstruct_command(root, source, intrinsics=intrinsics, crop=crop)
        if planned.exists():
            st.warning(f"{common.rel(root, planned)} exists and will be replaced.")
    except UserError as exc:
        st.error(str(exc))
        source = None
st.caption("Stay on this page while it runs: leaving the page stops the run.")
if st.button("Predict and reconstruct", type="primary", disabled=source is None, key="go"):
    try:
        argv, out_dir = appdata.reconstruct_command(root, source, depth=depth, poses=poses,
                                                    checkpoint=ckpts[ck_label], intrinsics=intrinsics, crop=crop)
    except UserError as exc:
        st.error(str(exc))
        st.stop()
    bar = st.progress(0.0, text="starting…")
    with st.status(f"Reconstructing into {common.rel(root, out_dir)}", expanded=True) as status:
        line_box = st.empty()

        def on_event(event) -> None:
            text = f"{event.stage}: {event.done}/{event.total}" + (f" ({event.message})" if event.message else "")
            bar.progress(appdata.reconstruct_fraction(event), text=text[-120:])
            line_box.text(text[-200:])

        run = appdata.run_reconstruct(argv, on_event)
        if run.return_code == 0:
            bar.progress(1.0, text="done")
            status.update(label=f"Done: {common.rel(root, out_dir)}", state="complete")
            common.clear_caches()
        else:
            status.update(label="Reconstruction failed", state="error")
    if run.return_code == 0:
        st.success(f"Reconstruction written to {common.rel(root, out_dir)}; open the 3D reconstruction page.")
    else:
        st.error(appdata.error_line(run.output) or f"colondepth reconstruct exited with status {run.return_code}")
        with st.expander("Output"):
            st.code(run.output[-5000:] or "(no output)", language=None)
