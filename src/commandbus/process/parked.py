"""Parked process messages: replay one after its cause was fixed.

A router parks a reply-queue message it cannot handle (malformed, no manager, a hook that
keeps failing, a state that does not load, a poison reply) in the message log, whole.
Replaying puts it back on its reply queue and removes the record, in one transaction, so
it is never lost nor doubled; a router then handles it like any message. This needs no
process manager, so the CLI and a console can do it.
"""

from __future__ import annotations

from commandbus.errors import ValidationError
from commandbus.ports import Backend
from commandbus.process.models import ProcessMessageDisposition

__all__ = ["replay_parked"]


async def replay_parked(
    backend: Backend, record_id: int, *, reply_queue: str | None = None
) -> bool:
    """Put parked message ``record_id`` back on the queue it came from (``reply_queue``
    when the record names none). False when there is no such parked message."""
    async with backend.transaction() as tx:
        records = await backend.processes.list_messages(
            disposition=ProcessMessageDisposition.PARKED, record_id=record_id, limit=1, conn=tx
        )
        if not records:
            return False
        record = records[0]
        queue = record.queue_name or reply_queue
        if queue is None:
            raise ValidationError(
                f"parked message {record_id} names no reply queue; pass reply_queue"
            )
        # Delete first: of two operators replaying the same record at once, only the one
        # whose delete finds it puts the message back (the other waits, then finds none).
        if not await backend.processes.delete_message(record_id, conn=tx):
            return False
        await backend.queue.enqueue(queue, [record.message], conn=tx)
    return True
