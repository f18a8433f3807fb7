"""One retrain: validate new batches, train a candidate on the window, gate it, publish it. Every runner calls this."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Literal, cast

import pandas as pd

from flywheel.clock import now_iso
from flywheel.data.batch_store import Quarantined, model_batches
from flywheel.data.catalog import Catalog, Entry, MissingCopy
from flywheel.data.ingest import Ingested, ingest
from flywheel.errors import FlywheelError, ModelVerificationError
from flywheel.jobs.run_resources import WORKDIR_PREFIX, lock_ttl, remove_stale_workdirs, resources
from flywheel.registry import registrations, signing
from flywheel.registry.manifest import (
    MANIFEST_FORMAT,
    check_libraries,
    dump_model,
    library_versions,
    outputs,
    records,
    sha256,
)
from flywheel.registry.model_loading import open_version
from flywheel.registry.signing import Verifier
from flywheel.registry.store import Alias, Registry
from flywheel.release import rollout_actions
from flywheel.release.promotion import decided_against, pending_release, release
from flywheel.release.rollout_state import load as load_rollout
from flywheel.schema import Schema
from flywheel.settings import TrainerSettings
from flywheel.tracking.mirror import after_retrain
from flywheel.training import drift
from flywheel.training.gate import PRIMARY_METRIC, decide
from flywheel.training.pipelines import fingerprint, fit_candidate, holdout_mask, naive_baseline, score
from flywheel.training.window import training_window

log = logging.getLogger(__name__)

# "approved": the gate passed but the alias was left where an operator put it meanwhile
# "rollout": approved and handed to a shadow or canary rollout, judged on live traffic before it serves all
Status = Literal["promoted", "approved", "rollout", "rejected", "unchanged", "no-data"]
#: how a gate reason starts when production's signature did not verify (the Lambda counts these: an alarm)
UNVERIFIED_PRODUCTION = "production signature not verified:"
MIRROR_MARGIN_SECONDS = 20  # the MLflow mirror stops this long before the caller's deadline


@dataclass
class Outcome:
    """What a retrain did; the Lambda turns it into logs and metrics."""

    status: Status
    model: str = ""
    version: int | None = None
    production_version: int | None = None
    rows: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    left_out: list[dict[str, Any]] = field(default_factory=list)  # accepted batches outside the window
    validated_batches: int = 0  # batches validated in this run; the others came from validated/
    metrics: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    # the production version's signature did not verify: the gate compared against the baseline only (alarmed)
    production_unverified: bool = False
    mlflow: str = ""  # the MLflow mirror: "" off, "mirrored", or why it stopped (counted: MlflowMirrorFailed)
    duration_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: validate, train, publish

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _production(
    schema: Schema, registry: Registry, alias: Alias | None, verifier: Verifier | None
) -> tuple[Any, dict[str, Any] | None, list[str]]:
    """The model behind the alias, or None (with why) when there is none or it cannot be trusted here. Its
    signature is checked with the trainer's own key before anything of it is read, let alone unpickled: a version
    the trainer did not sign is compared against by nobody (the gate falls back to the baseline, and says so)."""
    if alias is None:
        return None, None, []
    try:
        opened = open_version(registry, alias.version, verifier)
    except ModelVerificationError as e:
        note = f"{UNVERIFIED_PRODUCTION} v{alias.version}: {e.message}; compared against the baseline only"
        return None, None, [note]
    manifest = opened.manifest
    if manifest.get("schema", {}).get("features") != schema.model_dump(mode="json")["features"]:
        return None, manifest, [f"production v{alias.version} has another schema: not compared"]
    try:
        check_libraries(manifest["libraries"])
        model = opened.load_model()
    except (ModelVerificationError, FlywheelError) as e:
        return None, manifest, [f"production v{alias.version} unusable here: {e.message}"]
    return model, manifest, []


def _frames(
    catalog: Catalog, chosen: list[Entry], schema: Schema, workdir: Path, refresh: Callable[[], Ingested]
) -> pd.DataFrame:
    """The window's rows from the validated copies; a copy gone or altered is re-made from its CSV once."""

    def load() -> pd.DataFrame:
        entries = [catalog.entries.get(e.key, e) for e in chosen]
        return pd.concat([catalog.frame(e, schema, workdir) for e in entries], ignore_index=True)

    try:
        return load()
    except MissingCopy as e:
        log.warning("%s: validating the batch again", e.message, extra={"file": e.key})
        catalog.forget(e.key)
    refresh()
    return load()


def retrain(
    settings: TrainerSettings,
    s3: Any,
    *,
    model: str | None = None,
    actor: str = "trainer",
    deadline: float | None = None,
    adopt_lock: str | None = None,
) -> Outcome:
    """Bring model `model`'s validated cache up to date, train on its window, gate, publish, move its alias.

    `model` defaults to the settings' model (FLYWHEEL_MODEL_NAME); its schema is its registration's.
    `deadline` (epoch seconds) is when the caller will be stopped (a Lambda's timeout): the lock expires then.
    `adopt_lock` is the token of a lock claimed for this run by whoever handed it off (the Lambda).
    """
    started = time.monotonic()
    name = model or settings.model_name
    schema = registrations.schema_for(s3, settings, name)
    schema_sha = sha256(schema.model_dump_json().encode())
    registry = Registry(s3, settings.bucket, name, settings.models_prefix)
    store = model_batches(s3, settings, name)
    catalog = Catalog(s3, settings.bucket, f"{settings.validated_prefix}{name}/", schema_sha).load()
    remove_stale_workdirs()
    owner = f"{actor}@{socket.gethostname()}"
    published: list[tuple[dict[str, Any], Any]] = []  # this run's new version: manifest and fitted model
    lock = registry.lock(owner=owner, ttl_seconds=lock_ttl(settings, deadline), adopt=adopt_lock)
    with lock, TemporaryDirectory(prefix=WORKDIR_PREFIX) as tmp:

        def refresh() -> Ingested:
            return ingest(
                store,
                catalog,
                schema,
                Path(tmp),
                max_bytes=settings.batch_limit_bytes,
                dup_share=settings.max_duplicate_fraction,
            )

        got = refresh()
        out = Outcome(status="no-data", model=name, quarantined=got.quarantined, validated_batches=got.validated_now)
        out.timings["validate"] = round(time.monotonic() - started, 3)
        if not got.accepted:
            out.reasons = [f"no accepted batch under {store.data_prefix}{store.folder}"]
            return _done(_mirrored(out, registry, published, deadline), started)
        chosen, out.left_out = training_window(got.accepted, settings.train_window_rows)
        fp = fingerprint([e.sha256 for e in chosen] + [schema_sha])
        versions = registry.versions()
        alias = registry.alias()
        out.production_version = alias.version if alias else None
        if versions and (newest := registry.manifest(versions[-1])).get("data", {}).get("fingerprint") == fp:
            out.status, out.version = "unchanged", versions[-1]
            out.reasons = [f"data fingerprint {fp[:12]} already trained as v{versions[-1]}"]
            if pending_release(newest, alias, _has_rollout(registry, versions[-1])):
                status, note = release(registry, versions[-1], newest["gate"], reason="completing an "
                                       "approved promotion interrupted before the alias moved")  # fmt: skip
                out.status = cast(Status, status) if status in ("promoted", "rollout") else "unchanged"
                out.production_version = versions[-1] if status == "promoted" else out.production_version
                out.reasons.append(note)
            return _done(_mirrored(out, registry, published, deadline), started)
        frame = _frames(catalog, chosen, schema, Path(tmp), refresh)
        out.timings["load"] = round(time.monotonic() - started - out.timings["validate"], 3)
        lineage = {"batches": [e.lineage() for e in chosen], "left_out": out.left_out}
        out = _train_and_publish(settings, schema, registry, alias, frame, lineage, fp, out, started, published)
    return _done(_mirrored(out, registry, published, deadline), started)


def _mirrored(
    out: Outcome, registry: Registry, published: list[tuple[dict[str, Any], Any]], deadline: float | None
) -> Outcome:
    """After the lock is released and the alias has moved: the run and version in MLflow, when mirrored. Never
    fails the retrain (docs/mlflow.md); a failure is recorded in the outcome and counted."""
    mirror_started = time.monotonic()
    manifest, fitted = published[0] if published else (None, None)
    left = None if deadline is None else deadline - time.time() - MIRROR_MARGIN_SECONDS  # never past the timeout
    done = after_retrain(registry, out.version if published else None, manifest, fitted, budget=left)
    if done is not None:
        out.mlflow = "mirrored" if done.ok else f"failed: {done.error}"
        out.timings["mlflow"] = round(time.monotonic() - mirror_started, 3)
    return out


def _train_and_publish(
    s: TrainerSettings,
    schema: Schema,
    registry: Registry,
    alias: Alias | None,
    frame: pd.DataFrame,
    lineage: dict[str, Any],
    fp: str,
    out: Outcome,
    started: float,
    published: list[tuple[dict[str, Any], Any]],
) -> Outcome:
    out.rows = len(frame)
    x, y = frame[schema.feature_names], frame[schema.target.name]
    hold = holdout_mask(frame, s.holdout_fraction)
    if hold.sum() < 10 or (~hold).sum() < 20:
        out.reasons = [f"only {len(frame)} rows: too few to train and hold out"]
        return out
    xt, yt, xh, yh = x[~hold], y[~hold], x[hold], y[hold]
    train_started = time.monotonic()
    trained = fit_candidate(schema, xt, yt, s.estimator_names, s.cv_folds, s.train_threads)
    baseline = naive_baseline(schema).fit(xt, yt)
    signer = signing.signer(s.signing_kms_key_id, s.signing_key_file)
    prod_model, _, notes = _production(schema, registry, alias, signer.verifier() if signer else None)
    out.production_unverified = any(n.startswith(UNVERIFIED_PRODUCTION) for n in notes)
    cand_scores, base_scores = score(schema, trained.model, xh, yh), score(schema, baseline, xh, yh)
    prod_scores = score(schema, prod_model, xh, yh) if prod_model is not None else None
    metrics = {"candidate": cand_scores, "baseline": base_scores, "production": prod_scores}
    decision = decide(
        schema.task,
        cand_scores,
        base_scores,
        prod_scores,
        tolerance=s.gate_tolerance,
        min_score=s.gate_min_score,
    )
    model_bytes = dump_model(trained.model)
    golden_x = xh.head(s.golden_rows)
    categories = {c: list(schema.by_name[c].categories or ()) for c in schema.categorical}
    holdout_pred = trained.model.predict(xh)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "model_name": registry.name,
        "created_at": now_iso(),
        "status": decision.status,
        "gate": {
            "decision": decision.status,
            "primary_metric": decision.primary_metric,
            "reasons": [*decision.reasons, *notes],
            "tolerance": s.gate_tolerance,
            "min_score": s.gate_min_score,
            **decided_against(alias),
            # how it reaches production if approved: the model's policy, else FLYWHEEL_ROLLOUT_MODE/SHARE
            "rollout": rollout_actions.policy(registry, s.rollout_mode, s.rollout_share).to_dict(),
        },
        "task": schema.task,
        "schema": schema.model_dump(mode="json"),
        "estimator": trained.estimator,
        "cv_scores": trained.cv_scores,
        "metrics": metrics,
        "data": {
            "fingerprint": fp,
            "rows": len(frame),
            "train_rows": int((~hold).sum()),
            "holdout_rows": int(hold.sum()),
            "window_rows": s.train_window_rows,
            **lineage,
        },
        "sha256": sha256(model_bytes),
        "size_bytes": len(model_bytes),
        "libraries": library_versions(),
        "training_seconds": round(time.monotonic() - started, 3),
        "resources": resources(),
        "golden": {"inputs": records(golden_x), "outputs": outputs(schema, trained.model, golden_x)},
        "feature_stats": drift.profile_frame(xt, schema.numeric, categories),
        "prediction_stats": (
            drift.numeric_profile(holdout_pred)
            if schema.task == "regression"
            else drift.categorical_profile(holdout_pred, list(schema.target.classes or ()))
        ),
    }
    publish_started = time.monotonic()
    out.timings["train"] = round(publish_started - train_started, 3)
    version = registry.publish(model_bytes, manifest, signer=signer)
    published.append((manifest, trained.model))
    out.version, out.status, out.reasons = version, decision.status, manifest["gate"]["reasons"]
    out.metrics = {**metrics, "primary_metric": PRIMARY_METRIC[schema.task]}
    if decision.promoted:
        status, note = release(registry, version, manifest["gate"], reason=f"gate passed: {decision.reasons[0]}")
        out.reasons.append(note)
        out.production_version = version if status == "promoted" else out.production_version
        out.status = cast(Status, status)
    out.timings["publish"] = round(time.monotonic() - publish_started, 3)
    return out


def _has_rollout(registry: Registry, version: int) -> bool:
    found = load_rollout(registry)
    return found is not None and found[0].candidate == version


def _done(out: Outcome, started: float) -> Outcome:
    out.duration_seconds = round(time.monotonic() - started, 3)
    log.info("retrain %s", out.status, extra={"outcome": out.to_dict()})
    return out
