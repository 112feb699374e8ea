"""The cluster contracts (outbox, relay, withdrawals) on two in-memory clusters."""

from __future__ import annotations

import pytest

from commandbus.clusters.backends import ClusterBackends
from commandbus.memory.clusters import memory_clusters
from commandbus.testing.contracts.cluster_withdrawals import ClusterWithdrawalContract
from commandbus.testing.contracts.clusters import ClusterContract, topology_of


class TestInMemoryClusters(ClusterContract, ClusterWithdrawalContract):
    @pytest.fixture
    def clusters(self) -> ClusterBackends:
        return memory_clusters(topology_of("memory://a", "memory://b"))
