"""One MLflow run per retrain, from the version's manifest (docs/mlflow.md): parameters, the gate's figures and
decision, lineage, data statistics, one child run per estimator tried, the manifest as an artifact and the model
in MLflow's sklearn flavor. Idempotent: a version whose run exists is found by its tags, not logged twice."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from flywheel.registry.manifest import sha256
from flywheel.tracking.mlflow_client import Mirror

ROLE_TAG, MODEL_TAG, VERSION_TAG = "flywheel.role", "flywheel.model", "flywheel.version"
MAX_PARAM = 500  # MLflow refuses longer parameter values


def _flat(prefix: str, values: dict[str, Any] | None) -> dict[str, float]:
    return {f"{prefix}.{k}": float(v) for k, v in (values or {}).items() if isinstance(v, int | float)}


def _params(manifest: dict[str, Any]) -> dict[str, str]:
    data, gate = manifest.get("data", {}), manifest.get("gate", {})
    params = {
        "estimator": manifest.get("estimator"),
        "task": manifest.get("task"),
        "window_rows": data.get("window_rows"),
        "schema_sha256": _schema_hash(manifest),
        "data_fingerprint": data.get("fingerprint"),
        "gate.primary_metric": gate.get("primary_metric"),
        "gate.tolerance": gate.get("tolerance"),
        "gate.min_score": gate.get("min_score"),
        "gate.production_version": gate.get("production_version"),
        "batches": len(data.get("batches", [])),
        **{f"hyperparameter.{k}": v for k, v in (manifest.get("hyperparameters") or {}).items()},
        **{f"library.{k}": v for k, v in (manifest.get("libraries") or {}).items()},
    }
    return {k: str(v)[:MAX_PARAM] for k, v in params.items() if v is not None}


def _schema_hash(manifest: dict[str, Any]) -> str:
    return sha256(json.dumps(manifest.get("schema", {}), sort_keys=True).encode())


def _metrics(manifest: dict[str, Any]) -> dict[str, float]:
    m, data = manifest.get("metrics", {}), manifest.get("data", {})
    out = {**_flat("holdout.candidate", m.get("candidate")), **_flat("holdout.baseline", m.get("baseline")),
           **_flat("holdout.production", m.get("production"))}  # fmt: skip
    out.update({f"data.{k}": float(data[k]) for k in ("rows", "train_rows", "holdout_rows") if k in data})
    out["data.batches"] = float(len(data.get("batches", [])))
    out["data.left_out"] = float(len(data.get("left_out", [])))
    out["data.duplicate_rows"] = float(sum(b.get("duplicate_rows", 0) for b in data.get("batches", [])))
    for name, profile in (manifest.get("feature_stats") or {}).items():
        for k in ("mean", "std", "min", "max", "missing"):
            if isinstance(profile.get(k), int | float):
                out[f"feature.{name}.{k}"] = float(profile[k])
    out["training_seconds"] = float(manifest.get("training_seconds", 0.0))
    return out


def _batch(
    mirror: Mirror, run_id: str, metrics: dict[str, float], params: dict[str, str], tags: dict[str, str]
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    stamp = 0
    mirror.call(
        "log the run's figures",
        mirror.client.log_batch,
        run_id,
        metrics=[Metric(k, v, stamp, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def experiment_id(mirror: Mirror, model: str) -> str:
    name = mirror.experiment_name(model)
    found = mirror.call("find the experiment", mirror.client.get_experiment_by_name, name)
    if found is not None:
        return str(found.experiment_id)
    return str(mirror.call("create the experiment", mirror.client.create_experiment, name))


def find_run(mirror: Mirror, model: str, version: int) -> Any | None:
    """The retrain run of `model` v`version`, None when it was never logged (or not finished)."""
    exp = experiment_id(mirror, model)
    query = f"tags.`{ROLE_TAG}` = 'retrain' and tags.`{MODEL_TAG}` = '{model}' and tags.`{VERSION_TAG}` = '{version}'"
    runs = mirror.call("find the run", mirror.client.search_runs, [exp], filter_string=query, max_results=5)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    return finished[0] if finished else None


def log_retrain(mirror: Mirror, model: str, version: int, manifest: dict[str, Any], fitted: Any) -> Any:
    """The run of `model` v`version` (logged now unless it exists), with the model under its `model/` artifacts."""
    existing = find_run(mirror, model, version)
    if existing is not None:
        return existing
    exp = experiment_id(mirror, model)
    gate = manifest.get("gate", {})
    tags = {
        ROLE_TAG: "retrain",
        MODEL_TAG: model,
        VERSION_TAG: str(version),
        "flywheel.gate": "approved" if manifest.get("status") == "promoted" else "rejected",
        "flywheel.sha256": str(manifest.get("sha256", "")),
        "mlflow.note.content": "\n".join(gate.get("reasons", []))[:5000],
    }
    run = mirror.call("create the run", mirror.client.create_run, exp, run_name=f"{model} v{version}", tags=tags)
    run_id = run.info.run_id
    _batch(mirror, run_id, _metrics(manifest), _params(manifest), {})
    for estimator, cv in (manifest.get("cv_scores") or {}).items():
        chosen = str(estimator == manifest.get("estimator"))
        child_tags = {"mlflow.parentRunId": run_id, ROLE_TAG: "candidate", MODEL_TAG: model,
                      VERSION_TAG: str(version), "flywheel.chosen": chosen}  # fmt: skip
        child = mirror.call("create a candidate's run", mirror.client.create_run, exp, run_name=estimator,
                            tags=child_tags)  # fmt: skip
        figures = {f"cv.{gate.get('primary_metric', 'score')}": float(cv)}
        if estimator == manifest.get("estimator"):
            figures |= _flat("holdout", manifest.get("metrics", {}).get("candidate"))
        _batch(mirror, child.info.run_id, figures, {"estimator": estimator}, {})
        mirror.call("finish a candidate's run", mirror.client.set_terminated, child.info.run_id, "FINISHED")
    kept = {k: v for k, v in manifest.items() if k != "golden"}  # the golden rows are data, not metadata
    mirror.call("log the manifest", mirror.client.log_dict, run_id, kept, "manifest.json")
    _log_model(mirror, run_id, fitted, manifest)
    mirror.call("finish the run", mirror.client.set_terminated, run_id, "FINISHED")
    return mirror.call("read the run", mirror.client.get_run, run_id)


def _log_model(mirror: Mirror, run_id: str, fitted: Any, manifest: dict[str, Any]) -> None:
    """The fitted Pipeline in MLflow's sklearn flavor under the run's `model/` (requirements from the manifest,
    so MLflow does not infer them by loading the model in a subprocess)."""
    import mlflow.sklearn

    libs = manifest.get("libraries") or {}
    requirements = [f"{pkg}=={libs[key]}" for key, pkg in (("scikit-learn", "scikit-learn"), ("numpy", "numpy"),
                    ("pandas", "pandas"), ("joblib", "joblib")) if key in libs]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="flywheel-mlflow-") as tmp:
        path = Path(tmp) / "model"
        # cloudpickle, as MLflow users load sklearn models; Flywheel's own copy stays the signed, verified artifact
        mirror.call("save the model", mlflow.sklearn.save_model, fitted, str(path), pip_requirements=requirements,
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)  # fmt: skip
        mirror.call("upload the model", mirror.client.log_artifacts, run_id, str(path), "model")
