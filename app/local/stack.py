"""`flywheel up`: start the embedded S3 + SQS, wire them like the cloud stack, run worker, replicas, UI, MLflow."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from app.local.access import ensure_local_keys, ensure_signing_keys
from app.local.banner import banner
from app.local.children import Children, launched_at
from app.local.identity import local_identity
from app.local.probes import busy_ports, http_ok, served, wait, wait_for_models
from app.local.seed import register_and_seed, wire_queue
from app.local.services import TRACKING, start_mlflow, start_prometheus, tracking, wait_mlflow
from app.local.state import Mirror, StackRunning, StateLock, keep_private
from flywheel.cli.stack_env import remove_stack_file, write_stack_file

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
    mlflow_port: int = 5000  # the embedded MLflow's (when MLFLOW_TRACKING_URI is not set already)
    ui: bool = True
    prometheus: bool = True
    mlflow: bool = True  # False: the MLflow mirror is off (MLFLOW_TRACKING_URI reaches no child)
    seed: bool = True
    demo_models: tuple[str, ...] = ("savings", "churn")  # registered and seeded beside the default model
    debounce: float = 2.0
    max_receive_count: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)


AWS_IDENTITY = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
                "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"}  # fmt: skip


def _say(msg: str) -> None:
    print(f"[flywheel up] {msg}", flush=True)


class LocalStack:
    def __init__(self, opts: Options, launched: float | None = None) -> None:
        self.o = opts
        self.launched = launched or time.time()
        keep_private(opts.state_dir)  # keys, tokens, data and models: this user's only (before anything is written)
        self.logs = opts.state_dir / "logs"
        self.endpoint = f"http://127.0.0.1:{opts.s3_port}"
        # the embedded S3 takes any credentials: fixed local ones, so real ones in this terminal never reach the
        # children or stack.json
        inherited = {k: v for k, v in os.environ.items() if k not in AWS_IDENTITY | {TRACKING}}
        self.tracking = tracking(opts.mlflow, opts.mlflow_port, dict(os.environ))
        self.env = {
            **inherited,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
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
            # a key made with `flywheel apikey create` (or `flywheel traffic`) works within seconds here
            "FLYWHEEL_API_KEYS_REFRESH_SECONDS": os.environ.get("FLYWHEEL_API_KEYS_REFRESH_SECONDS", "3"),
            # replicas publish rollout statistics every 5 s here (15 s in the cloud): the judge sees fresh figures
            "FLYWHEEL_ROLLOUT_PUBLISH_SECONDS": os.environ.get("FLYWHEEL_ROLLOUT_PUBLISH_SECONDS", "5"),
            # captures reach the bucket within 5 s here (30 s in the cloud): a label can follow its prediction soon
            "FLYWHEEL_CAPTURE_FLUSH_SECONDS": os.environ.get("FLYWHEEL_CAPTURE_FLUSH_SECONDS", "5"),
            "PYTHONUNBUFFERED": "1",
            # the worker (trainer, judge, offloaded retrains) mirrors each retrain; the UI links versions to runs
            **({TRACKING: self.tracking.url} if self.tracking.url else {}),
            **opts.extra_env,
        }
        for k in AWS_IDENTITY:
            os.environ.pop(k, None)
        os.environ.update({k: self.env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                    "AWS_REGION", "AWS_DEFAULT_REGION")})  # fmt: skip
        self.mirror: Mirror | None = None
        self.children = Children(ROOT, self.logs, self.env)
        self.models: dict[str, int | None] = {}  # every registered model -> the version it serves (None: none yet)
        # the trainer's signing key pair (made once, kept with the state; .flywheel/ is git-ignored)
        self.signing_key = opts.state_dir / "signing" / "trainer-key.pem"
        self.verify_key = opts.state_dir / "signing" / "trainer-key.pub.pem"
        self.keys = ensure_local_keys(opts.state_dir)  # API keys, checked as in the cloud (app/local/access.py)
        self.env.update({"FLYWHEEL_API_AUTH": "api-keys", "FLYWHEEL_API_KEYS_FILE": str(self.keys.store)})
        self._stop = threading.Event()
        # UI sign-in: local identity tokens, an operator and a viewer URL in the banner (app/local/identity.py)
        self.identity = local_identity(opts.state_dir)
        self.env.update(self.identity.ui_env())

    def api_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.o.api_port + i}" for i in range(self.o.replicas)]

    def metrics_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.o.metrics_port + i}" for i in range(self.o.replicas)]

    # -- start -------------------------------------------------------------------------------------
    def start(self) -> None:
        o = self.o
        o.state_dir.mkdir(parents=True, exist_ok=True)
        _say(f"state in {o.state_dir} (logs in {self.logs})")
        ensure_signing_keys(self.signing_key, self.verify_key, _say)
        if self.tracking.embedded:  # first: it takes the longest to answer (~7 s), and needs nothing else
            start_mlflow(self.children, o.state_dir, self.tracking.port, _say)
        _say(f"1/5 embedded S3 + SQS (moto) on {self.endpoint}")
        moto = self.children.spawn(
            "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(o.s3_port)]
        )
        wait("moto", lambda: http_ok(self.endpoint + "/moto-api/data.json"), 30, moto)
        queue_url, seeded = self._wire()
        _say("2/5 trainer worker (the Lambda handler, fed by the queue)")
        # as in the cloud: a busy lock re-queues a delayed retrain; a retrain too big for a Lambda's limits is
        # handed to a job, here a local `flywheel retrain` process
        self.env.update({"FLYWHEEL_QUEUE_URL": queue_url, "FLYWHEEL_OFFLOAD": "process"})
        # the judge every 15 s here (60 s in the cloud), so a demo canary is decided within its min_seconds; the
        # first retrain waits for the embedded MLflow (the seed versions mirrored too; less than the queue's 60 s
        # visibility timeout), the replicas and the UI do not
        self.children.spawn("worker", [sys.executable, "-m", "app.local.worker", "--queue-url", queue_url,
                               "--debounce", str(o.debounce), "--judge-interval", "15",
                               "--mlflow-wait", "45" if self.tracking.embedded else "0"],
                    env={"FLYWHEEL_SIGNING_KEY_FILE": str(self.signing_key)})  # fmt: skip
        _say(f"3/5 {o.replicas} API replica(s)")
        apis = [
            self.children.spawn(
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
            self.children.spawn("ui", [sys.executable, "-m", "flywheel.cli", "ui", "--host", "127.0.0.1",
                               "--port", str(o.ui_port)], env=ui_env)  # fmt: skip
        if o.prometheus:
            start_prometheus(self.children, o.state_dir, o.prometheus_port, self.metrics_urls(), _say)
        for url, proc in zip(self.api_urls(), apis, strict=True):
            wait(f"API {url}", lambda url=url: http_ok(url + "/healthz"), 60, proc)
        watched = [(n, p) for n, p in self.children.procs if n in ("worker", "mlflow") or n.startswith("api-")]
        self.models = wait_for_models(self.o.bucket, seeded, self.api_urls(), self.keys.client_key, watched, _say)
        wait_mlflow(self.children, self.tracking, _say)  # embedded: started first, answering long since
        _say(f"ready in {time.time() - self.launched:.0f} s (since `flywheel up` started)")
        print(banner(self), flush=True)

    def _wire(self) -> tuple[str, list[str]]:
        """Bucket (versioned), queue + DLQ, notifications data/ and feedback/ -> queue: as the CDK stack wires them."""
        from flywheel.storage import s3_client, sqs_client

        o = self.o
        s3, sqs = s3_client(), sqs_client()
        s3.create_bucket(Bucket=o.bucket)
        s3.put_bucket_versioning(Bucket=o.bucket, VersioningConfiguration={"Status": "Enabled"})
        mirror = Mirror(s3, o.bucket, o.state_dir)
        restored = mirror.restore()
        # only now may syncs delete files: an interrupted restore must not make the saved state look deleted
        self.mirror = mirror
        url = wire_queue(s3, sqs, o.bucket, o.max_receive_count)
        if restored:
            _say(f"restored {restored} object(s) from the state directory")
        wanted = {o.model_name: o.schema, **{n: n for n in o.demo_models if n != o.model_name}}
        seeded = register_and_seed(s3, o.bucket, wanted, seed=o.seed and not restored, say=_say)
        write_stack_file(o.state_dir, {
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": self.env["AWS_SECRET_ACCESS_KEY"], "AWS_REGION": "us-east-1",
            "FLYWHEEL_BUCKET": o.bucket, "FLYWHEEL_MODEL_NAME": o.model_name,
            "FLYWHEEL_API_URL": f"http://127.0.0.1:{o.api_port}",
            "FLYWHEEL_SIGNING_KEY_FILE": str(self.signing_key),  # `flywheel retrain` here signs like the worker
            "FLYWHEEL_API_KEYS_FILE": str(self.keys.store),  # `flywheel apikey` manages this stack's keys
            "FLYWHEEL_API_KEYS_REFRESH_SECONDS": self.env["FLYWHEEL_API_KEYS_REFRESH_SECONDS"],  # ... and says when
            "FLYWHEEL_VERIFY_PUBLIC_KEY_FILE": str(self.verify_key),  # `flywheel models` checks signatures
            # `flywheel promote` and the rest move MLflow's aliases too; `flywheel mlflow sync` finds it
            **self.tracking.for_cli(),
        })  # fmt: skip
        return str(url), seeded

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
            for name, code in self.children.exited():
                _say(f"{name} exited with status {code}: see {self.logs / (name + '.log')}")
                self._stop.set()
            versions = {u: served(u, self.keys.client_key) for u in self.api_urls()}
            if versions != last and all(v is not None for v in versions.values()):
                _say("serving " + ", ".join(f"{u.rsplit(':', 1)[1]}: v{v}" for u, v in versions.items()))
            last = versions

    def stop(self) -> None:
        self._stop.set()
        remove_stack_file(self.o.state_dir)  # the CLI no longer finds a stack that is not running
        # everything but the embedded S3 stops at once (one grace period for all, not one each), then the
        # state is synced a last time and the S3 stops
        started = time.monotonic()
        self.children.stop(lambda name: name != "moto")
        _say(f"processes stopped in {time.monotonic() - started:.1f} s; saving the state")
        if self.mirror is not None:
            try:
                self.mirror.sync()
            except Exception as e:
                log.warning("final state sync failed: %s", e)
        self.children.stop(lambda name: name == "moto")
        _say(f"stopped ({time.monotonic() - started:.1f} s)")


def up(opts: Options) -> int:
    launched = launched_at()
    os.umask(0o077)  # from the first file on (the lock): this user's only
    lock = StateLock(opts.state_dir)
    try:  # before anything is touched: a second `up` on the same state leaves the running one alone
        lock.acquire()
    except StackRunning as e:
        _say(f"error: {e}")
        return 1
    try:
        return _run(opts, launched)
    finally:
        lock.release()


def _run(opts: Options, launched: float) -> int:
    ports = {"embedded S3": opts.s3_port}
    ports |= {f"API replica {i + 1}": opts.api_port + i for i in range(opts.replicas)}
    ports |= {f"metrics of replica {i + 1}": opts.metrics_port + i for i in range(opts.replicas)}
    ports |= {"UI": opts.ui_port} if opts.ui else {}
    ports |= {"Prometheus": opts.prometheus_port} if opts.prometheus and shutil.which("prometheus") else {}
    ports |= {"MLflow": opts.mlflow_port} if tracking(opts.mlflow, opts.mlflow_port, dict(os.environ)).embedded else {}
    busy = busy_ports(ports)
    if busy:
        _say(f"error: port {', '.join(busy)} in use by another program: stop it, or choose other ports "
             "(flywheel up --help)")  # fmt: skip
        return 1
    # Ctrl-C and SIGTERM stop the stack in any phase (while it waits for a model too); ignored once stopping.
    # Installed explicitly: a shell's background job inherits SIGINT ignored, and Python would keep that.
    stopping = False

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    stack: LocalStack | None = None
    try:
        stack = LocalStack(opts, launched)
        stack.start()
        stack.watch()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        _say(f"error: {e}")
        return 1
    finally:
        stopping = True
        if stack is not None:
            stack.stop()
    return 0
