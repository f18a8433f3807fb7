"""e2e fixtures: reuse the replica starter of the integration tests."""

from tests.integration.conftest import start_replica

__all__ = ["start_replica"]
