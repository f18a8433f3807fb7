"""`python -m app.ui.streamlit_main run ...`: Streamlit's own command, with the request head bounded.

Streamlit serves its pages and websocket through uvicorn with uvicorn's default ("auto") HTTP protocol. Before
Streamlit starts, "auto" is pointed at app/http_limits.py's protocol (httptools with the request head bounded in
size and time), so the UI's listener refuses what the API's refuses (431/408, docs/security.md). Everything else
is `streamlit` as installed.
"""

from __future__ import annotations

import sys

from uvicorn import config as uvicorn_config


def main() -> None:
    uvicorn_config.HTTP_PROTOCOLS["auto"] = "app.http_limits:BoundedHttpToolsProtocol"
    from streamlit.web.cli import main as streamlit

    sys.exit(streamlit(prog_name="streamlit"))  # as `python -m streamlit` calls it


if __name__ == "__main__":
    main()
