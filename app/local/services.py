"""The side services of `flywheel up`: the MLflow tracking server the mirror writes to, and Prometheus.

MLflow (flywheel/tracking/) is on when MLFLOW_TRACKING_URI is set. `up` uses the one already set in the environment;
else it starts its own, kept with the state (SQLite and the artifacts under `<state>/mlflow/`); `--no-mlflow`
turns the mirror off for every child.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.local.children import Children
from app.local.probes import http_ok, wait
from flywheel.cli.stack_env import HTTP_URL

ROOT = Path(__file__).resolve().parents[2]
TRACKING = "MLFLOW_TRACKING_URI"  # MLflow's own variable: the mirror, the UI's run links and the CLI read it


@dataclass(frozen=True)
class Tracking:
    """Where the stack's MLflow is: `url` None = the mirror is off; `embedded` = `up` runs it on `port`."""

    url: str | None
    embedded: bool = False
    port: int = 0

    def for_cli(self) -> dict[str, str]:
        """What stack.json carries: the URL, when one without credentials in it (the CLI takes http(s) only)."""
        if not (self.url and HTTP_URL.fullmatch(self.url)):
            return {}
        # the experiment and registered names the worker uses, so the CLI's runs and aliases land beside them
        names = {k: os.environ[k] for k in ("FLYWHEEL_MLFLOW_EXPERIMENT", "FLYWHEEL_MLFLOW_REGISTERED_PREFIX")
                 if os.environ.get(k)}  # fmt: skip
        return {TRACKING: self.url, **names}


def tracking(enabled: bool, port: int, environ: dict[str, str]) -> Tracking:
    """The user's MLFLOW_TRACKING_URI when set; else an embedded server on `port`; none with `--no-mlflow`."""
    if not enabled:
        return Tracking(None)
    if environ.get(TRACKING):
        return Tracking(environ[TRACKING])
    return Tracking(f"http://127.0.0.1:{port}", embedded=True, port=port)


def start_mlflow(children: Children, state_dir: Path, port: int, say: Callable[[str], None]) -> None:
    """`mlflow server` (tracking + registry in SQLite, artifacts served from a folder) on loopback, one worker."""
    root = state_dir / "mlflow"
    say(f"   MLflow on http://127.0.0.1:{port} (runs and registered models in {root})")
    root.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    # its job runner (GenAI scorers, prompt optimisation: nothing Flywheel logs) is eight more processes and
    # doubles the start-up (18 s instead of 7 on two cores)
    children.spawn("mlflow", args, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


def wait_mlflow(children: Children, where: Tracking, say: Callable[[str], None], timeout: float = 120) -> None:
    """The embedded MLflow answers /health (RuntimeError when it exits or does not within `timeout`); the user's
    is only asked once: down, it is named, and the stack starts anyway (the mirror tolerates it)."""
    if where.url is None:
        return
    if not where.embedded:
        if not http_ok(where.url.rstrip("/") + "/health"):
            say(f"warning: MLflow at {where.url} does not answer /health; retrains go on without it "
                "(`flywheel mlflow sync --model NAME` mirrors what it missed)")  # fmt: skip
        if not where.for_cli():
            say(f"note: {TRACKING} is not an http(s) URL without credentials: stack.json leaves it out, so the CLI "
                "in another terminal mirrors its promotions only with it exported")  # fmt: skip
        return
    proc = next(p for name, p in children.procs if name == "mlflow")
    wait("MLflow (see logs/mlflow.log; `flywheel up --no-mlflow` starts without it)",
         lambda: http_ok(f"{where.url}/health"), timeout, proc)  # fmt: skip


def start_prometheus(children: Children, state_dir: Path, port: int, targets: list[str],
                     say: Callable[[str], None]) -> None:  # fmt: skip
    """Prometheus scraping every replica's /metrics with the alert rules of monitoring/, when it is installed."""
    binary = shutil.which("prometheus")
    if not binary:
        say("prometheus not installed: skipping local Prometheus (apt-get install prometheus)")
        return
    conf = state_dir / "prometheus.yml"
    listed = ", ".join(f'"{u.removeprefix("http://")}"' for u in targets)
    rules = ROOT / "monitoring" / "prometheus" / "rules.yaml"
    conf.write_text(
        "global: {scrape_interval: 5s, evaluation_interval: 5s}\n"
        + (f"rule_files: ['{rules}']\n" if rules.exists() else "")
        + f"scrape_configs:\n  - job_name: flywheel-api\n    static_configs: [{{targets: [{listed}]}}]\n"
    )
    children.spawn("prometheus", [binary, f"--config.file={conf}", f"--storage.tsdb.path={state_dir / 'prometheus'}",
                                  f"--web.listen-address=127.0.0.1:{port}"])  # fmt: skip
    say(f"   Prometheus on http://127.0.0.1:{port} (rules from monitoring/)")
