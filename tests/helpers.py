"""Small helpers shared by tests (no fixtures here)."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel.sampledata import GENERATORS


def csv_bytes(rows: int, seed: int = 0, drift: float = 0.0, dataset: str = "savings") -> bytes:
    return GENERATORS[dataset](rows, seed=seed, drift=drift).to_csv(index=False).encode()


@dataclass
class FakeLambdaContext:
    """The attributes Powertools reads from a Lambda context (no Lambda runtime runs here)."""

    function_name: str = "flywheel-trainer"
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:flywheel-trainer"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
