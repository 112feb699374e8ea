"""Two domains on two real PostgreSQL servers of their own (throw-away clusters on free
ports: the shared server is never touched). A process in ``reporting`` (cluster A) sends
its first step to ``billing`` (cluster B): the command goes to A's outbox in the
process's transaction, relays carry it to B and the reply back to A. Mid-run a relay is
killed and B is killed (``pg_ctl -m immediate``) and comes back: every process still
completes, every command exists exactly once on B, no process step advances twice, and
the outbox drains. A process canceled while its command waits in the outbox, or after it
was relayed, withdraws it on either side (``ClusterWithdrawalContract``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from chaos.pgcluster import PgCluster
from examples.statement_report import StatementReportProcess
from examples.statement_report.handlers import ServiceConfig, register_statement_handlers
from psycopg_pool import AsyncConnectionPool

from commandbus import CommandBus, HandlerRegistry, RetryPolicy, Worker
from commandbus.clusters import Topology
from commandbus.clusters.backends import ClusterBackends
from commandbus.clusters.ports import ClusterBackend
from commandbus.postgres import apply_schema
from commandbus.postgres.clusters import connect_clusters
from commandbus.postgres.outbox import OutboxRelay, cluster_backend
from commandbus.process import ProcessReplyRouter, ProcessStatus
from commandbus.testing.contracts.cluster_withdrawals import ClusterWithdrawalContract
from commandbus.testing.contracts.clusters import CrashingRelay, RelayKilled, topology_of

pytestmark = pytest.mark.integration

PROCESSES = 60
DATA = {
    "from_date": "2024-01-01",
    "to_date": "2024-03-31",
    "account_list": ["ACC-1"],
    "output_type": "csv",
}


class RemoteQueryReport(StatementReportProcess):
    """StatementReport whose query step runs in the ``billing`` domain."""

    async def build_command(self, step: Any, state: Any) -> Any:
        command = await super().build_command(step, state)
        if command.command_type == "StatementQuery":
            return dataclasses.replace(command, domain="billing")
        return command


@pytest.fixture
async def servers() -> AsyncIterator[tuple[PgCluster, PgCluster]]:
    a, b = PgCluster(), PgCluster()
    try:
        a.start()
        b.start()
        for cluster in (a, b):
            await apply_schema(cluster.url)
        yield a, b
    finally:
        a.teardown()
        b.teardown()


async def test_a_process_across_two_clusters_survives_a_relay_and_a_server_dying(
    servers: tuple[PgCluster, PgCluster],
) -> None:
    a, b = servers
    topology = Topology({"reporting": a.url, "billing": b.url})
    pools = {
        dsn: AsyncConnectionPool(dsn, min_size=1, max_size=8, open=False, timeout=5)
        for dsn in (a.url, b.url)
    }
    for pool in pools.values():
        await pool.open(wait=True)
    backend_a = cluster_backend(pools[a.url], topology, a.url)
    backend_b = cluster_backend(pools[b.url], topology, b.url)
    policy = RetryPolicy(max_attempts=20, backoff_schedule=[0.2], jitter=0)
    manager = RemoteQueryReport(CommandBus(backend_a, retry_policy=policy))

    executed: Counter[str] = Counter()
    billing = HandlerRegistry()

    @billing.handler("billing", "StatementQuery")
    async def query(command: Any, context: Any) -> dict[str, Any]:
        executed[str(command.command_id)] += 1
        await asyncio.sleep(0.02)  # a service that takes its time: work stays in flight
        return {"result_path": f"s3://query/{command.command_id}.json"}

    reporting = HandlerRegistry()
    register_statement_handlers(reporting, ServiceConfig(seed=1))
    workers = [
        Worker(backend_b, "billing", billing, retry_policy=policy, visibility_timeout=2),
        Worker(backend_a, "reporting", reporting, retry_policy=policy, visibility_timeout=5),
    ]
    router = ProcessReplyRouter(backend_a, managers=[manager])
    relays = [OutboxRelay(topology, dsn, pools) for dsn in (a.url, a.url, b.url, b.url)]
    tasks = [asyncio.create_task(w.run(concurrency=4, poll_interval=0.05)) for w in workers]
    tasks.append(asyncio.create_task(router.run(poll_interval=0.05)))
    relay_tasks: list[asyncio.Task[None]] = []
    try:
        half = PROCESSES // 2
        pids = await manager.start_many([dict(DATA) for _ in range(half)])
        lag = await relays[0].lag()
        assert lag.pending > 0  # the commands for billing wait in A's outbox
        # The relays start only now: before, they could have drained it already.
        relay_tasks += [asyncio.create_task(r.run(poll_interval=0.05)) for r in relays]

        await asyncio.sleep(0.05)
        relay_tasks[0].cancel()  # a relay dies mid-run (possibly between its commits)
        in_flight = half - len(await manager.find_by_status([ProcessStatus.COMPLETED]))
        # Cluster B dies with everything on it, and while it is down the second half
        # of the processes starts: their commands wait in A's outbox until B is back.
        restarting = asyncio.create_task(b.restart("immediate"))
        pids += await manager.start_many([dict(DATA) for _ in range(PROCESSES - half)])
        await restarting
        assert in_flight > 0, "everything had finished before the faults"
        relay_tasks[0] = asyncio.create_task(relays[0].run(poll_interval=0.05))

        async def done() -> int:
            found = await manager.find_by_status([ProcessStatus.COMPLETED])
            return len(found)

        async with asyncio.timeout(120):
            while await done() < PROCESSES:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert (await relays[0].lag()).pending == 0
    finally:
        for relay in relays:
            relay.stop()
        for w in workers:
            await w.stop(5)
        await router.stop(5)
        await asyncio.gather(*tasks, *relay_tasks, return_exceptions=True)
        for pool in pools.values():
            await pool.close()

    # Every billing command exists once on B, none on A; each process sent it once.
    with psycopg.connect(b.url) as conn:
        rows = conn.execute(
            "SELECT command_id, status FROM commandbus.command WHERE domain = 'billing'"
        ).fetchall()
    with psycopg.connect(a.url) as conn:
        on_a = conn.execute(
            "SELECT count(*) FROM commandbus.command WHERE domain = 'billing'"
        ).fetchone()
        outbox = conn.execute("SELECT count(*) FROM commandbus.outbox").fetchone()
    assert len(rows) == len({r[0] for r in rows}) == PROCESSES
    assert {r[1] for r in rows} == {"COMPLETED"}
    assert on_a == (0,) and outbox == (0,)
    sent_by_processes = []
    for pid in pids:
        trail = await _trail(a.url, pid)
        queries = [cid for step, cid in trail if step == "statement_query"]
        assert len(queries) == 1, trail  # the step advanced once
        steps = [step for step, _ in trail]
        assert steps == ["statement_query", "statement_data_aggregation", "statement_render"]
        sent_by_processes.extend(queries)
    assert sorted(str(c) for c in sent_by_processes) == sorted(str(r[0]) for r in rows)
    # At-least-once delivery: a handler may run again after B died under it, never zero.
    assert set(executed) == {str(r[0]) for r in rows}


async def _trail(dsn: str, pid: Any) -> list[tuple[str, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT step_name, command_id FROM commandbus.process_audit "
            "WHERE process_id = %s ORDER BY sent_at, id",
            (pid,),
        )
        return [(r[0], r[1]) for r in await cur.fetchall()]


def backends_of(
    topology: Topology, pools: dict[str, AsyncConnectionPool[Any]]
) -> dict[str, ClusterBackend]:
    return {dsn: cluster_backend(pool, topology, dsn) for dsn, pool in pools.items()}


@pytest.fixture
async def pools(
    servers: tuple[PgCluster, PgCluster],
) -> AsyncIterator[dict[str, AsyncConnectionPool[Any]]]:
    """A small open pool per server, by DSN."""
    opened = {
        s.url: AsyncConnectionPool(s.url, min_size=1, max_size=2, open=False) for s in servers
    }
    try:
        for pool in opened.values():
            await pool.open(wait=True)
        yield opened
    finally:
        for pool in opened.values():
            await pool.close()


async def test_a_relay_dying_between_its_commits_creates_each_command_once(
    servers: tuple[PgCluster, PgCluster], pools: dict[str, AsyncConnectionPool[Any]]
) -> None:
    a, b = servers
    topology = Topology({"reporting": a.url, "billing": b.url})
    bus = CommandBus(cluster_backend(pools[a.url], topology, a.url))
    sent = [await bus.send("billing", "Charge", data={"n": n}) for n in range(5)]
    relay = CrashingRelay(topology, a.url, backends_of(topology, pools))
    assert (await relay.lag()).pending == 5
    with pytest.raises(RelayKilled):
        await relay.relay_once()
    assert (await relay.lag()).pending == 5  # the source rolled back: still there
    assert await relay.relay_once() == 5  # relayed again: B already has them
    assert (await relay.lag()) == (await relay.lag()).__class__(0, 0.0)
    bus_b = CommandBus(cluster_backend(pools[b.url], topology, b.url))
    for result in sent:
        meta = await bus_b.get_command("billing", result.command_id)
        assert meta is not None and meta.status.value == "PENDING"
        trail = await bus_b.get_audit_trail(result.command_id, "billing")
        assert [e.event_type.value for e in trail] == ["SENT"]
    assert await bus_b.backend.queue.depth("billing__commands") == 5


async def test_a_relay_dying_between_its_commits_delivers_each_reply_once(
    servers: tuple[PgCluster, PgCluster], pools: dict[str, AsyncConnectionPool[Any]]
) -> None:
    """Replies to a plain ``reply_to`` queue of another cluster: a consumer there must see
    each reply once, even when the relay that carried them dies after its target
    committed and before its source did (and relays them again)."""
    a, b = servers
    topology = Topology({"reporting": a.url, "billing": b.url})
    bus_a = CommandBus(cluster_backend(pools[a.url], topology, a.url))
    sent = [
        await bus_a.send("billing", "Charge", data={"n": n}, reply_to="reporting__replies")
        for n in range(5)
    ]
    assert await OutboxRelay(topology, a.url, pools).relay_once() == 5
    backend_b = cluster_backend(pools[b.url], topology, b.url)
    worker = Worker(backend_b, "billing", _charge_registry())
    assert await worker.process_once() == 5  # settles: 5 replies on B's reporting__replies
    assert await backend_b.queue.depth("reporting__replies") == 5

    relay = CrashingRelay(topology, b.url, backends_of(topology, pools))
    with pytest.raises(RelayKilled):
        await relay.relay_once()
    assert await backend_b.queue.depth("reporting__replies") == 5  # rolled back on B
    assert await relay.relay_once() == 5  # relayed again
    assert await backend_b.queue.depth("reporting__replies") == 0

    replies = await bus_a.read_replies("reporting__replies", limit=100)
    got = sorted(str(r.reply.command_id) for r in replies)
    assert got == sorted(str(s.command_id) for s in sent)  # each once, none twice


def _charge_registry() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler("billing", "Charge")
    async def charge(command: Any, context: Any) -> dict[str, Any]:
        return {"charged": command.data["n"]}

    return registry


class TestWithdrawalsAcrossServers(ClusterWithdrawalContract):
    @pytest.fixture
    async def clusters(
        self, servers: tuple[PgCluster, PgCluster]
    ) -> AsyncIterator[ClusterBackends]:
        a, b = servers
        clusters = await connect_clusters(topology_of(a.url, b.url), max_size=4)
        try:
            yield clusters
        finally:
            await clusters.close()
