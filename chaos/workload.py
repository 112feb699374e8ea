"""What the chaos run executes: one command type with a side effect, and StatementReport.

- Domain ``chaos``, command ``Touch``: a ``transactional=True`` handler inserts the
  command's id into the user table ``chaos_effect`` through ``context.conn``, so the
  effect commits together with the command's completion or not at all. The primary key
  makes a second effect impossible; a redelivered command whose effect already committed
  would fail on it, which is why the checks compare effects with completed commands.
  About 10 % of attempts fail with ``TransientCommandError`` and are retried.
- Domain ``reporting``: the example StatementReport process (QUERY -> AGGREGATE ->
  RENDER) with the example's handlers, each step failing transiently at the same rate.
  Its replies go through ``ProcessReplyRouter`` (queue ``reporting__process_replies``).

Replies of ``Touch`` go to ``chaos__replies``, which nobody reads: they stay in the
queue table so that the final check can count SUCCESS replies per command.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from examples.statement_report import StatementReportProcess
from examples.statement_report.handlers import (
    DOMAIN as PROCESS_DOMAIN,
)
from examples.statement_report.handlers import (
    STEP_COMMANDS,
    FailureRates,
    ServiceConfig,
    register_statement_handlers,
)

from chaos.events_workload import register_event_handlers
from commandbus import CommandBus, HandlerRegistry, RetryPolicy, TransientCommandError
from commandbus.handler import HandlerContext
from commandbus.models import Command, SendRequest

__all__ = [
    "COMMAND_DOMAIN",
    "COMMAND_QUEUE",
    "COMMAND_TYPE",
    "PROCESS_COMMAND_QUEUE",
    "PROCESS_DOMAIN",
    "PROCESS_REPLY_QUEUE",
    "REPLY_QUEUE",
    "RETRY_POLICY",
    "TRANSIENT_RATE",
    "build_registry",
    "command_requests",
    "process_items",
    "statement_manager",
]

COMMAND_DOMAIN = "chaos"
COMMAND_TYPE = "Touch"
COMMAND_QUEUE = f"{COMMAND_DOMAIN}__commands"
REPLY_QUEUE = f"{COMMAND_DOMAIN}__replies"
PROCESS_COMMAND_QUEUE = f"{PROCESS_DOMAIN}__commands"
PROCESS_REPLY_QUEUE = f"{PROCESS_DOMAIN}__process_replies"

TRANSIENT_RATE = 0.10
# Five deliveries: a command reaches the TSQ only after four transient failures in a row
# (1 in 10,000) or when killed workers used up its deliveries. Short backoff: retries
# must fit into a run of a minute.
RETRY_POLICY = RetryPolicy(max_attempts=5, backoff_schedule=(0.05, 0.1))

EFFECT_TABLE_SQL = "CREATE TABLE IF NOT EXISTS chaos_effect (command_id uuid PRIMARY KEY)"
_INSERT_EFFECT = "INSERT INTO chaos_effect (command_id) VALUES (%s)"

_INPUT = {
    "from_date": "2024-01-01",
    "to_date": "2024-12-31",
    "account_list": ["ACC-001", "ACC-002"],
    "output_type": "pdf",
}


def command_ids(seed: int, count: int) -> list[uuid.UUID]:
    """The ids of the run's commands, drawn from ``seed`` (a rerun sends the same ids)."""
    rng = random.Random(f"commands-{seed}")
    return [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]


def process_ids(seed: int, count: int) -> list[uuid.UUID]:
    rng = random.Random(f"processes-{seed}")
    return [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]


def command_requests(ids: list[uuid.UUID]) -> list[SendRequest]:
    return [
        SendRequest(
            domain=COMMAND_DOMAIN,
            command_type=COMMAND_TYPE,
            command_id=command_id,
            data={"n": index},
            reply_to=REPLY_QUEUE,
        )
        for index, command_id in enumerate(ids)
    ]


def process_items(ids: list[uuid.UUID]) -> list[tuple[uuid.UUID | str | None, dict[str, Any]]]:
    """``start_many`` items with caller-chosen ids: a start retried after a connection
    error is idempotent (the ids that made it are skipped)."""
    return [(pid, dict(_INPUT)) for pid in ids]


def statement_manager(backend: Any) -> StatementReportProcess:
    # The bus's retry policy sets max_attempts of the commands processes send.
    return StatementReportProcess(CommandBus(backend, retry_policy=RETRY_POLICY))


def build_registry(seed: int) -> HandlerRegistry:
    """Handlers of both domains; ``seed`` draws which attempts fail (per agent process)."""
    rng = random.Random(seed)
    registry = HandlerRegistry()

    async def touch(command: Command, context: HandlerContext) -> dict[str, Any]:
        if rng.random() < TRANSIENT_RATE:
            raise TransientCommandError("CHAOS_TRANSIENT", "injected transient failure")
        assert context.conn is not None  # transactional=True
        await context.conn.execute(_INSERT_EFFECT, (command.command_id,))
        return {"touched": command.data.get("n")}

    registry.register(COMMAND_DOMAIN, COMMAND_TYPE, touch, transactional=True)
    register_event_handlers(registry, seed, TRANSIENT_RATE)
    rates = FailureRates(transient=TRANSIENT_RATE)
    register_statement_handlers(
        registry, ServiceConfig(rates={t: rates for t in STEP_COMMANDS}, seed=seed + 1)
    )
    return registry
