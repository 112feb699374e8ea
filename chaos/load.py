"""The load of a chaos run: commands and processes sent at a steady pace, through faults.

Sending is open loop: every TICK seconds the sender catches up with a straight line from
nothing to everything over ``send_seconds``, so the offered load does not drop when the
system slows down (a fault leaves a backlog the system must work off; with more load than
the system can take it simply runs saturated, and throughput is its capacity).

A send whose outcome is unknown (the connection died around COMMIT during a PostgreSQL
restart) is settled as a client must: look up which ids exist, and send the others again.
Commands of one chunk go in one transaction (``send_batch(conn=...)``), processes in one
``start_many``, which skips caller-chosen ids that exist already, the start events of
event-driven processes in one append (their ids are derived from their keys: the ones
stored are not appended again). Only what is known to
be committed counts as sent: those are the ids the final check looks for.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from examples.statement_report import StatementReportProcess

from chaos.events_workload import event_for
from chaos.workload import (
    COMMAND_DOMAIN,
    PROCESS_DOMAIN,
    RETRY_POLICY,
    command_requests,
    process_items,
    statement_manager,
)
from commandbus import CommandBus
from commandbus.events import EventStore, NewEvent
from commandbus.postgres import PostgresBackend

log = logging.getLogger("chaos.load")

TICK = 0.1
MAX_COMMAND_CHUNK = 5_000
MAX_PROCESS_CHUNK = 500

_EXISTING_COMMANDS = (
    "SELECT command_id FROM commandbus.command WHERE command_id = ANY(%s) AND domain = %s"
)
_EXISTING_PROCESSES = (
    "SELECT process_id FROM commandbus.process WHERE process_id = ANY(%s) AND domain = %s"
)


@dataclass
class Sender:
    backend: PostgresBackend
    command_ids: list[uuid.UUID]
    process_ids: list[uuid.UUID]
    send_seconds: float
    #: Business keys of the event-driven processes: one ``OrderPlaced`` event each.
    event_keys: list[str] = field(default_factory=list)
    sent_commands: list[uuid.UUID] = field(default_factory=list)
    sent_processes: list[uuid.UUID] = field(default_factory=list)
    sent_events: list[str] = field(default_factory=list)
    retries: int = 0
    started_at: float = 0.0  # wall clock
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    async def run(self, deadline: float) -> None:
        """Send everything, paced; give up what is unsent at ``deadline`` (monotonic)."""
        try:
            await self._run(deadline)
        except TimeoutError as exc:
            log.warning("sending stopped: %s", exc)

    async def _run(self, deadline: float) -> None:
        bus = CommandBus(self.backend, retry_policy=RETRY_POLICY)
        manager = statement_manager(self.backend)
        self.started_at = time.time()
        began = time.monotonic()
        n_cmd, n_proc, n_ev = len(self.command_ids), len(self.process_ids), len(self.event_keys)
        while (
            len(self.sent_commands) < n_cmd
            or len(self.sent_processes) < n_proc
            or len(self.sent_events) < n_ev
        ):
            if time.monotonic() > deadline:
                return
            share = min(1.0, (time.monotonic() - began) / max(self.send_seconds, TICK))
            want_cmd = min(round(n_cmd * share), len(self.sent_commands) + MAX_COMMAND_CHUNK)
            want_proc = min(round(n_proc * share), len(self.sent_processes) + MAX_PROCESS_CHUNK)
            chunk = self.command_ids[len(self.sent_commands) : want_cmd]
            if chunk:
                await self._send_commands(bus, chunk, deadline)
            pchunk = self.process_ids[len(self.sent_processes) : want_proc]
            if pchunk:
                await self._start_processes(manager, pchunk, deadline)
            want_ev = min(round(n_ev * share), len(self.sent_events) + MAX_PROCESS_CHUNK)
            echunk = self.event_keys[len(self.sent_events) : want_ev]
            if echunk:
                await self._publish(echunk, deadline)
            if share < 1.0:
                await asyncio.sleep(TICK)
        self.finished_at = time.time()

    async def _send_commands(self, bus: CommandBus, ids: list[uuid.UUID], deadline: float) -> None:
        todo = ids
        while todo:
            try:
                async with self.backend.transaction() as conn:
                    await bus.send_batch(command_requests(todo), conn=conn)
                break
            except Exception as exc:
                todo = await self._missing(_EXISTING_COMMANDS, COMMAND_DOMAIN, todo, exc, deadline)
        self.sent_commands.extend(ids)

    async def _start_processes(
        self, manager: StatementReportProcess, ids: list[uuid.UUID], deadline: float
    ) -> None:
        todo = ids
        while todo:
            try:
                await manager.start_many(process_items(todo))
                break
            except Exception as exc:
                todo = await self._missing(_EXISTING_PROCESSES, PROCESS_DOMAIN, todo, exc, deadline)
        self.sent_processes.extend(ids)

    async def _publish(self, keys: list[str], deadline: float) -> None:
        """Append the start events of ``keys`` (one stream per chunk); after a failure,
        append again only those whose ids are not stored."""
        store = EventStore(self.backend)
        todo = [event_for(k) for k in keys]
        stream = f"chaos-{keys[0]}"
        while todo:
            try:
                await store.append(stream, todo)
                break
            except Exception as exc:
                self.retries += 1
                log.info("append of %d failed (%s); checking what committed", len(todo), exc)
                todo = await self._unstored(todo, exc, deadline)
        self.sent_events.extend(keys)

    async def _unstored(
        self, events: list[NewEvent], exc: Exception, deadline: float
    ) -> list[NewEvent]:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("the database did not come back before the deadline") from exc
            await asyncio.sleep(0.2)
            try:
                stored = await self.backend.events.stored_event_ids([e.event_id for e in events])
            except Exception:
                continue
            return [e for e in events if e.event_id not in stored]

    async def _missing(
        self, query: str, domain: str, ids: list[uuid.UUID], exc: Exception, deadline: float
    ) -> list[uuid.UUID]:
        """After a failed send: the ids not committed (retried until the server answers)."""
        self.retries += 1
        log.info(
            "send of %d failed (%s: %s); checking what committed", len(ids), type(exc).__name__, exc
        )
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("the database did not come back before the deadline") from exc
            await asyncio.sleep(0.2)
            try:
                async with self.backend.pool.connection() as conn:
                    cur = await conn.execute(query, (ids, domain))
                    existing = {row[0] for row in await cur.fetchall()}
                return [i for i in ids if i not in existing]
            except Exception:
                continue
