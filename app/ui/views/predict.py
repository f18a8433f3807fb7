"""Page script (run by st.navigation): the Predict page."""

from app.ui.predict_page import render

render()
