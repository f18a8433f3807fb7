"""One retrain: validate every batch, train a candidate, gate it, publish it. The Lambda and the CLI call this."""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd

from flywheel import drift
from flywheel.batches import Batch, BatchStore, Quarantined
from flywheel.errors import BatchRejected, FlywheelError, ModelVerificationError
from flywheel.gate import PRIMARY_METRIC, decide
from flywheel.manifest import (
    MANIFEST_FORMAT,
    check_libraries,
    dump_model,
    library_versions,
    load_model,
    outputs,
    records,
    sha256,
)
from flywheel.registry import Registry, now_iso
from flywheel.schema import Schema, load_schema
from flywheel.settings import TrainerSettings
from flywheel.training import fingerprint, fit_candidate, holdout_mask, naive_baseline, score

log = logging.getLogger(__name__)

Status = Literal["promoted", "rejected", "unchanged", "no-data"]


@dataclass
class Outcome:
    """What a retrain did; the Lambda turns it into logs and metrics."""

    status: Status
    version: int | None = None
    production_version: int | None = None
    rows: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: validate, train, publish

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _production(schema: Schema, registry: Registry) -> tuple[Any, dict[str, Any] | None, int | None, list[str]]:
    """The model behind the alias, or None (with why) when there is none or it cannot be trusted here."""
    alias = registry.alias()
    if alias is None:
        return None, None, None, []
    manifest = registry.manifest(alias.version)
    if manifest.get("schema", {}).get("features") != schema.model_dump(mode="json")["features"]:
        return None, manifest, alias.version, [f"production v{alias.version} has another schema: not compared"]
    try:
        check_libraries(manifest["libraries"])
        model = load_model(registry.model_bytes(alias.version), manifest["sha256"])
    except (ModelVerificationError, FlywheelError) as e:
        return None, manifest, alias.version, [f"production v{alias.version} unusable here: {e.message}"]
    return model, manifest, alias.version, []


def _accepted(store: BatchStore, schema: Schema, s: TrainerSettings) -> tuple[list[Batch], list[Quarantined]]:
    accepted: dict[str, Batch] = {}
    quarantined: list[Quarantined] = []
    for obj in store.objects():
        try:
            batch = store.load(
                obj, schema, max_bytes=s.max_batch_bytes, max_duplicate_fraction=s.max_duplicate_fraction
            )
        except BatchRejected as e:
            log.warning("batch rejected: %s", e.message, extra={"file": e.key, "problems": e.problems})
            q = store.quarantine(e)
            if q:
                quarantined.append(q)
            continue
        accepted.setdefault(batch.sha256, batch)  # the same bytes uploaded twice count once
    return list(accepted.values()), quarantined


def retrain(settings: TrainerSettings, s3: Any, *, actor: str = "trainer") -> Outcome:
    """Validate all batches under data/, train on the accepted ones, gate, publish, move the alias."""
    started = time.monotonic()
    schema = load_schema(settings.schema_ref)
    registry = Registry(s3, settings.bucket, settings.model_name, settings.models_prefix)
    store = BatchStore(s3, settings.bucket, settings.data_prefix, settings.quarantine_prefix)
    with registry.lock(owner=f"{actor}@{socket.gethostname()}", ttl_seconds=settings.lock_ttl_seconds):
        batches, quarantined = _accepted(store, schema, settings)
        out = Outcome(status="no-data", quarantined=quarantined)
        out.timings["validate"] = round(time.monotonic() - started, 3)
        if not batches:
            out.reasons = ["no accepted batch under " + settings.data_prefix]
            return _done(out, started)
        schema_json = schema.model_dump_json()
        fp = fingerprint([b.sha256 for b in batches] + [sha256(schema_json.encode())])
        versions = registry.versions()
        alias = registry.alias()
        out.production_version = alias.version if alias else None
        if versions and registry.manifest(versions[-1]).get("data", {}).get("fingerprint") == fp:
            out.status, out.version = "unchanged", versions[-1]
            out.reasons = [f"data fingerprint {fp[:12]} already trained as v{versions[-1]}"]
            return _done(out, started)
        out = _train_and_publish(settings, schema, registry, batches, fp, out, started)
    return _done(out, started)


def _train_and_publish(
    s: TrainerSettings,
    schema: Schema,
    registry: Registry,
    batches: list[Batch],
    fp: str,
    out: Outcome,
    started: float,
) -> Outcome:
    frame = pd.concat([b.frame for b in batches], ignore_index=True)
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
    prod_model, _, prod_version, notes = _production(schema, registry)
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
            "production_version": prod_version,
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
            "batches": [b.lineage() for b in batches],
        },
        "sha256": sha256(model_bytes),
        "size_bytes": len(model_bytes),
        "libraries": library_versions(),
        "training_seconds": round(time.monotonic() - started, 3),
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
    version = registry.publish(model_bytes, manifest)
    out.version, out.status, out.reasons = version, decision.status, manifest["gate"]["reasons"]
    out.metrics = {**metrics, "primary_metric": PRIMARY_METRIC[schema.task]}
    if decision.promoted:
        alias = registry.alias()
        if (alias.version if alias else None) != prod_version:
            # an operator moved the alias while we trained: their choice stands
            out.reasons.append(f"alias moved to v{alias.version if alias else None} during training; not moved")
            return out
        registry.move_alias(version, alias, actor="trainer", reason=f"gate passed: {decision.reasons[0]}")
        out.production_version = version
    out.timings["publish"] = round(time.monotonic() - publish_started, 3)
    return out


def _done(out: Outcome, started: float) -> Outcome:
    out.duration_seconds = round(time.monotonic() - started, 3)
    log.info("retrain %s", out.status, extra={"outcome": out.to_dict()})
    return out
