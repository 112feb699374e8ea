"""Writing a worker's settlements so that no single outcome can stop the worker.

``SettlementWriter.write`` applies a batch in one transaction (``CommandStore.settle``).
If the database refuses the batch for any reason but being unreachable, each settlement is
written alone, and one that is still refused is replaced by a move to the TSQ saying why
(``settlement.unsettleable``). An unreachable database stops the write where it is; the
worker retries the rest. A settlement that applies to nothing means its delivery had lost
its lease: that is recorded as a ``LEASE_EXPIRED`` audit event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from commandbus.errors import DatabaseUnavailableError
from commandbus.leases import LeaseKeeper
from commandbus.logs import state_change
from commandbus.models import AuditEventType, CommandStatus, Settlement
from commandbus.ports import Backend, Clock
from commandbus.sanitise import describe_exception, storable_text
from commandbus.settlement import (
    EXHAUSTED_CODE,
    exhausted_message,
    lease_expired_explanation,
    unsettleable,
)
from commandbus.telemetry import NO_TELEMETRY, Telemetry

logger = logging.getLogger("commandbus.worker")


@dataclass
class WorkerStats:
    """Counters since the worker was created (for progress displays and metrics)."""

    claimed: int = 0
    completed: int = 0
    retried: int = 0
    to_troubleshooting: int = 0
    business_failures: int = 0
    settle_errors: int = 0
    #: deliveries whose handler outlived the lease: their outcome was discarded
    lease_expired: int = 0

    def count(self, settlement: Settlement) -> None:
        status = settlement.status.value
        if status == "COMPLETED":
            self.completed += 1
        elif status == "PENDING":
            self.retried += 1
        elif status == "IN_TROUBLESHOOTING_QUEUE":
            self.to_troubleshooting += 1
        elif status == "FAILED":
            self.business_failures += 1


class SettlementWriter:
    """Writes settlements for one worker (see the module docstring)."""

    def __init__(
        self,
        backend: Backend,
        stats: WorkerStats,
        leases: LeaseKeeper,
        visibility_timeout: float,
        clock: Clock,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self._telemetry = telemetry
        self._backend = backend
        self._stats = stats
        self._leases = leases
        self._visibility_timeout = visibility_timeout
        self._clock = clock

    async def write(
        self, batch: Sequence[Settlement]
    ) -> tuple[int, DatabaseUnavailableError | None]:
        """Write ``batch`` in one transaction; if the database refuses it, write each
        settlement alone, and replace one it still refuses by a move to the TSQ saying
        why (``unsettleable``): no outcome can stop the worker. Returns how many of
        ``batch`` are done, from the start, and the error that stopped it early (the
        database unavailable), if any."""
        if not batch:
            return 0, None
        if not self._telemetry.enabled:
            return await self._write(batch)
        with self._telemetry.span("commandbus.settle", {"commandbus.batch_size": len(batch)}):
            return await self._write(batch)

    async def _write(
        self, batch: Sequence[Settlement]
    ) -> tuple[int, DatabaseUnavailableError | None]:
        try:
            applied = await self._backend.commands.settle(batch)
        except DatabaseUnavailableError as exc:
            # Reported by the worker, once per interval while the outage lasts.
            self._stats.settle_errors += 1
            return 0, exc
        except Exception:
            self._stats.settle_errors += 1
            logger.exception("settling %d commands failed; settling them one by one", len(batch))
        else:
            await self._account(batch, applied)
            return len(batch), None
        for done, settlement in enumerate(batch):
            try:
                await self._write_alone(settlement)
            except DatabaseUnavailableError as exc:
                return done, exc
        return len(batch), None

    async def _write_alone(self, settlement: Settlement) -> None:
        try:
            await self._account([settlement], await self._backend.commands.settle([settlement]))
            return
        except DatabaseUnavailableError:
            raise
        except Exception as exc:
            reason = storable_text(f"the settlement could not be stored: {describe_exception(exc)}")
            logger.error("command %s: %s; moving it to the TSQ", settlement.command_id, reason)
            replacement = unsettleable(settlement, reason)
        try:
            await self._account([replacement], await self._backend.commands.settle([replacement]))
        except DatabaseUnavailableError:
            raise
        except Exception:
            # Left leased: delivered again after the visibility timeout, and moved to the
            # TSQ once its deliveries exceed max_attempts.
            logger.exception("command %s could not be settled at all", settlement.command_id)

    async def _account(self, settled: Sequence[Settlement], applied: int) -> None:
        """Count what ``settled`` applied; fewer applied than given means some deliveries
        had lost their lease (the command was delivered again): record those."""
        if applied < len(settled):
            lost = await self._record_lost_leases(settled)
        else:
            lost = set()
        for settlement in settled:
            if settlement.msg_id not in lost:
                self.settled(settlement)

    def settled(self, settlement: Settlement) -> None:
        """Account for one settlement that was applied: counters, log, telemetry."""
        self._stats.count(settlement)
        if logger.isEnabledFor(logging.DEBUG):
            state_change(
                logger,
                "command %s settled: %s (attempt %d)",
                settlement.command_id,
                settlement.status.value,
                settlement.attempts,
                domain=settlement.domain,
                command_id=str(settlement.command_id),
                command_type=settlement.command_type,
                attempt=settlement.attempts,
                status=settlement.status.value,
            )
        telemetry = self._telemetry
        if telemetry.enabled:
            sent_at = settlement.sent_at
            latency = (self._clock.now() - sent_at).total_seconds() if sent_at else None
            telemetry.command_settled(
                settlement.domain,
                settlement.command_type or "",
                settlement.status.value,
                latency,
            )

    async def _record_lost_leases(self, settled: Sequence[Settlement]) -> set[int]:
        now = self._clock.now()
        lost: set[int] = set()
        for settlement in settled:
            lease = self._leases.release(settlement.msg_id, settlement.attempts)
            if lease is None or lease.expires > now:
                continue
            try:
                meta = await self._backend.commands.get(settlement.domain, settlement.command_id)
                if meta is None or meta.attempts == settlement.attempts:
                    continue
                held = round((now - lease.started).total_seconds(), 3)
                await self.record_lease_expired(
                    settlement.domain, settlement.command_id, settlement.attempts, held
                )
            except Exception:
                logger.exception("could not record the lost lease of %s", settlement.command_id)
                continue
            lost.add(settlement.msg_id)
        return lost

    async def record_lease_expired(
        self, domain: str, command_id: UUID, attempt: int, held_seconds: float
    ) -> None:
        """Audit that delivery ``attempt`` outlived its lease. If the command meanwhile
        went to the TSQ for exceeding its deliveries, its error now says why."""
        self._stats.lease_expired += 1
        logger.warning(
            "command %s: attempt %d ran %.1f s, longer than its %g s lease; its outcome was "
            "discarded (the command was delivered again)",
            command_id,
            attempt,
            held_seconds,
            self._visibility_timeout,
        )
        details = {
            "attempt": attempt,
            "held_seconds": held_seconds,
            "visibility_timeout": self._visibility_timeout,
        }
        commands = self._backend.commands
        async with self._backend.transaction() as tx:
            await commands.append_audit(
                domain, command_id, [(AuditEventType.LEASE_EXPIRED, details)], conn=tx
            )
            meta = await commands.lock(domain, command_id, conn=tx)
            if (
                meta is not None
                and meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
                and meta.last_error_code == EXHAUSTED_CODE
            ):
                why = lease_expired_explanation(held_seconds, self._visibility_timeout)
                message = exhausted_message(meta.attempts, meta.max_attempts, why)
                await commands.set_status(
                    domain,
                    command_id,
                    meta.status,
                    last_error=("LeaseExpired", "LEASE_EXPIRED", message),
                    conn=tx,
                )
