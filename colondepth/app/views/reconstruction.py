"""3D view of a reconstructed colon surface, its unobserved regions and the camera path; downloads."""

from __future__ import annotations

import functools
import json

import streamlit as st

from colondepth.app import common
from colondepth.app import data as appdata

root = common.start_page("3D reconstruction")
path = common.choose_folder(root, "Reconstruction", common.reconstructions(str(root)), key="recon",
                            empty=f"No reconstruction under {root}. Make one with 'colondepth reconstruct "
                                  f"--sequence SEQ --out {root}/reconstructions/NAME' or the New video page.")
rec = common.or_stop(common.reconstruction, str(path))

cov = appdata.coverage_summary(rec.coverage)
cols = st.columns(4)
cols[0].metric("Surface triangles", f"{len(rec.mesh.faces):,}")
cols[1].metric("Unobserved triangles", f"{len(rec.unobserved.faces):,}" if rec.unobserved is not None else "—")
cols[2].metric("Camera poses", len(rec.trajectory_xyz) if rec.trajectory_xyz is not None else "—")
for key in ("observed_fraction", "coverage", "observed_area_fraction"):
    if key in cov:
        cols[3].metric(key.replace("_", " "), f"{100 * cov[key]:.1f} %")
        break

c_faces, c_opacity = st.columns([3, 1])
max_faces = c_faces.select_slider("Triangles shown (decimated for the browser)",
                                  options=[5_000, 20_000, 60_000, 150_000], value=appdata.DEFAULT_MAX_FACES)
opacity = c_opacity.slider("Surface opacity", 0.2, 1.0, 0.7, 0.1,
                           help="a translucent surface shows the camera path inside the colon")
fig = appdata.mesh_figure(rec.mesh, rec.unobserved, rec.trajectory_xyz, max_faces=max_faces,
                          surface_opacity=opacity)
st.plotly_chart(fig, width="stretch", key="mesh3d")
st.caption("Surface in pink, never-observed regions in blue, camera path in orange; axes in mm (world frame).")

rows = appdata.report_metrics_rows(rec.report)
if rows:
    st.subheader("Surface against the ground truth")
    st.caption("accuracy: mean distance from the reconstruction to the reference (mm); completeness: from the "
               "reference to the reconstruction (mm); F-score at a distance threshold (report.json).")
    st.dataframe(rows, hide_index=True)

st.subheader("Downloads")
st.caption("PLY and STL keep the world frame (mm); GLB uses glTF axes seen from the first camera (mm), "
           "as 'colondepth reconstruct' writes it.")
dcols = st.columns(len(appdata.MESH_FORMATS) + 1)


@st.cache_data(show_spinner="Converting…", max_entries=12)
def _mesh_bytes(p: str, fmt: str) -> bytes:
    r_ = common.reconstruction(p)
    ref = r_.world_from_cam[0] if r_.world_from_cam is not None else None  # GLB axes: the first camera's view
    return appdata.export_mesh_bytes(r_.mesh, fmt, world_from_ref_cam=ref)


stem = path.name
for col, fmt in zip(dcols, appdata.MESH_FORMATS):
    ext, mime = appdata.MESH_FORMATS[fmt]
    # The file is made only when the button is clicked (a callable runs on click, outside the script).
    col.download_button(f"Mesh ({fmt})", data=functools.partial(_mesh_bytes, str(path), fmt),
                        file_name=f"{stem}_mesh.{ext}", mime=mime, key=f"dl_{fmt}", on_click="ignore")
if "tsdf.nii.gz" in rec.files:
    dcols[-1].download_button("TSDF volume (NIfTI)", data=rec.files["tsdf.nii.gz"].read_bytes,
                              file_name=f"{stem}_tsdf.nii.gz", mime="application/gzip", key="dl_nifti",
                              on_click="ignore")
else:
    dcols[-1].write("No TSDF volume (tsdf.nii.gz) in this folder.")

if rec.coverage:
    with st.expander("coverage.json"):
        st.code(json.dumps(rec.coverage, indent=2), language="json")
if rec.report:
    with st.expander("report.json"):
        st.code(json.dumps(rec.report, indent=2), language="json")
