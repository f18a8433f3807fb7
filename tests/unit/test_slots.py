"""The replica's concurrency limits (app/service.py, Slots): requests in flight and bodies being received are bounded
apart, one API key holds at most its share of each, a refusal is counted and names its limit, and a place is given
back when its request ends, however it ends."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from app.service import Slots
from flywheel.access.api_keys import KeyRecord
from flywheel.errors import Overloaded
from flywheel.serving.metrics import ServingMetrics


def _key(key_id: str) -> KeyRecord:
    return KeyRecord(id=key_id, name=key_id, role="client", sha256="0" * 64)


def _refused(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("flywheel_http_requests_rejected_total", {"reason": reason}) or 0.0


def test_beyond_the_limit_a_request_is_refused_until_a_place_is_given_back() -> None:
    registry = CollectorRegistry()
    slots = Slots(2, 2, ServingMetrics(registry))
    with slots.hold(None), slots.hold(None):
        with pytest.raises(Overloaded, match="over 2 requests in flight") as refused:
            slots.hold(None)
        assert refused.value.status == 429 and refused.value.to_dict()["limit"] == 2
        with slots.receiving(None):  # bodies being received have their own places
            pass
    assert _refused(registry, "overloaded") == 1
    with pytest.raises(RuntimeError), slots.hold(None), slots.hold(None):  # a failed request gives its place back
        raise RuntimeError("the model failed")
    with slots.hold(None), slots.hold(None):
        pass
    assert slots.requests.now == 0 and _refused(registry, "overloaded") == 1


def test_one_key_holds_at_most_its_share_and_others_are_served() -> None:
    registry = CollectorRegistry()
    slots = Slots(8, 2, ServingMetrics(registry))
    greedy, other = _key("greedy"), _key("other")
    with slots.receiving(greedy), slots.receiving(greedy):
        with pytest.raises(Overloaded, match="FLYWHEEL_MAX_INFLIGHT_PER_KEY"):
            slots.receiving(greedy)
        with slots.receiving(other), slots.receiving(None):
            assert slots.bodies.now == 4 and slots.bodies.by_key == {"greedy": 2, "other": 1}
    assert slots.bodies.by_key == {} and slots.bodies.now == 0
    assert _refused(registry, "key_overloaded") == 1 and _refused(registry, "overloaded") == 0
