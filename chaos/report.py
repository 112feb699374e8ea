"""The final accounting of a chaos run, read from the database after the agents stopped.

Every item the driver knows it sent (its send committed) is put in exactly one class:

- *lost*: no row (a command without a ``commandbus.command`` row, a process without a
  ``commandbus.process`` row);
- *completed*, *failed / canceled* (other terminal states), *in TSQ* (a command in the
  troubleshooting queue, a process WAITING_FOR_TSQ);
- *in flight*: not terminal, but something will still move it: its message is in its
  queue (perhaps invisible until a retry or a lease runs out), or, for a process, the
  awaited command is in flight or its reply waits in the reply queue;
- *stuck*: not terminal, not in the TSQ, and nothing will ever move it.

Duplicates are counted where they would show despite the primary key on the effect table:
commands with more than one SUCCESS reply (``chaos__replies`` is never consumed) or more
than one COMPLETED audit event, effects without a completed command and completed
commands without an effect, and process steps answered more than once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chaos.events_report import EventAccounting, account_events
from chaos.workload import (
    COMMAND_DOMAIN,
    COMMAND_QUEUE,
    PROCESS_COMMAND_QUEUE,
    PROCESS_DOMAIN,
    PROCESS_REPLY_QUEUE,
    REPLY_QUEUE,
)

PROCESS_STEPS = 3
_TERMINAL_PROCESS = ("COMPLETED", "COMPENSATED", "FAILED", "CANCELED")

_COMMANDS_SQL = """
SELECT coalesce(c.status, 'LOST'),
       count(*),
       count(*) FILTER (WHERE m.msg_id IS NOT NULL)
FROM unnest(%(ids)s::uuid[]) AS s(id)
LEFT JOIN commandbus.command c ON c.command_id = s.id AND c.domain = %(domain)s
LEFT JOIN commandbus.queue_message m ON m.msg_id = c.msg_id AND m.queue_name = %(queue)s
GROUP BY 1
"""
_PROCESSES_SQL = """
SELECT coalesce(p.status, 'LOST'), count(*)
FROM unnest(%(ids)s::uuid[]) AS s(id)
LEFT JOIN commandbus.process p ON p.process_id = s.id AND p.domain = %(domain)s
GROUP BY 1
"""
# Only the few processes that did not finish: can anything still move them?
_OPEN_PROCESSES_SQL = """
SELECT p.process_id, p.status, c.status,
       EXISTS (SELECT 1 FROM commandbus.queue_message m
               WHERE m.queue_name = %(cmd_queue)s AND m.msg_id = c.msg_id),
       EXISTS (SELECT 1 FROM commandbus.queue_message r
               WHERE r.queue_name = %(reply_queue)s
                 AND r.message->>'correlation_id' = p.process_id::text)
FROM commandbus.process p
LEFT JOIN commandbus.command c
       ON c.domain = p.domain AND c.command_id = p.awaiting_command_id
WHERE p.domain = %(domain)s AND p.process_id = ANY(%(ids)s::uuid[])
  AND p.status <> ALL(%(settled)s::text[])
"""
_DUPLICATE_REPLIES_SQL = """
SELECT count(*) FROM (
  SELECT message->>'command_id' FROM commandbus.queue_message
  WHERE queue_name = %(queue)s AND message->>'outcome' = 'SUCCESS'
  GROUP BY 1 HAVING count(*) > 1) AS d
"""
_DUPLICATE_COMPLETED_SQL = """
SELECT domain, count(*) FROM (
  SELECT domain, command_id FROM commandbus.audit WHERE event_type = 'COMPLETED'
  GROUP BY 1, 2 HAVING count(*) > 1) AS d
GROUP BY 1
"""
_EFFECT_WITHOUT_COMPLETED_SQL = """
SELECT count(*) FROM chaos_effect e
LEFT JOIN commandbus.command c ON c.command_id = e.command_id AND c.domain = %(domain)s
WHERE c.status IS DISTINCT FROM 'COMPLETED'
"""
_COMPLETED_WITHOUT_EFFECT_SQL = """
SELECT count(*) FROM commandbus.command c
WHERE c.domain = %(domain)s AND c.status = 'COMPLETED'
  AND NOT EXISTS (SELECT 1 FROM chaos_effect e WHERE e.command_id = c.command_id)
"""
_STEP_TWICE_SQL = """
SELECT count(DISTINCT process_id) FROM (
  SELECT process_id, step_name FROM commandbus.process_audit
  WHERE domain = %(domain)s AND kind = 'STEP' AND reply_outcome IS NOT NULL
  GROUP BY 1, 2 HAVING count(*) > 1) AS d
"""
_COMPLETED_WRONG_STEPS_SQL = """
SELECT count(*) FROM (
  SELECT p.process_id FROM commandbus.process p
  LEFT JOIN commandbus.process_audit a
         ON a.domain = p.domain AND a.process_id = p.process_id
        AND a.kind = 'STEP' AND a.reply_outcome = 'SUCCESS'
  WHERE p.domain = %(domain)s AND p.status = 'COMPLETED'
  GROUP BY 1 HAVING count(a.id) <> %(steps)s) AS d
"""
_MESSAGE_LOG_SQL = """
SELECT disposition, count(*) FROM commandbus.process_message_log GROUP BY 1
"""


@dataclass
class Accounting:
    commands_sent: int = 0
    processes_sent: int = 0
    commands: dict[str, int] = field(default_factory=dict)  # status -> count
    commands_queued: dict[str, int] = field(default_factory=dict)  # status -> with message
    processes: dict[str, int] = field(default_factory=dict)
    processes_in_flight: int = 0
    processes_stuck: int = 0
    stuck_examples: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    message_log: dict[str, int] = field(default_factory=dict)
    #: The event-driven processes (their duplicate checks are in ``duplicates`` too).
    events: EventAccounting = field(default_factory=EventAccounting)

    def cmd(self, *statuses: str) -> int:
        return sum(self.commands.get(s, 0) for s in statuses)

    def proc(self, *statuses: str) -> int:
        return sum(self.processes.get(s, 0) for s in statuses)

    @property
    def commands_open(self) -> int:
        return self.cmd("PENDING", "IN_PROGRESS")

    @property
    def commands_in_flight(self) -> int:
        return sum(self.commands_queued.get(s, 0) for s in ("PENDING", "IN_PROGRESS"))

    @property
    def commands_stuck(self) -> int:
        return self.commands_open - self.commands_in_flight

    @property
    def lost(self) -> int:
        return self.cmd("LOST") + self.proc("LOST") + self.events.lost

    @property
    def duplicated(self) -> int:
        return sum(self.duplicates.values())

    @property
    def stuck(self) -> int:
        return self.commands_stuck + self.processes_stuck + self.events.stuck + self.events.parked

    @property
    def in_flight(self) -> int:
        return self.commands_in_flight + self.processes_in_flight + self.events.in_flight

    @property
    def in_tsq(self) -> int:
        return (
            self.cmd("IN_TROUBLESHOOTING_QUEUE")
            + self.proc("WAITING_FOR_TSQ")
            + self.events.count("WAITING_FOR_TSQ")
        )

    @property
    def completed(self) -> int:
        return self.cmd("COMPLETED") + self.proc("COMPLETED") + self.events.count("COMPLETED")

    def as_dict(self) -> dict[str, Any]:
        return {
            "commands_sent": self.commands_sent,
            "processes_sent": self.processes_sent,
            "commands_by_status": self.commands,
            "processes_by_status": self.processes,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "duplicates": self.duplicates,
            "stuck": self.stuck,
            "in_flight": self.in_flight,
            "in_tsq": self.in_tsq,
            "completed": self.completed,
            "process_message_log": self.message_log,
            "event_processes_sent": self.events.sent,
            "event_processes_by_status": self.events.statuses,
            "event_processes_parked": self.events.parked,
            "stuck_examples": self.stuck_examples,
        }


async def _rows(conn: psycopg.AsyncConnection[Any], query: str, params: Any) -> list[Any]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def account(
    dsn: str,
    command_ids: list[uuid.UUID],
    process_ids: list[uuid.UUID],
    event_keys: list[str] | None = None,
) -> Accounting:
    result = Accounting(commands_sent=len(command_ids), processes_sent=len(process_ids))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        if event_keys:
            result.events = await account_events(conn, event_keys)
            result.duplicates.update(result.events.duplicates)
            result.stuck_examples.extend(result.events.examples)
        params: dict[str, Any] = {"ids": command_ids, "domain": COMMAND_DOMAIN}
        params["queue"] = COMMAND_QUEUE
        for status, n, queued in await _rows(conn, _COMMANDS_SQL, params):
            result.commands[status] = int(n)
            result.commands_queued[status] = int(queued)
        params = {"ids": process_ids, "domain": PROCESS_DOMAIN}
        for status, n in await _rows(conn, _PROCESSES_SQL, params):
            result.processes[status] = int(n)
        params = {
            "ids": process_ids,
            "domain": PROCESS_DOMAIN,
            "cmd_queue": PROCESS_COMMAND_QUEUE,
            "reply_queue": PROCESS_REPLY_QUEUE,
            "settled": [*_TERMINAL_PROCESS, "WAITING_FOR_TSQ"],
        }
        for pid, status, cmd_status, cmd_queued, reply_queued in await _rows(
            conn, _OPEN_PROCESSES_SQL, params
        ):
            if cmd_queued or reply_queued:
                result.processes_in_flight += 1
            else:
                result.processes_stuck += 1
                if len(result.stuck_examples) < 5:
                    result.stuck_examples.append(
                        f"process {pid} {status}, awaited command {cmd_status or 'missing'}"
                    )
        dup = result.duplicates
        rows = await _rows(conn, _DUPLICATE_REPLIES_SQL, {"queue": REPLY_QUEUE})
        dup["commands with >1 SUCCESS reply"] = int(rows[0][0])
        for domain, n in await _rows(conn, _DUPLICATE_COMPLETED_SQL, None):
            dup[f"{domain} commands with >1 COMPLETED audit event"] = int(n)
        rows = await _rows(conn, _EFFECT_WITHOUT_COMPLETED_SQL, {"domain": COMMAND_DOMAIN})
        dup["effects without a COMPLETED command"] = int(rows[0][0])
        rows = await _rows(conn, _COMPLETED_WITHOUT_EFFECT_SQL, {"domain": COMMAND_DOMAIN})
        dup["COMPLETED commands without an effect"] = int(rows[0][0])
        rows = await _rows(conn, _STEP_TWICE_SQL, {"domain": PROCESS_DOMAIN})
        dup["processes with a step answered twice"] = int(rows[0][0])
        params = {"domain": PROCESS_DOMAIN, "steps": PROCESS_STEPS}
        rows = await _rows(conn, _COMPLETED_WRONG_STEPS_SQL, params)
        dup[f"COMPLETED processes without exactly {PROCESS_STEPS} answered steps"] = int(rows[0][0])
        for disposition, n in await _rows(conn, _MESSAGE_LOG_SQL, None):
            result.message_log[disposition] = int(n)
    return result
