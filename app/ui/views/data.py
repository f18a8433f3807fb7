"""Page script (run by st.navigation): the Data page."""

from app.ui.data_page import render

render()
