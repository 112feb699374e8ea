"""The figures of ``python -m benchmarks.soak``: what is sampled live (``Sampler``) at each window
boundary, what is read from the database at the end, the exactly-once check, the table
and the verdict."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg
from rich.table import Table

from benchmarks.peer_cpu import BackendCpu, cpu_of
from benchmarks.throughput import console, mark

TARGET_THROUGHPUT_RATIO = 0.90  # last window / first window, completions per second
TARGET_RSS_RATIO = 1.10  # last boundary / first boundary, each worker process
TARGET_OFFERED_SHARE = 0.95  # of --rate, in every window: the sender kept its schedule
MIB = 1024 * 1024

# The audit trail is partitioned (migration 011): its size is that of the whole tree
# (pg_partition_tree has no rows for a table that is not partitioned).
TABLE_SIZES = """
SELECT t.name, coalesce((SELECT sum(pg_total_relation_size(p.relid))
                         FROM pg_partition_tree(t.oid) AS p),
                        pg_total_relation_size(t.oid))
FROM (VALUES ('queue_message', 'commandbus.queue_message'::regclass),
             ('command', 'commandbus.command'::regclass),
             ('audit', 'commandbus.audit'::regclass)) AS t(name, oid)
"""

QUEUE_STATS = """
SELECT relname, n_dead_tup, autovacuum_count + vacuum_count
FROM pg_stat_user_tables
WHERE schemaname = 'commandbus' AND relname IN ('queue_message', 'command')
"""

# Windows of completions, in the order the database completed them (updated_at is set by
# the settlement, the row's last write); latency is the command row's created_at (the
# send's transaction) to its settlement, both on the database clock. A window's rate is
# taken between the last instants of two windows, with every command completed by each
# of them counted (commands settled together share their instant, and may straddle the
# boundary of a window).
COMPLETION_WINDOWS = """
WITH ranked AS (
    SELECT (row_number() OVER (ORDER BY updated_at) - 1) / %(window)s AS w, updated_at,
           extract(epoch FROM updated_at - created_at) * 1000 AS ms
    FROM commandbus.command
    WHERE domain = %(domain)s
), windows AS (
    SELECT w, count(*) AS commands, max(updated_at) AS until,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
           max(ms) AS worst
    FROM ranked GROUP BY w
)
SELECT commands, until,
       (SELECT count(*) FROM commandbus.command c
        WHERE c.domain = %(domain)s AND c.updated_at <= windows.until),
       p50, p99, worst
FROM windows ORDER BY w
"""

# The same windows of sends, in the order they were sent: the offered rate achieved.
# created_at is the start of the send's transaction, the same for a whole batch (and
# command_created_idx serves the counts).
SEND_WINDOWS = """
WITH ranked AS (
    SELECT (row_number() OVER (ORDER BY created_at) - 1) / %(window)s AS w, created_at
    FROM commandbus.command
    WHERE domain = %(domain)s
), windows AS (
    SELECT w, max(created_at) AS until FROM ranked GROUP BY w
)
SELECT until,
       (SELECT count(*) FROM commandbus.command c
        WHERE c.domain = %(domain)s AND c.created_at <= windows.until)
FROM windows ORDER BY w
"""

COMMAND_STATES = """
SELECT count(*),
       count(*) FILTER (WHERE status = 'COMPLETED' AND attempts = 1)
FROM commandbus.command WHERE domain = %(domain)s
"""

COMPLETED_EVENTS = """
SELECT count(*), count(DISTINCT command_id)
FROM commandbus.audit WHERE domain = %(domain)s AND event_type = 'COMPLETED'
"""

REPLIES_RECEIVED = """
SELECT count(*), count(DISTINCT command_id), count(*) FILTER (WHERE outcome <> 'SUCCESS'),
       (SELECT count(*) FROM commandbus.command c
        WHERE c.domain = %(domain)s
          AND NOT EXISTS (SELECT 1 FROM soak_reply r WHERE r.command_id = c.command_id))
FROM soak_reply
"""

QUEUE_LEFT = "SELECT count(*) FROM commandbus.queue_message"

# What decides whether dead tuples are vacuumed during the run: printed with the figures.
VACUUM_SETTINGS = """
SELECT name, setting || coalesce(unit, '') FROM pg_settings
WHERE name IN ('autovacuum', 'autovacuum_naptime', 'autovacuum_max_workers')
ORDER BY name
"""


def vacuum_settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {str(name): str(value) for name, value in conn.execute(VACUUM_SETTINGS).fetchall()}


@dataclass(frozen=True)
class Sample:
    """Taken live when the workers' completions reach a window boundary."""

    completed: int
    sent: int
    rss_kib: tuple[int, ...]  # VmRSS of each worker process
    worker_cpu: float  # CPU seconds of the worker processes during the window
    server_cpu: float | None  # of this database's backends during the window (local only)
    sizes: dict[str, int]  # bytes, pg_total_relation_size
    dead_tuples: dict[str, int]  # pg_stat_user_tables.n_dead_tup
    vacuums: int  # of the queue table so far, by autovacuum or not
    late_ticks: int  # sender ticks that started more than one interval late, so far


@dataclass(frozen=True)
class Window:
    """One window of completions, from the database at the end."""

    commands: int
    completed_per_s: float
    offered_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class Check:
    """Every command completed exactly once; anything else makes the run wrong."""

    commands: int
    completed_once: int  # rows COMPLETED after one attempt
    completed_events: int
    commands_with_event: int
    replies: int
    commands_replied: int
    replies_not_success: int
    commands_without_reply: int
    left_in_queue: int
    settle_errors: int

    def problems(self, expected: int) -> list[str]:
        found = []
        if self.commands != expected:
            found.append(f"{self.commands:,} command rows for {expected:,} sent")
        if self.completed_once != expected:
            found.append(f"{expected - self.completed_once:,} not COMPLETED after one attempt")
        if self.completed_events != expected or self.commands_with_event != expected:
            found.append(
                f"{self.completed_events:,} COMPLETED events for "
                f"{self.commands_with_event:,} commands"
            )
        if self.replies != expected or self.commands_replied != expected:
            found.append(f"{self.replies:,} replies for {self.commands_replied:,} commands")
        if self.replies_not_success or self.commands_without_reply:
            found.append(
                f"{self.replies_not_success:,} replies not SUCCESS, "
                f"{self.commands_without_reply:,} commands without a reply"
            )
        if self.left_in_queue:
            found.append(f"{self.left_in_queue:,} messages left in the queue table")
        if self.settle_errors:
            found.append(f"{self.settle_errors:,} settle errors in the workers")
        return found


def table_sizes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {str(name): int(size) for name, size in conn.execute(TABLE_SIZES).fetchall()}


def table_stats(conn: psycopg.Connection[Any]) -> tuple[dict[str, int], int]:
    """Dead tuples of the queue and command tables, vacuums of the queue table."""
    dead: dict[str, int] = {}
    vacuums = 0
    for name, dead_tuples, runs in conn.execute(QUEUE_STATS).fetchall():
        dead[str(name)] = int(dead_tuples)
        if name == "queue_message":
            vacuums = int(runs)
    return dead, vacuums


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` of /proc/<pid>/status), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


class Sampler:
    """Takes a ``Sample`` at each window boundary; CPU is counted from the previous one."""

    def __init__(self, url: str, pids: list[int]) -> None:
        self.url = url
        self.pids = pids
        self.conn = psycopg.connect(url, autocommit=True)
        self.server_cpu = BackendCpu(url)
        self.server_cpu.start()
        self.worker_cpu = self._worker_cpu()

    def _worker_cpu(self) -> float:
        return sum(cpu_of(pid) or 0.0 for pid in self.pids)

    def take(self, completed: int, sent: int, late_ticks: int) -> Sample:
        rss = tuple(rss_kib(pid) for pid in self.pids)
        worker_cpu = self._worker_cpu()
        self.server_cpu.stop()
        server_cpu = self.server_cpu.seconds()
        self.server_cpu = BackendCpu(self.url)
        self.server_cpu.start()
        dead, vacuums = table_stats(self.conn)
        sample = Sample(
            completed=completed,
            sent=sent,
            rss_kib=rss,
            worker_cpu=worker_cpu - self.worker_cpu,
            server_cpu=server_cpu,
            sizes=table_sizes(self.conn),
            dead_tuples=dead,
            vacuums=vacuums,
            late_ticks=late_ticks,
        )
        self.worker_cpu = worker_cpu
        return sample

    def close(self) -> None:
        self.server_cpu.stop()
        self.conn.close()


def windows(
    conn: psycopg.Connection[Any],
    domain: str,
    window: int,
    started: dt.datetime,
    interval: float,
) -> list[Window]:
    """Completions and sends per window, on the database clock from ``started`` (the
    sender's first batch is sent at ``started`` with what is due by ``started +
    interval``: the sends are counted from one interval before)."""
    params = {"domain": domain, "window": window}
    done = conn.execute(COMPLETION_WINDOWS, params).fetchall()
    sent = conn.execute(SEND_WINDOWS, params).fetchall()
    found = []
    done_until, done_before = started, 0
    sent_until, sent_before = started - dt.timedelta(seconds=interval), 0
    for (count, until, completed, p50, p99, worst), (sent_at, sends) in zip(
        done, sent, strict=True
    ):
        found.append(
            Window(
                commands=int(count),
                completed_per_s=(completed - done_before) / _seconds(until - done_until),
                offered_per_s=(sends - sent_before) / _seconds(sent_at - sent_until),
                p50_ms=float(p50),
                p99_ms=float(p99),
                max_ms=float(worst),
            )
        )
        done_until, done_before = until, completed
        sent_until, sent_before = sent_at, sends
    return found


def _seconds(span: dt.timedelta) -> float:
    return max(span.total_seconds(), 1e-6)


def check(conn: psycopg.Connection[Any], domain: str, settle_errors: int) -> Check:
    params = {"domain": domain}
    rows, once = _one(conn, COMMAND_STATES, params)
    events, with_event = _one(conn, COMPLETED_EVENTS, params)
    replies, replied, not_success, without = _one(conn, REPLIES_RECEIVED, params)
    (left,) = _one(conn, QUEUE_LEFT, {})
    return Check(
        rows, once, events, with_event, replies, replied, not_success, without, left, settle_errors
    )


def _one(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> tuple[int, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return tuple(int(x) for x in row)


@dataclass(frozen=True)
class Verdict:
    throughput_ratio: float
    rss_ratio: float  # the worst worker's last / first
    rss_growth_mib: float  # the worst worker's last - first
    p99_first_ms: float
    p99_last_ms: float
    lowest_offered_share: float  # the slowest window's offered rate / --rate

    @property
    def met(self) -> bool:
        return (
            self.throughput_ratio >= TARGET_THROUGHPUT_RATIO
            and self.rss_ratio <= TARGET_RSS_RATIO
            and self.lowest_offered_share >= TARGET_OFFERED_SHARE
        )


def verdict(found: list[Window], samples: list[Sample], rate: float) -> Verdict:
    first, last = found[0], found[-1]
    ratios, growths = [], []
    for before, after in zip(samples[0].rss_kib, samples[-1].rss_kib, strict=True):
        ratios.append(after / before)
        growths.append((after - before) * 1024 / MIB)
    # The last window may be shorter than the others: it still counts, its rate is a rate.
    return Verdict(
        throughput_ratio=last.completed_per_s / first.completed_per_s,
        rss_ratio=max(ratios),
        rss_growth_mib=max(growths),
        p99_first_ms=first.p99_ms,
        p99_last_ms=last.p99_ms,
        lowest_offered_share=min(w.offered_per_s for w in found) / rate,
    )


def print_windows(found: list[Window], samples: list[Sample], window: int) -> None:
    rates = Table(title=f"soak, windows of {window:,} completions", title_justify="left")
    for header in (
        "window",
        "completed/s",
        "offered/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "backlog",
        "late ticks",
    ):
        rates.add_column(header, justify="right")
    for number, (w, s) in enumerate(zip(found, samples, strict=True), start=1):
        rates.add_row(
            str(number),
            f"{w.completed_per_s:,.0f}",
            f"{w.offered_per_s:,.0f}",
            f"{w.p50_ms:.1f}",
            f"{w.p99_ms:.1f}",
            f"{w.max_ms:.0f}",
            f"{s.sent - s.completed:,}",
            str(s.late_ticks),
        )
    console.print(rates)
    console.print(
        "[dim]completed/s and offered/s: the completions and sends of the window over its "
        "span on the database clock; latency: command row created_at (sent) -> updated_at "
        "(settled); backlog: sent, not yet completed when the window's last completion was "
        "counted; late ticks: of the sender, so far.[/]"
    )
    resources = Table(title="resources at the end of each window", title_justify="left")
    for header in (
        "window",
        "worker RSS MiB",
        "worker µs/cmd",
        "server µs/cmd",
        "queue MiB",
        "command MiB",
        "audit MiB",
        "queue dead",
        "command dead",
        "queue vacuums",
    ):
        resources.add_column(header, justify="right")
    for number, (w, s) in enumerate(zip(found, samples, strict=True), start=1):
        resources.add_row(
            str(number),
            " ".join(f"{kib / 1024:.1f}" for kib in s.rss_kib),
            f"{s.worker_cpu / w.commands * 1e6:.0f}",
            f"{s.server_cpu / w.commands * 1e6:.0f}" if s.server_cpu is not None else "?",
            f"{s.sizes['queue_message'] / MIB:.1f}",
            f"{s.sizes['command'] / MIB:.0f}",
            f"{s.sizes['audit'] / MIB:.0f}",
            f"{s.dead_tuples.get('queue_message', 0):,}",
            f"{s.dead_tuples.get('command', 0):,}",
            str(s.vacuums),
        )
    console.print(resources)
    console.print(
        "[dim]RSS (VmRSS of each worker process), table sizes (pg_total_relation_size, "
        "indexes and TOAST included), dead tuples (pg_stat_user_tables) and vacuums "
        "of the queue table (so far, autovacuum's and others): when the window's last "
        "completion was counted; µs/cmd: CPU per command in the window (server: this "
        "database's backends, autovacuum workers included).[/]"
    )


def print_verdict(v: Verdict, rate: float) -> None:
    table = Table(title="soak verdict", title_justify="left")
    for header in ("measure", "result", "target", ""):
        table.add_column(header, justify="right" if header != "measure" else "left")
    table.add_row(
        "throughput, last window / first window",
        f"{v.throughput_ratio:.3f}",
        f">= {TARGET_THROUGHPUT_RATIO:.2f}",
        mark(v.throughput_ratio >= TARGET_THROUGHPUT_RATIO),
    )
    table.add_row(
        "worker RSS, last / first boundary (worst worker)",
        f"{v.rss_ratio:.3f} ({v.rss_growth_mib:+.1f} MiB)",
        f"<= {TARGET_RSS_RATIO:.2f}",
        mark(v.rss_ratio <= TARGET_RSS_RATIO),
    )
    table.add_row(
        "offered rate, slowest window / --rate",
        f"{v.lowest_offered_share:.3f} (of {rate:,.0f}/s)",
        f">= {TARGET_OFFERED_SHARE:.2f}",
        mark(v.lowest_offered_share >= TARGET_OFFERED_SHARE),
    )
    table.add_row(
        "send -> completion p99, first / last window",
        f"{v.p99_first_ms:.1f} / {v.p99_last_ms:.1f} ms",
        "reported",
        "",
    )
    console.print(table)
