"""`flywheel up`'s models: register the default model and the demo models, and seed each empty one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flywheel.errors import FlywheelError


def register_and_seed(
    s3: Any, bucket: str, wanted: Mapping[str, str], *, seed: bool, say: Callable[[str], None]
) -> None:
    """Register each model of `wanted` (name -> built-in schema); with `seed`, put a demo batch under its data/."""
    from flywheel.data.sample_data import GENERATORS
    from flywheel.registry.registrations import register
    from flywheel.schema import load_schema

    for name, schema_ref in wanted.items():
        try:
            register(s3, bucket, name, load_schema(schema_ref))
        except FlywheelError as e:  # registered earlier with another schema: that registration stands
            say(f"model {name}: {e.message}")
        gen = GENERATORS.get(schema_ref)
        if seed and gen is not None:
            body = gen(5000, seed=1).to_csv(index=False).encode()
            s3.put_object(Bucket=bucket, Key=f"data/{name}/seed-batch.csv", Body=body)
            say(f"model {name}: seeded data/{name}/seed-batch.csv (5,000 rows from `flywheel sample-data`)")
