"""In-memory adapters: the ports of ``commandbus.ports`` without a database.

For unit tests and deterministic simulation (with ``commandbus.testing.clock.VirtualClock``).
They pass the same contract suite as the PostgreSQL adapters.
"""

from commandbus.memory.backend import InMemoryBackend, InMemoryWaiter
from commandbus.memory.commands import InMemoryCommandStore
from commandbus.memory.queue import InMemoryMessageQueue
from commandbus.memory.transaction import MemoryTransaction, TransactionClosedError

__all__ = [
    "InMemoryBackend",
    "InMemoryCommandStore",
    "InMemoryMessageQueue",
    "InMemoryWaiter",
    "MemoryTransaction",
    "TransactionClosedError",
]
