"""Behaviour tests of the storage ports, written once and run against every backend.

One contract class per port (or per consumer of a port), each with the same hooks:

- ``CommandSendContract``: ``CommandStore.insert`` and ``claim``, duplicates (the hot path
  of senders and workers);
- ``SettlementContract``: ``CommandStore.settle`` (the hot path of workers);
- ``OperatorWritesContract``: row locks and the writes of operator actions;
- ``QueryContract``: the read-only queries;
- ``TransactionContract``: ``Backend.transaction`` — rollback, savepoints, isolation;
- ``MessageQueueContract``: ``MessageQueue`` and ``Backend.listen``;
- ``BatchContract``: ``BatchStore`` and the batch counters every status change moves.
- ``ActivityContract``: ``CommandStore.activity`` (what dashboards read).
- ``HistoryContract``: retention, ``CommandStore.prune_finished``.
- ``ClusterContract`` (``contracts.clusters``): a topology of two clusters — the outbox,
  the relay, withdrawals across clusters, ``ClusterBus``; its fixture is ``clusters``.

``BackendContract`` is all of them. Subclass it (or one of them) in a test module as
``Test…``, provide the ``backend`` fixture and the ``advance`` hook (and, for a real
database, ``let_others_run`` and ``wait_timeout``)::

    class TestMemoryBackend(BackendContract):
        @pytest.fixture
        async def backend(self) -> InMemoryBackend:
            return InMemoryBackend(clock=VirtualClock())

        async def advance(self, backend, seconds):
            await backend.clock.advance(seconds)

The class names have no ``Test`` prefix, so importing them does not collect them. Every
test starts from an empty backend and pins exact values (statuses, attempts, orders).
"""

from commandbus.testing.contracts._base import ContractBase
from commandbus.testing.contracts.activity import ActivityContract
from commandbus.testing.contracts.batches import BatchContract
from commandbus.testing.contracts.clusters import ClusterContract
from commandbus.testing.contracts.history import HistoryContract
from commandbus.testing.contracts.operators import OperatorWritesContract
from commandbus.testing.contracts.queries import QueryContract
from commandbus.testing.contracts.queue import MessageQueueContract
from commandbus.testing.contracts.sending import CommandSendContract
from commandbus.testing.contracts.settling import SettlementContract
from commandbus.testing.contracts.transactions import TransactionContract


class BackendContract(
    CommandSendContract,
    SettlementContract,
    OperatorWritesContract,
    QueryContract,
    TransactionContract,
    MessageQueueContract,
    BatchContract,
    ActivityContract,
    HistoryContract,
):
    """The whole contract of ``Backend``, ``MessageQueue`` and ``CommandStore``."""


__all__ = [
    "ActivityContract",
    "BackendContract",
    "BatchContract",
    "ClusterContract",
    "CommandSendContract",
    "ContractBase",
    "HistoryContract",
    "MessageQueueContract",
    "OperatorWritesContract",
    "QueryContract",
    "SettlementContract",
    "TransactionContract",
]
