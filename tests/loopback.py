"""The suite's HTTP calls to its own local servers (replicas, the UI, the stack).

`httpx.get(...)` and its siblings build a client per call, and with it a TLS context loaded from the CA bundle:
~33 ms of CPU on the CI machine, even for http://127.0.0.1. A test polling a replica every 0.1 s spent a third of
a core on that, and 800 predictions one at a time 26 s. These calls are the same (a new client, so a new
connection, per call) with one TLS context made once per process.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

TLS = ssl.create_default_context()


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=TLS, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=TLS, **kwargs)


def put(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.put(url, verify=TLS, **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.delete(url, verify=TLS, **kwargs)


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=TLS, **kwargs)
