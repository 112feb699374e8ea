"""Throughput over time, measured on the database, and recovery after each fault.

The sampler counts finished work every ``interval`` seconds (0.25 by default) with the
database's own clock (``clock_timestamp()`` in the same statement), so that the rate does
not depend on when the driver's event loop got round to asking: work items are the
effects of completed ``Touch`` commands (rows of ``chaos_effect``) plus answered SUCCESS
steps of processes. Once a second it also counts the visible messages of each consumer
queue, which tells an idle agent (nothing to do) from a stalled one.

A restarting server answers nothing: the sampler reconnects on the next tick and the
first sample after the gap carries the work done meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.workload import COMMAND_QUEUE, PROCESS_COMMAND_QUEUE, PROCESS_REPLY_QUEUE

CONSUMER_QUEUES = (COMMAND_QUEUE, PROCESS_COMMAND_QUEUE, PROCESS_REPLY_QUEUE)

_COUNT_SQL = """
SELECT extract(epoch FROM clock_timestamp())::float8,
       (SELECT count(*) FROM chaos_effect),
       (SELECT count(*) FROM commandbus.process_audit
         WHERE kind = 'STEP' AND reply_outcome = 'SUCCESS'),
       (SELECT count(*) FROM commandbus.process WHERE status = 'COMPLETED')
"""
_BACKLOG_SQL = """
SELECT queue_name, count(*) FROM commandbus.queue_message
WHERE queue_name = ANY(%s) AND vt <= clock_timestamp() GROUP BY queue_name
"""

#: Rate windows: the pre-fault rate is the mean over PRE_WINDOW seconds before the fault;
#: throughput is "back" at the start of the first POST_WINDOW after the fault whose mean
#: rate is at least RECOVERED_FRACTION of it.
PRE_WINDOW = 5.0
POST_WINDOW = 1.0
RECOVERED_FRACTION = 0.9
#: Below this pre-fault rate (work items/s) there was no load to recover to.
MIN_RATE = 1.0


@dataclass(frozen=True)
class Sample:
    t: float  # database clock, epoch seconds
    commands: int  # completed Touch commands (their effects)
    steps: int  # answered process steps
    processes: int  # completed processes

    @property
    def units(self) -> int:
        return self.commands + self.steps


@dataclass
class Sampler:
    dsn: str
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    backlog: dict[str, int] = field(default_factory=dict)
    backlog_at: float = 0.0  # local wall clock of the last backlog count
    #: database clock minus local wall clock (same machine: about zero; kept so that
    #: fault times taken locally while the server is down map onto the samples' clock)
    offset: float = 0.0
    errors: int = 0
    sampled: asyncio.Event = field(default_factory=asyncio.Event)  # set by every sample

    def db_now(self) -> float:
        return time.time() + self.offset

    async def run(self, stop: asyncio.Event) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        next_backlog = 0.0
        try:
            while not stop.is_set():
                tick = time.monotonic()
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(
                            self.dsn, autocommit=True, connect_timeout=2
                        )
                    before = time.time()
                    cur = await conn.execute(_COUNT_SQL)
                    row = await cur.fetchone()
                    after = time.time()
                    assert row is not None
                    self.offset = float(row[0]) - (before + after) / 2
                    self.samples.append(Sample(float(row[0]), *(int(v) for v in row[1:])))
                    self.sampled.set()
                    if tick >= next_backlog:
                        cur = await conn.execute(_BACKLOG_SQL, (list(CONSUMER_QUEUES),))
                        self.backlog = {q: int(n) for q, n in await cur.fetchall()}
                        self.backlog_at = time.time()
                        next_backlog = tick + 1.0
                except (psycopg.Error, OSError):
                    self.errors += 1  # the server is restarting: reconnect next tick
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                delay = self.interval - (time.monotonic() - tick)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(delay, 0.01))
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    @property
    def last(self) -> Sample | None:
        return self.samples[-1] if self.samples else None


def units_at(samples: list[Sample], t: float) -> float | None:
    """Work items done at time ``t``, interpolated between the samples around it."""
    if not samples or t < samples[0].t:
        return None
    lo, hi = 0, len(samples) - 1
    if t >= samples[hi].t:
        return float(samples[hi].units)
    while hi - lo > 1:  # binary search: samples are in time order
        mid = (lo + hi) // 2
        if samples[mid].t <= t:
            lo = mid
        else:
            hi = mid
    a, b = samples[lo], samples[hi]
    span = b.t - a.t
    frac = (t - a.t) / span if span > 0 else 1.0
    return a.units + frac * (b.units - a.units)


def rate_between(samples: list[Sample], t0: float, t1: float) -> float | None:
    u0, u1 = units_at(samples, t0), units_at(samples, t1)
    if u0 is None or u1 is None or t1 <= t0:
        return None
    return (u1 - u0) / (t1 - t0)


def pre_fault_rate(samples: list[Sample], t_fault: float, since: float = 0.0) -> float | None:
    """Mean rate over the PRE_WINDOW seconds before the fault; less if the run is younger
    or the previous fault's recovery ended later (``since``), but at least one second."""
    if not samples:
        return None
    start = max(t_fault - PRE_WINDOW, samples[0].t, since)
    if t_fault - start < 1.0:
        return None
    return rate_between(samples, start, t_fault)


def recovery_seconds(samples: list[Sample], t_fault: float, pre_rate: float) -> float | None:
    """Seconds from the fault to the start of the first POST_WINDOW, entirely after the
    fault, whose rate is >= RECOVERED_FRACTION x ``pre_rate``; None if there is none yet.

    Windows start at sample times (so the answer has the sampling interval's resolution);
    a fault that never slowed the run down recovers at the first sample after it."""
    target = RECOVERED_FRACTION * pre_rate
    end = samples[-1].t if samples else t_fault
    for sample in samples:
        if sample.t < t_fault:
            continue
        if sample.t + POST_WINDOW > end:
            return None
        rate = rate_between(samples, sample.t, sample.t + POST_WINDOW)
        if rate is not None and rate >= target:
            return sample.t - t_fault
    return None
