"""In-memory message queues with PGMQ semantics (``msg_id``, ``read_ct``, ``vt``, archive).

Per queue: a dict of messages by id and a heap of ``(vt, msg_id)``, the order in which
PostgreSQL's claim index ``(queue_name, vt, msg_id)`` hands out visible messages, so a
read takes the ``k`` first visible messages in ``O(k log n)`` and never scans the queue.
Heap entries are invalidated lazily: whenever a message's ``vt`` changes a new entry is
pushed, and entries that no longer match their message are dropped when they reach the
top.

Payloads are stored JSON-encoded and decoded on every read, so callers can never mutate
stored data, and anything PostgreSQL's ``jsonb`` would refuse is refused here too.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from commandbus.memory.transaction import MemoryHost, MemoryTransaction, visible_to
from commandbus.models import JsonObject, QueueMessage
from commandbus.ports import Conn
from commandbus.validation import encode_payload, validate_queue_name

__all__ = ["InMemoryMessageQueue"]


@dataclass(slots=True)
class StoredMessage:
    msg_id: int
    queue: str
    body: str  # JSON encoding of the message
    enqueued_at: datetime
    vt: datetime
    read_ct: int = 0
    tx: MemoryTransaction | None = None  # creating transaction until it commits

    def decode(self) -> JsonObject:
        data: JsonObject = json.loads(self.body)
        return data


@dataclass(slots=True)
class QueueState:
    name: str
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    heap: list[tuple[datetime, int]] = field(default_factory=list)
    uncommitted: dict[int, MemoryTransaction] = field(default_factory=dict)

    def schedule(self, msg: StoredMessage) -> None:
        heapq.heappush(self.heap, (msg.vt, msg.msg_id))

    def pick(self, tx: MemoryTransaction, now: datetime, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages visible at ``now`` in ``(vt, msg_id)`` order, skipping
        uncommitted messages of other transactions (``FOR UPDATE SKIP LOCKED``). Nothing
        changes: the caller leases or removes what it takes."""
        heap = self.heap
        messages = self.messages
        picked: list[StoredMessage] = []
        keep: list[tuple[datetime, int]] = []
        seen: set[int] = set()
        while heap and len(picked) < limit and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            msg = messages.get(entry[1])
            if msg is None or msg.vt != entry[0] or entry[1] in seen:
                continue  # stale or duplicate entry
            seen.add(entry[1])
            keep.append(entry)
            if visible_to(msg.tx, tx):
                picked.append(msg)
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
        bodies = [json.dumps(m) for m in messages]
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
            for msg in picked:
                self.lease(tx, msg, vt)
            return [self.message_of(msg) for msg in sorted(picked, key=lambda m: m.msg_id)]

    async def delete(self, queue: str, msg_ids: Sequence[int], *, conn: Conn | None = None) -> int:
        async with self._backend.transaction(conn) as tx:
            return sum(1 for msg_id in msg_ids if self.remove(tx, queue, msg_id) is not None)

    async def set_visibility(
        self, queue: str, msg_id: int, seconds: float, *, conn: Conn | None = None
    ) -> bool:
        async with self._backend.transaction(conn) as tx:
            msg = self.find(tx, queue, msg_id)
            if msg is None:
                return False
            self.set_vt(tx, msg, self._backend.clock.now() + _seconds(seconds))
            return True

    async def depth(self, queue: str, *, conn: Conn | None = None) -> int:
        async with self._backend.transaction(conn) as tx:
            state = self._queues.get(queue)
            if state is None:
                return 0
            hidden = sum(1 for owner in state.uncommitted.values() if owner is not tx.root)
            return len(state.messages) - hidden

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
        root = tx.root
        msg = StoredMessage(msg_id, queue, body, now, now + _seconds(delay), tx=root)
        state.messages[msg_id] = msg
        state.uncommitted[msg_id] = root
        state.schedule(msg)

        def undo() -> None:
            state.messages.pop(msg_id, None)
            state.uncommitted.pop(msg_id, None)

        def publish() -> None:
            msg.tx = None
            state.uncommitted.pop(msg_id, None)

        tx.record_undo(undo)
        tx.on_commit(publish)
        tx.notify(queue)
        return msg_id

    def find(self, tx: MemoryTransaction, queue: str, msg_id: int) -> StoredMessage | None:
        state = self._queues.get(queue)
        if state is None:
            return None
        msg = state.messages.get(msg_id)
        if msg is None or not visible_to(msg.tx, tx):
            return None
        return msg

    def remove(self, tx: MemoryTransaction, queue: str, msg_id: int) -> StoredMessage | None:
        msg = self.find(tx, queue, msg_id)
        if msg is None:
            return None
        state = self._queues[queue]
        del state.messages[msg_id]
        owner = state.uncommitted.pop(msg_id, None)

        def undo() -> None:
            state.messages[msg_id] = msg
            if owner is not None:
                state.uncommitted[msg_id] = owner
            state.schedule(msg)

        tx.record_undo(undo)
        return msg

    def set_vt(self, tx: MemoryTransaction, msg: StoredMessage, vt: datetime) -> None:
        state = self._queues[msg.queue]
        old_vt, old_ct = msg.vt, msg.read_ct
        msg.vt = vt
        state.schedule(msg)

        def undo() -> None:
            msg.vt, msg.read_ct = old_vt, old_ct
            state.schedule(msg)

        tx.record_undo(undo)

    def pick(self, tx: MemoryTransaction, queue: str, limit: int) -> list[StoredMessage]:
        """Visible messages to take, in the order PostgreSQL's claim would pick them."""
        state = self._queues.get(queue)
        if state is None or limit <= 0:
            return []
        return state.pick(tx, self._backend.clock.now(), limit)

    def lease(self, tx: MemoryTransaction, msg: StoredMessage, vt: datetime) -> None:
        """A read of ``msg``: invisible until ``vt``, ``read_ct`` + 1."""
        self.set_vt(tx, msg, vt)
        msg.read_ct += 1

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
