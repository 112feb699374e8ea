"""The final accounting of the event-driven processes of a chaos run (see ``report``).

Each start event the driver knows it appended is put in one class: its process
*completed* (or another terminal state, or waiting for an operator in the TSQ); *in
flight* (not terminal, and something will still move it: the start event not yet passed
by the subscription, a command of the process in its queue, a reply or timer in the
process queue); *parked* (the subscription
parked the start event: a finding); *lost* (no process although the subscription passed
the event); *stuck* (anything else). Duplicates: a task completed twice in one process
stream, an event that entered its process twice, a completed process without exactly its
three completed tasks, or with other than three commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.events_workload import (
    EVENT_COMMAND_QUEUE,
    EVENT_DOMAIN,
    EVENT_PROCESS_TYPE,
    EVENT_REPLY_QUEUE,
    EVENT_STEPS,
)
from commandbus.process_manager import process_id_for

#: Where nothing more happens without an operator (WAITING_FOR_TSQ: a command of the
#: process ran out of deliveries and waits in the troubleshooting queue).
_SETTLED = ("COMPLETED", "COMPENSATED", "FAILED", "CANCELED", "WAITING_FOR_TSQ")

_STATUS_SQL = """
SELECT s.key, p.status,
       EXISTS (SELECT 1 FROM commandbus.queue_message m
               WHERE m.queue_name = %(cmd_queue)s
                 AND m.message->>'correlation_id' = s.pid::text),
       EXISTS (SELECT 1 FROM commandbus.queue_message r
               WHERE r.queue_name = %(reply_queue)s
                 AND coalesce(r.message->>'correlation_id', r.message->>'process_id')
                     = s.pid::text)
FROM unnest(%(keys)s::text[], %(pids)s::uuid[]) AS s(key, pid)
LEFT JOIN commandbus.process p ON p.domain = %(domain)s AND p.process_id = s.pid
"""
# Start events of keys without a process: passed by the subscription or not, parked or not.
_UNSTARTED_SQL = """
SELECT e.data->>'order',
       (e.transaction_id, e.position) > (sub.transaction_id, sub.position),
       EXISTS (SELECT 1 FROM commandbus.subscription_parked pk
               WHERE pk.name = sub.name AND pk.position = e.position)
FROM commandbus.event e
CROSS JOIN (SELECT * FROM commandbus.subscription WHERE name = %(subscription)s) AS sub
WHERE e.category = 'chaos' AND e.event_type = 'OrderPlaced'
  AND e.data->>'order' = ANY(%(keys)s::text[])
"""
_TASK_TWICE_SQL = """
SELECT count(DISTINCT stream_name) FROM (
  SELECT stream_name FROM commandbus.event
  WHERE category = %(category)s AND event_type = 'TaskCompleted'
  GROUP BY stream_name, data->>'command_id' HAVING count(*) > 1) AS d
"""
_ENTERED_TWICE_SQL = """
SELECT count(*) FROM (
  SELECT data->'source'->>'event_id' FROM commandbus.event
  WHERE category = %(category)s AND event_type = 'EventReceived'
  GROUP BY 1 HAVING count(*) > 1) AS d
"""
_COMPLETED_WRONG_TASKS_SQL = """
SELECT count(*) FROM commandbus.process p
WHERE p.domain = %(domain)s AND p.status = 'COMPLETED'
  AND (SELECT count(*) FROM commandbus.event e
       WHERE e.stream_name = %(category)s || '-' || p.process_id::text
         AND e.event_type = 'TaskCompleted') <> %(steps)s
"""
_COMPLETED_WRONG_COMMANDS_SQL = """
SELECT count(*) FROM commandbus.process p
WHERE p.domain = %(domain)s AND p.status = 'COMPLETED'
  AND (SELECT count(*) FROM commandbus.command c
       WHERE c.domain = %(domain)s AND c.correlation_id = p.process_id) <> %(steps)s
"""


@dataclass
class EventAccounting:
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    stuck: int = 0
    parked: int = 0
    lost: int = 0
    examples: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)

    def count(self, *statuses: str) -> int:
        return sum(self.statuses.get(s, 0) for s in statuses)


async def account_events(conn: psycopg.AsyncConnection[Any], keys: list[str]) -> EventAccounting:
    result = EventAccounting(sent=len(keys))
    pids = [process_id_for(EVENT_PROCESS_TYPE, k) for k in keys]
    params: dict[str, Any] = {
        "keys": keys,
        "pids": pids,
        "domain": EVENT_DOMAIN,
        "cmd_queue": EVENT_COMMAND_QUEUE,
        "reply_queue": EVENT_REPLY_QUEUE,
    }
    missing: list[str] = []
    cur = await conn.execute(_STATUS_SQL, params)
    for key, status, command_queued, reply_queued in await cur.fetchall():
        if status is None:
            missing.append(key)
        elif status in _SETTLED:
            result.statuses[status] = result.statuses.get(status, 0) + 1
        elif command_queued or reply_queued:
            result.in_flight += 1
        else:
            result.stuck += 1
            if len(result.examples) < 5:
                result.examples.append(f"event-driven process for {key}: {status}, nothing queued")
    if missing:
        cur = await conn.execute(
            _UNSTARTED_SQL, {"keys": missing, "subscription": EVENT_PROCESS_TYPE}
        )
        found = {key: (ahead, parked) for key, ahead, parked in await cur.fetchall()}
        for key in missing:
            ahead, parked = found.get(key, (False, False))
            if parked:
                result.parked += 1
            elif ahead:
                result.in_flight += 1
            else:
                result.lost += 1
                if len(result.examples) < 5:
                    result.examples.append(f"no process for {key}, its start event passed")
    checks = {"category": EVENT_PROCESS_TYPE, "domain": EVENT_DOMAIN, "steps": EVENT_STEPS}
    for name, query in (
        ("event processes with a task completed twice", _TASK_TWICE_SQL),
        ("events that entered their process twice", _ENTERED_TWICE_SQL),
        (f"COMPLETED event processes without exactly {EVENT_STEPS} tasks",
         _COMPLETED_WRONG_TASKS_SQL),
        (f"COMPLETED event processes without exactly {EVENT_STEPS} commands",
         _COMPLETED_WRONG_COMMANDS_SQL),
    ):  # fmt: skip
        cur = await conn.execute(query, checks)
        row = await cur.fetchone()
        result.duplicates[name] = int(row[0]) if row else 0
    return result
