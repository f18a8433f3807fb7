"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

from app.local.worker import LocalContext
from flywheel.sampledata import GENERATORS


def csv_bytes(rows: int, seed: int = 0, drift: float = 0.0, dataset: str = "savings") -> bytes:
    return GENERATORS[dataset](rows, seed=seed, drift=drift).to_csv(index=False).encode()


# the attributes Powertools reads from a Lambda context: the local worker's stand-in serves the tests too
FakeLambdaContext = LocalContext
