"""Rows of the in-memory adapters, with PostgreSQL's visibility and row locks.

Every stored row of the in-memory backend (a command, an audit event, an archived or a
queued message, a process, a process audit entry, a logged process message) is a
``TxCell``, kept in a ``TxTable`` (rows by key) or a ``TxLog`` (rows in insertion order).
The three adapters (command store, queue, process repository) use nothing else to store
data, so they share one isolation model, PostgreSQL's under READ COMMITTED:

- **Uncommitted writes are invisible to others.** A cell has the latest version
  (``value``) and, while an open transaction has changed it, the committed version, which
  every other transaction reads (MVCC). An insert is a write from "no row" (``None``), a
  delete a write to it, so an uncommitted insert is invisible to others and an
  uncommitted delete is not yet seen by them.
- **Rollback leaves nothing**: the committed version is restored, an inserted row leaves
  its container, and a savepoint's writes are undone on their own.
- **Row locks.** Every write takes the row lock, and so does ``lock`` (``SELECT … FOR
  UPDATE``); it is held by the root transaction (``holder``) until it ends, so at most
  one transaction has uncommitted changes on a row. ``lock`` waits while another
  transaction holds the row; readers that skip held rows (``SKIP LOCKED``) test
  ``held_by_other``. A lock taken in a savepoint that rolls back is given back.

Versions are never changed in place: a write stores a new one. That is what lets other
transactions keep reading the committed version without any copy being made.
"""

from __future__ import annotations

from collections.abc import Hashable, ItemsView, Iterable
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from commandbus.memory.transaction import MemoryTransaction

__all__ = ["TxCell", "TxLog", "TxTable"]

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)


class _Home(Protocol):
    """The container of a cell, told when the cell's state settles."""

    def _restored(self, cell: TxCell[Any]) -> None:
        """A rollback put an earlier version back into ``cell``."""

    def _released(self, cell: TxCell[Any]) -> None:
        """The transaction holding ``cell`` committed or rolled back."""


class TxCell(Generic[V]):
    """One stored row: its versions and its row lock (see the module docstring).

    Create cells through their container (``TxTable.insert``, ``TxLog.append``), which
    removes them again once they exist for nobody."""

    __slots__ = ("_committed", "_home", "holder", "key", "value")

    def __init__(self, home: _Home, key: Any = None) -> None:
        #: The latest version; None: no row (not inserted yet, rolled back or deleted).
        self.value: V | None = None
        #: The open root transaction holding the row lock (with any uncommitted change).
        self.holder: MemoryTransaction | None = None
        #: While held: the version as of the last commit, which other transactions read.
        self._committed: V | None = None
        self._home = home
        self.key = key

    # -- reading ---------------------------------------------------------------------

    def seen_by(self, tx: MemoryTransaction) -> V | None:
        """The version ``tx`` reads; None if the row does not exist for it."""
        holder = self.holder
        if holder is None or holder is tx.root:
            return self.value
        return self._committed

    def held_by_other(self, tx: MemoryTransaction) -> bool:
        """Whether another open transaction holds the row (``SKIP LOCKED`` skips it)."""
        holder = self.holder
        return holder is not None and holder is not tx.root

    def inserting(self, tx: MemoryTransaction) -> MemoryTransaction | None:
        """The other open transaction that inserted this row, if it has not committed:
        what a unique index makes a second inserter wait for."""
        holder = self.holder
        if holder is None or holder is tx.root or self._committed is not None:
            return None
        return holder

    # -- locking and writing -----------------------------------------------------------

    async def lock(self, tx: MemoryTransaction) -> V | None:
        """Hold the row for ``tx`` (``SELECT … FOR UPDATE``, or the lock an UPDATE or
        DELETE takes) and return its latest version, waiting while another transaction
        holds it. None (and no lock) if the row does not exist for ``tx``: another
        transaction's uncommitted insert is invisible, so it is not waited for."""
        root = tx.root
        while True:
            holder = self.holder
            if holder is root:
                return self.value
            if holder is None:
                if self.value is None:
                    return None
                self._hold(tx)
                return self.value
            if self._committed is None:
                return None
            await holder.wait_ended()

    def write(self, tx: MemoryTransaction, value: V | None) -> None:
        """Store ``value`` as the latest version in ``tx`` (None deletes the row). Takes
        the row lock; the caller must have made sure no other transaction holds it
        (``lock``, or a ``held_by_other`` test before a write without suspension)."""
        holder = self.holder
        if holder is None:
            # ``_hold``, inlined (every first write of a row in a transaction runs this).
            self.holder = tx.root
            self._committed = self.value
            tx.record_undo(self._roll_back)
            tx.on_commit(self._commit)
        elif holder is tx.root:
            # The version to go back to if only this savepoint rolls back; a rollback of
            # the transaction that took the lock restores the committed version anyway.
            tx.record_undo(partial(self._restore, self.value))
        else:
            raise RuntimeError("in-memory row written while another transaction holds it")
        self.value = value

    def _hold(self, tx: MemoryTransaction) -> None:
        self.holder = tx.root
        self._committed = self.value
        # Recorded in ``tx`` itself: a savepoint that rolls back gives the lock back.
        tx.record_undo(self._roll_back)
        tx.on_commit(self._commit)

    def _restore(self, value: V | None) -> None:
        self.value = value
        self._home._restored(self)

    def _roll_back(self) -> None:
        self.value = self._committed
        self.holder = None
        self._committed = None
        self._home._restored(self)
        self._home._released(self)

    def _commit(self) -> None:
        self.holder = None
        self._committed = None
        self._home._released(self)


class TxTable(Generic[K, V]):
    """Rows by a unique key (a primary key), each a ``TxCell``.

    Keeps the cells whose existence is changing (an uncommitted insert or delete), so
    that ``count_seen_by`` costs what is pending, not what is stored."""

    __slots__ = ("_cells", "_changing")

    def __init__(self) -> None:
        self._cells: dict[K, TxCell[V]] = {}
        self._changing: dict[K, TxCell[V]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._cells

    def cell(self, key: K) -> TxCell[V] | None:
        return self._cells.get(key)

    async def locked(self, tx: MemoryTransaction, key: K) -> tuple[TxCell[V], V] | None:
        """The cell of ``key`` and its row, held for ``tx`` (``TxCell.lock``); None if the
        row does not exist for ``tx``."""
        cell = self._cells.get(key)
        row = None if cell is None else await cell.lock(tx)
        return None if cell is None or row is None else (cell, row)

    def get(self, tx: MemoryTransaction, key: K) -> V | None:
        """The row under ``key`` as ``tx`` reads it."""
        cell = self._cells.get(key)
        return None if cell is None else cell.seen_by(tx)

    def items(self) -> ItemsView[K, TxCell[V]]:
        return self._cells.items()

    def seen_by(self, tx: MemoryTransaction) -> list[V]:
        """Every row that exists for ``tx``, in insertion order."""
        return _seen_by(self._cells.values(), tx)

    def count_seen_by(self, tx: MemoryTransaction) -> int:
        """How many rows exist for ``tx`` (``count(*)``)."""
        hidden = sum(1 for cell in self._changing.values() if cell.seen_by(tx) is None)
        return len(self._cells) - hidden

    async def unique(self, tx: MemoryTransaction, key: K) -> TxCell[V] | None:
        """The cell of ``key`` if its row exists for ``tx``, as a unique index finds it:
        another transaction's uncommitted insert of the key is waited for first."""
        while True:
            cell = self._cells.get(key)
            if cell is None:
                return None
            inserter = cell.inserting(tx)
            if inserter is None:
                return cell if cell.seen_by(tx) is not None else None
            await inserter.wait_ended()

    def insert(self, tx: MemoryTransaction, key: K, value: V) -> TxCell[V]:
        """Insert a row under a key that is free (the caller checked, as with
        ``unique``); invisible to others until ``tx`` commits."""
        if key in self._cells:
            raise RuntimeError(f"in-memory row {key!r} inserted twice")
        cell: TxCell[V] = TxCell(self, key)
        cell.write(tx, value)
        self._cells[key] = cell
        self._changing[key] = cell
        return cell

    def delete(self, tx: MemoryTransaction, cell: TxCell[V]) -> None:
        """Delete the row of ``cell`` (the same precondition as ``TxCell.write``)."""
        cell.write(tx, None)
        self._changing[cell.key] = cell

    def _restored(self, cell: TxCell[Any]) -> None:
        pass

    def _released(self, cell: TxCell[Any]) -> None:
        key = cell.key
        self._changing.pop(key, None)
        if cell.value is None and self._cells.get(key) is cell:
            del self._cells[key]  # a committed delete or a rolled-back insert


class TxLog(Generic[V]):
    """Rows in insertion order (an append-only table such as an audit trail), each a
    ``TxCell``; rows may be deleted."""

    __slots__ = ("_cells",)

    def __init__(self) -> None:
        self._cells: list[TxCell[V]] = []

    def cells(self) -> list[TxCell[V]]:
        return self._cells

    def seen_by(self, tx: MemoryTransaction) -> list[V]:
        """Every row that exists for ``tx``, oldest first."""
        return _seen_by(self._cells, tx)

    def latest_seen_by(self, tx: MemoryTransaction) -> V | None:
        """The newest row that exists for ``tx``."""
        for cell in reversed(self._cells):
            value = cell.seen_by(tx)
            if value is not None:
                return value
        return None

    def append(self, tx: MemoryTransaction, value: V) -> TxCell[V]:
        cell: TxCell[V] = TxCell(self)
        cell.write(tx, value)
        self._cells.append(cell)
        return cell

    def delete(self, tx: MemoryTransaction, cell: TxCell[V]) -> None:
        """Delete the row of ``cell`` (the same precondition as ``TxCell.write``)."""
        cell.write(tx, None)

    def _restored(self, cell: TxCell[Any]) -> None:
        pass

    def _released(self, cell: TxCell[Any]) -> None:
        if cell.value is None:
            # Gone for everyone: drop it. Usually the newest row (a rolled-back append).
            cells = self._cells
            for i in range(len(cells) - 1, -1, -1):
                if cells[i] is cell:
                    del cells[i]
                    break


def _seen_by(cells: Iterable[TxCell[V]], tx: MemoryTransaction) -> list[V]:
    """``TxCell.seen_by`` of each cell, without the rows that do not exist for ``tx``."""
    root = tx.root
    # Inlined: scans of whole tables (queries, counts) are the slowest reads there are.
    return [
        value
        for cell in cells
        if (value := cell.value if cell.holder is None or cell.holder is root else cell._committed)
        is not None
    ]
