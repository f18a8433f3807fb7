"""Will a retrain fit where it is about to run? An estimate from the rows in the window and the figures of
the newest version's run (seconds and peak memory per row), before anything heavy is done.

The Lambda asks this first and hands a retrain that will not fit to bigger compute (docs/trainer.md).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from flywheel.data.batch_store import model_batches
from flywheel.data.catalog import Catalog, Entry
from flywheel.registry import registrations
from flywheel.registry.manifest import sha256
from flywheel.registry.store import Registry
from flywheel.settings import TrainerSettings
from flywheel.training.pipelines import fingerprint
from flywheel.training.window import training_window

# Priors until a run has been measured here (bench/train.py on 2 cores, savings data, 8 features).
PRIOR_SECONDS_PER_ROW = 40e-6
PRIOR_BYTES_PER_ROW = 900
PRIOR_CSV_BYTES_PER_ROW = 55
BASE_BYTES = 350 * 1024 * 1024  # interpreter, numpy, pandas, pyarrow, scikit-learn
VALIDATE_BYTES_PER_SECOND = 25e6
TIME_SHARE, MEMORY_SHARE = 0.6, 0.75  # keep a margin: estimates are linear, runs are not


@dataclass
class Plan:
    rows: int
    new_bytes: int
    seconds: float
    peak_bytes: int
    fits: bool
    nothing_new: bool = False  # every batch validated before and the window already trained: a quick no-op
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _history(newest: dict[str, Any] | None) -> tuple[float, float]:
    """(seconds per row here, bytes per row) from the newest version's run, or the priors."""
    rows = int((newest or {}).get("data", {}).get("rows") or 0)
    if newest is None or rows < 10_000:  # small runs are all fixed cost: their per-row figures say nothing
        return PRIOR_SECONDS_PER_ROW, PRIOR_BYTES_PER_ROW
    used = newest.get("resources", {})
    # a run on more cores (the Batch job) was faster per row than this machine will be
    cpus = min(8.0, max(0.25, float(used.get("cpus") or 1) / float(os.cpu_count() or 1)))
    seconds = float(newest.get("training_seconds") or 0) / rows * cpus
    peak = int(used.get("peak_rss_bytes") or 0)
    per_row = max(PRIOR_BYTES_PER_ROW / 4, (peak - BASE_BYTES) / rows) if peak else PRIOR_BYTES_PER_ROW
    return max(seconds, PRIOR_SECONDS_PER_ROW / 4), per_row


def plan(settings: TrainerSettings, s3: Any, *, model: str, seconds_left: float, memory_bytes: int) -> Plan:
    """Estimate model `model`'s next retrain against the time and memory available."""
    schema_sha = sha256(registrations.schema_for(s3, settings, model).model_dump_json().encode())
    catalog = Catalog(s3, settings.bucket, f"{settings.validated_prefix}{model}/", schema_sha).load()
    store = model_batches(s3, settings, model)
    registry = Registry(s3, settings.bucket, model, settings.models_prefix)
    known: list[Entry] = []
    new_bytes = 0
    for obj in store.objects():
        entry = catalog.get(obj)
        if entry is None:
            new_bytes += int(obj["Size"])
        else:
            known.append(entry)
    versions = registry.versions()
    newest = registry.manifest(versions[-1]) if versions else None
    chosen, _ = training_window(known, settings.train_window_rows)
    trained = newest is not None and newest.get("data", {}).get("fingerprint") == fingerprint(
        [e.sha256 for e in chosen] + [schema_sha]
    )
    sizes = sum(e.size for e in known), sum(e.rows for e in known)
    csv_per_row = sizes[0] / sizes[1] if sizes[1] else PRIOR_CSV_BYTES_PER_ROW
    rows = min(settings.train_window_rows, sizes[1] + int(new_bytes / max(1.0, csv_per_row)))
    sec_per_row, bytes_per_row = _history(newest)
    seconds = new_bytes / VALIDATE_BYTES_PER_SECOND + rows * sec_per_row
    peak = int(BASE_BYTES + rows * bytes_per_row)
    if new_bytes == 0 and trained:
        return Plan(rows=rows, new_bytes=0, seconds=0.0, peak_bytes=BASE_BYTES, fits=True, nothing_new=True)
    reasons = []
    if seconds > TIME_SHARE * seconds_left:
        reasons.append(f"~{seconds:.0f} s estimated, {seconds_left:.0f} s left")
    if peak > MEMORY_SHARE * memory_bytes:
        reasons.append(f"~{peak >> 20} MiB estimated, {memory_bytes >> 20} MiB available")
    return Plan(rows=rows, new_bytes=new_bytes, seconds=round(seconds, 1), peak_bytes=peak, fits=not reasons,
                reasons=reasons)  # fmt: skip
