"""``ProcessReplyRouter``: drives processes from their reply queue.

A batch is read in a transaction of its own (``FOR UPDATE SKIP LOCKED``: several
routers, on several machines, share a queue safely), which counts each delivery: the read
count survives a router that dies while handling (that commit does not wait for the disk,
so only a crash of the database server itself may forget a count). Then one transaction handles
the batch: lock the processes the messages concern, decide every message with the pure
kernel, write the outcome (process rows, audit, next commands, timers, message log) and
delete the handled messages — all committed together, so a crash at any point either
applies a reply entirely or leaves it in the queue, visible again after the visibility
timeout.

Isolation of bad messages: the engine decides every message before writing anything, so
a message whose hook raises is simply left out (retried after the visibility timeout,
parked after ``max_reply_attempts`` reads) while the rest of the batch commits. If the
batch still fails while writing (e.g. a database constraint), its messages are handled
one per transaction, and a message that fails on its own is parked — in the message log,
where ``replay_parked`` can put it back on the queue once the cause is fixed. A message
delivered before and never acknowledged (its batch failed, or the router died on it: a
poison reply) is always handled alone, and parked unhandled once it was delivered more
than ``max_reply_attempts`` times, so it cannot take healthy messages down with it.

Timers are messages on the same queue (``kind = commandbus.process_timer``), enqueued with
a delay when a step with a timeout is sent, so they survive restarts like replies do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from commandbus.backends import BackendSource, backend_from
from commandbus.consuming import ConsumerLoop, Stopping
from commandbus.errors import DatabaseUnavailableError, ValidationError
from commandbus.logs import OutageReporter, state_change
from commandbus.models import QueueMessage, Reply
from commandbus.ports import Backend, Clock, Waiter
from commandbus.process.base import BaseProcessManager, managers_by_type
from commandbus.process.engine import Envelope, EnvelopeResult, Handled, ProcessEngine
from commandbus.process.kernel import ReplyReceived, parse_timer_message, timer_message
from commandbus.process.models import (
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessStatus,
)
from commandbus.process.parked import replay_parked
from commandbus.process.repository import ProcessRepository, ProcessWrites
from commandbus.sanitise import describe_exception, storable_text
from commandbus.telemetry import NO_TELEMETRY, Telemetry
from commandbus.validation import (
    MAX_BATCH_LIMIT,
    SET_ASIDE_SECONDS,
    validate_count,
    validate_queue_name,
)

__all__ = ["ProcessReplyRouter", "RouterStats"]

logger = logging.getLogger(__name__)

#: A parking reason longer than this is cut (it is an exception's text).
_MAX_REASON_CHARS = 2_000


@dataclass
class RouterStats:
    """Counters since the router was created."""

    batches: int = 0
    applied: int = 0
    ignored: int = 0
    parked: int = 0
    retried: int = 0
    batch_failures: int = 0


class ProcessReplyRouter(ConsumerLoop):
    """Routes replies (and timers) from ``reply_queue`` to the process managers.

    The seed's constructor: ``ProcessReplyRouter(pool=pool, process_repo=repo,
    managers={process_type: manager}, reply_queue=...)``. ``pool`` is a psycopg
    ``AsyncConnectionPool`` or any ``Backend``; ``process_repo`` defaults to the backend's;
    ``managers`` may also be a list; ``reply_queue`` defaults to the managers' common one.
    """

    def __init__(
        self,
        pool: BackendSource,
        process_repo: ProcessRepository | None = None,
        managers: Mapping[str, BaseProcessManager[Any, Any]]
        | Sequence[BaseProcessManager[Any, Any]] = (),
        reply_queue: str | None = None,
        *,
        batch_size: int = 100,
        visibility_timeout: float = 30.0,
        max_reply_attempts: int = 5,
        clock: Clock | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.managers = managers_by_type(managers)
        if not self.managers:
            raise ValidationError("ProcessReplyRouter needs at least one process manager")
        if batch_size < 1 or visibility_timeout <= 0 or max_reply_attempts < 1:
            raise ValidationError(
                "batch_size and max_reply_attempts must be >= 1, visibility_timeout > 0"
            )
        self._backend: Backend = backend_from(pool, clock)
        repo = (
            process_repo if process_repo is not None else getattr(self._backend, "processes", None)
        )
        if repo is None:
            raise ValidationError("no process repository: pass process_repo")
        self.process_repo: ProcessRepository = repo
        queues = {m.reply_queue for m in self.managers.values()}
        if reply_queue is None:
            if len(queues) != 1:
                raise ValidationError(
                    f"the managers use several reply queues {sorted(queues)}; pass reply_queue"
                )
            reply_queue = next(iter(queues))
        self.reply_queue = validate_queue_name(reply_queue)
        self.batch_size = batch_size
        self.visibility_timeout = float(visibility_timeout)
        self.max_reply_attempts = max_reply_attempts
        #: Metrics and traces; by default the managers' bus's (``CommandBus(telemetry=…)``).
        self.telemetry: Telemetry = telemetry or _managers_telemetry(self.managers.values())
        self.engine = ProcessEngine(
            self._backend,
            self.process_repo,
            self.managers,
            max_reply_attempts=max_reply_attempts,
            telemetry=self.telemetry,
        )
        self.stats = RouterStats()
        super().__init__(self._backend, clock or self._backend.clock)
        self._outage = OutageReporter(logger, f"router on {self.reply_queue}", self._clock)

    # -- one batch -----------------------------------------------------------------------

    async def process_once(self, limit: int | None = None) -> int:
        """Handle one batch from the reply queue; returns how many messages were read
        (0: the queue had nothing visible).

        The read commits on its own first, so every delivery is counted durably (the
        queue's read count), even when handling then kills the router process. Messages
        read for the first time are handled together in one transaction. A message read
        before and never acknowledged (its batch failed, or the router died on it) is a
        suspect: it is handled alone — the rest of the read is given back uncounted
        first — and parked unhandled once it was delivered more than
        ``max_reply_attempts`` times, so a poison reply cannot hold back the rest."""
        limit = limit or self.batch_size
        queue = self._backend.queue
        read = await queue.read(self.reply_queue, limit, self.visibility_timeout)
        if not read:
            return 0
        suspect = next((m for m in read if m.read_count > 1), None)
        if suspect is None:
            await self._handle_batch(read)
            return len(read)
        # Alone means alone: the other messages go back uncounted before the suspect is
        # handled, so that if it kills the router again they are not its victims.
        others = [m.msg_id for m in read if m is not suspect]
        await queue.release(self.reply_queue, others)
        await self._handle_alone(suspect)
        return 1

    async def _handle_batch(self, read: Sequence[QueueMessage]) -> None:
        if not self.telemetry.enabled:
            await self._handle_read(read)
            return
        attributes = {"commandbus.queue": self.reply_queue, "commandbus.batch_size": len(read)}
        with self.telemetry.span("commandbus.route", attributes):
            await self._handle_read(read)

    async def _handle_read(self, read: Sequence[QueueMessage]) -> None:
        envelopes = [self._envelope(m) for m in read]
        try:
            async with self._backend.transaction() as tx:
                handled = await self.engine.handle(envelopes, conn=tx)
                await self._delete_handled(envelopes, handled, tx)
        except DatabaseUnavailableError:
            # Nothing to learn from handling them one by one: they stay leased and come
            # back after the visibility timeout; the loop reports the outage.
            self.stats.batch_failures += 1
            raise
        except Exception:
            self.stats.batch_failures += 1
            logger.exception(
                "batch of %d messages on %s failed; handling them one by one",
                len(read),
                self.reply_queue,
            )
            for message in read:
                await self._handle_alone(message)
            return
        self._count(handled)

    async def _handle_alone(self, message: QueueMessage) -> None:
        """Handle one message in a transaction of its own; park it if that fails, or
        without handling it once it was delivered too often."""
        envelope = self._envelope(message)
        if message.read_count > self.max_reply_attempts:
            reason = (
                f"delivered {message.read_count} times without being acknowledged "
                "(the router failed or died while handling it each time)"
            )
            logger.error("parking message %s on %s: %s", message.msg_id, self.reply_queue, reason)
            async with self._backend.transaction() as tx:
                await self._park_or_set_aside(envelope, message, reason, tx)
            return
        try:
            async with self._backend.transaction() as tx:
                handled = await self.engine.handle([envelope], conn=tx)
                await self._delete_handled([envelope], handled, tx)
            self._count(handled)
        except DatabaseUnavailableError:
            raise  # not the message's fault: never park it for that
        except Exception as exc:
            logger.exception(
                "message %s on %s failed on its own; parking it", message.msg_id, self.reply_queue
            )
            async with self._backend.transaction() as tx:
                await self._park_or_set_aside(envelope, message, describe_exception(exc), tx)

    async def _delete_handled(
        self, envelopes: Sequence[Envelope], handled: Sequence[Handled], tx: Any
    ) -> None:
        """Acknowledge every message the engine is done with (all but those to retry)."""
        done = [
            e.msg_id
            for e, h in zip(envelopes, handled, strict=True)
            if e.msg_id is not None and h.result is not EnvelopeResult.RETRY
        ]
        if done:
            await self._backend.queue.delete(self.reply_queue, done, conn=tx)

    def _count(self, handled: Sequence[Handled]) -> None:
        self.stats.batches += 1
        if logger.isEnabledFor(logging.DEBUG):
            for h in handled:
                _log_handled(h)
        if self.telemetry.enabled:
            for h in handled:
                _observe(self.telemetry, h)
        for h in handled:
            if h.result is EnvelopeResult.APPLIED:
                self.stats.applied += 1
            elif h.result is EnvelopeResult.IGNORED:
                self.stats.ignored += 1
            elif h.result is EnvelopeResult.PARKED:
                self.stats.parked += 1
            elif h.result is EnvelopeResult.RETRY:
                self.stats.retried += 1

    async def _park_or_set_aside(
        self, env: Envelope, message: QueueMessage, reason: str, tx: Any
    ) -> None:
        """Park ``message`` in the message log; if even that fails, leave it on the queue
        but invisible for a year (like ``read_replies`` does), so that it is kept and no
        longer stops the messages behind it."""
        try:
            async with self._backend.transaction(tx) as savepoint:
                await self._park(env, message, storable_text(reason, _MAX_REASON_CHARS), savepoint)
        except Exception:
            logger.exception(
                "message %s on %s could not be parked; setting it aside on the queue",
                message.msg_id,
                self.reply_queue,
            )
            await self._backend.queue.set_visibility(
                self.reply_queue, message.msg_id, SET_ASIDE_SECONDS, conn=tx
            )

    async def _park(self, env: Envelope, message: QueueMessage, reason: str, tx: Any) -> None:
        record = ProcessMessageRecord(
            disposition=ProcessMessageDisposition.PARKED,
            reason=reason,
            message=message.message,
            process_id=env.process_id,
            domain=env.domain,
            command_id=_command_id(env),
            queue_name=self.reply_queue,
            msg_id=message.msg_id,
        )
        await self.process_repo.apply(ProcessWrites(messages=[record]), conn=tx)
        await self._backend.queue.delete(self.reply_queue, [message.msg_id], conn=tx)
        self.stats.parked += 1

    def _envelope(self, msg: QueueMessage) -> Envelope:
        raw = msg.message
        common: dict[str, Any] = {
            "raw": raw,
            "read_count": msg.read_count,
            "msg_id": msg.msg_id,
            "queue_name": self.reply_queue,
        }
        try:
            timer = parse_timer_message(raw)
            if timer is not None:
                domain, process_id, fired = timer
                return Envelope(message=fired, process_id=process_id, domain=domain, **common)
            reply = Reply.from_message(raw)
        except ValueError as exc:
            return Envelope(message=None, error=str(exc), **common)
        except Exception as exc:  # anyone can write to a queue: never let one message raise
            error = f"malformed message ({type(exc).__name__}: {exc})"
            return Envelope(message=None, error=error, **common)
        return Envelope(
            message=ReplyReceived(reply),
            process_id=reply.correlation_id,
            headers=reply.headers,
            **common,
        )

    # -- continuous operation ------------------------------------------------------------

    consumer_name = "router"

    def listened_queues(self) -> list[str]:
        return [self.reply_queue]

    async def run(
        self,
        poll_interval: float = 1.0,
        batch_size: int | None = None,
        *,
        concurrency: int = 1,
        use_notify: bool = True,
    ) -> None:
        """Handle batches until ``stop()`` (the seed's signature: ``run(poll_interval=1.0,
        batch_size=…)``). ``batch_size`` replaces the constructor's; ``concurrency``
        batches run at once (each its own transaction and connection). Wakes on
        notifications (``use_notify``) and on a ``poll_interval`` timer in any case (timers
        become visible without a notification)."""
        if batch_size is not None:
            self.batch_size = validate_count(batch_size, "batch_size", MAX_BATCH_LIMIT)
        await self._run(concurrency, poll_interval, use_notify)

    async def _serve(
        self, stack: AsyncExitStack, waiter: Waiter | None, concurrency: int, poll_interval: float
    ) -> None:
        loops = [asyncio.create_task(self._loop(poll_interval, waiter)) for _ in range(concurrency)]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def stop(self, timeout: float | None = None) -> Stopping:
        """Stop after the batches in progress. ``router.stop()`` (the seed's plain call)
        requests it; ``await router.stop(timeout)`` also waits up to ``timeout`` seconds."""
        return super().stop(timeout)

    async def _on_stop_timeout(self) -> None:
        # A batch still running is one transaction: it commits or rolls back on its own,
        # and the run ends when it does.
        return

    async def _loop(self, poll_interval: float, waiter: Waiter | None) -> None:
        while not self._stop_requested:
            try:
                n = await self.process_once()
            except DatabaseUnavailableError as exc:
                self._outage.failed(exc, poll_interval)
                n = 0
            except Exception:
                logger.exception("router batch on %s failed", self.reply_queue)
                n = 0
            else:
                self._outage.succeeded()
            if n == 0 and not self._stop_requested:
                await self._idle(waiter, poll_interval)

    # -- operations ----------------------------------------------------------------------

    async def recover(
        self,
        now: datetime | None = None,
        *,
        grace_seconds: float = 0.0,
        stuck_after: float | None = None,
        refire_timers: bool = False,
        limit: int = 1000,
    ) -> list[ProcessMetadata[Any, Any]]:
        """List in-flight processes stuck past their deadline.

        A process is stuck when its awaited command's ``deadline_at`` passed more than
        ``grace_seconds`` ago (its timer should have fired), or — with ``stuck_after`` —
        when it has not changed for that many seconds (steps without a timeout). Timers
        and replies are durable messages, so after a restart routers simply continue;
        this lists what still waits, e.g. for dashboards or when timer messages were
        purged. ``refire_timers`` enqueues a timer, visible at once, for each overdue
        awaited command: harmless if the original fires too (a timer acts only while its
        command is still awaited, so it acts at most once).
        """
        now = now or self._clock.now()
        found: list[ProcessMetadata[Any, Any]] = []
        for domain in sorted({m.domain for m in self.managers.values()}):
            found.extend(
                await self.process_repo.find_stuck(
                    domain,
                    deadline_before=now - timedelta(seconds=grace_seconds),
                    updated_before=(
                        now - timedelta(seconds=stuck_after) if stuck_after is not None else None
                    ),
                    limit=limit,
                )
            )
        if refire_timers:
            timers = [
                timer_message(p.domain, p.process_id, p.awaiting_command_id, now)
                for p in found
                if p.awaiting_command_id is not None
                and p.deadline_at is not None
                and p.deadline_at <= now
                and p.status is not ProcessStatus.WAITING_FOR_TSQ
            ]
            if timers:
                await self._backend.queue.enqueue(self.reply_queue, timers)
        return found

    async def parked_messages(self, limit: int = 100) -> list[ProcessMessageRecord]:
        return await self.process_repo.list_messages(
            disposition=ProcessMessageDisposition.PARKED, limit=limit
        )

    async def replay_parked(self, record_id: int) -> bool:
        """Put a parked message back on its reply queue (after fixing its cause); see
        ``commandbus.process.parked``."""
        return await replay_parked(self._backend, record_id, reply_queue=self.reply_queue)


def _managers_telemetry(managers: Iterable[BaseProcessManager[Any, Any]]) -> Telemetry:
    for manager in managers:
        bus = getattr(manager, "command_bus", None)
        telemetry = getattr(bus, "telemetry", None)
        if isinstance(telemetry, Telemetry) and telemetry.enabled:
            return telemetry
    return NO_TELEMETRY


def _observe(telemetry: Telemetry, handled: Handled) -> None:
    """Metrics of one applied decision: the process's new status, the steps it finished."""
    decision = handled.decision
    process = decision.process if decision is not None else None
    if decision is None or process is None:
        return
    telemetry.process_changed(process.domain, process.process_type, process.status.value)
    for entry in decision.audit_updates:
        if entry.received_at is not None and entry.reply_outcome is not None:
            telemetry.process_step_finished(
                process.domain,
                process.process_type,
                entry.step_name,
                entry.reply_outcome.value,
                max((entry.received_at - entry.sent_at).total_seconds(), 0.0),
            )


def _log_handled(handled: Handled) -> None:
    """A DEBUG record per message: the process's new status when a decision applied."""
    decision = handled.decision
    process = decision.process if decision is not None else None
    if process is not None:
        state_change(
            logger,
            "process %s (%s): %s, step %s",
            process.process_id,
            process.process_type,
            process.status.value,
            process.current_step,
            domain=process.domain,
            process_id=str(process.process_id),
            process_type=process.process_type,
            status=process.status.value,
        )
    else:
        state_change(logger, "message %s: %s", handled.result.value, handled.reason)


def _command_id(env: Envelope) -> UUID | None:
    message = env.message
    if isinstance(message, ReplyReceived):
        return message.reply.command_id
    if message is not None and hasattr(message, "command_id"):
        value: UUID = message.command_id
        return value
    return None
