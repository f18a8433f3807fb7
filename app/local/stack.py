"""`flywheel up`: start the embedded S3 + SQS, wire them like the cloud stack, run worker, replicas, UI."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.local.access import ensure_local_keys
from app.local.banner import DLQ, QUEUE, banner
from app.local.identity import local_identity
from app.local.probes import all_served, http_ok, served, wait
from app.local.seed import register_and_seed
from app.local.state import Mirror, keep_private
from flywheel.cli.stack_env import write_stack_file

log = logging.getLogger("flywheel.up")
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Options:
    state_dir: Path
    bucket: str = "flywheel-local"
    model_name: str = "savings"
    schema: str = "savings"
    s3_port: int = 4566
    api_port: int = 8080
    replicas: int = 2
    ui_port: int = 8501
    prometheus_port: int = 9090
    metrics_port: int = 9464  # the first replica's /metrics port (others follow)
    ui: bool = True
    prometheus: bool = True
    seed: bool = True
    demo_models: tuple[str, ...] = ("savings", "churn")  # registered and seeded beside the default model
    debounce: float = 2.0
    max_receive_count: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)


def _say(msg: str) -> None:
    print(f"[flywheel up] {msg}", flush=True)


class LocalStack:
    def __init__(self, opts: Options) -> None:
        self.o = opts
        keep_private(opts.state_dir)  # keys, tokens, data and models: this user's only (before anything is written)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs = opts.state_dir / "logs"
        self.endpoint = f"http://127.0.0.1:{opts.s3_port}"
        self.env = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FLYWHEEL_BUCKET": opts.bucket,
            "FLYWHEEL_MODEL_NAME": opts.model_name,
            "FLYWHEEL_SCHEMA": opts.schema,
            "FLYWHEEL_POLL_INTERVAL_SECONDS": "2",
            # training shares two cores with the replicas: OpenMP across both, under contention, is ~40x
            # slower than one thread (measured 132 s vs 3.3 s for 5k rows); the Lambda keeps all its vCPUs
            "FLYWHEEL_TRAIN_THREADS": os.environ.get("FLYWHEEL_TRAIN_THREADS", "1"),
            "FLYWHEEL_API_URL": f"http://127.0.0.1:{opts.api_port}",
            "PYTHONUNBUFFERED": "1",
            **opts.extra_env,
        }
        os.environ.update({k: self.env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                    "AWS_REGION", "AWS_DEFAULT_REGION")})  # fmt: skip
        self.mirror: Mirror | None = None
        self.stack_file: Path | None = None
        # the trainer's signing key pair (made once, kept with the state; .flywheel/ is git-ignored)
        self.signing_key = opts.state_dir / "signing" / "trainer-key.pem"
        self.verify_key = opts.state_dir / "signing" / "trainer-key.pub.pem"
        self.keys = ensure_local_keys(opts.state_dir)  # API keys, checked as in the cloud (app/local/access.py)
        self.env.update({"FLYWHEEL_API_AUTH": "api-keys", "FLYWHEEL_API_KEYS_FILE": str(self.keys.store)})
        self._stop = threading.Event()
        # UI sign-in: local identity tokens, an operator and a viewer URL in the banner (app/local/identity.py)
        self.identity = local_identity(opts.state_dir)
        self.env.update(self.identity.ui_env())

    # -- processes ---------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = (self.logs / f"{name}.log").open("ab")
        # own session: Ctrl-C reaches only `up`, which then stops the children in order (S3 synced last)
        proc = subprocess.Popen(
            args, cwd=ROOT, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.procs.append((name, proc))
        return proc

    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.o.api_port + i}" for i in range(self.o.replicas)]

    def metrics_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.o.metrics_port + i}" for i in range(self.o.replicas)]

    # -- start -------------------------------------------------------------------------------------
    def start(self) -> None:
        o = self.o
        o.state_dir.mkdir(parents=True, exist_ok=True)
        _say(f"state in {o.state_dir} (logs in {self.logs})")
        self._signing_keys()
        _say(f"1/5 embedded S3 + SQS (moto) on {self.endpoint}")
        moto = self._spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(o.s3_port)])
        wait("moto", lambda: http_ok(self.endpoint + "/moto-api/data.json"), 30, moto)
        queue_url = self._wire()
        _say("2/5 trainer worker (the Lambda handler, fed by the queue)")
        # as in the cloud: a busy lock re-queues a delayed retrain; a retrain too big for a Lambda's limits is
        # handed to a job, here a local `flywheel retrain` process
        self.env.update({"FLYWHEEL_QUEUE_URL": queue_url, "FLYWHEEL_OFFLOAD": "process"})
        self._spawn("worker", [sys.executable, "-m", "app.local.worker", "--queue-url", queue_url,
                               "--debounce", str(o.debounce)],
                    env={"FLYWHEEL_SIGNING_KEY_FILE": str(self.signing_key)})  # fmt: skip
        _say(f"3/5 {o.replicas} API replica(s)")
        apis = [
            self._spawn(
                f"api-{i}",
                [sys.executable, "-m", "flywheel.cli", "serve", "--host", "127.0.0.1", "--port", str(o.api_port + i)],
                # replicas serve signed versions only; each has a /metrics port of its own
                env={
                    "FLYWHEEL_VERIFY_PUBLIC_KEY_FILE": str(self.verify_key),
                    "FLYWHEEL_METRICS_PORT": str(o.metrics_port + i),
                },
            )
            for i in range(o.replicas)
        ]
        if o.ui:
            _say(f"4/5 Streamlit UI on http://127.0.0.1:{o.ui_port}")
            # the UI's own API key; the public key its Models page checks signatures with
            ui_env = {"FLYWHEEL_API_KEY": self.keys.ui_key, "FLYWHEEL_VERIFY_PUBLIC_KEY_FILE": str(self.verify_key)}
            self._spawn("ui", [sys.executable, "-m", "flywheel.cli", "ui", "--host", "127.0.0.1",
                               "--port", str(o.ui_port)], env=ui_env)  # fmt: skip
        if o.prometheus:
            self._start_prometheus()
        for url, proc in zip(self.api_urls(), apis, strict=True):
            wait(f"API {url}", lambda url=url: http_ok(url + "/healthz"), 60, proc)
        _say("5/5 waiting for a model to serve (first start trains on the seed batch: ~10-30 s)")
        started = time.monotonic()
        for url, proc in zip(self.api_urls(), apis, strict=True):
            wait(f"a model on {url}", lambda url=url: http_ok(url + "/readyz"), 300, proc)
            if o.seed:  # every seeded model trains in turn: wait for the last one too
                wait(f"every model on {url}", lambda url=url: all_served(url, self.keys.client_key), 300, proc)
        _say(f"ready in {time.monotonic() - started:.0f}s")
        print(banner(self), flush=True)

    def _signing_keys(self) -> None:
        """A P-256 key pair for signed versions, made on the first start (the private key file is mode 0600)."""
        from flywheel.registry.signing import generate_key_pair

        if self.signing_key.exists() and self.verify_key.exists():
            return
        self.signing_key.unlink(missing_ok=True)
        generate_key_pair(self.signing_key, self.verify_key)
        _say(f"new signing key pair in {self.signing_key.parent} (versions signed by an earlier key are refused)")

    def _wire(self) -> str:
        """Bucket (versioned), queue + DLQ, notifications data/ and feedback/ -> queue: as the CDK stack wires them."""
        from flywheel.feedback.labels import FEEDBACK_PREFIX
        from flywheel.storage import s3_client, sqs_client

        o = self.o
        s3, sqs = s3_client(), sqs_client()
        s3.create_bucket(Bucket=o.bucket)
        s3.put_bucket_versioning(Bucket=o.bucket, VersioningConfiguration={"Status": "Enabled"})
        self.mirror = Mirror(s3, o.bucket, o.state_dir)
        restored = self.mirror.restore()
        dlq_url = sqs.create_queue(QueueName=DLQ)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = f'{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{o.max_receive_count}"}}'
        url = sqs.create_queue(QueueName=QUEUE, Attributes={"VisibilityTimeout": "60", "RedrivePolicy": redrive})[
            "QueueUrl"
        ]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        # batches under data/ and label files under feedback/ (processed on arrival, docs/captures.md): one queue
        s3.put_bucket_notification_configuration(
            Bucket=o.bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                    }
                    for prefix in ("data/", FEEDBACK_PREFIX)
                ]
            },
        )
        if restored:
            _say(f"restored {restored} object(s) from the state directory")
        wanted = {o.model_name: o.schema, **{n: n for n in o.demo_models if n != o.model_name}}
        register_and_seed(s3, o.bucket, wanted, seed=o.seed and not restored, say=_say)
        self.stack_file = write_stack_file(o.state_dir, {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": self.env["AWS_SECRET_ACCESS_KEY"], "AWS_REGION": "us-east-1",
            "FLYWHEEL_BUCKET": o.bucket, "FLYWHEEL_MODEL_NAME": o.model_name,
            "FLYWHEEL_API_URL": f"http://127.0.0.1:{o.api_port}",
            "FLYWHEEL_SIGNING_KEY_FILE": str(self.signing_key),  # `flywheel retrain` here signs like the worker
            "FLYWHEEL_API_KEYS_FILE": str(self.keys.store),  # `flywheel apikey` manages this stack's keys
            "FLYWHEEL_VERIFY_PUBLIC_KEY_FILE": str(self.verify_key),  # `flywheel models` checks signatures
        })  # fmt: skip
        return str(url)

    def _start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        if not binary:
            _say("prometheus not installed: skipping local Prometheus (apt-get install prometheus)")
            return
        conf = self.o.state_dir / "prometheus.yml"
        targets = ", ".join(f'"{u.removeprefix("http://")}"' for u in self.metrics_urls())
        rules = ROOT / "monitoring" / "prometheus" / "rules.yaml"
        conf.write_text(
            "global: {scrape_interval: 5s, evaluation_interval: 5s}\n"
            + (f"rule_files: ['{rules}']\n" if rules.exists() else "")
            + f"scrape_configs:\n  - job_name: flywheel-api\n    static_configs: [{{targets: [{targets}]}}]\n"
        )
        self._spawn("prometheus", [binary, f"--config.file={conf}",
                                   f"--storage.tsdb.path={self.o.state_dir / 'prometheus'}",
                                   f"--web.listen-address=127.0.0.1:{self.o.prometheus_port}"])  # fmt: skip
        _say(f"   Prometheus on http://127.0.0.1:{self.o.prometheus_port} (rules from monitoring/)")

    # -- run / stop --------------------------------------------------------------------------------
    def watch(self) -> None:
        """Until stopped: mirror S3 to disk, report version changes, notice crashed children."""
        last: dict[str, int | None] = {}
        while not self._stop.wait(3):
            if self.mirror:
                try:
                    self.mirror.sync()
                except Exception as e:  # a sync failure must not stop the stack
                    log.warning("state sync failed: %s", e)
            for name, proc in self.procs:
                if proc.poll() is not None:
                    _say(f"{name} exited with status {proc.returncode}: see {self.logs / (name + '.log')}")
                    self._stop.set()
            versions = {u: served(u, self.keys.client_key) for u in self.api_urls()}
            if versions != last and all(v is not None for v in versions.values()):
                _say("serving " + ", ".join(f"{u.rsplit(':', 1)[1]}: v{v}" for u, v in versions.items()))
            last = versions

    def stop(self) -> None:
        self._stop.set()
        if self.stack_file is not None:
            self.stack_file.unlink(missing_ok=True)  # the CLI no longer finds a stack that is not running
        # everything but the embedded S3 stops at once (one grace period for all, not one each), then the
        # state is synced a last time and the S3 stops
        started = time.monotonic()
        others = [(n, p) for n, p in reversed(self.procs) if n != "moto"]
        self._terminate(others)
        _say(f"processes stopped in {time.monotonic() - started:.1f} s; saving the state")
        if self.mirror is not None:
            try:
                self.mirror.sync()
            except Exception as e:
                log.warning("final state sync failed: %s", e)
        self._terminate([(n, p) for n, p in self.procs if n == "moto"])
        _say(f"stopped ({time.monotonic() - started:.1f} s)")

    @staticmethod
    def _terminate(procs: list[tuple[str, subprocess.Popen[bytes]]], grace: float = 25) -> None:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing its process group", name, grace)
            # each child leads its own session: take down anything it started too (streamlit under `ui`)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def up(opts: Options) -> int:
    stack = LocalStack(opts)
    signal.signal(signal.SIGTERM, lambda *_: stack._stop.set())
    # Ctrl-C stops everything, even when the shell that started us ignored SIGINT (a background job's is ignored
    # and children inherit that: a stack started with `&` could otherwise never be stopped with SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack.start()
        stack.watch()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        _say(f"error: {e}")
        return 1
    finally:
        stack.stop()
    return 0
