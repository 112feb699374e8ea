"""The cluster contract on PostgreSQL: two databases (cloned from the test template) play
the two clusters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from commandbus.clusters.backends import ClusterBackends
from commandbus.postgres.clusters import connect_clusters
from commandbus.testing.contracts.clusters import ClusterContract, topology_of
from commandbus.testing.pg import TemplateDatabase


class TestPostgresClusters(ClusterContract):
    @pytest.fixture
    async def clusters(self, pg_template: TemplateDatabase) -> AsyncIterator[ClusterBackends]:
        async with pg_template.database() as a, pg_template.database() as b:
            clusters = await connect_clusters(topology_of(a, b), max_size=4)
            try:
                yield clusters
            finally:
                await clusters.close()
