"""The Streamlit script (`flywheel ui` runs it through app.ui.launch): navigation, the model picker, status,
the chosen page."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.ui import auth, clients, picker
from app.ui.version_watch import served_version_notice

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="Flywheel", page_icon=":material/cycle:", layout="wide")
settings = clients.settings_or_stop()
who = auth.current_identity()  # a sign-in prompt (or why sign-in was refused) and nothing else until signed in
page = st.navigation(
    [
        st.Page(VIEWS / "predict.py", title="Predict", icon=":material/online_prediction:", default=True),
        st.Page(VIEWS / "models.py", title="Models", icon=":material/model_training:"),
        st.Page(VIEWS / "data.py", title="Data", icon=":material/dataset:"),
        st.Page(VIEWS / "drift.py", title="Drift", icon=":material/query_stats:"),
    ]
)
with st.sidebar:
    auth.sidebar(who)
    picker.choose()
    st.caption(
        f"API {settings.api_url} · " + (f"bucket `{settings.bucket}`" if settings.bucket else "no bucket configured")
    )
served_version_notice()
page.run()
