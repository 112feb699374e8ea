"""Transactions of the in-memory backend: undo logs, savepoints, commit actions, waits.

asyncio runs one task at a time, but a transaction can stay open across ``await``s (a
handler doing its own writes on the worker's connection), so several may be open at once.
The in-memory stores write straight into their rows (``commandbus.memory.rows``) and keep,
per transaction, an **undo log**: every mutation records its inverse, and a rollback runs
them in reverse order. A transaction joined with ``transaction(conn=tx)`` is a
*savepoint*: it has its own undo log, merged into its parent on success and run on error,
so only its own part is undone. Commit actions (publishing rows, releasing row locks) run
when the root transaction commits, and **notifications are delivered at commit**, never
for a rolled-back enqueue.

Visibility, row locks and ``SKIP LOCKED`` are the rows' business (``TxCell``); what a
transaction offers them is the undo log, the commit actions and ``wait_ended``, which a
transaction that wants a row another one holds awaits.

Known simplifications: a transaction waiting for a row wakes when the holder's root
transaction ends, even if the savepoint that took the lock rolled back earlier;
deadlocks are not detected (PostgreSQL aborts one of the transactions, here they wait for
ever).

For adapters written against this backend: run every operation inside ``async with
backend.transaction(conn) as tx`` and keep every row in a ``TxCell`` (through a
``TxTable`` or a ``TxLog``): it records its undo and commit actions itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol

from commandbus.errors import CommandBusError
from commandbus.ports import Clock

__all__ = ["MemoryHost", "MemoryTransaction", "TransactionClosedError"]


class MemoryHost(Protocol):
    """What the in-memory stores and transactions need of ``InMemoryBackend`` (a protocol,
    so that they do not import the backend that wires them)."""

    clock: Clock
    max_payload_bytes: int

    def transaction(self, conn: Any = None) -> TransactionContext: ...

    def _deliver(self, queues: Iterable[str]) -> None: ...


class TransactionClosedError(CommandBusError):
    """A transaction handle was used after its transaction ended (or with another backend)."""


class MemoryTransaction:
    """An open transaction (root) or savepoint of an ``InMemoryBackend``; the ``conn``."""

    __slots__ = (
        "_ended",
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
        # Root only: an event set when the transaction ends (for waiters on its rows).
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

    # -- waiting -------------------------------------------------------------------

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
