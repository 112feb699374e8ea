"""Worker: claim commands in batches, run their handlers, settle the outcomes.

Throughput comes from batching round trips, not from the handlers: commands are claimed
in batches (one statement), handlers run concurrently, and finished deliveries are
settled together (one transaction for everything that finished meanwhile — group commit).
A command counts against ``concurrency`` until its settlement is committed, which is the
back-pressure that keeps a slow database from being flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace

from commandbus.attempts import failure_outcome, log_failed_attempt
from commandbus.backends import BackendSource, backend_from
from commandbus.consuming import ConsumerLoop, Stopping
from commandbus.errors import DatabaseUnavailableError, HandlerNotFoundError
from commandbus.handler import HandlerRegistry, RegisteredHandler
from commandbus.handler_calls import call_handler
from commandbus.leases import LeaseKeeper
from commandbus.logs import OutageReporter, state_change
from commandbus.models import AuditEventType, ClaimedCommand, Command, Settlement
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend, Clock, CommandDelivery, Conn, Waiter
from commandbus.sanitise import describe_exception
from commandbus.settlement import (
    Outcome,
    OutcomeKind,
    exhausted_outcome,
    settle_outcome,
)
from commandbus.settling import SettlementWriter, WorkerStats
from commandbus.telemetry import NO_TELEMETRY, Telemetry
from commandbus.validation import (
    MAX_PAYLOAD_BYTES,
    MAX_VISIBILITY_SECONDS,
    command_queue,
    validate_count,
    validate_name,
    validate_seconds,
)

__all__ = ["Worker", "WorkerStats", "run_workers"]

logger = logging.getLogger(__name__)

#: The most settlements written in one transaction.
MAX_SETTLE_BATCH = 500


class Worker(ConsumerLoop):
    """Processes the commands of one domain with the handlers of ``registry``.

    ``visibility_timeout`` is how long a claimed command stays invisible to other workers
    (its lease). With ``heartbeat`` (the default) the worker extends the lease of a handler
    that is still running every third of that time, so slow handlers keep their command;
    a handler can also call ``context.extend_visibility``. ``retry_policy`` supplies the
    backoff between attempts (the attempt limit is stored with each command).
    """

    def __init__(
        self,
        pool: BackendSource,
        domain: str,
        registry: HandlerRegistry,
        visibility_timeout: float = 30,
        retry_policy: RetryPolicy | None = None,
        *,
        batch_size: int = 50,
        max_result_bytes: int = MAX_PAYLOAD_BYTES,
        heartbeat: bool = True,
        clock: Clock | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        visibility_timeout = validate_seconds(
            visibility_timeout, "visibility_timeout", MAX_VISIBILITY_SECONDS
        )
        validate_count(batch_size, "batch_size", 10_000)
        self._backend: Backend = backend_from(pool, clock)
        self.domain = validate_name(domain)
        self.queue = command_queue(domain)
        self.registry = registry
        self.visibility_timeout = float(visibility_timeout)
        self.retry_policy = retry_policy or RetryPolicy()
        self.batch_size = batch_size
        self.max_result_bytes = max_result_bytes
        self.stats = WorkerStats()
        #: The worker's one port on the hot path: claim deliveries, settle them.
        self._deliveries: CommandDelivery = self._backend.commands
        super().__init__(self._backend, clock or self._backend.clock)
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: list[Settlement] = []
        self._pending_ready = asyncio.Event()
        self._abandon = False
        self.heartbeat = heartbeat
        self.leases = LeaseKeeper(
            self._backend.queue, self.queue, self.visibility_timeout, self._clock
        )
        #: Metrics and traces (``commandbus.metrics``, ``commandbus.tracing``); off: none.
        self.telemetry: Telemetry = telemetry or NO_TELEMETRY
        self._writer = SettlementWriter(
            self._backend,
            self.stats,
            self.leases,
            self.visibility_timeout,
            self._clock,
            self.telemetry,
        )
        self._outage = OutageReporter(logger, f"worker on {self.queue}", self._clock)

    # -- one batch (deterministic; used by tests and by run) ---------------------------

    async def process_once(self, limit: int | None = None) -> int:
        """Claim one batch, run its handlers concurrently, settle them in one transaction.

        Returns how many commands were claimed. Handy in tests: no background tasks.
        """
        claimed = await self._claim(limit or self.batch_size)
        self._received(claimed)
        for command in claimed:
            self.leases.hold(command.msg_id, command.attempt)
        try:
            async with self._heartbeat():
                settlements = await asyncio.gather(*(self._execute(c) for c in claimed))
            batch = [s for s in settlements if s is not None]
            _, error = await self._writer.write(batch)
            if error is not None:
                raise error
        finally:
            for command in claimed:
                self.leases.release(command.msg_id, command.attempt)
        return len(claimed)

    @contextlib.asynccontextmanager
    async def _heartbeat(self) -> AsyncIterator[None]:
        if not self.heartbeat:
            yield
            return
        beating = asyncio.create_task(self.leases.run())
        try:
            yield
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    # -- continuous operation -----------------------------------------------------------

    consumer_name = "worker"

    def listened_queues(self) -> list[str]:
        return [self.queue]

    async def run(
        self, concurrency: int = 10, poll_interval: float = 1.0, use_notify: bool = True
    ) -> None:
        """Process commands until ``stop()`` is called, ``concurrency`` handlers at once.

        Wakes on LISTEN/NOTIFY when ``use_notify`` (and on a ``poll_interval`` timer in any
        case: notifications are hints, delayed retries become visible without one).
        """
        await self._run(concurrency, poll_interval, use_notify)

    async def _serve(
        self, stack: AsyncExitStack, waiter: Waiter | None, concurrency: int, poll_interval: float
    ) -> None:
        self._abandon = False
        await stack.enter_async_context(self._heartbeat())
        flusher = asyncio.create_task(self._flush_loop())
        try:
            await self._claim_loop(concurrency, poll_interval, waiter)
            # Let in-flight handlers finish and their settlements commit.
            while self._inflight > 0 and not self._abandon:
                self._wake.clear()
                await self._wake.wait()
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            self._give_up_pending()

    def _give_up_pending(self) -> None:
        """After a stop timeout: settlements still unwritten (the database unreachable)
        are dropped; their commands are delivered again after the visibility timeout."""
        if self._pending:
            logger.warning(
                "stopping with %d settlements unwritten on %s: those commands will be "
                "delivered again after their visibility timeout",
                len(self._pending),
                self.queue,
            )
        for settlement in self._pending:
            self.leases.release(settlement.msg_id, settlement.attempts)
        self._pending.clear()
        self._inflight = 0

    def stop(self, timeout: float | None = None) -> Stopping:
        """Stop claiming; ``await`` it to wait up to ``timeout`` seconds for in-flight
        handlers to finish and settle. Handlers still running then are cancelled: their
        commands become visible again after the visibility timeout (at-least-once)."""
        return super().stop(timeout)

    async def _on_stop_timeout(self) -> None:
        self._abandon = True
        for task in list(self._tasks):
            task.cancel()
        self._wake.set()
        await self._finished.wait()

    async def _claim_loop(
        self, concurrency: int, poll_interval: float, waiter: Waiter | None
    ) -> None:
        while not self._stop_requested:
            free = concurrency - self._inflight
            if free <= 0:
                self._wake.clear()
                await self._wake.wait()
                continue
            want = min(free, self.batch_size)
            try:
                claimed = await self._claim(want)
            except DatabaseUnavailableError as exc:
                self._outage.failed(exc, poll_interval)
                await self._idle(waiter, poll_interval)
                continue
            except Exception:
                logger.exception(
                    "claim failed on %s; retrying after %ss", self.queue, poll_interval
                )
                await self._idle(waiter, poll_interval)
                continue
            self._outage.succeeded()
            self._received(claimed)
            for command in claimed:
                self.leases.hold(command.msg_id, command.attempt)
                self._inflight += 1
                task = asyncio.create_task(self._run_one(command))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
            if not claimed:
                await self._idle(waiter, poll_interval)

    async def _claim(self, limit: int) -> list[ClaimedCommand]:
        if not self.telemetry.enabled:
            return await self._deliveries.claim(self.domain, limit, self.visibility_timeout)
        attributes = {"commandbus.domain": self.domain, "commandbus.limit": limit}
        with self.telemetry.span("commandbus.claim", attributes) as span:
            claimed = await self._deliveries.claim(self.domain, limit, self.visibility_timeout)
            span.set("commandbus.claimed", len(claimed))
        return claimed

    def _received(self, claimed: Sequence[ClaimedCommand]) -> None:
        self.stats.claimed += len(claimed)
        if logger.isEnabledFor(logging.DEBUG):
            for delivery in claimed:
                command = delivery.command
                state_change(
                    logger,
                    "command %s (%s) received, attempt %d",
                    command.command_id,
                    command.command_type,
                    delivery.attempt,
                    domain=command.domain,
                    command_id=str(command.command_id),
                    command_type=command.command_type,
                    attempt=delivery.attempt,
                    status="IN_PROGRESS",
                )

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # A cancelled (stop timeout) or crashed delivery is not settled: its message is
        # redelivered after the visibility timeout. Free its slot.
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                logger.error("delivery failed unexpectedly", exc_info=task.exception())
            self._inflight -= 1
            self._wake.set()

    async def _run_one(self, claimed: ClaimedCommand) -> None:
        try:
            settlement = await self._execute(claimed)
        except BaseException:
            self.leases.release(claimed.msg_id, claimed.attempt)
            raise
        if settlement is None:  # settled inside the handler's own transaction
            self.leases.release(claimed.msg_id, claimed.attempt)
            self._inflight -= 1
            self._wake.set()
            return
        self._pending.append(settlement)
        self._pending_ready.set()

    async def _flush_loop(self) -> None:
        """Settle whatever finished meanwhile, in one transaction per round."""
        failures = 0
        while True:
            await self._pending_ready.wait()
            self._pending_ready.clear()
            while self._pending:
                batch = self._pending[:MAX_SETTLE_BATCH]
                done, error = await self._writer.write(batch)
                del self._pending[:done]
                for settlement in batch[:done]:
                    self.leases.release(settlement.msg_id, settlement.attempts)
                self._inflight -= done
                self._wake.set()
                if error is not None:
                    # The database is unreachable: the messages stay leased (and are
                    # delivered again if this lasts past their visibility timeout).
                    failures += 1
                    pause = min(0.1 * 2**failures, 5.0)
                    self._outage.failed(error, pause)
                    await self._clock.sleep(pause)
                else:
                    failures = 0
                    self._outage.succeeded()

    # -- running a handler ----------------------------------------------------------------

    async def _execute(self, claimed: ClaimedCommand) -> Settlement | None:
        """Run the handler of one delivery; return its settlement, or None if the handler
        was transactional and its settlement already committed with the handler's writes
        (or was stale, and the handler's writes rolled back)."""
        command = claimed.command
        if claimed.attempt > claimed.max_attempts:
            expiries = await self._lease_expiries(command)
            outcome = exhausted_outcome(claimed, expiries, self.visibility_timeout)
            return self._settle(claimed, outcome)
        registered = self.registry.find(command.domain, command.command_type)
        if registered is None:
            error = HandlerNotFoundError(command.domain, command.command_type)
            outcome = Outcome(
                OutcomeKind.TRANSIENT,
                error_type="HandlerNotFoundError",
                error_code="HANDLER_NOT_FOUND",
                error_message=str(error),
            )
            return self._settle(claimed, outcome)
        if registered.transactional:
            return await self._execute_in_transaction(claimed, registered)
        outcome = await self._call(claimed, registered, None)
        return self._settle(claimed, outcome)

    def _settle(self, claimed: ClaimedCommand, outcome: Outcome) -> Settlement:
        """The settlement of ``outcome``; a failure is logged here, once, at WARNING."""
        settlement = settle_outcome(claimed, outcome, self.retry_policy)
        if outcome.kind is not OutcomeKind.SUCCESS:
            log_failed_attempt(claimed, outcome, settlement)
        return settlement

    async def _lease_expiries(self, command: Command) -> int:
        """How many deliveries of ``command`` outlived their lease (from its audit trail;
        read only for a command past its delivery limit)."""
        try:
            trail = await self._backend.commands.audit_trail(command.command_id, command.domain)
        except Exception:
            logger.exception("could not read the audit trail of %s", command.command_id)
            return 0
        return sum(1 for event in trail if event.event_type is AuditEventType.LEASE_EXPIRED)

    async def _execute_in_transaction(
        self, claimed: ClaimedCommand, registered: RegisteredHandler
    ) -> Settlement | None:
        command = claimed.command
        try:
            async with self._backend.transaction() as conn:
                outcome = await self._call(claimed, registered, conn)
                if outcome.kind is not OutcomeKind.SUCCESS:
                    raise _RollBack(outcome)
                settlement = settle_outcome(claimed, outcome, self.retry_policy)
                if not await self._deliveries.settle([settlement], conn=conn):
                    # A stale delivery (claimed again after its visibility timeout, or
                    # moved by an operator): its writes are undone and the current
                    # delivery settles the command.
                    raise _Stale
        except _RollBack as rollback:
            # The handler's own writes are undone with the failed attempt.
            return self._settle(claimed, rollback.outcome)
        except _Stale:
            held = round(self.leases.seconds_held(claimed.msg_id, claimed.attempt), 3)
            try:
                await self._writer.record_lease_expired(
                    command.domain, command.command_id, claimed.attempt, held
                )
            except Exception:
                logger.exception("could not record the lost lease of %s", command.command_id)
            return None
        except DatabaseUnavailableError:
            raise
        except Exception as exc:
            # The settlement (or the handler's own writes at commit) was refused: the
            # handler's writes are undone with it; record the attempt as failed.
            outcome = failure_outcome(
                OutcomeKind.TRANSIENT, exc, "SETTLEMENT_FAILED", describe_exception(exc), None
            )
            return self._settle(claimed, outcome)
        self._writer.settled(settlement)
        return None

    async def _call(
        self, claimed: ClaimedCommand, registered: RegisteredHandler, conn: Conn | None
    ) -> Outcome:
        telemetry = self.telemetry
        if not telemetry.enabled:
            return await self._call_handler(claimed, registered, conn)
        command = claimed.command
        command_id = str(command.command_id)

        def attributes() -> dict[str, object]:  # made only if the span records
            return {
                "commandbus.command_type": command.command_type,
                "commandbus.command_id": command_id,
                "commandbus.attempt": claimed.attempt,
            }

        with telemetry.span("commandbus.handle", attributes, command.headers) as span:
            started = time.perf_counter()
            outcome = await self._call_handler(claimed, registered, conn)
            telemetry.command_handled(
                command.domain, command.command_type, time.perf_counter() - started
            )
            if outcome.kind is not OutcomeKind.SUCCESS:
                span.error(outcome.exception or f"{outcome.error_code}: {outcome.error_message}")
            # The reply continues this trace: the router's span is a child of this one.
            headers = (
                telemetry.outgoing_headers(causation_id=command_id)
                if command.reply_to is not None
                else None
            )
        if not headers:
            return outcome
        if outcome.kind is OutcomeKind.SUCCESS:  # the common case: no dataclasses.replace
            return Outcome(OutcomeKind.SUCCESS, result=outcome.result, reply_headers=headers)
        return replace(outcome, reply_headers=headers)

    async def _call_handler(
        self, claimed: ClaimedCommand, registered: RegisteredHandler, conn: Conn | None
    ) -> Outcome:
        command = claimed.command

        async def extend(seconds: float) -> bool:
            seconds = validate_seconds(seconds, "seconds", MAX_VISIBILITY_SECONDS)
            kept = await self._backend.queue.set_visibility(self.queue, claimed.msg_id, seconds)
            if kept:
                self.leases.extended(claimed.msg_id, claimed.attempt, seconds)
            return kept

        return await call_handler(
            registered,
            command,
            claimed.attempt,
            claimed.max_attempts,
            claimed.msg_id,
            conn,
            extend,
            self.max_result_bytes,
        )


class _RollBack(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class _Stale(Exception):
    """Rolls back a transactional handler whose settlement was stale."""


async def run_workers(workers: Sequence[Worker], concurrency: int = 10) -> None:
    """Run several workers (e.g. one per domain) until they are all stopped."""
    await asyncio.gather(*(w.run(concurrency=concurrency) for w in workers))
