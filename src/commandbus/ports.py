"""Ports: the storage and transport the core needs, as ``typing.Protocol``.

The core (bus, worker, troubleshooting, process engine) decides; adapters apply. Two
adapters implement these ports: ``commandbus.postgres`` (production) and
``commandbus.memory`` (tests and simulation). ``commandbus.testing.contracts`` holds the
behaviour tests both must pass.

Transactions
------------
Every method takes a keyword ``conn``: an open transaction handle obtained from
``Backend.transaction()`` (for PostgreSQL it *is* a ``psycopg.AsyncConnection`` in a
transaction, so a caller's own connection can be passed to join its transaction). With
``conn=None`` the method runs in a transaction of its own. One state change = one
transaction: the core opens one and passes it to every write that change implies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from commandbus.activity import DEFAULT_ACTIVITY_LIMIT, CommandActivity, ProcessActivity
from commandbus.models import (
    AuditEvent,
    AuditEventType,
    ClaimedCommand,
    CommandMetadata,
    CommandQuery,
    CommandStatus,
    JsonObject,
    OperatorSettlement,
    PrunedHistory,
    QueueMessage,
    QueueStats,
    SendRequest,
    SendResult,
    Settlement,
    TroubleshootingItem,
)
from commandbus.process.models import (
    ProcessAuditEntry,
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessSnapshot,
    ProcessStatus,
)


class Conn(Protocol):
    """An open transaction of a backend, opaque to the core: it only hands it back to the
    backend's ports. A ``psycopg.AsyncConnection`` for PostgreSQL, a ``MemoryTransaction``
    in memory; the core never calls a method on it, and mypy checks that it does not."""


@runtime_checkable
class Clock(Protocol):
    """Time source. Inject a virtual clock (``commandbus.testing.VirtualClock``) in tests."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class MessageQueue(Protocol):
    """Named queues of JSON messages with visibility timeouts (PGMQ-like semantics).

    A read makes a message invisible for ``visibility_timeout`` seconds and increments its
    read count; a message not deleted in time becomes visible again (at-least-once).
    Enqueueing wakes ``Backend.wait_for_notify`` waiters of that queue at commit.
    """

    async def enqueue(
        self,
        queue: str,
        messages: Sequence[JsonObject],
        delay: float = 0.0,
        *,
        conn: Conn | None = None,
    ) -> list[int]:
        """Append messages, visible after ``delay`` seconds; returns their ``msg_id`` s."""
        ...

    async def read(
        self,
        queue: str,
        limit: int,
        visibility_timeout: float,
        *,
        conn: Conn | None = None,
    ) -> list[QueueMessage]:
        """Claim up to ``limit`` visible messages, oldest first, skipping locked ones."""
        ...

    async def delete(self, queue: str, msg_ids: Sequence[int], *, conn: Conn | None = None) -> int:
        """Delete messages; returns how many existed."""
        ...

    async def set_visibility(
        self, queue: str, msg_id: int, seconds: float, *, conn: Conn | None = None
    ) -> bool:
        """Make a message invisible until ``now + seconds``; False if it no longer exists."""
        ...

    async def release(self, queue: str, msg_ids: Sequence[int], *, conn: Conn | None = None) -> int:
        """Give read messages back unhandled: visible at once, and the read that delivered
        them not counted (read count - 1, never below 0). Returns how many existed."""
        ...

    async def depth(self, queue: str, *, conn: Conn | None = None) -> int:
        """Number of messages in the queue (visible or not)."""
        ...

    async def stats(self, queue: str, *, conn: Conn | None = None) -> QueueStats:
        """The queue's depth; its invisible messages that were read before (leased by a
        consumer now, or a retry waiting out its backoff: ``in_flight``) and never read
        (sent with a delay: ``delayed``); the oldest one's enqueue time. One statement,
        for dashboards and metrics."""
        ...


class CommandSending(Protocol):
    """The sender's side of the command store (``CommandBus.send``)."""

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Conn | None = None,
        prepare: Callable[[SendRequest], SendRequest] | None = None,
    ) -> list[SendResult]:
        """Send commands: for each, a message on ``{domain}__commands`` (visible after its
        ``delay``), a PENDING metadata row and a SENT audit event, all or nothing.

        Requests are validated, or ``prepare`` validates each one (and returns what to
        write): a store may prepare a large call part by part while it writes the parts
        before (the bus's validation then overlaps the server's work), and whatever
        ``prepare`` raises leaves nothing of the call written. ``correlation_id`` is
        filled in, and ``encoded_data`` (when not None) is the JSON of ``data``, to be
        used as it is. Raises ``DuplicateCommandError`` (naming the ids) when a
        ``(domain, command_id)`` exists or repeats within ``requests``, also when a
        concurrent sender races: then nothing of the call is written.
        """
        ...


class CommandDelivery(Protocol):
    """The worker's hot path: claim deliveries, settle their outcomes."""

    async def claim(
        self,
        domain: str,
        limit: int,
        visibility_timeout: float,
        *,
        conn: Conn | None = None,
    ) -> list[ClaimedCommand]:
        """Claim up to ``limit`` visible command messages of ``domain``.

        For each: the message becomes invisible for ``visibility_timeout`` seconds, the
        row's ``attempts`` goes up by one and its status to IN_PROGRESS, and a RECEIVED
        audit event is written (details ``{"attempt": n, "msg_id": m}``). ``attempt`` of the
        result is the new ``attempts``. A message whose row is already terminal (a stale
        redelivery) is deleted and not returned. Claimed messages may have
        ``attempt > max_attempts`` (a worker crashed on them): the core settles those.
        """
        ...

    async def settle(self, settlements: Sequence[Settlement], *, conn: Conn | None = None) -> int:
        """Apply the settlements of current deliveries, all in one transaction; return how
        many were applied.

        A settlement is applied only if it settles the command's current delivery: the
        command's row is still ``IN_PROGRESS`` (the status a claim sets) and its
        ``attempts`` equals ``settlement.attempts`` (re-checked after waiting for a
        concurrent writer of the row); at most one settlement per command is applied per
        call. Any other settlement is stale (an older delivery whose visibility timeout
        ran out and that was claimed again, or a command an operator has moved) and is
        skipped entirely: its message is left as it is, the row is not updated, no audit
        event, no reply; the newer delivery settles the command. An applied settlement
        is applied mechanically:

        - ``DELETE``: delete the message; ``ARCHIVE``: move it to the archive;
          ``RETRY``: keep it, visible again after ``retry_delay`` seconds.
        - update the row: ``status``, ``attempts``, last error fields (left unchanged when
          ``error_type`` is None), ``updated_at``;
        - append the ``audit`` events in order;
        - enqueue ``reply`` (if any) on its queue.
        """
        ...


class CommandQueries(Protocol):
    """Read-only views of commands: rows, audit trails, the troubleshooting queue."""

    async def get(
        self, domain: str, command_id: UUID, *, conn: Conn | None = None
    ) -> CommandMetadata | None: ...

    async def query(
        self, query: CommandQuery, *, conn: Conn | None = None
    ) -> list[CommandMetadata]:
        """Filter rows; newest first (``created_at`` descending, then ``command_id``)."""
        ...

    async def audit_trail(
        self, command_id: UUID, domain: str | None = None, *, conn: Conn | None = None
    ) -> list[AuditEvent]:
        """Audit events of a command in the order they were written."""
        ...

    async def archived_message(
        self, domain: str, command_id: UUID, *, conn: Conn | None = None
    ) -> JsonObject | None:
        """The most recently archived message of the command (its original payload)."""
        ...

    async def list_troubleshooting(
        self,
        domain: str,
        command_type: str | None = None,
        limit: int = 50,
        offset: int = 0,
        *,
        conn: Conn | None = None,
    ) -> list[TroubleshootingItem]:
        """Commands IN_TROUBLESHOOTING_QUEUE, oldest first, with their original payload."""
        ...

    async def count_troubleshooting(
        self, domain: str, command_type: str | None = None, *, conn: Conn | None = None
    ) -> int: ...

    async def activity(
        self,
        since: datetime,
        *,
        minutes: int = 60,
        limit: int = DEFAULT_ACTIVITY_LIMIT,
        conn: Conn | None = None,
    ) -> CommandActivity:
        """Per domain and minute from ``since``, what the commands sent at or after it
        did (``commandbus.activity``); reads the newest ``limit`` of them at most."""
        ...


class CommandOperations(Protocol):
    """Operator actions and the writes that change a command outside a delivery (TSQ
    decisions, process cancellation, recovery tools). Callers hold the row's lock."""

    async def lock(self, domain: str, command_id: UUID, *, conn: Conn) -> CommandMetadata | None:
        """Read the row and lock it until ``conn`` ends (``SELECT … FOR UPDATE``)."""
        ...

    async def append_audit(
        self,
        domain: str,
        command_id: UUID,
        events: Sequence[tuple[AuditEventType, JsonObject | None]],
        *,
        conn: Conn | None = None,
    ) -> None: ...

    async def set_status(
        self,
        domain: str,
        command_id: UUID,
        status: CommandStatus,
        *,
        attempts: int | None = None,
        msg_id: int | None = None,
        last_error: tuple[str, str, str] | None = None,
        conn: Conn | None = None,
    ) -> None:
        """Update status (and ``attempts`` / ``msg_id`` when given) and ``updated_at``;
        ``last_error`` is ``(type, code, message)`` for the ``last_error_*`` columns."""
        ...

    async def apply_operator(self, settlement: OperatorSettlement, *, conn: Conn) -> bool:
        """Apply an operator's decision in ``conn``'s transaction, whose caller holds the
        command row's lock: status (attempts reset to 0 on ``requeue``), audit events, the
        reply, and with ``requeue`` the archived payload back on the command queue. False,
        with nothing written, when there is no archived payload to requeue."""
        ...


class CommandHistory(Protocol):
    """Retention: deleting what is left of commands finished long ago."""

    async def prune_finished(
        self,
        finished_before: datetime,
        *,
        domain: str | None = None,
        batch_size: int = 5_000,
        on_batch: Callable[[PrunedHistory], None] | None = None,
    ) -> PrunedHistory:
        """Delete the commands (of ``domain``, or of every domain) that are COMPLETED,
        FAILED or CANCELED, last changed before ``finished_before`` and with no message
        left in their queue, with their audit events and archived messages; never a
        command that is waiting, running or in the troubleshooting queue. Batches of
        ``batch_size`` commands, oldest first, each its own transaction (``on_batch`` is
        told what each deleted); rows another transaction holds are skipped."""
        ...


class CommandStore(
    CommandSending, CommandDelivery, CommandQueries, CommandOperations, CommandHistory, Protocol
):
    """Commands: their queue messages, metadata rows, audit trail and archive. One adapter
    object implements all five consumer ports; each core module depends on the one it
    uses (the bus sends, the worker delivers, operators operate, consoles query, retention
    prunes)."""


class Waiter(Protocol):
    """Wakes a consumer when a message was enqueued to a queue it listens to."""

    async def wait(self, timeout: float) -> bool:
        """Return True as soon as a notification arrived since the previous ``wait`` (or
        since subscribing), False after ``timeout`` seconds without one. Notifications
        are hints: consumers still poll, so a lost one only delays work."""
        ...


AnyProcess = ProcessMetadata[Any, Any]


class JsonText(str):
    """A state already encoded as a JSON object (the engine validates and encodes a new
    state once; repositories store it as it is instead of encoding it again)."""

    __slots__ = ()


@dataclass
class ProcessWrites:
    """Everything a batch of decisions writes to process storage, applied in one call.

    - ``updates``: full rows; each is written only if its stored ``version`` still equals
      ``process.version`` (else ``ProcessVersionConflictError``). The repository sets the
      new version (+1) and ``updated_at`` (the database's time) on the objects.
    - ``audit_inserts`` / ``audit_updates``: ``(domain, process_id, entry)``; an update
      replaces the reply fields and ``timed_out_at`` of the entry with ``entry.command_id``.
    - ``messages``: ignored or parked messages for the message log.
    """

    updates: list[AnyProcess] = field(default_factory=list)
    audit_inserts: list[tuple[str, UUID, ProcessAuditEntry]] = field(default_factory=list)
    audit_updates: list[tuple[str, UUID, ProcessAuditEntry]] = field(default_factory=list)
    messages: list[ProcessMessageRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updates or self.audit_inserts or self.audit_updates or self.messages)


class ProcessRepository(Protocol):
    """Storage of process instances, their audit trail and their message log."""

    # -- the seed's API ----------------------------------------------------------------

    async def save(self, process: AnyProcess, conn: Conn | None = None) -> None:
        """Insert a new process (version 1). Raises ``ProcessAlreadyExistsError``."""
        ...

    async def update(self, process: AnyProcess, conn: Conn | None = None) -> None:
        """Write all fields of an existing process whose stored version is
        ``process.version``; sets ``process.version`` (+1) and ``process.updated_at`` (the
        database's clock). Raises ``ProcessVersionConflictError`` (also when missing)."""
        ...

    async def get_by_id(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> AnyProcess | None:
        """The process with its state as a dict, or None."""
        ...

    async def find_by_status(
        self,
        domain: str,
        statuses: Sequence[ProcessStatus],
        conn: Conn | None = None,
        *,
        limit: int | None = None,
    ) -> list[AnyProcess]:
        """Processes of ``domain`` in any of ``statuses``, oldest first."""
        ...

    async def log_step(
        self,
        domain: str,
        process_id: UUID,
        entry: ProcessAuditEntry,
        conn: Conn | None = None,
    ) -> None:
        """Append an audit entry (a command the process sent)."""
        ...

    async def update_step_reply(
        self,
        domain: str,
        process_id: UUID,
        command_id: UUID,
        entry: ProcessAuditEntry,
        conn: Conn | None = None,
    ) -> None:
        """Record reply fields (outcome, data, received_at, error, timed_out_at) of
        ``entry`` on the audit entry of ``command_id``."""
        ...

    async def get_audit_trail(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> list[ProcessAuditEntry]:
        """Audit entries ordered by ``sent_at`` (ties in insertion order)."""
        ...

    async def get_completed_steps(
        self, domain: str, process_id: UUID, conn: Conn | None = None
    ) -> list[str]:
        """Names of forward steps (kind STEP) answered SUCCESS, in send order."""
        ...

    # -- what the engine needs ---------------------------------------------------------

    async def insert_new(self, processes: Sequence[AnyProcess], *, conn: Conn) -> list[UUID]:
        """Insert the processes that do not exist yet (by ``(domain, process_id)``); return
        the ids inserted. Existing ones are left alone (a concurrent insert of the same id
        waits for the other transaction, like a unique index does)."""
        ...

    async def lock(
        self,
        domains: Sequence[str],
        process_ids: Sequence[UUID],
        *,
        conn: Conn,
        with_audit: bool = True,
    ) -> list[ProcessSnapshot[Any, Any]]:
        """Lock (``FOR UPDATE``, in a fixed order) and load the processes with these ids in
        any of ``domains``, each with its audit trail (an empty one without
        ``with_audit``). Missing ids are simply absent.

        The audit trail is read *after* the locks are held, so it includes what a
        transaction that held a lock before us committed."""
        ...

    async def apply(self, writes: ProcessWrites, *, conn: Conn | None = None) -> None:
        """Apply a batch of writes (see ``ProcessWrites``) in ``conn``'s transaction, or in
        one of its own."""
        ...

    async def find_stuck(
        self,
        domain: str,
        *,
        deadline_before: datetime,
        updated_before: datetime | None = None,
        limit: int = 1000,
        conn: Conn | None = None,
    ) -> list[AnyProcess]:
        """Non-terminal processes whose ``deadline_at`` is before ``deadline_before``, or
        (when ``updated_before`` is given) that have not changed since then."""
        ...

    async def list_messages(
        self,
        *,
        domain: str | None = None,
        process_id: UUID | None = None,
        disposition: ProcessMessageDisposition | None = None,
        limit: int = 100,
        record_id: int | None = None,
        conn: Conn | None = None,
    ) -> list[ProcessMessageRecord]:
        """The message log (ignored and parked messages), oldest first; ``record_id``
        selects one record."""
        ...

    async def delete_message(self, record_id: int, *, conn: Conn | None = None) -> bool:
        """Remove a message-log record (e.g. once a parked message was replayed)."""
        ...

    async def count_by_status(
        self, domain: str, *, conn: Conn | None = None
    ) -> dict[ProcessStatus, int]:
        """How many processes of ``domain`` have each status (absent: none)."""
        ...

    async def activity(
        self, since: datetime, *, limit: int = DEFAULT_ACTIVITY_LIMIT, conn: Conn | None = None
    ) -> ProcessActivity:
        """How long processes that finished at or after ``since`` took, and their steps
        (``commandbus.activity``); reads the newest ``limit`` audit entries at most."""
        ...


class Backend(Protocol):
    """A storage backend: the ports above plus transactions and wake-ups."""

    clock: Clock
    queue: MessageQueue
    commands: CommandStore
    processes: ProcessRepository

    def transaction(self, conn: Conn | None = None) -> AbstractAsyncContextManager[Conn]:
        """Open a transaction (commit on success, roll back on error). With ``conn`` given,
        join that open transaction instead (a savepoint; the caller commits)."""
        ...

    def listen(self, queues: Sequence[str]) -> AbstractAsyncContextManager[Waiter]:
        """Subscribe to enqueue notifications of ``queues`` (LISTEN/NOTIFY on PostgreSQL)."""
        ...

    async def close(self) -> None: ...
