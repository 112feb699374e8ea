"""In-memory message queues with PGMQ semantics (``msg_id``, ``read_ct``, ``vt``, archive).

Per queue: a ``TxTable`` of messages by id (``commandbus.memory.rows``: uncommitted
writes are invisible to others, a message a transaction has written — leased, moved or
deleted — is locked by it until it ends) and a heap of ``(vt, msg_id)``, the order in which
PostgreSQL's claim index ``(queue_name, vt, msg_id)`` hands out visible messages, so a
read takes the ``k`` first visible messages in ``O(k log n)`` and never scans the queue.
Heap entries are invalidated lazily: whenever a message gets a new version (or a rollback
puts an old one back) an entry is pushed, and entries that no longer match the latest
version are dropped when they reach the top.

Payloads are stored JSON-encoded and decoded on every read, so callers can never mutate
stored data, and anything PostgreSQL's ``jsonb`` would refuse is refused here too.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from commandbus.memory.rows import TxCell, TxTable
from commandbus.memory.transaction import MemoryHost, MemoryTransaction
from commandbus.models import JsonObject, QueueMessage, QueueStats
from commandbus.ports import Conn
from commandbus.validation import encode_payload, json_text, validate_queue_name

__all__ = ["InMemoryMessageQueue"]


@dataclass(slots=True, eq=False)
class StoredMessage:
    """One version of a queued message; never changed once stored (a lease stores a new
    version), so other transactions can go on reading the committed one."""

    msg_id: int
    queue: str
    body: str  # JSON encoding of the message
    enqueued_at: datetime
    vt: datetime
    read_ct: int = 0

    def decode(self) -> JsonObject:
        data: JsonObject = json.loads(self.body)
        return data

    def moved(self, vt: datetime, read_ct: int) -> StoredMessage:
        return StoredMessage(self.msg_id, self.queue, self.body, self.enqueued_at, vt, read_ct)


#: A queued message as stored: its versions and its row lock.
MessageCell = TxCell[StoredMessage]
#: A message a reader may take, with the version it read.
Picked = tuple[MessageCell, StoredMessage]


class QueueState(TxTable[int, StoredMessage]):
    """The messages of one queue and the heap of their ``(vt, msg_id)``."""

    __slots__ = ("heap", "name")

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.heap: list[tuple[datetime, int]] = []

    def schedule(self, msg: StoredMessage) -> None:
        heapq.heappush(self.heap, (msg.vt, msg.msg_id))

    def _restored(self, cell: TxCell[Any]) -> None:
        # The restored version's entry may have been dropped as stale meanwhile.
        msg = cell.value
        if msg is not None:
            self.schedule(msg)

    def pick(self, tx: MemoryTransaction, now: datetime, limit: int) -> list[Picked]:
        """Up to ``limit`` messages visible at ``now`` in ``(vt, msg_id)`` order, skipping
        messages another transaction holds or inserted and has not committed (``FOR UPDATE
        SKIP LOCKED``). Nothing changes: the caller leases or removes what it takes."""
        heap = self.heap
        cells = self._cells
        root = tx.root
        picked: list[Picked] = []
        keep: list[tuple[datetime, int]] = []
        seen: set[tuple[datetime, int]] = set()
        while heap and len(picked) < limit and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            cell = cells.get(entry[1])
            if cell is None or entry in seen:
                continue  # gone, or a duplicate entry
            msg = cell.value
            if msg is None or msg.vt != entry[0]:
                continue  # stale: the latest version is elsewhere in the heap (or deleted)
            seen.add(entry)
            keep.append(entry)
            holder = cell.holder  # ``not cell.held_by_other(tx)``, inlined: the hot loop
            if holder is None or holder is root:
                picked.append((cell, msg))
        for entry in keep:
            heapq.heappush(heap, entry)
        return picked


def encode_message(message: object, max_bytes: int) -> str:
    """Validate and encode a message exactly as it would be stored as ``jsonb``."""
    return encode_payload(message, "queue message", max_bytes)


class InMemoryMessageQueue:
    """``MessageQueue`` port in memory; see ``commandbus.ports.MessageQueue``."""

    def __init__(self, backend: MemoryHost) -> None:
        self._backend = backend
        self._queues: dict[str, QueueState] = {}
        self._next_id = 1

    # -- port ------------------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        messages: Sequence[JsonObject],
        delay: float = 0.0,
        *,
        conn: Conn | None = None,
    ) -> list[int]:
        validate_queue_name(queue)
        limit = self._backend.max_payload_bytes
        bodies = [encode_message(m, limit) for m in messages]
        async with self._backend.transaction(conn) as tx:
            return [self.put(tx, queue, body, delay) for body in bodies]

    async def enqueue_unchecked(self, queue: str, messages: Sequence[object]) -> list[int]:
        """Store any JSON values, unvalidated: what another writer of a PostgreSQL queue
        table can do. For tests of how readers cope with junk."""
        bodies = [json_text(m) for m in messages]
        async with self._backend.transaction() as tx:
            return [self.put(tx, queue, body) for body in bodies]

    async def read(
        self,
        queue: str,
        limit: int,
        visibility_timeout: float,
        *,
        conn: Conn | None = None,
    ) -> list[QueueMessage]:
        async with self._backend.transaction(conn) as tx:
            picked = self.pick(tx, queue, limit)
            vt = self._backend.clock.now() + _seconds(visibility_timeout)
            leased = [self.lease(tx, cell, msg, vt) for cell, msg in picked]
            return [self.message_of(msg) for msg in sorted(leased, key=lambda m: m.msg_id)]

    async def delete(self, queue: str, msg_ids: Sequence[int], *, conn: Conn | None = None) -> int:
        async with self._backend.transaction(conn) as tx:
            deleted = 0
            for msg_id in msg_ids:
                taken = await self.take(tx, queue, msg_id)
                if taken is not None:
                    self.remove(tx, *taken)
                    deleted += 1
            return deleted

    async def set_visibility(
        self, queue: str, msg_id: int, seconds: float, *, conn: Conn | None = None
    ) -> bool:
        async with self._backend.transaction(conn) as tx:
            taken = await self.take(tx, queue, msg_id)
            if taken is None:
                return False
            self.set_vt(tx, *taken, self._backend.clock.now() + _seconds(seconds))
            return True

    async def release(self, queue: str, msg_ids: Sequence[int], *, conn: Conn | None = None) -> int:
        """Give read messages back unhandled: visible now, that read uncounted."""
        async with self._backend.transaction(conn) as tx:
            released = 0
            for msg_id in msg_ids:
                taken = await self.take(tx, queue, msg_id)
                if taken is not None:
                    cell, msg = taken
                    now = self._backend.clock.now()
                    self._write(tx, cell, msg.moved(now, max(msg.read_ct - 1, 0)))
                    released += 1
            return released

    async def depth(self, queue: str, *, conn: Conn | None = None) -> int:
        async with self._backend.transaction(conn) as tx:
            state = self._queues.get(queue)
            return 0 if state is None else state.count_seen_by(tx)

    async def stats(self, queue: str, *, conn: Conn | None = None) -> QueueStats:
        async with self._backend.transaction(conn) as tx:
            state = self._queues.get(queue)
            messages = [] if state is None else state.seen_by(tx)
        now = self._backend.clock.now()
        waiting = [m for m in messages if m.vt > now]
        return QueueStats(
            queue=queue,
            depth=len(messages),
            in_flight=sum(1 for m in waiting if m.read_ct > 0),
            delayed=sum(1 for m in waiting if m.read_ct == 0),
            oldest_enqueued_at=min((m.enqueued_at for m in messages), default=None),
        )

    # -- building blocks for the command store (all inside an open transaction) --------

    def state(self, queue: str) -> QueueState:
        state = self._queues.get(queue)
        if state is None:
            state = self._queues[queue] = QueueState(queue)
        return state

    def put(self, tx: MemoryTransaction, queue: str, body: str, delay: float = 0.0) -> int:
        """Store an encoded message, visible (to others: after commit) in ``delay`` s."""
        state = self.state(queue)
        msg_id = self._next_id
        self._next_id += 1
        now = self._backend.clock.now()
        msg = StoredMessage(msg_id, queue, body, now, now + _seconds(delay))
        state.insert(tx, msg_id, msg)
        state.schedule(msg)
        tx.notify(queue)
        return msg_id

    async def take(self, tx: MemoryTransaction, queue: str, msg_id: int) -> Picked | None:
        """The message as an UPDATE or DELETE in ``tx`` finds it, for ``tx`` to write right
        away: None if it does not exist for ``tx``; a message another open transaction
        holds is waited for."""
        state = self._queues.get(queue)
        cell = state.cell(msg_id) if state is not None else None
        if cell is None:
            return None
        # Only a message another transaction holds needs the lock now (to wait for it);
        # otherwise the write takes it (one undo entry fewer on the settle path).
        holder = cell.holder
        if holder is not None and holder is not tx.root and await cell.lock(tx) is None:
            return None
        msg = cell.value  # what ``tx`` sees: nobody else holds the message now
        return (cell, msg) if msg is not None else None

    def pick(self, tx: MemoryTransaction, queue: str, limit: int) -> list[Picked]:
        """Visible messages to take, in the order PostgreSQL's claim would pick them."""
        state = self._queues.get(queue)
        if state is None or limit <= 0:
            return []
        return state.pick(tx, self._backend.clock.now(), limit)

    # The writes below take a message ``tx`` may write (``pick``ed or ``take``n, with the
    # version read then) and must follow without an ``await`` in between.

    def remove(self, tx: MemoryTransaction, cell: MessageCell, msg: StoredMessage) -> None:
        self._queues[msg.queue].delete(tx, cell)

    def set_vt(
        self, tx: MemoryTransaction, cell: MessageCell, msg: StoredMessage, vt: datetime
    ) -> None:
        self._write(tx, cell, msg.moved(vt, msg.read_ct))

    def lease(
        self, tx: MemoryTransaction, cell: MessageCell, msg: StoredMessage, vt: datetime
    ) -> StoredMessage:
        """A read of the message: invisible until ``vt``, ``read_ct`` + 1; the new version."""
        leased = msg.moved(vt, msg.read_ct + 1)
        self._write(tx, cell, leased)
        return leased

    def _write(self, tx: MemoryTransaction, cell: MessageCell, msg: StoredMessage) -> None:
        cell.write(tx, msg)
        self._queues[msg.queue].schedule(msg)

    @staticmethod
    def message_of(msg: StoredMessage) -> QueueMessage:
        return QueueMessage(
            msg_id=msg.msg_id,
            queue_name=msg.queue,
            message=msg.decode(),
            read_count=msg.read_ct,
            enqueued_at=msg.enqueued_at,
            visible_at=msg.vt,
        )


def _seconds(value: float) -> timedelta:
    # Negative values put vt in the past, as ``now() + make_interval(secs => …)`` does.
    return timedelta(seconds=float(value))
