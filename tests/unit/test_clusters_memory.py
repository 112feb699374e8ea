"""The cluster contracts (outbox, relay, withdrawals) on two in-memory clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from commandbus.clusters.backends import ClusterBackends
from commandbus.memory import InMemoryBackend
from commandbus.memory.clusters import memory_clusters
from commandbus.testing.clock import VirtualClock
from commandbus.testing.contracts.cluster_withdrawals import ClusterWithdrawalContract
from commandbus.testing.contracts.clusters import ClusterContract, topology_of


class TestInMemoryClusters(ClusterContract, ClusterWithdrawalContract):
    @pytest.fixture
    def clusters(self) -> ClusterBackends:
        return memory_clusters(topology_of("memory://a", "memory://b"))


async def test_the_outbox_lag_is_a_prometheus_gauge_per_cluster() -> None:
    from commandbus.metrics import PrometheusMetrics

    clock = VirtualClock()
    clusters = memory_clusters(topology_of("memory://a", "memory://b"), clock)
    home = clusters.backend_for("reporting")
    for n in range(2):
        await clusters.bus_for("reporting").send("billing", "Charge", data={"n": n})
    await clock.advance(30)
    metrics = PrometheusMetrics()
    await metrics.sample(home, ["reporting"])
    sample = metrics.registry.get_sample_value
    assert sample("commandbus_outbox_pending", {"cluster": "reporting"}) == 2
    assert sample("commandbus_outbox_oldest_age_seconds", {"cluster": "reporting"}) == 30
    assert sample("commandbus_outbox_parked", {"cluster": "reporting"}) == 0
    await clusters.relay("memory://a").relay_once()
    await metrics.sample(home, ["reporting"])
    assert sample("commandbus_outbox_pending", {"cluster": "reporting"}) == 0
    assert sample("commandbus_outbox_oldest_age_seconds", {"cluster": "reporting"}) == 0
    # A backend that is no cluster of a topology has no such gauge.
    other = PrometheusMetrics()
    await other.sample(InMemoryBackend(), ["reporting"])
    assert other.registry.get_sample_value("commandbus_outbox_pending", {"cluster": "x"}) is None


def test_a_topology_file_is_toml_or_json(tmp_path: Path) -> None:
    from commandbus.cli._topology import load_topology

    toml = tmp_path / "clusters.toml"
    toml.write_text('[domains]\nreporting = "postgresql://a/x"\nbilling = "postgresql://b/x"\n')
    as_json = tmp_path / "clusters.json"
    as_json.write_text(
        '{"domains": {"reporting": "postgresql://a/x", "billing": "postgresql://b/x"}}'
    )
    assert load_topology(str(toml)) == load_topology(str(as_json))
    assert load_topology(str(toml)).clusters == ("postgresql://a/x", "postgresql://b/x")
    empty = tmp_path / "empty.toml"
    empty.write_text("[other]\n")
    with pytest.raises(click.BadParameter, match="needs a 'domains' table"):
        load_topology(str(empty))


async def test_an_unexpected_error_pauses_the_relay_and_it_goes_on() -> None:
    import asyncio

    from commandbus.errors import StorageError

    clusters = memory_clusters(topology_of("memory://a", "memory://b"))
    home = clusters.backend_for("reporting")
    sent = await clusters.bus_for("reporting").send("billing", "Charge", data={"n": 1})
    relay = clusters.relay("memory://a")
    take = home.outbox.take
    failures: list[int] = []

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise StorageError("the outbox could not be read")
        result = await take(*args, **kwargs)
        relay.stop()  # the next pass relayed: stop the loop
        return result

    home.outbox.take = failing_once  # type: ignore[method-assign]
    await asyncio.wait_for(relay.run(poll_interval=0), 10)
    assert failures == [1]
    remote = clusters.backend_for("billing")
    assert await remote.commands.get("billing", sent.command_id) is not None
