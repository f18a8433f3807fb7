"""Will a retrain fit where it is about to run? An estimate from the rows in the window and the figures of
the newest version's run (seconds and peak memory per row), before anything heavy is done.

The Lambda asks this first and hands a retrain that will not fit to bigger compute (docs/trainer.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flywheel.batches import BatchStore
from flywheel.catalog import Catalog
from flywheel.registry import Registry
from flywheel.settings import TrainerSettings

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
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _history(registry: Registry) -> tuple[float, float]:
    """(seconds per row, bytes per row) of the newest version's run, or the priors."""
    versions = registry.versions()
    if not versions:
        return PRIOR_SECONDS_PER_ROW, PRIOR_BYTES_PER_ROW
    m = registry.manifest(versions[-1])
    rows = int(m.get("data", {}).get("rows") or 0)
    if rows < 10_000:  # small runs are all fixed cost: their per-row figures say nothing
        return PRIOR_SECONDS_PER_ROW, PRIOR_BYTES_PER_ROW
    seconds = float(m.get("training_seconds") or 0) / rows
    peak = int(m.get("resources", {}).get("peak_rss_bytes") or 0)
    per_row = max(PRIOR_BYTES_PER_ROW / 4, (peak - BASE_BYTES) / rows) if peak else PRIOR_BYTES_PER_ROW
    return max(seconds, PRIOR_SECONDS_PER_ROW / 4), per_row


def plan(settings: TrainerSettings, s3: Any, *, seconds_left: float, memory_bytes: int) -> Plan:
    """Estimate the next retrain of `settings.model_name` against the time and memory available."""
    from flywheel.manifest import sha256
    from flywheel.schema import load_schema

    schema_sha = sha256(load_schema(settings.schema_ref).model_dump_json().encode())
    catalog = Catalog(s3, settings.bucket, f"{settings.validated_prefix}{settings.model_name}/", schema_sha).load()
    store = BatchStore(s3, settings.bucket, settings.data_prefix, settings.quarantine_prefix)
    known_rows, new_bytes, sizes = 0, 0, []
    for obj in store.objects():
        entry = catalog.get(obj)
        if entry is None:
            new_bytes += int(obj["Size"])
        else:
            known_rows += entry.rows
            sizes.append((entry.size, entry.rows))
    csv_per_row = sum(s for s, _ in sizes) / max(1, sum(r for _, r in sizes)) if sizes else PRIOR_CSV_BYTES_PER_ROW
    rows = min(settings.train_window_rows, known_rows + int(new_bytes / max(1.0, csv_per_row)))
    sec_per_row, bytes_per_row = _history(Registry(s3, settings.bucket, settings.model_name, settings.models_prefix))
    seconds = new_bytes / VALIDATE_BYTES_PER_SECOND + rows * sec_per_row
    peak = int(BASE_BYTES + rows * bytes_per_row)
    reasons = []
    if seconds > TIME_SHARE * seconds_left:
        reasons.append(f"~{seconds:.0f} s estimated, {seconds_left:.0f} s left")
    if peak > MEMORY_SHARE * memory_bytes:
        reasons.append(f"~{peak >> 20} MiB estimated, {memory_bytes >> 20} MiB available")
    return Plan(rows=rows, new_bytes=new_bytes, seconds=round(seconds, 1), peak_bytes=peak, fits=not reasons,
                reasons=reasons)  # fmt: skip
