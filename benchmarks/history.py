"""Does history slow the hot path? The same runs on an empty database and on one with
``--history`` completed commands (three audit rows each) already stored.

Run from the repository root::

    python -m benchmarks.history                        # 1,000,000 commands of history
    python -m benchmarks.history --history 200000 --rounds 5

Two fresh databases on the server of ``DATABASE_URL`` (dropped at the end): one empty,
one preloaded (in SQL, a few minutes for a million commands) with completed commands of
another domain spread over the last 60 days, each with its SENT, RECEIVED and COMPLETED
audit events, vacuumed and analysed. Each round runs on both, in alternating order, the
method of ``benchmarks.peers``: live rows removed (history kept), tables vacuumed and a
checkpoint; ``send_batch`` of ``--commands``; then 2 worker processes drain them. The
figures are the medians and the ratio history / empty (the target: at least 0.90).

Commands are sent with random ids (``uuid4``), or with ``--time-ordered-ids`` with
``commandbus.ids.uuid7`` (what ``CommandBus.send`` generates). With ``--prune`` the
preloaded database is then pruned with ``commandbus history prune
--older-than 30d`` (its time is printed) and one more set of rounds is run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.peers import create_database, database_url, drop_database, server_url

ROOT = Path(__file__).resolve().parent.parent

PRELOAD_COMMANDS = """
INSERT INTO commandbus.command (
    domain, command_id, command_type, status, attempts, max_attempts, msg_id,
    correlation_id, reply_to, created_at, updated_at
)
SELECT 'history', gen_random_uuid(), 'Noop', 'COMPLETED', 1, 3, g, gen_random_uuid(),
       'history__replies', t, t + interval '5 milliseconds'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g,
     LATERAL (SELECT now() - (%(total)s - g) * interval '60 days' / %(total)s AS t) AS x
"""

PRELOAD_AUDIT = """
INSERT INTO commandbus.audit (domain, command_id, event_type, ts, details)
SELECT c.domain, c.command_id, e.event_type, c.created_at + e.after, e.details
FROM commandbus.command c
CROSS JOIN LATERAL (VALUES
    ('SENT', interval '0', jsonb_build_object('msg_id', c.msg_id)),
    ('RECEIVED', interval '2 milliseconds',
     jsonb_build_object('attempt', 1, 'msg_id', c.msg_id)),
    ('COMPLETED', interval '5 milliseconds', jsonb_build_object('attempt', 1))
) AS e(event_type, after, details)
WHERE c.domain = 'history' AND c.msg_id BETWEEN %(first)s AND %(last)s
ORDER BY c.msg_id
"""


def preload(url: str, total: int, step: int = 200_000) -> float:
    """Store ``total`` completed commands and their audit trails; returns seconds."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(1, total + 1, step):
            bounds = {"first": first, "last": min(first + step - 1, total), "total": total}
            conn.execute(PRELOAD_COMMANDS, bounds)
            conn.execute(PRELOAD_AUDIT, bounds)
        for table in ("command", "audit"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier("commandbus", table)))
    return time.perf_counter() - started


def run(action: str, url: str, *extra: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.peer_commandbus", action, "--dsn", url, *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{action} failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(url: str, commands: int, time_ordered: bool) -> tuple[float, float]:
    run("reset", url, "--keep-history")
    ids = ["--time-ordered-ids"] if time_ordered else []
    sent = run("send", url, "-n", str(commands), *ids)
    processed = run("process", url, "-n", str(commands))
    if processed["completed"] != commands or processed["handled"] != commands:
        raise SystemExit(f"a run was wrong: {processed}")
    return sent["per_second"], processed["per_second"]


def rounds(urls: dict[str, str], count: int, commands: int, label: str, time_ordered: bool) -> None:
    figures: dict[str, dict[str, list[float]]] = {
        name: {"send_batch": [], "end to end": []} for name in urls
    }
    for number in range(count):
        order = list(urls) if number % 2 == 0 else list(urls)[::-1]
        for name in order:
            send, process = measure(urls[name], commands, time_ordered)
            figures[name]["send_batch"].append(send)
            figures[name]["end to end"].append(process)
            print(
                f"{label} round {number + 1} {name:8} send_batch {send:>8,.0f}/s   "
                f"end to end {process:>8,.0f}/s",
                flush=True,
            )
    for figure in ("send_batch", "end to end"):
        empty, history = figures["empty"][figure], figures["history"][figure]
        print(
            f"{label} {figure:11} empty {statistics.median(empty):>8,.0f}/s "
            f"[{min(empty):,.0f}-{max(empty):,.0f}]   history "
            f"{statistics.median(history):>8,.0f}/s [{min(history):,.0f}-{max(history):,.0f}]"
            f"   ratio {statistics.median(history) / statistics.median(empty):.2f}",
            flush=True,
        )


def table_sizes(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT t.name, pg_size_pretty(coalesce("
            "  (SELECT sum(pg_total_relation_size(p.relid)) FROM pg_partition_tree(t.oid) p),"
            "  pg_total_relation_size(t.oid)))"
            " FROM (VALUES ('command', 'commandbus.command'::regclass),"
            "              ('audit', 'commandbus.audit'::regclass)) AS t(name, oid)"
            " ORDER BY 1"
        ).fetchall()
    return ", ".join(f"{name} {size}" for name, size in rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.history", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", help="server to use (default: DATABASE_URL or embedded)")
    parser.add_argument("--history", type=int, default=1_000_000, help="commands preloaded")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--prune", action="store_true", help="then prune, and measure again")
    parser.add_argument(
        "--time-ordered-ids",
        action="store_true",
        help="send commands with time-ordered ids (uuid7) instead of random ones (uuid4)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    server = server_url(args.database_url)
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = {"empty": f"cb_history_{tag}_empty", "history": f"cb_history_{tag}_full"}
    urls = {key: database_url(server, name) for key, name in names.items()}
    try:
        import asyncio

        from commandbus.postgres.schema import apply_schema

        for key, name in names.items():
            create_database(server, name)
            asyncio.run(apply_schema(urls[key]))
        seconds = preload(urls["history"], args.history)
        print(
            f"preloaded {args.history:,} completed commands and {3 * args.history:,} audit rows "
            f"in {seconds:.0f} s ({table_sizes(urls['history'])})",
            flush=True,
        )
        rounds(urls, args.rounds, args.commands, "before", args.time_ordered_ids)
        if args.prune:
            env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "commandbus",
                    "--database-url",
                    urls["history"],
                    "history",
                    "prune",
                    "--older-than",
                    "30d",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            print(done.stdout.strip() or done.stderr.strip())
            print(
                f"pruned in {time.perf_counter() - started:.0f} s ({table_sizes(urls['history'])})",
                flush=True,
            )
            rounds(urls, args.rounds, args.commands, "pruned", args.time_ordered_ids)
    finally:
        for name in names.values():
            drop_database(server, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
