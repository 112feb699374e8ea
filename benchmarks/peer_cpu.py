"""CPU seconds of the PostgreSQL backends serving one database, for the peers benchmark.

Imports nothing of the project (the PgQueuer side runs it in PgQueuer's own virtualenv):
a thread samples ``/proc/<pid>/stat`` of every backend of the database (found in
``pg_stat_activity``) every 50 ms and keeps each backend's last figure, so a backend that
exits during the run still counts up to its last sample. Only for a server on this
machine; elsewhere ``seconds()`` is None. Other databases' backends (other work on a
shared server) are not counted; the WAL writer and checkpointer, shared by all, are not
either.
"""

from __future__ import annotations

import os
import resource
import threading
from typing import Any

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds (user + system) of the calling process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int) -> float | None:
    """CPU seconds (user + system) of process ``pid`` so far; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


class BackendCpu:
    """``start()`` before the run, ``stop()`` after; ``seconds()`` in between them."""

    def __init__(self, dsn: str) -> None:
        self._conn: psycopg.Connection[Any] = psycopg.connect(dsn, autocommit=True)
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self.available = True

    def _pids(self) -> list[int]:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return [row[0] for row in rows]

    def _sample(self, first: bool) -> None:
        for pid in self._pids():
            cpu = cpu_of(pid)
            if cpu is None:
                if first:
                    self.available = False  # not a local server
                continue
            if first:
                self._first[pid] = cpu
            self._last[pid] = cpu

    def _sample_until_stopped(self) -> None:
        while not self._done.wait(0.05):
            self._sample(first=False)

    def start(self) -> None:
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._sample(first=False)
        self._conn.close()

    def seconds(self) -> float | None:
        """CPU seconds the database's backends used between start and stop (a backend
        that connected during the run counts from zero)."""
        if not self.available:
            return None
        return sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())
