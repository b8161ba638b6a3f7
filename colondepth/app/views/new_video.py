"""New video: upload a video (or pick one inside the root), optionally fine-tune the model on it, then predict
depth and reconstruct."""

from __future__ import annotations

import streamlit as st

from colondepth.app import common
from colondepth.app import data as appdata
from colondepth.errors import UserError

root = common.start_page("New video")
st.write("Depth is predicted with the default model (or a checkpoint you pick), optionally fine-tuned on the video "
         "first, and fused into a 3D surface by `colondepth reconstruct`. Results are written under "
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

finetune, steps = False, appdata.DEFAULT_FINETUNE_STEPS
if not is_sequence:
    finetune = st.checkbox("Fine-tune on this video first", key="finetune")
    if finetune:
        st.caption("Fine-tuning adapts the depth and pose networks of the chosen Model to this video before "
                   "reconstructing. It is self-supervised: it learns from how consecutive frames warp into each "
                   "other and needs no labels or ground truth. It takes minutes (more steps, longer and usually "
                   "better). Fine-tuned weights are kept under `runs/` and reused for the same video and settings.")
        steps = int(st.number_input("Fine-tuning steps", min_value=1, max_value=100_000,
                                    value=appdata.DEFAULT_FINETUNE_STEPS, step=50, key="finetune_steps"))


def plan():
    """``(finetune argv or None, its run folder or None, reconstruct argv, reconstruction folder)``."""
    ft_argv = ft_dir = None
    checkpoint = ckpts[ck_label]
    if finetune:
        ft_argv, ft_dir = appdata.finetune_command(root, source, steps, checkpoint, intrinsics, crop)
        checkpoint = appdata.finetuned_checkpoint(ft_dir)
    argv, out_dir = appdata.reconstruct_command(root, source, out_name=ft_dir.name if ft_dir else None,
                                                depth=depth, poses=poses, checkpoint=checkpoint,
                                                intrinsics=intrinsics, crop=crop)
    return ft_argv, ft_dir, argv, out_dir


if source is not None:
    try:
        ft_argv, ft_dir, _, planned = plan()
        if ft_dir is not None:
            if appdata.finetune_finished(ft_dir):
                st.info(f"{common.rel(root, ft_dir)} holds a finished fine-tuning run for this video and these "
                        "settings; its weights will be reused.")
            elif "--resume" in ft_argv:
                st.info(f"{common.rel(root, ft_dir)} holds an unfinished fine-tuning run for this video and these "
                        f"settings (step {appdata.finetune_step(ft_dir)} of {steps}); it will be resumed.")
            else:
                st.caption(f"Fine-tuned weights go to {common.rel(root, ft_dir)}.")
        if planned.exists():
            st.warning(f"{common.rel(root, planned)} exists and will be replaced.")
    except UserError as exc:
        st.error(str(exc))
        source = None
st.caption("Stay on this page while it runs: leaving the page stops the run.")
label = "Fine-tune, predict and reconstruct" if finetune else "Predict and reconstruct"
if st.button(label, type="primary", disabled=source is None, key="go"):
    try:
        ft_argv, ft_dir, argv, out_dir = plan()
    except UserError as exc:
        st.error(str(exc))
        st.stop()

    if ft_dir is not None:
        if appdata.finetune_finished(ft_dir):
            st.info(f"Reusing the fine-tuned model of {common.rel(root, ft_dir)} (finished earlier with the same "
                    "video and settings).")
        else:
            ft_bar = st.progress(0.0, text="fine-tuning: starting…")
            verb = "Resuming fine-tuning" if "--resume" in ft_argv else "Fine-tuning"
            with st.status(f"{verb} into {common.rel(root, ft_dir)}", expanded=True) as ft_status:
                ft_line = st.empty()

                def on_step(event) -> None:
                    text = f"fine-tuning: step {event.done}/{event.total}"
                    ft_bar.progress(event.fraction, text=text)
                    ft_line.text(text)

                ft_run = appdata.run_finetune(ft_argv, ft_dir, steps, on_step)
                finished = ft_run.return_code == 0 and appdata.finetune_finished(ft_dir)
                if finished:
                    ft_bar.progress(1.0, text="fine-tuning: done")
                    ft_status.update(label=f"Fine-tuned: {common.rel(root, ft_dir)}", state="complete")
                else:
                    ft_status.update(label="Fine-tuning failed", state="error")
            if not finished:
                final = common.rel(root, appdata.finetuned_checkpoint(ft_dir))
                st.error(appdata.error_line(ft_run.output)
                         or (f"colondepth finetune exited with status {ft_run.return_code}" if ft_run.return_code
                             else f"colondepth finetune ended without writing {final}"))
                with st.expander("Output"):
                    st.code(ft_run.output[-5000:] or "(no output)", language=None)
                st.stop()
            common.clear_caches()

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
        model = f" with the model fine-tuned in {common.rel(root, ft_dir)}" if ft_dir is not None else ""
        st.success(f"Reconstruction written to {common.rel(root, out_dir)}{model}; open the 3D reconstruction page.")
    else:
        st.error(appdata.error_line(run.output) or f"colondepth reconstruct exited with status {run.return_code}")
        with st.expander("Output"):
            st.code(run.output[-5000:] or "(no output)", language=None)
