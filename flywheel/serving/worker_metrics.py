"""One /metrics for a replica whose requests are served by workers (app/serve.py): the agent's own series (model
versions, reloads, drift, captures written) and every worker's (requests, latency, predictions, rollout counts),
which each worker writes to prometheus_client's multiprocess files, merged into one exposition.

A series both sides have (a counter created at zero in each) is summed; a gauge takes the workers' value where
they have one (the requests in flight), else the agent's: workers set no other gauge.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

#: set in a worker's environment before prometheus_client loads: its values go to files the agent reads
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class MergedCollector(Collector):
    def __init__(self, own: CollectorRegistry, directory: str) -> None:
        self.own = own
        self.workers = MultiProcessCollector(None, path=directory)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for from_workers, families in ((False, self.own.collect()), (True, self.workers.collect())):
            for family in families:
                if family.name not in merged:
                    merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                    values[family.name] = {}
                seen = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key in seen and family.type != "gauge":
                        seen[key] += sample.value
                    elif key not in seen or from_workers:
                        seen[key] = sample.value
        for name, family in merged.items():
            for (sample_name, labels), value in values[name].items():
                family.add_sample(sample_name, dict(labels), value)
            yield family


def merged_registry(own: CollectorRegistry, directory: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MergedCollector(own, directory))
    return registry
