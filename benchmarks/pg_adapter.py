"""Raw throughput of the PostgreSQL adapter (no bus, no worker, no handler).

Run from the repository root::

    python -m benchmarks.pg_adapter                 # DATABASE_URL, local dev server or embedded
    python -m benchmarks.pg_adapter --commands 50000 --batch 50 --consumers 1,2,4

In fresh databases (cloned from a template with the schema, dropped at the end):

1. **insert**: ``PostgresCommandStore.insert`` of ``--batch`` commands per call, calls in
   sequence on one connection -> commands/s;
2. **claim + settle**: consumers (asyncio tasks, one pooled connection each) loop over
   ``claim(batch)`` then ``settle`` (DELETE, COMPLETED, one audit event, a SUCCESS reply
   to a reply queue) in one transaction per batch -> commands/s, per consumer count;
3. **mixed**: one producer inserting while consumers claim and settle -> commands/s
   through the whole lifecycle (table statistics of the last run are printed).

Each measurement runs on its own fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from commandbus.models import (
    AuditEventType,
    QueuedReply,
    Reply,
    ReplyOutcome,
    SendRequest,
    SettleAction,
    Settlement,
)
from commandbus.models import CommandStatus as S
from commandbus.postgres import PostgresBackend
from commandbus.testing.pg import TemplateDatabase, resolve_server_dsn

DOMAIN = "bench"
REPLIES = "bench__replies"


def requests(n: int) -> list[SendRequest]:
    return [
        SendRequest(
            domain=DOMAIN,
            command_type="Noop",
            command_id=uuid.uuid4(),
            data={"i": i, "payload": "x" * 32},
            correlation_id=uuid.uuid4(),
            reply_to=REPLIES,
        )
        for i in range(n)
    ]


async def insert_all(backend: PostgresBackend, total: int, batch: int) -> float:
    reqs = requests(total)
    start = time.perf_counter()
    for i in range(0, total, batch):
        await backend.commands.insert(reqs[i : i + batch], 3)
    return total / (time.perf_counter() - start)


async def consume(backend: PostgresBackend, batch: int, stop_when_empty: Any) -> int:
    done = 0
    while True:
        async with backend.transaction() as conn:
            claimed = await backend.commands.claim(DOMAIN, batch, 30, conn=conn)
            if claimed:
                await backend.commands.settle(
                    [
                        Settlement(
                            domain=DOMAIN,
                            command_id=c.command.command_id,
                            msg_id=c.msg_id,
                            action=SettleAction.DELETE,
                            status=S.COMPLETED,
                            attempts=c.attempt,
                            audit=((AuditEventType.COMPLETED, {"attempt": c.attempt}),),
                            reply=QueuedReply(
                                REPLIES,
                                Reply(
                                    c.command.command_id,
                                    c.command.correlation_id,
                                    ReplyOutcome.SUCCESS,
                                    {"ok": True},
                                ),
                            ),
                        )
                        for c in claimed
                    ],
                    conn=conn,
                )
        done += len(claimed)
        if not claimed:
            if stop_when_empty():
                return done
            await asyncio.sleep(0.001)


async def drain(backend: PostgresBackend, consumers: int, batch: int) -> tuple[int, float]:
    start = time.perf_counter()
    counts = await asyncio.gather(
        *(consume(backend, batch, lambda: True) for _ in range(consumers))
    )
    return sum(counts), time.perf_counter() - start


async def mixed(
    backend: PostgresBackend, total: int, consumers: int, batch: int
) -> tuple[int, float]:
    producing = True

    async def produce() -> None:
        nonlocal producing
        reqs = requests(total)
        for i in range(0, total, batch):
            await backend.commands.insert(reqs[i : i + batch], 3)
        producing = False

    start = time.perf_counter()
    results = await asyncio.gather(
        produce(), *(consume(backend, batch, lambda: not producing) for _ in range(consumers))
    )
    return sum(r for r in results if isinstance(r, int)), time.perf_counter() - start


async def report_table_stats(backend: PostgresBackend) -> None:
    """HOT share of command updates (no index writes) and dead rows left in the queue."""
    await asyncio.sleep(1.5)  # backends flush their statistics about once a second
    async with backend.pool.connection() as conn:
        cur = await conn.execute(
            b"SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, n_dead_tup"
            b" FROM pg_stat_user_tables WHERE schemaname = 'commandbus' ORDER BY relname"
        )
        rows = await cur.fetchall()
    print("table            inserts  updates (HOT %)   deletes  dead rows")
    for name, ins, upd, hot, dele, dead in rows:
        share = f"{100 * hot / upd:5.1f}%" if upd else "    -"
        print(f"{name:<15} {ins:>8} {upd:>8} ({share}) {dele:>8} {dead:>9}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--consumers", default="1,2,4")
    args = parser.parse_args()
    consumer_counts = [int(c) for c in args.consumers.split(",")]

    template = await TemplateDatabase.create(resolve_server_dsn(), prefix="cbbench")
    max_size = max(consumer_counts) + 2
    try:
        # Every measurement runs on a fresh database, so that one does not pay for the
        # dead rows another left behind (autovacuum visits a table at most once a minute).
        async with template.database() as dsn:
            backend = await PostgresBackend.connect(dsn, min_size=2, max_size=max_size)
            try:
                rate = await insert_all(backend, args.commands, args.batch)
            finally:
                await backend.close()
        print(f"insert          batch {args.batch:>3}: {rate:>9,.0f} commands/s")
        for consumers in consumer_counts:
            async with template.database() as dsn:
                backend = await PostgresBackend.connect(dsn, min_size=2, max_size=max_size)
                try:
                    await insert_all(backend, args.commands, args.batch)
                    count, seconds = await drain(backend, consumers, args.batch)
                finally:
                    await backend.close()
            assert count == args.commands, count
            print(
                f"claim+settle    batch {args.batch:>3}, {consumers} consumer(s): "
                f"{count / seconds:>9,.0f} commands/s"
            )
        for n, consumers in enumerate(consumer_counts):
            async with template.database() as dsn:
                backend = await PostgresBackend.connect(dsn, min_size=2, max_size=max_size)
                try:
                    count, seconds = await mixed(backend, args.commands, consumers, args.batch)
                    if n == len(consumer_counts) - 1:
                        await report_table_stats(backend)
                finally:
                    await backend.close()
            assert count == args.commands, count
            print(
                f"mixed (send+claim+settle), {consumers} consumer(s):    "
                f"{count / seconds:>9,.0f} commands/s"
            )
    finally:
        await template.close()


if __name__ == "__main__":
    asyncio.run(main())
