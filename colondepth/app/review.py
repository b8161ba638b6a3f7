"""ColonDepth review app: browse datasets, depth predictions, reconstructions and training runs.

Start it with ``colondepth app --root DIR`` (see docs/app.md).  The root folder comes from the
script argument ``--root DIR`` or the ``COLONDEPTH_APP_ROOT`` environment variable.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from colondepth.app.common import clear_caches, get_root

st.set_page_config(page_title="ColonDepth review", layout="wide")

HERE = Path(__file__).resolve().parent
pages = [
    st.Page(str(HERE / "views" / "home.py"), title="Overview", default=True),
    st.Page(str(HERE / "views" / "sequence.py"), title="Sequence", url_path="sequence"),
    st.Page(str(HERE / "views" / "reconstruction.py"), title="3D reconstruction", url_path="reconstruction"),
    st.Page(str(HERE / "views" / "training.py"), title="Training", url_path="training"),
    st.Page(str(HERE / "views" / "new_video.py"), title="New video", url_path="new_video"),
]
nav = st.navigation(pages)

root = get_root()
with st.sidebar:
    st.caption("Root folder")
    st.code(str(root) if root is not None else "(not found)", language=None)
    if st.button("Refresh", help="look for new datasets, runs and reconstructions"):
        clear_caches()
nav.run()
