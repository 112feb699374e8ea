"""``OutboxRelay``: moves what waits on one cluster to the others of a topology.

One pass, in two transactions per target:

1. on the source, ``outbox.take`` locks a batch of outbox rows (commands and withdrawals
   for domains of other clusters) and of messages on the source's queues of other
   clusters' domains (the replies to their processes and ``reply_to`` consumers), with
   ``SKIP LOCKED``;
2. on each target, ``outbox.receive`` applies its part and commits there;
3. back on the source, ``outbox.drop`` deletes them and the source commits.

A relay that dies between a target's commit and the source's leaves the rows in place,
and the next pass brings them again: the target absorbs them — a command is inserted with
its id as the key, a withdrawal of a canceled command does nothing, a message whose relay
key it recorded is not enqueued again. Several relays may run at once (each locks rows the
others skip); any may be killed and started again. ``lag()`` says how far behind the
outbox is. The relay works on any backends whose adapters implement ``OutboxStore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from commandbus.clusters.ports import ClusterBackend, Outgoing, RelayLag
from commandbus.clusters.topology import Topology
from commandbus.errors import DatabaseUnavailableError, ValidationError
from commandbus.sanitise import describe_exception, storable_text
from commandbus.validation import validate_count

__all__ = ["DEFAULT_REPLY_SUFFIXES", "OutboxRelay"]


class _Refused(Exception):
    """A target's transaction failed on what it was given (not an outage)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


logger = logging.getLogger("commandbus.relay")

#: The queues of a remote domain whose messages are relayed to it.
DEFAULT_REPLY_SUFFIXES = ("process_replies", "replies")


class OutboxRelay:
    """Relays the outbox (and outgoing replies) of the cluster at ``dsn`` to the other
    clusters of ``topology``; ``backends`` holds the backend of every cluster DSN."""

    def __init__(
        self,
        topology: Topology,
        dsn: str,
        backends: Mapping[str, ClusterBackend],
        *,
        batch_size: int = 200,
        reply_suffixes: Sequence[str] = DEFAULT_REPLY_SUFFIXES,
        retention: timedelta = timedelta(days=30),
        prune_every: float = 3600.0,
        park_after: int = 3,
    ) -> None:
        missing = [c for c in topology.clusters if c not in backends]
        if dsn not in topology.clusters:
            raise ValidationError("the relay's cluster holds no domain of the topology")
        if missing:
            raise ValidationError(f"no backend for {len(missing)} cluster(s) of the topology")
        self.topology = topology
        self.dsn = dsn
        self.backends = backends
        self.batch_size = batch_size
        #: Queues of other clusters' domains whose messages are relayed to them.
        self.outgoing_queues = sorted(
            f"{d}__{suffix}" for d in topology.remote_domains(dsn) for suffix in reply_suffixes
        )
        self.known_domains = sorted(topology.domains)
        self.retention = retention
        self.prune_every = prune_every
        self.relayed = 0
        #: Outbox rows parked because their target refused them (``relay_once``).
        self.parked = 0
        #: Passes left that take one outbox row at a time, after a refused batch.
        self._narrowing = 0
        #: Refusals of one outbox row (relayed alone) before it is parked.
        self.park_after = validate_count(park_after, "park_after", 1000)
        self._refusals: dict[int, int] = {}
        self._pruned_at: float | None = None
        self._stop = asyncio.Event()

    @property
    def source(self) -> ClusterBackend:
        return self.backends[self.dsn]

    async def relay_once(self) -> int:
        """Relay one batch; returns how many rows and messages were relayed (or parked).

        When a target refuses a batch, the rows of the next passes are relayed one at a
        time until the refused one is alone; refused alone ``park_after`` times, it is
        parked with the error: one bad row never holds back the outbox
        (``OutboxStore.park``)."""
        source = self.source
        narrowing = self._narrowing > 0
        try:
            async with source.transaction() as src:
                # Only rows for domains of the topology: one for a domain it does not name
                # (a relay started with an older topology file) stays, counted in the lag,
                # until a relay that knows the domain takes it.
                outgoing = await source.outbox.take(
                    [] if narrowing else self.outgoing_queues,
                    1 if narrowing else self.batch_size,
                    conn=src,
                    domains=self.known_domains,
                )
                if not outgoing:
                    self._narrowing = 0
                    return 0
                await self._deliver(outgoing)
                # Only once every target committed: a crash before this line relays the
                # same rows again, which the targets absorb (see the module doc).
                await source.outbox.drop(outgoing, conn=src)
        except _Refused as refused:
            return await self._refused(outgoing, refused.cause)
        self._narrowing = max(0, self._narrowing - 1)
        for entry in outgoing.entries:
            self._refusals.pop(entry.id, None)
        self.relayed += len(outgoing)
        return len(outgoing)

    async def _refused(self, outgoing: Outgoing, cause: BaseException) -> int:
        """A target refused ``outgoing`` (its transaction rolled back, and the source's):
        park it if it is one outbox row, else relay its rows one at a time from now on."""
        error = storable_text(describe_exception(cause))
        if len(outgoing.entries) == 1 and not outgoing.messages:
            [entry] = outgoing.entries
            refusals = self._refusals[entry.id] = self._refusals.get(entry.id, 0) + 1
            if refusals < self.park_after:  # it may have been a passing failure
                logger.warning(
                    "relay from %s: outbox row %d refused (%d of %d before parking): %s",
                    self._name,
                    entry.id,
                    refusals,
                    self.park_after,
                    error,
                )
                return 0
            del self._refusals[entry.id]
            await self.source.outbox.park(entry.id, error)
            self._narrowing = max(0, self._narrowing - 1)
            self.parked += 1
            logger.warning(
                "relay from %s parked outbox row %d (%s %s for %s): %s",
                self._name,
                entry.id,
                entry.kind.value,
                entry.command_id,
                entry.target_domain,
                error,
            )
            return 1
        self._narrowing = max(self._narrowing, len(outgoing))
        logger.warning(
            "relay from %s: a target refused a batch of %d (%s); relaying one at a time "
            "to find the row",
            self._name,
            len(outgoing),
            error,
        )
        return 0

    async def _deliver(self, outgoing: Outgoing) -> None:
        """Commit each target's part of ``outgoing`` on that target."""
        by_cluster: dict[str, set[str]] = {}
        for domain in outgoing.domains():
            by_cluster.setdefault(self.topology.dsn_of(domain), set()).add(domain)
        for dsn in sorted(by_cluster):
            target = self.backends[dsn]
            try:
                async with target.transaction() as dst:
                    await target.outbox.receive(outgoing.for_domains(by_cluster[dsn]), conn=dst)
            except DatabaseUnavailableError:
                raise
            except Exception as exc:
                raise _Refused(exc) from exc

    async def lag(self) -> RelayLag:
        return await self.source.outbox.lag()

    async def prune(self) -> int:
        """Forget the relay keys and forwarded commands of this cluster older than the
        retention."""
        before = self.source.clock.now() - self.retention
        return await self.source.outbox.prune(before)

    async def run(self, poll_interval: float = 0.2) -> None:
        """Relay until ``stop()``; an unreachable cluster, or a pass that fails for any
        other reason, is retried after a pause. Every
        ``prune_every`` seconds it also prunes its cluster's ledgers (``prune``)."""
        self._stop.clear()
        while not self._stop.is_set():
            try:
                await self._prune_when_due()
                moved = await self.relay_once()
            except DatabaseUnavailableError as exc:
                logger.warning("relay from %s paused: %s", self._name, exc)
                moved = 0
            except Exception:
                # Whatever one pass meets, the relay goes on (its rows stay in the outbox,
                # counted in the lag): the next pass tries again after the pause.
                logger.exception("relay pass from %s failed; retrying", self._name)
                moved = 0
            if moved == 0 and not self._narrowing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), poll_interval)

    async def _prune_when_due(self) -> None:
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < self.prune_every:
            return
        self._pruned_at = now
        pruned = await self.prune()
        if pruned:
            logger.info("relay of %s forgot %d old ledger rows", self._name, pruned)

    @property
    def _name(self) -> str:
        """The cluster by its domains (its DSN may hold a password)."""
        return ",".join(sorted(self.topology.domains_on(self.dsn)))

    def stop(self) -> None:
        self._stop.set()
