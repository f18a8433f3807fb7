"""A small HTTP client of the prediction API (docs/serving.md): short timeouts, one error type per outcome.

Every model is asked for by name: `GET /v1/models/<name>`, `POST /v1/models/<name>/predict`, `GET /v1/models`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

# The UI waits on a person: fail fast when the API is away rather than hang the page.
TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class ApiError(Exception):
    """The API answered with an error (`{"error": ...}`); `detail` holds the rest (instance, field, ...)."""

    def __init__(self, message: str, status: int | None = None, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail or {}


class ApiUnavailable(ApiError):
    """The API is unreachable, too slow, or up but not ready (no model loaded yet)."""


@dataclass(frozen=True)
class ServedModel:
    """What `GET /v1/models/<name>` reports: the version a replica serves and its manifest."""

    name: str
    version: int
    manifest: dict[str, Any]
    loaded_at: str = ""
    source: str = ""
    serving_path: str = ""  # "fast" (the verified compiled predictor) or "pipeline"
    fast_path: str = ""  # what the fast path was verified on, or why the Pipeline serves
    rollout: dict[str, Any] | None = None  # the candidate beside this version: mode, candidate, baseline, share


@dataclass(frozen=True)
class Prediction:
    """One prediction and the model version that computed it."""

    model: str
    version: int
    value: Any
    probabilities: dict[str, float] | None = None
    request: dict[str, Any] = field(default_factory=dict)


def _path(name: str) -> str:
    return f"/v1/models/{quote(name, safe='')}"


class ApiClient:
    """Talks to one API base URL. Thread-safe (httpx.Client), so one instance serves every session."""

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: httpx.Timeout = TIMEOUT, transport: Any = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport, headers=headers)

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[str]:
        """`GET /v1/models`: the names of the models the API serves."""
        listed = self._call("GET", "/v1/models").get("models") or []
        names = [m if isinstance(m, str) else m.get("name") or m.get("model") for m in listed]
        return sorted({str(n) for n in names if n})

    def served_model(self, name: str) -> ServedModel:
        """`GET /v1/models/<name>`; raises ApiUnavailable when the API is down or has no version of it loaded yet."""
        body = self._call("GET", _path(name))
        return ServedModel(
            name=str(body["model"]),
            version=int(body["version"]),
            manifest=dict(body.get("manifest") or {}),
            loaded_at=str(body.get("loaded_at") or ""),
            source=str(body.get("source") or ""),
            serving_path=str(body.get("serving_path") or ""),
            fast_path=str(body.get("fast_path") or ""),
            rollout=dict(body["rollout"]) if isinstance(body.get("rollout"), dict) else None,
        )

    def predict(self, name: str, instance: dict[str, Any]) -> Prediction:
        """`POST /v1/models/<name>/predict` with one instance; raises ApiError naming the field the API rejected."""
        body = self._call("POST", _path(name) + "/predict", json={"instances": [instance]})
        probabilities = body.get("probabilities")
        return Prediction(
            model=str(body["model"]),
            version=int(body["model_version"]),
            value=body["predictions"][0],
            probabilities=probabilities[0] if probabilities else None,
            request=instance,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise ApiUnavailable(f"the prediction API at {self.base_url} did not answer in time ({url})") from e
        except httpx.TransportError as e:
            raise ApiUnavailable(f"the prediction API at {self.base_url} is not reachable ({e})") from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(
                f"{method} {url} answered {response.status_code} with a non-JSON body: {response.text[:200]!r}",
                response.status_code,
            )
        if response.status_code == 503:
            reason = body.get("error") or body.get("reason") or "not ready"
            raise ApiUnavailable(f"the prediction API is not ready: {reason}", 503, body)
        if response.is_error:
            detail = {k: v for k, v in body.items() if k != "error"}
            raise ApiError(str(body.get("error") or f"HTTP {response.status_code}"), response.status_code, detail)
        return body
