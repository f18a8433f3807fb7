"""The MLServer peer for bench/serve.py --peer mlserver: the same model.joblib behind MLServer + mlserver-sklearn.

The peer runs in its own virtualenv, made once and kept under .bench/ (which ignores itself in git), with
the same scikit-learn, numpy, pandas and joblib pins as requirements.txt, so both servers unpickle and run
the very same Pipeline. MLServer serves it through the Open Inference Protocol (V2) with the pandas codec
(`content_type: pd`) and adaptive batching on (max_batch_size 32, max_batch_time 5 ms). The same V2 body
goes to Flywheel's V2 path; Flywheel's own `/v1/predict` is measured beside them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._local import ROOT, api_key_env, free_port, start_api, wait_http

MLSERVER = "1.7.1"
VENV = ROOT / ".bench" / "mlserver-venv"
SHARED_PINS = ("scikit-learn", "numpy", "pandas", "joblib")
MAX_BATCH_SIZE, MAX_BATCH_TIME = 32, 0.005
# MLServer 1.7.1's inference workers call asyncio.get_event_loop() at start-up, which uvloop >= 0.22 turns
# into an error (every worker dies, the model never gets ready); 0.21 is the last uvloop it works with
PEER_EXTRA = ("uvloop==0.21.0",)


def _pins() -> list[str]:
    """Our pins of the libraries the model needs, from requirements.txt."""
    text = (ROOT / "requirements.txt").read_text()
    found = {m.group(1).lower(): m.group(0) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+", text, re.M)}
    return [found[name] for name in SHARED_PINS]


def ensure_venv() -> Path:
    """The peer's virtualenv (created once; rebuilt when our pins change). Returns its python."""
    wanted = [f"mlserver=={MLSERVER}", f"mlserver-sklearn=={MLSERVER}", *_pins(), *PEER_EXTRA]
    marker, python = VENV / "flywheel-pins.txt", VENV / "bin" / "python"
    if marker.exists() and marker.read_text().split() == wanted and python.exists():
        return python
    VENV.parent.mkdir(exist_ok=True)
    (VENV.parent / ".gitignore").write_text("*\n")
    print(f"creating {VENV.relative_to(ROOT)}: {' '.join(wanted)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    marker.write_text("\n".join(wanted))
    return python


def start(model_path: Path, workdir: Path, name: str, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """MLServer on a free port serving model_path as `name`; returns the process and its infer URL."""
    python = ensure_venv()
    models = workdir / "mlserver"
    (models / name).mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "debug": False,
                "parallel_workers": workers}  # fmt: skip
    (models / "settings.json").write_text(json.dumps(settings))
    (models / name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": str(model_path)},
                "max_batch_size": MAX_BATCH_SIZE,
                "max_batch_time": MAX_BATCH_TIME,
            }
        )
    )
    proc = subprocess.Popen(
        [str(python.parent / "mlserver"), "start", str(models)],
        cwd=models,
        env={**os.environ, "PYTHONPATH": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/v2/models/{name}/ready", timeout=180)
    return proc, f"{base}/v2/models/{name}/infer"


def v2_body(schema: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One V2 tensor per feature (pandas codec); rows must have no nulls (a V2 FP64 tensor has no null)."""
    inputs = []
    for f in schema.features:
        data = [r[f.name] for r in rows]
        datatype = "FP64" if f.type == "numeric" else "BYTES"
        if f.type == "numeric":
            data = [float(v) for v in data]
        inputs.append({"name": f.name, "shape": [len(rows)], "datatype": datatype, "data": data})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def compare(
    wrk: Callable[[str, str, int, int], dict[str, float]],
    targets: dict[str, str],
    bodies: dict[str, dict[str, Path]],
    seconds: int,
    open_conns: int = 0,
) -> dict[tuple[str, str], dict[str, float]]:
    """wrk each target at each load; `bodies[target][kind]` with kind 'one' or 'batch'. Prints the table; with
    `open_conns`, each target's open-loop latency at 50% / 80% of its own c=64 req/s (bench/open_loop.py); before
    and after, how steady the machine's CPU is (bench/machine.py)."""
    from bench import machine, open_loop

    print(machine.describe(), flush=True)  # how steady the CPU is that the figures below come from
    loads = (("1 row, c=1", "one", 1, 1), ("1 row, c=16", "one", 16, 1), ("1 row, c=64", "one", 64, 1),
             ("1000 rows, c=1", "batch", 1, 1000), ("1000 rows, c=4", "batch", 4, 1000))  # fmt: skip
    print(f"\n{'server':16} {'load':>15} {'req/s':>9} {'rows/s':>10} {'p50 ms':>8} {'p99 ms':>9} {'errors':>6}")
    results: dict[tuple[str, str], dict[str, float]] = {}
    open_results: dict[str, tuple[float, open_loop.Points]] = {}
    for label, kind, conns, per in loads:
        for name, url in targets.items():
            body = str(bodies[name][kind])
            wrk(url, body, conns, 2)  # warm-up
            r = results[(name, label)] = wrk(url, body, conns, seconds)
            print(f"{name:16} {label:>15} {r['rps']:9.0f} {r['rps'] * per:10.0f} {r['p50']:8.2f} {r['p99']:9.2f} "
                  f"{r['errors']:6.0f}", flush=True)  # fmt: skip
            if open_conns and kind == "one" and conns == 64:  # its capacity, measured just now
                points = open_loop.at_fractions(url, str(bodies[name]["one"]), r["rps"], seconds, open_conns)
                open_results[name] = (r["rps"], points)
    print(f"\nratio to mlserver (req/s; adaptive batching {MAX_BATCH_SIZE} / {MAX_BATCH_TIME * 1000:g} ms):")
    for label, *_ in loads:
        peer = results[("mlserver", label)]["rps"]
        parts = [f"{n} {results[(n, label)]['rps'] / peer:5.1f}x" for n in targets if n != "mlserver" and peer > 0]
        print(f"  {label:>15}: " + ", ".join(parts))
    if open_results:
        open_loop.print_table(open_results, seconds, open_conns)
    print(machine.describe(), flush=True)
    return results


def run(
    wrk: Callable[[str, str, int, int], dict[str, float]],
    seconds: int,
    bucket: str,
    model_path: Path,
    tmp: Path,
    procs: list[subprocess.Popen[bytes]],
    processes: int = 1,
    open_conns: int = 32,
    peer_processes: int | None = None,
) -> int:
    """Flywheel (/v1/predict and V2 infer) vs MLServer on the same model.joblib and the same rows; then, unless
    `open_conns` is 0, each one's open-loop latency at 50% / 80% of its own c=64 req/s (bench/open_loop.py)."""
    from flywheel.data.sample_data import savings
    from flywheel.schema import load_schema

    schema = load_schema("savings")
    frame = savings(1500, seed=5).drop(columns=["monthly_savings"])
    rows = json.loads(frame[frame["credit_score"].notna()].head(1000).to_json(orient="records"))
    bodies: dict[str, dict[str, Path]] = {"flywheel v1": {}, "flywheel v2": {}}
    for kind, part in (("one", rows[:1]), ("batch", rows)):
        for name, doc in (("flywheel v1", {"instances": part}), ("flywheel v2", v2_body(schema, part))):
            bodies[name][kind] = tmp / f"{name.replace(' ', '-')}-{kind}.json"
            bodies[name][kind].write_text(json.dumps(doc))
    bodies["mlserver"] = bodies["flywheel v2"]  # the very same V2 body
    api_port = free_port()
    procs.append(
        start_api(bucket, api_port, workers=processes, FLYWHEEL_POLL_INTERVAL_SECONDS="1", **api_key_env(tmp))
    )  # API keys on, and captures (the default), as in production
    peer_processes = processes if peer_processes is None else peer_processes
    mlserver, infer_url = start(model_path, tmp, "savings", workers=peer_processes)
    print(f"processes: flywheel serve --workers {processes}; mlserver parallel_workers {peer_processes}")
    procs.append(mlserver)
    base = f"http://127.0.0.1:{api_port}"
    targets = {"flywheel v1": f"{base}/v1/predict", "flywheel v2": f"{base}/v2/models/savings/infer",
               "mlserver": infer_url}  # fmt: skip
    print(exactness(base, bucket, rows, schema), flush=True)
    compare(wrk, targets, bodies, seconds, open_conns)
    return 0


def exactness(base: str, bucket: str, rows: list[dict[str, Any]], schema: Any) -> str:
    """Flywheel's answers over HTTP (/v1 and V2) against the Pipeline's own, bitwise, and the path that served."""
    import urllib.request

    import pandas as pd

    from flywheel.registry.model_loading import open_version
    from flywheel.registry.store import Registry
    from flywheel.storage import s3_client

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {os.environ['BENCH_API_KEY']}"}

    def call(path: str, doc: Any = None) -> Any:
        data = None if doc is None else json.dumps(doc).encode()
        with urllib.request.urlopen(urllib.request.Request(base + path, data=data, headers=headers)) as r:
            return json.loads(r.read())

    served = call("/v1/model")
    v1 = call("/v1/predict", {"instances": rows})["predictions"]
    v2 = call("/v2/models/savings/infer", v2_body(schema, rows))["outputs"][0]["data"]
    model = open_version(Registry(s3_client(), bucket, "savings"), served["version"], None).load_model()
    expected = model.predict(pd.DataFrame.from_records(rows, columns=schema.feature_names)).tolist()
    differ = [sum(a != b for a, b in zip(got, expected, strict=True)) for got in (v1, v2)]
    return (f"exactness: {len(rows)} rows, /v1 {differ[0]} and V2 {differ[1]} differ from the Pipeline (bitwise); "
            f"serving path {served['serving_path']}: {served['fast_path']}")  # fmt: skip
