"""One small error hierarchy; adapters map it to HTTP statuses or Lambda outcomes in one place."""

from __future__ import annotations

from typing import Any


class FlywheelError(Exception):
    """Base class: carries an HTTP-ish status and a machine-readable detail."""

    status: int = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, **self.detail}


class SchemaError(FlywheelError):
    """The schema file itself is invalid."""

    status = 500


class BatchRejected(FlywheelError):
    """An uploaded batch failed validation; `problems` name rows and columns."""

    status = 422

    def __init__(self, key: str, problems: list[dict[str, Any]]) -> None:
        first = problems[0]["message"] if problems else "invalid batch"
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{key}: {first}{more}", file=key, problems=problems)
        self.key = key
        self.problems = problems


class InvalidInput(FlywheelError):
    """A prediction request is malformed; names the instance index and field."""

    status = 422


class PayloadTooLarge(InvalidInput):
    status = 413


class RequestTimeout(InvalidInput):
    status = 408


class ClientClosed(InvalidInput):
    """The client went away before its request was read: nobody to answer, and not the server's fault."""

    status = 499  # nginx's "client closed request": counted apart from the 4xx a client is answered and the 5xx


class Overloaded(FlywheelError):
    """Over a concurrency limit (the replica's, or one API key's share of it): retry shortly."""

    status = 429


class NotFound(FlywheelError):
    status = 404


class NotReady(FlywheelError):
    status = 503


class ConflictError(FlywheelError):
    """A conditional write lost a race (version claimed, alias moved, lock held)."""

    status = 409


class LockBusy(ConflictError):
    """Another trainer holds the single-flight lock."""


class ModelVerificationError(FlywheelError):
    """A model version failed sha256, library or golden-output verification."""

    status = 500


class NoTrainingData(FlywheelError):
    status = 422
