"""What a request path reads of a served model: the verified snapshot it holds from start to finish
(`ServedModel`), and the views of a model's host and rollout that a replica's own host (flywheel/serving/host.py)
and an agent's, relayed to a request worker (flywheel/serving/relayed.py), both offer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from flywheel.schema import Schema
from flywheel.serving.metrics import ServingMetrics

if TYPE_CHECKING:
    from flywheel.serving.live import LiveStats
    from flywheel.serving.trial import Active

# unknown: the alias was never read; unavailable: no production version yet; loading: production names a
# version not served yet; failed: that version was refused (retried with backoff); ready: a version serves
State = Literal["unknown", "unavailable", "loading", "failed", "ready"]


class Listener(Protocol):
    """Told, on the host's thread, what the host now serves (flywheel/serving/agent.py relays it to workers)."""

    def swapped(self, name: str, served: ServedModel) -> None: ...

    def rollout(self, name: str, active: Active | None) -> None: ...


class TrialView(Protocol):
    """What a request path reads of a model's rollout: the running one (or None) and its live counts."""

    current: Active | None

    @property
    def live(self) -> LiveStats: ...


class HostView(Protocol):
    """What a request path reads of a model's host: its own (ModelHost) or an agent's, relayed (RelayedHost)."""

    name: str
    metrics: ServingMetrics
    current: ServedModel | None

    @property
    def trial(self) -> TrialView | None: ...

    @property
    def state(self) -> State: ...

    @property
    def wanted(self) -> int | None: ...

    def start(self) -> None: ...

    def stop(self, *, wait: bool = True) -> None: ...


@dataclass(frozen=True)
class ServedModel:
    """An immutable, verified snapshot: a request holds one of these from start to finish."""

    name: str
    version: int
    model: Any
    schema: Schema
    manifest: dict[str, Any]
    loaded_at: str
    source: str
    classes: list[str] = field(default_factory=list)
    fast: Any = None  # a FastPredictor verified identical to `model` (flywheel/serving/fastpath/builder.py), or None
    serving_path: str = "pipeline"  # "fast" or "pipeline": which path computes this version's predictions
    fast_path_note: str = ""  # why the Pipeline serves, or what the fast path was verified on
