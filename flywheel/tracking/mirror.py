"""Flywheel's registry mirrored into MLflow's (docs/mlflow.md): each published version a version of the registered
model named after the Flywheel model (its run's `model/`, with Flywheel's sha256 and signature as tags), and the
MLflow aliases `production` and `candidate` following Flywheel's production alias and running rollout.

One direction only: nothing here writes to the bucket, so a mirror can never move Flywheel's production alias.
Every function is idempotent and returns what it did or why it stopped, never raising: the next event, or
`flywheel mlflow sync`, repairs whatever one pass missed.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flywheel.registry.store import Registry
from flywheel.release.rollout_state import load as load_rollout
from flywheel.tracking.mlflow_client import Mirror, MirrorFailed, load_credentials, open_mirror
from flywheel.tracking.runs import VERSION_TAG, find_run, log_retrain

log = logging.getLogger(__name__)
PRODUCTION, CANDIDATE = "production", "candidate"


@dataclass
class Mirrored:
    """What one mirror pass did (`notes`) and, when it stopped early, why (`error`)."""

    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _versions(mirror: Mirror, name: str) -> dict[int, str]:
    """{Flywheel version: MLflow version} of registered model `name` ({} when it does not exist yet)."""
    found = mirror.call("list the registered versions", mirror.client.search_model_versions, f"name = '{name}'")
    out = {}
    for mv in found:
        tag = (mv.tags or {}).get(VERSION_TAG)
        if tag and tag.isdigit():
            out[int(tag)] = str(mv.version)
    return out


def _register(mirror: Mirror, registry: Registry, version: int, run: Any, manifest: dict[str, Any]) -> str:
    name = mirror.registered_name(registry.name)
    try:
        mirror.call("find the registered model", mirror.client.get_registered_model, name)
    except MirrorFailed as e:
        if "RESOURCE_DOES_NOT_EXIST" not in str(e) and "not found" not in str(e).lower():
            raise
        about = f"Mirror of Flywheel model {registry.name}"
        mirror.call("create the registered model", mirror.client.create_registered_model, name,
                    tags={"flywheel.model": registry.name}, description=about)  # fmt: skip
    signature = registry.signature(version)
    tags = {VERSION_TAG: str(version), "flywheel.sha256": str(manifest.get("sha256", "")),
            "flywheel.signature": base64.b64encode(signature).decode() if signature else "unsigned",
            "flywheel.gate": "approved" if manifest.get("status") == "promoted" else "rejected"}  # fmt: skip
    mv = mirror.call("register the version", mirror.client.create_model_version, name,
                     f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags,
                     description=f"Flywheel {registry.name} v{version}")  # fmt: skip
    return str(mv.version)


def _mirror_version(mirror: Mirror, registry: Registry, version: int, manifest: dict[str, Any], fitted: Any,
                    known: dict[int, str], done: Mirrored) -> None:  # fmt: skip
    run = log_retrain(mirror, registry.name, version, manifest, fitted)
    if version not in known:
        known[version] = _register(mirror, registry, version, run, manifest)
        done.notes.append(f"v{version}: run {run.info.run_id}, registered as version {known[version]}")


def _aliases(mirror: Mirror, registry: Registry, known: dict[int, str], done: Mirrored) -> None:
    """`production` and `candidate` as Flywheel has them now (a missing version: named, then the next one)."""
    name = mirror.registered_name(registry.name)
    alias = registry.alias()
    found = load_rollout(registry)
    rollout = found[0] if found else None
    wanted = {PRODUCTION: alias.version if alias else None,
              CANDIDATE: rollout.candidate if rollout is not None and rollout.running else None}  # fmt: skip
    current = {}
    if known:
        model = mirror.call("read the aliases", mirror.client.get_registered_model, name)
        current = dict(getattr(model, "aliases", {}) or {})
    for alias_name, version in wanted.items():
        target = known.get(version) if version is not None else None
        if version is not None and target is None:
            done.error = f"v{version} is not mirrored yet (`flywheel mlflow sync --model {registry.name}`)"
            continue
        if target is None and alias_name in current:
            mirror.call(f"remove alias {alias_name}", mirror.client.delete_registered_model_alias, name, alias_name)
            done.notes.append(f"{alias_name}: removed")
        elif target is not None and str(current.get(alias_name)) != target:
            mirror.call(f"move alias {alias_name}", mirror.client.set_registered_model_alias, name, alias_name,
                        target)  # fmt: skip
            done.notes.append(f"{alias_name} -> version {target} (Flywheel v{version})")


def _pass(
    registry: Registry, work: Callable[[Mirror, dict[int, str], Mirrored], None], budget: float | None = None
) -> Mirrored | None:
    mirror = open_mirror(budget=budget)
    if mirror is None:
        return None
    done = Mirrored()
    try:
        mirror.call("read the MLflow credentials", load_credentials, mirror.settings)
        known = _versions(mirror, mirror.registered_name(registry.name))
        work(mirror, known, done)
        _aliases(mirror, registry, known, done)
    except MirrorFailed as e:
        done.error = str(e)
    except Exception as e:  # the bucket or a manifest: still never the caller's failure
        done.error = f"{type(e).__name__}: {e}"
    if done.error:
        log.warning("MLflow mirror of %s stopped: %s", registry.name, done.error)
    return done


def after_retrain(
    registry: Registry, version: int | None, manifest: dict[str, Any] | None, fitted: Any, budget: float | None = None
) -> Mirrored | None:
    """After a retrain (None: the mirror is off): its new version's run and registration, then the aliases.
    `budget`: at most this many seconds (what is left of the caller's time)."""

    def work(mirror: Mirror, known: dict[int, str], done: Mirrored) -> None:
        if version is not None and manifest is not None:
            _mirror_version(mirror, registry, version, manifest, fitted, known, done)

    return _pass(registry, work, budget)


def after_alias_move(registry: Registry, budget: float | None = None) -> Mirrored | None:
    """After production or a rollout moved (promote, roll back, the judge, the UI): the aliases only."""
    return _pass(registry, lambda mirror, known, done: None, budget)


def sync(registry: Registry, load: Callable[[int], tuple[dict[str, Any], Any]]) -> Mirrored | None:
    """Repair: every version's run and registration (`load(version)` gives its verified manifest and model),
    then the aliases. Safe to run any number of times."""

    def work(mirror: Mirror, known: dict[int, str], done: Mirrored) -> None:
        for version in registry.versions():
            if version in known and find_run(mirror, registry.name, version) is not None:
                continue
            manifest, fitted = load(version)
            _mirror_version(mirror, registry, version, manifest, fitted, known, done)

    return _pass(registry, work)


def run_links(model: str) -> dict[int, str]:
    """{Flywheel version: URL of its retrain run in the MLflow UI} ({} when the mirror is off or unreachable)."""
    mirror = open_mirror()
    if mirror is None or not str(mirror.client.tracking_uri).startswith(("http://", "https://")):
        return {}  # a SageMaker tracking server's ARN is no web address
    try:
        from flywheel.tracking.runs import MODEL_TAG, ROLE_TAG

        mirror.call("read the MLflow credentials", load_credentials, mirror.settings)
        found = mirror.call("find the experiment", mirror.client.get_experiment_by_name, mirror.experiment_name(model))
        if found is None:
            return {}  # a reader never creates an experiment
        exp = str(found.experiment_id)
        query = f"tags.`{ROLE_TAG}` = 'retrain' and tags.`{MODEL_TAG}` = '{model}'"
        runs = mirror.call("list the runs", mirror.client.search_runs, [exp], filter_string=query, max_results=1000)
    except MirrorFailed as e:
        log.warning("MLflow runs of %s not listed: %s", model, e)
        return {}
    base = str(mirror.client.tracking_uri).rstrip("/")
    return {int(r.data.tags[VERSION_TAG]): f"{base}/#/experiments/{exp}/runs/{r.info.run_id}"
            for r in runs if r.data.tags.get(VERSION_TAG, "").isdigit()}  # fmt: skip
