"""What `flywheel up` prints once the stack is ready: where everything runs and what to try."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.local.services import Tracking
    from app.local.stack import LocalStack

QUEUE, DLQ = "flywheel-data", "flywheel-data-dlq"


def banner(stack: LocalStack) -> str:
    """The ready banner: endpoints, keys, sign-in URLs, and commands to try in another terminal."""
    o = stack.o
    lines = [
        "",
        "Flywheel is running locally:",
        *(
            f"  API replica   {u}   (POST /v1/predict, GET /v1/model; /metrics on {m})"
            for u, m in zip(stack.api_urls(), stack.metrics_urls(), strict=True)
        ),
        f"  API keys      {stack.keys.store.parent}/client.key (client), operator.key (operator)",
        *(stack.identity.banner(f"http://127.0.0.1:{o.ui_port}") if o.ui else []),
        *(
            [f"  Prometheus    http://127.0.0.1:{o.prometheus_port}"]
            if o.prometheus and shutil.which("prometheus")
            else []
        ),
        *_mlflow(stack.tracking),
        f"  S3 + SQS      {stack.endpoint}   (bucket {o.bucket}, queue {QUEUE}, DLQ {DLQ})",
        f"  state         {o.state_dir}   (FLYWHEEL_STATE_DIR for the CLI; found without it from any folder)",
        *(f"  model         {name:12} {_model_state(name, version)}" for name, version in stack.models.items()),
        "",
        "Try, in another terminal (the CLI finds this stack by itself, from any folder):",
        "  .venv/bin/flywheel models                    # every model: versions, gate decisions, which serves",
        "  .venv/bin/flywheel sample-data --rows 20000 --seed 7 --drift 0.8 --out /tmp/drifted.csv",
        "  .venv/bin/flywheel drop /tmp/drifted.csv --model savings   # trained, gated, hot-reloaded",
        "  .venv/bin/flywheel rollback --model savings  # every replica follows within seconds",
        f'  curl -s -H "Authorization: Bearer $(cat {stack.keys.store.parent}/client.key)" '
        f"localhost:{o.api_port}/v1/models",
        "",
        "Ctrl-C stops everything; state is kept for the next `make up`.",
    ]
    return "\n".join(lines)


def _model_state(name: str, version: int | None) -> str:
    if version:
        return f"v{version} in production"
    return f"registered, no version yet: `flywheel drop FILE --model {name}` trains one"


def _mlflow(where: Tracking) -> list[str]:
    """The MLflow line: none when the mirror is off (`--no-mlflow`)."""
    if where.url is None:
        return []
    mirrored = "a run per retrain; registered models mirror the versions"
    return [f"  MLflow        {where.url}   ({mirrored if where.embedded else 'MLFLOW_TRACKING_URI: ' + mirrored})"]
