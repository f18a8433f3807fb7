"""The Streamlit UI: a client of the prediction API (HTTP) and of the registry in S3 (docs/ui.md).

`main.py` is the Streamlit script; `launch.run` starts it (the `flywheel ui` command). The other modules
are small and named for their role; only the page modules and `main.py` draw anything.
"""
