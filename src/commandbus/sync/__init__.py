"""The synchronous API, for Django, Flask and plain scripts: send commands, create
batches, act on the troubleshooting queue and start processes on a synchronous
``psycopg.Connection``, inside the caller's transaction.

It is a thin layer over the async implementation, not a second one: see
``commandbus.sync._bridge`` for how the same code runs on a sync connection.
"""

from commandbus.sync._bridge import SyncBridgeError, bound_backend, run_sync
from commandbus.sync.api import SyncCommandBus, SyncProcesses, SyncTroubleshootingQueue

__all__ = [
    "SyncBridgeError",
    "SyncCommandBus",
    "SyncProcesses",
    "SyncTroubleshootingQueue",
    "bound_backend",
    "run_sync",
]
