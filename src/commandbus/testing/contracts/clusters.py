"""Contract of a topology of clusters: the outbox, the relay, withdrawals, ``ClusterBus``.

Subclass ``ClusterContract`` and provide the ``clusters`` fixture: a ``ClusterBackends``
of a topology that puts ``reporting`` on one cluster and ``billing`` on another
(``topology_of(a, b)``), empty. The memory adapter runs it in ``tests/unit``, PostgreSQL
(two databases) in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest

from commandbus.batches.models import BatchCommand
from commandbus.bus import CommandBus
from commandbus.clusters.backends import ClusterBackends, ClusterBus
from commandbus.clusters.ports import ClusterBackend, Outgoing
from commandbus.clusters.relay import OutboxRelay
from commandbus.clusters.topology import Topology
from commandbus.errors import DuplicateCommandError, ValidationError
from commandbus.handler import HandlerRegistry
from commandbus.models import AuditEventType, CommandStatus, ReplyOutcome, SendRequest
from commandbus.worker import Worker

__all__ = ["ClusterContract", "CrashingRelay", "RelayKilled", "topology_of"]

HOME = "reporting"
REMOTE = "billing"
REPLIES = "reporting__replies"


def topology_of(a: str, b: str) -> Topology:
    """The topology the contract expects: ``reporting`` on ``a``, ``billing`` on ``b``."""
    return Topology({HOME: a, REMOTE: b})


class RelayKilled(Exception):
    """What ``CrashingRelay`` dies of."""


class CrashingRelay(OutboxRelay):
    """Dies once right after its targets committed, before its source does: the window
    in which a relay's work is done twice."""

    crashed = False

    async def _deliver(self, outgoing: Outgoing) -> None:
        await super()._deliver(outgoing)
        if not self.crashed:
            self.crashed = True
            raise RelayKilled("killed between the two commits")


def _charges() -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler(REMOTE, "Charge")
    async def charge(command: Any, context: Any) -> dict[str, Any]:
        return {"charged": command.data["n"]}

    return registry


class ClusterContract:
    """Behaviour of ``OutboxStore``, ``OutboxRelay`` and ``ClusterBus`` on two clusters."""

    @pytest.fixture
    async def clusters(self) -> AsyncIterator[ClusterBackends]:
        raise NotImplementedError("subclass ClusterContract and provide `clusters`")
        yield  # pragma: no cover

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def home(clusters: ClusterBackends) -> ClusterBackend:
        return clusters.backend_for(HOME)

    @staticmethod
    def remote(clusters: ClusterBackends) -> ClusterBackend:
        return clusters.backend_for(REMOTE)

    @staticmethod
    def relay(clusters: ClusterBackends, domain: str, **options: Any) -> OutboxRelay:
        return clusters.relay(clusters.topology.dsn_of(domain), **options)

    async def send_remote(self, clusters: ClusterBackends, count: int) -> list[UUID]:
        bus = clusters.bus_for(HOME)
        return [
            (await bus.send(REMOTE, "Charge", data={"n": n}, reply_to=REPLIES)).command_id
            for n in range(count)
        ]

    async def statuses(self, clusters: ClusterBackends, ids: list[UUID]) -> list[Any]:
        remote = self.remote(clusters)
        rows = [await remote.commands.get(REMOTE, cid) for cid in ids]
        return [None if r is None else r.status for r in rows]

    # -- sending ---------------------------------------------------------------------------

    async def test_a_remote_send_waits_in_the_outbox_of_the_senders_transaction(
        self, clusters: ClusterBackends
    ) -> None:
        home, remote = self.home(clusters), self.remote(clusters)
        bus = CommandBus(home)
        with pytest.raises(RuntimeError):
            async with home.transaction() as tx:
                await bus.send(REMOTE, "Charge", data={"n": 0}, conn=tx)
                raise RuntimeError("the sender's transaction rolls back")
        assert (await home.outbox.lag()).pending == 0
        async with home.transaction() as tx:
            sent = await bus.send(REMOTE, "Charge", data={"n": 1}, conn=tx)
        lag = await home.outbox.lag()
        assert lag.pending == 1 and lag.oldest_seconds >= 0
        assert await remote.commands.get(REMOTE, sent.command_id) is None
        assert await home.commands.get(REMOTE, sent.command_id) is None

        assert await self.relay(clusters, HOME).relay_once() == 1
        row = await remote.commands.get(REMOTE, sent.command_id)
        assert row is not None and row.status is CommandStatus.PENDING
        trail = await remote.commands.audit_trail(sent.command_id, REMOTE)
        assert [e.event_type for e in trail] == [AuditEventType.SENT]
        assert await remote.queue.depth("billing__commands") == 1
        assert await home.commands.get(REMOTE, sent.command_id) is None
        assert await home.outbox.lag() == (await home.outbox.lag()).__class__(0, 0.0)

    async def test_a_row_for_a_domain_the_relay_does_not_know_waits_for_one_that_does(
        self, clusters: ClusterBackends
    ) -> None:
        # A relay started with an older topology (or a typo in its file) leaves what it
        # cannot deliver in the outbox, counted in the lag, instead of failing its pass.
        [sent] = await self.send_remote(clusters, 1)
        home_dsn = clusters.topology.dsn_of(HOME)
        unaware = OutboxRelay(Topology({HOME: home_dsn}), home_dsn, clusters.backends)
        assert await unaware.relay_once() == 0
        assert (await self.home(clusters).outbox.lag()).pending == 1
        assert await self.relay(clusters, HOME).relay_once() == 1
        assert await self.statuses(clusters, [sent]) == [CommandStatus.PENDING]

    async def test_a_row_its_cluster_refuses_is_parked_and_the_rows_behind_it_go_on(
        self, clusters: ClusterBackends
    ) -> None:
        sent = await self.send_remote(clusters, 5)
        poison = sent[2]
        outbox = self.remote(clusters).outbox
        receive = outbox.receive

        async def refusing(outgoing: Outgoing, *, conn: Any) -> int:
            if any(e.command_id == poison for e in outgoing.entries):
                raise ValidationError("billing refuses this command")
            return await receive(outgoing, conn=conn)

        outbox.receive = refusing  # type: ignore[method-assign]
        relay = self.relay(clusters, HOME)
        home = self.home(clusters)
        for _ in range(20):  # the refused batch, then one row at a time
            await relay.relay_once()
            if (await home.outbox.lag()).pending == 0:
                break
        lag = await home.outbox.lag()
        assert (lag.pending, lag.parked, relay.parked) == (0, 1, 1)
        statuses = await self.statuses(clusters, sent)
        assert statuses[2] is None
        assert [s for i, s in enumerate(statuses) if i != 2] == [CommandStatus.PENDING] * 4
        assert await relay.relay_once() == 0  # parked: no relay takes it again

    async def test_a_row_refused_for_a_moment_is_relayed_not_parked(
        self, clusters: ClusterBackends
    ) -> None:
        sent = await self.send_remote(clusters, 3)
        outbox = self.remote(clusters).outbox
        receive = outbox.receive
        refusals = [2]  # the target refuses the middle command twice, then takes it

        async def refusing_twice(outgoing: Outgoing, *, conn: Any) -> int:
            if refusals[0] and any(e.command_id == sent[1] for e in outgoing.entries):
                refusals[0] -= 1
                raise ValidationError("billing is not ready for it yet")
            return await receive(outgoing, conn=conn)

        outbox.receive = refusing_twice  # type: ignore[method-assign]
        relay = self.relay(clusters, HOME, park_after=3)
        home = self.home(clusters)
        for _ in range(20):
            await relay.relay_once()
            if (await home.outbox.lag()).pending == 0:
                break
        assert ((await home.outbox.lag()).parked, relay.parked) == (0, 0)
        assert await self.statuses(clusters, sent) == [CommandStatus.PENDING] * 3

    async def test_a_command_id_forwarded_twice_is_a_duplicate(
        self, clusters: ClusterBackends
    ) -> None:
        bus = clusters.bus_for(HOME)
        command_id = uuid4()
        await bus.send(REMOTE, "Charge", command_id=command_id, data={"n": 1})
        with pytest.raises(DuplicateCommandError):
            await bus.send(REMOTE, "Charge", command_id=command_id, data={"n": 2})
        assert (await self.home(clusters).outbox.lag()).pending == 1

    async def test_a_remote_command_cannot_join_a_batch(self, clusters: ClusterBackends) -> None:
        bus = clusters.bus_for(HOME)
        with pytest.raises(ValidationError, match="batch's commands live on its cluster"):
            await bus.send(REMOTE, "Charge", data={"n": 1}, batch_id=uuid4())
        for commands in ([BatchCommand("Charge", {"n": 2})], []):
            with pytest.raises(ValidationError, match="batch's commands live on its cluster"):
                await bus.create_batch(REMOTE, commands, keep_open=True)
        assert (await self.home(clusters).outbox.lag()).pending == 0
        assert await bus.list_batches(domain=REMOTE) == []
        # On the cluster of its domain, a batch is what it always is.
        created = await clusters.bus_for(REMOTE).create_batch(
            REMOTE, [BatchCommand("Charge", {"n": 3})]
        )
        assert len(created.results) == 1

    # -- relaying --------------------------------------------------------------------------

    async def test_a_relay_dying_between_its_commits_creates_each_command_once(
        self, clusters: ClusterBackends
    ) -> None:
        ids = await self.send_remote(clusters, 5)
        relay = CrashingRelay(clusters.topology, clusters.topology.dsn_of(HOME), clusters.backends)
        with pytest.raises(RelayKilled):
            await relay.relay_once()
        assert (await relay.lag()).pending == 5  # the source rolled back: still there
        assert await relay.relay_once() == 5  # relayed again: the target has them
        assert (await relay.lag()).pending == 0
        assert await self.statuses(clusters, ids) == [CommandStatus.PENDING] * 5
        remote = self.remote(clusters)
        for cid in ids:
            trail = await remote.commands.audit_trail(cid, REMOTE)
            assert [e.event_type for e in trail] == [AuditEventType.SENT]
        assert await remote.queue.depth("billing__commands") == 5

    async def test_a_relay_dying_between_its_commits_delivers_each_reply_once(
        self, clusters: ClusterBackends
    ) -> None:
        ids = await self.send_remote(clusters, 4)
        assert await self.relay(clusters, HOME).relay_once() == 4
        remote = self.remote(clusters)
        assert await Worker(remote, REMOTE, _charges()).process_once() == 4
        assert await remote.queue.depth(REPLIES) == 4  # replies for reporting, on billing's

        relay = CrashingRelay(
            clusters.topology, clusters.topology.dsn_of(REMOTE), clusters.backends
        )
        with pytest.raises(RelayKilled):
            await relay.relay_once()
        assert await remote.queue.depth(REPLIES) == 4
        assert await relay.relay_once() == 4
        assert await remote.queue.depth(REPLIES) == 0

        replies = await ClusterBus(clusters).read_replies(REPLIES, limit=100)
        assert sorted(str(r.reply.command_id) for r in replies) == sorted(map(str, ids))
        assert {r.reply.outcome for r in replies} == {ReplyOutcome.SUCCESS}

    async def test_relays_running_together_share_the_work(self, clusters: ClusterBackends) -> None:
        ids = await self.send_remote(clusters, 30)
        relays = [self.relay(clusters, HOME, batch_size=4) for _ in range(3)]

        async def drain(relay: OutboxRelay) -> int:
            moved = 0
            while n := await relay.relay_once():
                moved += n
            return moved

        moved = await asyncio.gather(*(drain(r) for r in relays))
        assert sum(moved) == 30
        assert await self.statuses(clusters, ids) == [CommandStatus.PENDING] * 30
        assert await self.remote(clusters).queue.depth("billing__commands") == 30

    async def test_prune_forgets_old_ledger_rows_only(self, clusters: ClusterBackends) -> None:
        await self.send_remote(clusters, 2)
        home = self.home(clusters)
        long_ago = home.clock.now().replace(year=2000)
        assert await home.outbox.prune(long_ago) == 0
        # Forwarded rows of commands still waiting in the outbox are kept.
        later = home.clock.now().replace(year=home.clock.now().year + 1)
        assert await home.outbox.prune(later) == 0
        assert await self.relay(clusters, HOME).relay_once() == 2
        assert await home.outbox.prune(later) == 2

    # -- withdrawals -----------------------------------------------------------------------

    async def test_withdrawing_a_command_still_in_the_outbox_deletes_it(
        self, clusters: ClusterBackends
    ) -> None:
        [cid] = await self.send_remote(clusters, 1)
        home = self.home(clusters)
        async with home.transaction() as tx:
            forwarded = await home.outbox.lock_forwarded(cid, conn=tx)
            assert forwarded is not None and forwarded.pending and forwarded.domain == REMOTE
            assert await home.outbox.withdraw_forwarded(forwarded, uuid4(), "gave up", conn=tx)
        assert (await home.outbox.lag()).pending == 0
        assert await self.relay(clusters, HOME).relay_once() == 0
        assert await self.statuses(clusters, [cid]) == [None]  # it never reached billing

    async def test_withdrawing_a_relayed_command_cancels_it_there_and_replies(
        self, clusters: ClusterBackends
    ) -> None:
        [cid] = await self.send_remote(clusters, 1)
        home = self.home(clusters)
        assert await self.relay(clusters, HOME).relay_once() == 1
        process_id = uuid4()
        for _ in range(2):  # a second withdrawal changes nothing
            async with home.transaction() as tx:
                forwarded = await home.outbox.lock_forwarded(cid, conn=tx)
                assert forwarded is not None and not forwarded.pending
                assert not await home.outbox.withdraw_forwarded(
                    forwarded, process_id, "timed out", conn=tx
                )
            assert await self.relay(clusters, HOME).relay_once() == 1
        assert await self.statuses(clusters, [cid]) == [CommandStatus.CANCELED]
        remote = self.remote(clusters)
        trail = await remote.commands.audit_trail(cid, REMOTE)
        assert [e.event_type for e in trail] == [AuditEventType.SENT, AuditEventType.WITHDRAWN]
        assert trail[1].details is not None and trail[1].details["reason"] == "timed out"
        assert await self.relay(clusters, REMOTE).relay_once() == 1
        replies = await ClusterBus(clusters).read_replies(REPLIES)
        assert [(r.reply.command_id, r.reply.outcome) for r in replies] == [
            (cid, ReplyOutcome.CANCELED)
        ]
        assert replies[0].reply.error_code == "WITHDRAWN"

    async def test_a_started_command_is_not_withdrawn_on_its_cluster(
        self, clusters: ClusterBackends
    ) -> None:
        [cid] = await self.send_remote(clusters, 1)
        home, remote = self.home(clusters), self.remote(clusters)
        assert await self.relay(clusters, HOME).relay_once() == 1
        assert len(await remote.commands.claim(REMOTE, 1, 30)) == 1  # its handler runs
        async with home.transaction() as tx:
            forwarded = await home.outbox.lock_forwarded(cid, conn=tx)
            assert forwarded is not None
            await home.outbox.withdraw_forwarded(forwarded, uuid4(), "too late", conn=tx)
        assert await self.relay(clusters, HOME).relay_once() == 1
        assert await self.statuses(clusters, [cid]) == [CommandStatus.IN_PROGRESS]
        assert await remote.queue.depth(REPLIES) == 0

    async def test_a_command_sent_elsewhere_is_not_forwarded(
        self, clusters: ClusterBackends
    ) -> None:
        home = self.home(clusters)
        sent = await clusters.bus_for(HOME).send(HOME, "Report", data={})
        async with home.transaction() as tx:
            assert await home.outbox.lock_forwarded(sent.command_id, conn=tx) is None
            assert await home.outbox.lock_forwarded(uuid4(), conn=tx) is None

    # -- the routing bus -------------------------------------------------------------------

    async def test_the_cluster_bus_sends_each_domain_to_its_cluster(
        self, clusters: ClusterBackends
    ) -> None:
        bus = ClusterBus(clusters)
        home, remote = self.home(clusters), self.remote(clusters)
        direct = await bus.send(REMOTE, "Charge", data={"n": 1})
        assert (await home.outbox.lag()).pending == 0  # straight to billing's cluster
        assert await bus.get_command(REMOTE, direct.command_id) is not None
        async with home.transaction() as tx:
            await home.queue.enqueue("reporting__work", [{"business": "data"}], conn=tx)
            via = await bus.send(REMOTE, "Charge", data={"n": 2}, conn=tx, home=HOME)
        assert (await home.outbox.lag()).pending == 1  # with the caller's writes
        assert await remote.commands.get(REMOTE, via.command_id) is None
        with pytest.raises(ValidationError, match="home="):
            async with home.transaction() as tx:
                await bus.send(REMOTE, "Charge", data={"n": 3}, conn=tx)
        with pytest.raises(ValidationError, match="on no cluster"):
            await bus.send("nowhere", "Charge", data={"n": 4})

    async def test_the_cluster_bus_sends_a_generator_of_requests(
        self, clusters: ClusterBackends
    ) -> None:
        bus = ClusterBus(clusters)
        requests = [SendRequest(REMOTE, "Charge", uuid4(), {"n": n}) for n in range(3)]
        results = await bus.send_batch(request for request in requests)  # read once
        assert [r.command_id for r in results] == [r.command_id for r in requests]
        for request in requests:
            assert await bus.get_command(REMOTE, request.command_id) is not None
        assert await bus.send_batch(iter([])) == []
