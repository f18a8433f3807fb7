"""Page script (run by st.navigation): the Models page."""

from app.ui.models_page import render

render()
