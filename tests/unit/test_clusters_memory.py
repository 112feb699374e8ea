"""The cluster contract on two in-memory clusters."""

from __future__ import annotations

import pytest

from commandbus.clusters.backends import ClusterBackends
from commandbus.memory.clusters import memory_clusters
from commandbus.testing.contracts.clusters import ClusterContract, topology_of


class TestInMemoryClusters(ClusterContract):
    @pytest.fixture
    def clusters(self) -> ClusterBackends:
        return memory_clusters(topology_of("memory://a", "memory://b"))
