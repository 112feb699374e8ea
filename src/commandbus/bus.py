"""CommandBus: send commands (alone, in batches, or inside your own transaction) and query them."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from commandbus.errors import ValidationError
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
from commandbus.validation import (
    MAX_PAYLOAD_BYTES,
    encode_payload,
    validate_command_type,
    validate_name,
    validate_queue_name,
    validate_uuid,
)
from commandbus.wiring import backend_from, in_memory_backend

logger = logging.getLogger(__name__)

#: The most commands one ``send_batch`` call writes in one transaction; larger lists are
#: still accepted and written in chunks of this size, each chunk atomic.
SEND_CHUNK = 5_000
#: How many chunks of one ``send_batch`` call (without ``conn``) are in flight at once,
#: each on a pooled connection of its own: encoding the next chunk overlaps the database
#: writing the previous one.
SEND_CONCURRENCY = 2


class CommandBus:
    """Entry point for producers.

    ``CommandBus(pool)`` takes a ``psycopg_pool.AsyncConnectionPool`` (or any ``Backend``).
    ``retry_policy.max_attempts`` is the attempt limit stored with commands sent without an
    explicit ``max_attempts``.
    """

    def __init__(
        self,
        pool: Any,
        *,
        retry_policy: RetryPolicy | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        clock: Clock | None = None,
    ) -> None:
        self._backend = backend_from(pool, clock)
        self.retry_policy = retry_policy or RetryPolicy()
        self.max_payload_bytes = max_payload_bytes

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
        command_id: UUID | str,
        data: JsonObject,
        correlation_id: UUID | str | None = None,
        reply_to: str | None = None,
        max_attempts: int | None = None,
        delay: float | None = None,
        conn: Conn | None = None,
    ) -> SendResult:
        """Send one command. With ``conn`` the send joins that open transaction: it commits
        or rolls back with the caller's own writes. Raises ``DuplicateCommandError`` if the
        id is taken, ``ValidationError`` for bad input (nothing is written then)."""
        request = SendRequest(
            domain=domain,
            command_type=command_type,
            command_id=command_id,  # type: ignore[arg-type]  # validated below
            data=data,
            correlation_id=correlation_id,  # type: ignore[arg-type]
            reply_to=reply_to,
            max_attempts=max_attempts,
            delay=delay,
        )
        results = await self.send_batch([request], conn=conn)
        return results[0]

    async def send_batch(
        self, requests: Sequence[SendRequest], conn: Conn | None = None
    ) -> list[SendResult]:
        """Send many commands. Everything is validated first (nothing is written if a
        request is invalid). With ``conn`` all of ``requests`` are one transaction, the
        caller's. Without it, each chunk of ``SEND_CHUNK`` commands is one transaction, and
        up to ``SEND_CONCURRENCY`` chunks are written at once on separate pooled
        connections; so chunks may commit in any order, and when a chunk fails (e.g.
        ``DuplicateCommandError``) the chunks already in flight still commit and no further
        chunk starts. The first error, in chunk order, is raised; results are in request
        order."""
        checked = [self._checked(r) for r in requests]
        max_attempts = self.retry_policy.max_attempts
        insert = self._backend.commands.insert
        if conn is not None:
            return await insert(checked, max_attempts, conn=conn)
        chunks = [checked[i : i + SEND_CHUNK] for i in range(0, len(checked), SEND_CHUNK)]
        if len(chunks) <= 1:
            return await insert(checked, max_attempts) if checked else []
        done: list[list[SendResult]] = [[] for _ in chunks]
        errors: dict[int, Exception] = {}
        pending = iter(range(len(chunks)))

        async def lane() -> None:
            for index in pending:
                if errors:
                    return
                try:
                    done[index] = await insert(chunks[index], max_attempts)
                except Exception as exc:
                    errors[index] = exc
                    return

        await asyncio.gather(*(lane() for _ in range(min(SEND_CONCURRENCY, len(chunks)))))
        if errors:
            raise errors[min(errors)]
        return [result for chunk in done for result in chunk]

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
        if request.max_attempts is not None and (
            not isinstance(request.max_attempts, int)
            or isinstance(request.max_attempts, bool)
            or request.max_attempts < 1
        ):
            raise ValidationError(
                f"max_attempts must be a positive integer, got {request.max_attempts!r}"
            )
        delay = request.delay
        if delay is not None and (
            not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0
        ):
            raise ValidationError(f"delay must be a number of seconds >= 0, got {delay!r}")
        return SendRequest(
            domain=domain,
            command_type=command_type,
            command_id=command_id,
            data=request.data,
            correlation_id=correlation_id,
            reply_to=request.reply_to,
            max_attempts=request.max_attempts,
            delay=float(delay) if delay else None,
            encoded_data=encoded,
        )

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
        if not 1 <= limit <= 10_000 or offset < 0:
            raise ValidationError("limit must be 1..10000 and offset >= 0")
        query = CommandQuery(
            status=status,
            domain=domain,
            command_type=command_type,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            offset=offset,
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
                await self._backend.queue.set_visibility(queue, msg_id, 365 * 24 * 3600)
        return replies

    async def ack_reply(self, queue: str, msg_id: int) -> bool:
        validate_queue_name(queue)
        return await self._backend.queue.delete(queue, [msg_id]) == 1
