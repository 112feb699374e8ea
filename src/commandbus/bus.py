"""CommandBus: send commands (alone, in batches, or inside your own transaction) and query them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID, uuid4

from commandbus.backends import BackendSource, backend_from, in_memory_backend
from commandbus.batches.models import (
    BatchCommand,
    BatchKind,
    BatchMetadata,
    BatchNotice,
    BatchQuery,
    BatchStatus,
    CreateBatchResult,
    ReceivedBatchNotice,
)
from commandbus.batches.ports import BatchBackend, BatchStore
from commandbus.batches.requests import (
    batch_commands,
    batch_requests,
    member_counts,
    new_batch,
    not_added_error,
)
from commandbus.clusters.ports import RoutesSends
from commandbus.clusters.routing import refuse_remote_batch
from commandbus.errors import BatchNotFoundError, ValidationError
from commandbus.ids import uuid7
from commandbus.logs import state_change
from commandbus.models import (
    AuditEvent,
    CommandMetadata,
    CommandQuery,
    CommandStatus,
    JsonObject,
    ReceivedReply,
    Reply,
    SendRequest,
    SendResult,
)
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend, Clock, Conn
from commandbus.telemetry import NO_TELEMETRY, Telemetry, count_sent, with_headers
from commandbus.validation import (
    MAX_ATTEMPTS_LIMIT,
    MAX_BATCH_LIMIT,
    MAX_DELAY_SECONDS,
    MAX_PAYLOAD_BYTES,
    MAX_VISIBILITY_SECONDS,
    SET_ASIDE_SECONDS,
    encode_payload,
    validate_command_type,
    validate_count,
    validate_name,
    validate_queue_name,
    validate_seconds,
    validate_uuid,
)

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=StrEnum)


class CommandBus:
    """Entry point for producers.

    ``CommandBus(pool)`` takes a ``psycopg_pool.AsyncConnectionPool`` (or any ``Backend``).
    ``retry_policy.max_attempts`` is the attempt limit stored with commands sent without an
    explicit ``max_attempts``.
    """

    def __init__(
        self,
        pool: BackendSource,
        *,
        retry_policy: RetryPolicy | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        clock: Clock | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._backend = backend_from(pool, clock)
        self.retry_policy = retry_policy or RetryPolicy()
        self.max_payload_bytes = max_payload_bytes
        #: Metrics and traces of sends (``commandbus.metrics``, ``commandbus.tracing``);
        #: process managers built on this bus use it too.
        self.telemetry: Telemetry = telemetry or NO_TELEMETRY

    @classmethod
    def in_memory(cls, clock: Clock | None = None, **kwargs: Any) -> CommandBus:
        """A bus on a fresh in-memory backend (tests, simulation). Share ``bus.backend``
        with ``Worker``, ``TroubleshootingQueue`` and ``ProcessReplyRouter``."""
        return cls(in_memory_backend(clock), **kwargs)

    @property
    def backend(self) -> Backend:
        return self._backend

    # -- sending -----------------------------------------------------------------------

    async def send(
        self,
        domain: str,
        command_type: str,
        command_id: UUID | str | None = None,
        data: JsonObject | None = None,
        correlation_id: UUID | str | None = None,
        reply_to: str | None = None,
        max_attempts: int | None = None,
        delay: float | None = None,
        conn: Conn | None = None,
        batch_id: UUID | str | None = None,
    ) -> SendResult:
        """Send one command; the result carries its ``command_id``. With ``conn`` the send
        joins that open transaction: it commits or rolls back with the caller's own writes.
        With ``batch_id`` the command joins that open batch of its domain (see
        ``create_batch``).

        ``command_id`` is the idempotency key: pass your own (a retry of the same send then
        raises ``DuplicateCommandError`` instead of sending twice), or leave it out and one
        is generated (``send("payments", "Debit", data={...})``): a time-ordered one
        (``commandbus.ids.uuid7``), which keeps sends fast with a long history. ``data`` is
        the command's JSON object. Raises ``ValidationError`` for bad input (nothing is
        written then)."""
        if data is None:
            raise ValidationError("send() needs data: the command's JSON object")
        if command_id is None:
            command_id = uuid7()  # time-ordered: appended to the indexes (commandbus.ids)
        request = SendRequest(
            domain=domain,
            command_type=command_type,
            command_id=command_id,  # type: ignore[arg-type]  # validated below
            data=data,
            correlation_id=correlation_id,  # type: ignore[arg-type]
            reply_to=reply_to,
            max_attempts=max_attempts,
            delay=delay,
            batch_id=batch_id,  # type: ignore[arg-type]
        )
        results = await self.send_batch([request], conn=conn)
        return results[0]

    async def send_batch(
        self, requests: Iterable[SendRequest], conn: Conn | None = None
    ) -> list[SendResult]:
        """Send many commands, atomically: every request is validated first, then all of
        them are written in one transaction (the caller's, with ``conn``), so a call that
        raises — a ``ValidationError``, a ``DuplicateCommandError``, a lost connection —
        has written nothing. Results are in request order. A request with a ``batch_id``
        joins that open batch (``BatchNotFoundError``, or ``InvalidOperationError`` for a
        closed one, and nothing is sent)."""
        requests = list(requests)  # read once: a generator of requests works too
        if not requests:
            return []
        if any(r.batch_id is not None for r in requests):
            checked = [self._checked(r) for r in requests]
            for r in checked:
                if r.batch_id is not None:
                    self._refuse_remote_batch(r.domain, r.batch_id)
            store = self._batch_store()
            async with self._backend.transaction(conn) as tx:
                await self._add_members(store, checked, tx)
                return await self._insert(checked, tx)
        # Validated by the store as it writes: a large call's later requests are checked
        # while the server writes the earlier ones (anything refused writes nothing).
        return await self._insert(requests, conn, self._checked)

    async def _add_members(self, store: BatchStore, checked: list[SendRequest], tx: Conn) -> None:
        """Grow the open batches the requests join (their rows stay locked until ``tx``
        ends, in key order: two senders cannot deadlock)."""
        kind = BatchKind.COMMANDS
        for domain, batch_id, count in member_counts(checked):
            if not await store.add_members(domain, batch_id, kind, count, conn=tx):
                batch = await store.get(domain, batch_id, conn=tx)
                raise not_added_error(domain, batch_id, kind, batch)

    async def _insert(
        self,
        requests: Sequence[SendRequest],
        conn: Conn | None,
        prepare: Callable[[SendRequest], SendRequest] | None = None,
    ) -> list[SendResult]:
        """Write ``requests`` (checked already, or by ``prepare`` on the way)."""
        telemetry = self.telemetry
        if telemetry.enabled:
            results = await self._send_observed(requests, conn, prepare)
        else:
            results = await self._backend.commands.insert(
                requests, self.retry_policy.max_attempts, conn=conn, prepare=prepare
            )
        if logger.isEnabledFor(logging.DEBUG):
            for request, result in zip(requests, results, strict=True):
                state_change(
                    logger,
                    "command %s (%s) sent%s",
                    result.command_id,
                    request.command_type,
                    " in the caller's transaction" if conn is not None else "",
                    domain=request.domain,
                    command_id=str(result.command_id),
                    command_type=request.command_type,
                    status="PENDING",
                )
        return results

    async def _send_observed(
        self,
        requests: Sequence[SendRequest],
        conn: Conn | None,
        prepare: Callable[[SendRequest], SendRequest] | None,
    ) -> list[SendResult]:
        """``insert`` in a send span, each command carrying the trace context."""
        telemetry = self.telemetry
        first = requests[0]
        attributes = {
            "commandbus.domain": first.domain,
            "commandbus.command_type": first.command_type,
            "commandbus.batch_size": len(requests),
        }
        with telemetry.span("commandbus.send", attributes):
            headers = telemetry.outgoing_headers()
            traced = prepare
            if headers:

                def traced(request: SendRequest) -> SendRequest:
                    return with_headers(request if prepare is None else prepare(request), headers)

            results = await self._backend.commands.insert(
                requests, self.retry_policy.max_attempts, conn=conn, prepare=traced
            )
        count_sent(telemetry, requests)
        return results

    def _checked(self, request: SendRequest) -> SendRequest:
        domain = validate_name(request.domain)
        command_type = validate_command_type(request.command_type)
        command_id = validate_uuid(request.command_id)
        encoded = encode_payload(request.data, "command data", self.max_payload_bytes)
        correlation_id = (
            validate_uuid(request.correlation_id, "correlation_id")
            if request.correlation_id is not None
            else uuid4()
        )
        if request.reply_to is not None:
            validate_queue_name(request.reply_to)
        max_attempts = request.max_attempts
        if max_attempts is not None:
            validate_count(max_attempts, "max_attempts", MAX_ATTEMPTS_LIMIT)
        delay = request.delay
        if delay is not None:
            delay = validate_seconds(delay, "delay", MAX_DELAY_SECONDS, allow_zero=True)
        return SendRequest(
            domain=domain,
            command_type=command_type,
            command_id=command_id,
            data=request.data,
            correlation_id=correlation_id,
            reply_to=request.reply_to,
            max_attempts=max_attempts,
            delay=delay or None,
            encoded_data=encoded,
            headers=request.headers,
            batch_id=(
                validate_uuid(request.batch_id, "batch_id")
                if request.batch_id is not None
                else None
            ),
        )

    # -- batches -------------------------------------------------------------------------

    def _refuse_remote_batch(self, domain: str, batch_id: UUID) -> None:
        """A batch lives on its domain's cluster (docs/batches.md): refused clearly
        before anything is written when this bus's cluster does not hold ``domain``."""
        routing = self._backend.commands
        if isinstance(routing, RoutesSends):
            refuse_remote_batch(routing.topology, routing.dsn, domain, batch_id)

    def _batch_store(self) -> BatchStore:
        backend = self._backend
        if not isinstance(backend, BatchBackend):
            raise TypeError(f"{type(backend).__name__} does not store batches")
        return backend.batches

    async def create_batch(
        self,
        domain: str,
        commands: Sequence[BatchCommand],
        *,
        name: str | None = None,
        reply_to: str | None = None,
        batch_id: UUID | str | None = None,
        keep_open: bool = False,
        conn: Conn | None = None,
    ) -> CreateBatchResult:
        """Send ``commands`` in ``domain`` as one batch: the batch row and every command in
        one transaction (the caller's, with ``conn``), all or nothing.

        The batch counts its commands' outcomes (``get_batch``) and finishes when the last
        one ends: COMPLETED, or COMPLETED_WITH_FAILURES if one failed or was canceled (a
        command in the troubleshooting queue has not ended: an operator may still retry
        it). The transaction that finishes the batch writes its ``BatchNotice`` to
        ``reply_to`` (read it with ``read_batch_notices``), exactly once.

        With ``keep_open`` the batch takes more commands (``send(..., batch_id=...)``) and
        cannot finish until ``close_batch``. Raises ``ValidationError`` (bad input),
        ``DuplicateBatchError`` or ``DuplicateCommandError``; then nothing is written."""
        members = batch_commands(commands)
        batch = new_batch(
            domain, batch_id, BatchKind.COMMANDS, name, reply_to, keep_open, len(members)
        )
        checked = [self._checked(r) for r in batch_requests(batch, members)]
        self._refuse_remote_batch(batch.domain, batch.batch_id)
        store = self._batch_store()
        async with self._backend.transaction(conn) as tx:
            await store.create(batch, conn=tx)
            results = await self._insert(checked, tx) if checked else []
        if logger.isEnabledFor(logging.DEBUG):
            state_change(
                logger,
                "batch %s created with %d commands",
                batch.batch_id,
                batch.total,
                domain=batch.domain,
                batch_id=str(batch.batch_id),
                status="PENDING",
            )
        return CreateBatchResult(batch.batch_id, results)

    async def close_batch(
        self, domain: str, batch_id: UUID | str, *, conn: Conn | None = None
    ) -> BatchMetadata:
        """Close an open batch to new members; if every member has ended it finishes now
        (and its notice is written in this transaction). Closing a closed batch changes
        nothing. Raises ``BatchNotFoundError``."""
        domain = validate_name(domain)
        bid = validate_uuid(batch_id, "batch_id")
        batch = await self._batch_store().close(domain, bid, conn=conn)
        if batch is None:
            raise BatchNotFoundError(domain, bid)
        return batch

    async def get_batch(self, domain: str, batch_id: UUID | str) -> BatchMetadata | None:
        """The batch with its counters, or None."""
        return await self._batch_store().get(
            validate_name(domain), validate_uuid(batch_id, "batch_id")
        )

    async def list_batches(
        self,
        domain: str | None = None,
        status: BatchStatus | str | None = None,
        limit: int = 50,
        offset: int = 0,
        kind: BatchKind | str | None = None,
    ) -> list[BatchMetadata]:
        """Batches, newest first."""
        query = BatchQuery(
            domain=None if domain is None else validate_name(domain),
            status=None if status is None else _member(BatchStatus, status, "status"),
            kind=None if kind is None else _member(BatchKind, kind, "kind"),
            limit=validate_count(limit, "limit", MAX_BATCH_LIMIT),
            offset=validate_count(offset, "offset", 2**31 - 1, minimum=0),
        )
        return await self._batch_store().query(query)

    async def read_batch_notices(
        self, queue: str, limit: int = 10, visibility_timeout: float = 30
    ) -> list[ReceivedBatchNotice]:
        """Read completion notices from a batch's ``reply_to`` queue; acknowledge each
        with ``ack_reply``. A message that is not a notice is logged and left aside (made
        invisible for a year), as ``read_replies`` does with what is not a reply."""
        validate_queue_name(queue)
        validate_count(limit, "limit", MAX_BATCH_LIMIT)
        visibility_timeout = validate_seconds(
            visibility_timeout, "visibility_timeout", MAX_VISIBILITY_SECONDS
        )
        messages = await self._backend.queue.read(queue, limit, visibility_timeout)
        notices: list[ReceivedBatchNotice] = []
        for msg in messages:
            try:
                notice = BatchNotice.from_message(msg.message)
            except ValueError as exc:
                logger.error("message %s on %s left aside: %s", msg.msg_id, queue, exc)
                await self._backend.queue.set_visibility(queue, msg.msg_id, SET_ASIDE_SECONDS)
                continue
            notices.append(ReceivedBatchNotice(msg.msg_id, notice, msg.read_count))
        return notices

    # -- queries -----------------------------------------------------------------------

    async def get_command(self, domain: str, command_id: UUID | str) -> CommandMetadata | None:
        return await self._backend.commands.get(validate_name(domain), validate_uuid(command_id))

    async def query_commands(
        self,
        status: CommandStatus | str | None = None,
        domain: str | None = None,
        command_type: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        correlation_id: UUID | str | None = None,
        batch_id: UUID | str | None = None,
    ) -> list[CommandMetadata]:
        if status is not None:
            try:
                status = CommandStatus(status)
            except ValueError:
                raise ValidationError(
                    f"unknown status {status!r}; one of {[s.value for s in CommandStatus]}"
                ) from None
        if domain is not None:
            validate_name(domain)
        if command_type is not None:
            validate_command_type(command_type)
        for bound in (created_after, created_before):
            if bound is not None and not isinstance(bound, datetime):
                raise ValidationError(f"created_after/created_before must be datetimes: {bound!r}")
        validate_count(limit, "limit", MAX_BATCH_LIMIT)
        validate_count(offset, "offset", 2**31 - 1, minimum=0)
        query = CommandQuery(
            status=status,
            domain=domain,
            command_type=command_type,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            offset=offset,
            correlation_id=(
                validate_uuid(correlation_id, "correlation_id")
                if correlation_id is not None
                else None
            ),
            batch_id=validate_uuid(batch_id, "batch_id") if batch_id is not None else None,
        )
        return await self._backend.commands.query(query)

    async def get_audit_trail(
        self, command_id: UUID | str, domain: str | None = None
    ) -> list[AuditEvent]:
        if domain is not None:
            validate_name(domain)
        return await self._backend.commands.audit_trail(validate_uuid(command_id), domain)

    # -- replies -----------------------------------------------------------------------

    async def read_replies(
        self, queue: str, limit: int = 10, visibility_timeout: float = 30
    ) -> list[ReceivedReply]:
        """Read replies from a plain ``reply_to`` queue; acknowledge each with ``ack_reply``.

        A message that is not a valid reply is logged and parked (made invisible for a
        year) rather than deleted: nothing is lost, and it no longer blocks the reader.
        """
        validate_queue_name(queue)
        validate_count(limit, "limit", MAX_BATCH_LIMIT)
        visibility_timeout = validate_seconds(
            visibility_timeout, "visibility_timeout", MAX_VISIBILITY_SECONDS
        )
        messages = await self._backend.queue.read(queue, limit, visibility_timeout)
        replies: list[ReceivedReply] = []
        malformed: list[int] = []
        for msg in messages:
            try:
                reply = Reply.from_message(msg.message)
            except ValueError as exc:
                logger.error("malformed reply %s on %s left aside: %s", msg.msg_id, queue, exc)
                malformed.append(msg.msg_id)
                continue
            replies.append(ReceivedReply(msg.msg_id, reply, msg.read_count))
        if malformed:
            for msg_id in malformed:
                await self._backend.queue.set_visibility(queue, msg_id, SET_ASIDE_SECONDS)
        return replies

    async def ack_reply(self, queue: str, msg_id: int) -> bool:
        validate_queue_name(queue)
        validate_count(msg_id, "msg_id", 2**63 - 1)
        return await self._backend.queue.delete(queue, [msg_id]) == 1


def _member(enum: type[E], value: object, what: str) -> E:
    """``value`` as a member of ``enum`` (a member or its string value)."""
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    raise ValidationError(f"unknown {what} {value!r}; one of {[m.value for m in enum]}")
