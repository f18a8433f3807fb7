"""Page script (run by st.navigation): the Drift page."""

from app.ui.drift_page import render

render()
