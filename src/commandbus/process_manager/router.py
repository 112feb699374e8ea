"""``ProcessEventRouter``: feeds an engine the replies and timers of its queue
(``<domain>__process_events``), a batch per transaction.

A batch is applied in one transaction, in a few statements for all its messages
(``ProcessEngine.handle_messages``); a message that cannot be applied (a ``decide`` bug,
a malformed message) writes nothing, is left on the queue and tried again after the
visibility timeout, and after ``max_attempts`` reads it is parked in the process message
log (``commandbus process parked list``) with its error. One bad message never stops the
router or the messages behind it.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

from commandbus.consuming import ConsumerLoop
from commandbus.models import QueueMessage
from commandbus.ports import ProcessWrites, Waiter
from commandbus.process.models import ProcessMessageDisposition, ProcessMessageRecord
from commandbus.process_manager.engine import ProcessEngine
from commandbus.sanitise import describe_exception, storable_text
from commandbus.validation import MAX_BATCH_LIMIT, validate_count, validate_seconds

__all__ = ["ProcessEventRouter"]

logger = logging.getLogger(__name__)


class ProcessEventRouter(ConsumerLoop):
    """Consumes an engine's reply queue (see the module docstring)."""

    consumer_name = "process event router"

    def __init__(
        self,
        engine: ProcessEngine[Any],
        *,
        batch_size: int = 100,
        visibility_timeout: float = 30.0,
        max_attempts: int = 5,
    ) -> None:
        super().__init__(engine.backend, engine.clock)
        self.engine = engine
        self.batch_size = validate_count(batch_size, "batch_size", MAX_BATCH_LIMIT)
        self.visibility_timeout = validate_seconds(visibility_timeout, "visibility_timeout", 3600.0)
        self.max_attempts = validate_count(max_attempts, "max_attempts", 1000)
        self.parked = 0

    def listened_queues(self) -> list[str]:
        return [self.engine.reply_queue]

    async def process_once(self, limit: int | None = None) -> int:
        queue = self._backend.queue
        name = self.engine.reply_queue
        messages = await queue.read(name, limit or self.batch_size, self.visibility_timeout)
        if not messages:
            return 0
        async with self._backend.transaction() as tx:
            errors = await self.engine.handle_messages([m.message for m in messages], conn=tx)
            done = [
                m.msg_id
                for m, error in zip(messages, errors, strict=True)
                if error is None or await self._failed(m, error, tx)
            ]
            await queue.delete(name, done, conn=tx)
        return len(messages)

    async def _failed(self, message: QueueMessage, exc: BaseException, tx: Any) -> bool:
        """A message that could not be applied: True once it is parked after its last
        attempt (done with), False to leave it for another try."""
        name = self.engine.reply_queue
        error = storable_text(describe_exception(exc))
        if message.read_count < self.max_attempts:
            logger.warning("message %s on %s failed, will retry: %s", message.msg_id, name, error)
            return False
        logger.warning("parking message %s on %s: %s", message.msg_id, name, error)
        record = ProcessMessageRecord(
            disposition=ProcessMessageDisposition.PARKED,
            reason=error,
            message=message.message,
            domain=self.engine.domain,
            queue_name=name,
            msg_id=message.msg_id,
        )
        await self.engine.backend.processes.apply(ProcessWrites(messages=[record]), conn=tx)
        self.parked += 1
        return True

    async def run(
        self, poll_interval: float = 1.0, *, concurrency: int = 1, use_notify: bool = True
    ) -> None:
        """Route until ``stop()``: woken by notifications and every ``poll_interval`` s;
        ``concurrency`` batches at once (each its own transaction; a process's messages
        are serialised by its row lock)."""
        await self._run(concurrency, poll_interval, use_notify)

    async def _serve(
        self, stack: AsyncExitStack, waiter: Waiter | None, concurrency: int, poll_interval: float
    ) -> None:
        loops = [asyncio.create_task(self._loop(waiter, poll_interval)) for _ in range(concurrency)]
        try:
            await asyncio.gather(*loops)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def _loop(self, waiter: Waiter | None, poll_interval: float) -> None:
        while not self._stop_requested:
            try:
                n = await self.process_once()
            except Exception as exc:
                logger.warning(
                    "%s on %s: batch failed: %s",
                    self.consumer_name,
                    self.engine.reply_queue,
                    describe_exception(exc),
                )
                n = 0
            if n == 0 and not self._stop_requested:
                await self._idle(waiter, poll_interval)

    async def _on_stop_timeout(self) -> None:
        return
