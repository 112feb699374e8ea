"""Transactions of the in-memory backend: undo logs, savepoints, row locks, visibility.

asyncio runs one task at a time, but a transaction can stay open across ``await``s (a
handler doing its own writes on the worker's connection), so several may be open at once.
The in-memory backend writes straight into its dictionaries and keeps, per transaction,
an **undo log**: every mutation records its inverse, and a rollback runs them in reverse
order. A transaction joined with ``transaction(conn=tx)`` is a *savepoint*: it has its own
undo log, merged into its parent on success and run on error, so only its own part is
undone.

What PostgreSQL gives for free and we imitate here:

- **Uncommitted inserts are invisible to others.** Rows and messages a transaction
  creates carry ``tx`` = its root transaction until commit (``visible_to``).
- **Uncommitted updates of a command row are invisible to others**: the first update by
  a transaction keeps a copy of the committed version, which other readers get
  (``CommandRow.seen_by``). Writers always hold the row lock first, so at most one
  transaction has uncommitted changes on a row.
- A message read or deleted by an open transaction is skipped by other readers, which is
  what ``FOR UPDATE SKIP LOCKED`` gives on PostgreSQL.
- **Row locks** (``SELECT … FOR UPDATE`` and every UPDATE) are held until the root
  transaction ends; another transaction wanting the row waits for that end.
- **Notifications are delivered at commit**, never for a rolled-back enqueue.

Known simplifications: ``depth`` does not count messages deleted by another open
transaction (PostgreSQL still counts them until commit); ``delete``/``set_visibility`` of
a message another open transaction holds do not wait for it; row locks taken inside a
rolled-back savepoint are kept until the transaction ends; deadlocks are not detected.

For adapters written against this backend (e.g. the in-memory process repository):
run every operation inside ``async with backend.transaction(conn) as tx``, call
``tx.record_undo(fn)`` after each mutation, ``await tx.lock(key)`` before changing a
shared row, ``tx.on_commit(fn)`` to publish a new item at commit (clear its ``tx``) and
check ``visible_to(item_tx, tx)`` before returning items from reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from commandbus.errors import CommandBusError
from commandbus.ports import Clock

__all__ = ["MemoryHost", "MemoryTransaction", "TransactionClosedError", "TxCell", "visible_to"]


class MemoryHost(Protocol):
    """What the in-memory stores and transactions need of ``InMemoryBackend`` (a protocol,
    so that they do not import the backend that wires them)."""

    clock: Clock
    max_payload_bytes: int
    _locks: dict[Any, MemoryTransaction]

    def transaction(self, conn: Any = None) -> TransactionContext: ...

    def _deliver(self, queues: Iterable[str]) -> None: ...


class TransactionClosedError(CommandBusError):
    """A transaction handle was used after its transaction ended (or with another backend)."""


class MemoryTransaction:
    """An open transaction (root) or savepoint of an ``InMemoryBackend``; the ``conn``."""

    __slots__ = (
        "_ended",
        "_locks",
        "_notify",
        "_on_commit",
        "_undo",
        "active",
        "backend",
        "parent",
        "root",
    )

    def __init__(self, backend: MemoryHost, parent: MemoryTransaction | None) -> None:
        self.backend = backend
        self.parent = parent
        self.root: MemoryTransaction = parent.root if parent is not None else self
        self.active = True
        self._undo: list[Callable[[], None]] = []
        self._on_commit: list[Callable[[], None]] = []
        self._notify: set[str] = set()
        # Root only: the row locks held and an event set when the transaction ends.
        self._locks: list[Hashable] = []
        self._ended: asyncio.Event | None = None

    # -- recording -------------------------------------------------------------------

    def record_undo(self, undo: Callable[[], None]) -> None:
        """Register the inverse of a mutation just made; run on rollback, newest first."""
        self._undo.append(undo)

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` when the root transaction commits (dropped on rollback)."""
        self._on_commit.append(action)

    def notify(self, queue: str) -> None:
        """Wake listeners of ``queue`` when the root transaction commits."""
        self._notify.add(queue)

    # -- locks -----------------------------------------------------------------------

    async def lock(self, key: Hashable) -> None:
        """Lock ``key`` (a row) until the root transaction ends; wait while another holds it."""
        root = self.root
        locks = self.backend._locks
        while True:
            owner = locks.get(key)
            if owner is None:
                locks[key] = root
                root._locks.append(key)
                return
            if owner is root:
                return
            await owner.wait_ended()

    def try_lock(self, key: Hashable) -> bool:
        """Lock ``key`` unless another transaction holds it (``SKIP LOCKED``)."""
        root = self.root
        locks = self.backend._locks
        owner = locks.get(key)
        if owner is None:
            locks[key] = root
            root._locks.append(key)
            return True
        return owner is root

    def locked_by_other(self, key: Hashable) -> bool:
        owner = self.backend._locks.get(key)
        return owner is not None and owner is not self.root

    async def wait_ended(self) -> None:
        """Wait until this (root) transaction has committed or rolled back."""
        root = self.root
        if not root.active:
            return
        if root._ended is None:
            root._ended = asyncio.Event()
        await root._ended.wait()

    def check_open(self, backend: MemoryHost) -> None:
        if self.backend is not backend:
            raise TransactionClosedError(
                "this transaction belongs to another InMemoryBackend; pass a conn obtained "
                "from the same backend's transaction()"
            )
        if not self.active or not self.root.active:
            raise TransactionClosedError(
                "the transaction has already ended; open a new one with backend.transaction()"
            )

    # -- ending ----------------------------------------------------------------------

    def _commit(self) -> None:
        self.active = False
        parent = self.parent
        if parent is not None:
            parent._undo.extend(self._undo)
            parent._on_commit.extend(self._on_commit)
            parent._notify.update(self._notify)
            return
        for action in self._on_commit:
            action()
        self._finish()
        if self._notify:
            self.backend._deliver(self._notify)

    def _rollback(self) -> None:
        self.active = False
        undo = self._undo
        while undo:
            undo.pop()()
        if self.parent is None:
            self._finish()

    def _finish(self) -> None:
        locks = self.backend._locks
        for key in self._locks:
            if locks.get(key) is self:
                del locks[key]
        self._locks.clear()
        self._undo.clear()
        self._on_commit.clear()
        if self._ended is not None:
            self._ended.set()


class TransactionContext:
    """``async with backend.transaction(conn)``: commit on success, roll back on error."""

    __slots__ = ("_backend", "_parent", "_tx")

    def __init__(self, backend: MemoryHost, parent: MemoryTransaction | None) -> None:
        self._backend = backend
        self._parent = parent
        self._tx: MemoryTransaction | None = None

    async def __aenter__(self) -> MemoryTransaction:
        if self._parent is not None:
            self._parent.check_open(self._backend)
        self._tx = MemoryTransaction(self._backend, self._parent)
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx = self._tx
        assert tx is not None
        if exc_type is None and tx.root.active:
            tx._commit()
        else:
            tx._rollback()


def visible_to(owner: MemoryTransaction | None, tx: MemoryTransaction) -> bool:
    """Whether an item created by ``owner`` (None once committed) is visible in ``tx``."""
    return owner is None or owner is tx.root


V = TypeVar("V")


class TxCell(Generic[V]):
    """One stored row (or entry) with PostgreSQL's visibility rules, for the in-memory
    adapters: created by an open transaction, it is invisible to others until that
    transaction commits; updated by an open transaction, others keep seeing the committed
    value until it commits; rolled back, it is as before.

    Writers hold the row's lock (``tx.lock``) before ``write``, so at most one transaction
    has uncommitted changes on a cell. The owner of the cell removes it from its index on
    rollback of the creating transaction (``tx.record_undo``)."""

    __slots__ = ("_committed", "_dirty_by", "created_by", "value")

    def __init__(self, value: V, tx: MemoryTransaction) -> None:
        self.value = value
        self.created_by: MemoryTransaction | None = tx.root
        self._dirty_by: MemoryTransaction | None = None
        self._committed: V | None = None
        tx.on_commit(self._published)

    def _published(self) -> None:
        self.created_by = None

    def seen_by(self, tx: MemoryTransaction) -> V | None:
        """The value as ``tx`` sees it; None if it does not exist for ``tx``."""
        if not visible_to(self.created_by, tx):
            return None
        if self._dirty_by is not None and self._dirty_by is not tx.root:
            return self._committed
        return self.value

    def write(self, tx: MemoryTransaction, value: V) -> None:
        """Replace the value in ``tx`` (undone on rollback; seen by others at commit)."""
        if self._dirty_by is None and self.created_by is None:
            self._dirty_by = tx.root
            self._committed = self.value

            def clean() -> None:
                self._dirty_by = None
                self._committed = None

            tx.record_undo(clean)  # runs after the restore below on rollback
            tx.on_commit(clean)
        old = self.value
        self.value = value

        def restore() -> None:
            self.value = old

        tx.record_undo(restore)
