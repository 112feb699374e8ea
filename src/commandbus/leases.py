"""The leases a worker holds on the commands it is running, and their heartbeat.

A claimed command is invisible to other workers until its lease (the visibility timeout)
runs out. A handler that runs longer loses it: another worker delivers the command again,
and the first delivery's settlement is discarded as stale. The heartbeat prevents that for
handlers that are merely slow: every third of the visibility timeout it extends the lease
of each delivery that still runs and would lose it before the next beat. A handler that
blocks the event loop stops the heartbeat too; its lease then runs out, and the worker
records that (``AuditEventType.LEASE_EXPIRED``) so the TSQ can say what happened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from commandbus.ports import Clock, MessageQueue

logger = logging.getLogger(__name__)


@dataclass
class Lease:
    msg_id: int
    started: datetime
    expires: datetime


class LeaseKeeper:
    """Tracks the worker's leases; ``beat()`` extends the ones about to run out."""

    def __init__(
        self, queue: MessageQueue, queue_name: str, visibility_timeout: float, clock: Clock
    ) -> None:
        self._queue = queue
        self._queue_name = queue_name
        self._timeout = timedelta(seconds=visibility_timeout)
        self.interval = visibility_timeout / 3
        self._clock = clock
        # By (msg_id, attempt): a worker may claim its own message again after the lease
        # ran out, while the first delivery still runs.
        self._leases: dict[tuple[int, int], Lease] = {}
        self.extensions = 0

    def hold(self, msg_id: int, attempt: int) -> None:
        now = self._clock.now()
        self._leases[msg_id, attempt] = Lease(msg_id, now, now + self._timeout)

    def extended(self, msg_id: int, attempt: int, seconds: float) -> None:
        """The handler extended its own lease (``HandlerContext.extend_visibility``)."""
        lease = self._leases.get((msg_id, attempt))
        if lease is not None:
            lease.expires = self._clock.now() + timedelta(seconds=seconds)

    def release(self, msg_id: int, attempt: int) -> Lease | None:
        return self._leases.pop((msg_id, attempt), None)

    def seconds_held(self, msg_id: int, attempt: int) -> float:
        lease = self._leases.get((msg_id, attempt))
        if lease is None:
            return 0.0
        return (self._clock.now() - lease.started).total_seconds()

    async def beat(self) -> int:
        """Extend every lease that would run out before the next beat; returns how many
        were extended. A failed extension is logged, never raised: the next beat retries."""
        now = self._clock.now()
        soon = now + 2 * timedelta(seconds=self.interval)
        extended = 0
        failed: list[int] = []
        for lease in [lease for lease in self._leases.values() if lease.expires <= soon]:
            try:
                kept = await self._queue.set_visibility(
                    self._queue_name, lease.msg_id, self._timeout.total_seconds()
                )
            except Exception:
                failed.append(lease.msg_id)
                continue
            if kept:
                lease.expires = self._clock.now() + self._timeout
                extended += 1
        if failed:
            # One line per beat, not one per lease (a database outage fails them all).
            logger.warning(
                "could not extend the lease of %d messages on %s (e.g. %s)",
                len(failed),
                self._queue_name,
                failed[0],
            )
        self.extensions += extended
        return extended

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            await self._clock.sleep(self.interval)
            await self.beat()
