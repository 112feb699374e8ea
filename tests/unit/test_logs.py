"""Logs: a DEBUG record per state change, a WARNING per failed attempt that names the
command, JSON lines, and a database outage reported in a few lines, not a traceback per
batch."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

import pytest
from examples.statement_report import StatementReportProcess

from commandbus import (
    CommandBus,
    HandlerRegistry,
    RetryPolicy,
    TransientCommandError,
    TroubleshootingQueue,
    Worker,
)
from commandbus.errors import DatabaseUnavailableError
from commandbus.logs import JsonLogFormatter, OutageReporter
from commandbus.memory import InMemoryBackend
from commandbus.process import ProcessReplyRouter
from commandbus.testing.clock import VirtualClock

DOMAIN = "billing"


def registry_with(fn: Any) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.handler(DOMAIN, "Charge")(fn)
    return registry


def records_about(caplog: pytest.LogCaptureFixture, command_id: Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "command_id", None) == str(command_id)]


async def test_each_state_change_of_a_command_is_one_debug_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(clock=VirtualClock())
    bus = CommandBus(backend)

    async def charge(command: Any, context: Any) -> dict[str, Any]:
        return {"ok": True}

    worker = Worker(backend, DOMAIN, registry_with(charge))
    caplog.set_level(logging.DEBUG, logger="commandbus")
    sent = await bus.send(DOMAIN, "Charge", data={"amount": 5})
    await worker.process_once()
    about = records_about(caplog, sent.command_id)
    assert [(r.levelno, getattr(r, "status", None)) for r in about] == [
        (logging.DEBUG, "PENDING"),
        (logging.DEBUG, "IN_PROGRESS"),
        (logging.DEBUG, "COMPLETED"),
    ]
    assert all(r.domain == DOMAIN for r in about)  # type: ignore[attr-defined]
    assert "sent" in about[0].getMessage() and "received" in about[1].getMessage()


async def test_with_debug_off_a_success_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    backend = InMemoryBackend(clock=VirtualClock())
    bus = CommandBus(backend)

    async def charge(command: Any, context: Any) -> None:
        return None

    caplog.set_level(logging.INFO, logger="commandbus")
    await bus.send(DOMAIN, "Charge", data={})
    await Worker(backend, DOMAIN, registry_with(charge)).process_once()
    assert caplog.records == []


async def test_each_failed_attempt_is_one_warning_naming_command_type_and_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    backend = InMemoryBackend(clock=clock)
    policy = RetryPolicy(max_attempts=2, backoff_schedule=(5,), jitter=0)
    bus = CommandBus(backend, retry_policy=policy)

    async def charge(command: Any, context: Any) -> None:
        raise TransientCommandError("GATEWAY_DOWN", "the gateway timed out")

    worker = Worker(backend, DOMAIN, registry_with(charge), retry_policy=policy)
    caplog.set_level(logging.WARNING, logger="commandbus")
    sent = await bus.send(DOMAIN, "Charge", data={})
    await worker.process_once()
    await clock.advance(10)
    await worker.process_once()
    warnings = records_about(caplog, sent.command_id)
    assert [(r.levelno, r.attempt, r.status) for r in warnings] == [  # type: ignore[attr-defined]
        (logging.WARNING, 1, "PENDING"),
        (logging.WARNING, 2, "IN_TROUBLESHOOTING_QUEUE"),
    ]
    first, second = (r.getMessage() for r in warnings)
    assert str(sent.command_id) in first and "Charge" in first and "attempt 1/2" in first
    assert "GATEWAY_DOWN" in first and "retry in 5.0s" in first
    assert "moved to the troubleshooting queue" in second
    assert all(r.command_type == "Charge" for r in warnings)  # type: ignore[attr-defined]
    # A command error the handler raised on purpose is no bug: no traceback.
    assert all(r.exc_info is None for r in warnings)


async def test_an_unexpected_exception_is_one_warning_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(clock=VirtualClock())
    bus = CommandBus(backend)

    async def charge(command: Any, context: Any) -> None:
        raise KeyError("customer")

    caplog.set_level(logging.WARNING, logger="commandbus")
    sent = await bus.send(DOMAIN, "Charge", data={})
    await Worker(backend, DOMAIN, registry_with(charge)).process_once()
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.command_id == str(sent.command_id)  # type: ignore[attr-defined]
    assert warning.exc_info is not None and warning.exc_info[0] is KeyError
    assert "UNEXPECTED_ERROR" in warning.getMessage()


async def test_an_operator_action_is_logged_with_the_operators_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = InMemoryBackend(clock=VirtualClock())
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1))

    async def charge(command: Any, context: Any) -> None:
        raise TransientCommandError("DOWN", "down")

    sent = await bus.send(DOMAIN, "Charge", data={})
    await Worker(backend, DOMAIN, registry_with(charge)).process_once()
    caplog.set_level(logging.INFO, logger="commandbus")
    await TroubleshootingQueue(backend).operator_retry(DOMAIN, sent.command_id, operator="ada")
    [record] = [r for r in caplog.records if r.levelno == logging.INFO]
    assert record.operator == "ada"  # type: ignore[attr-defined]
    assert "retried by operator ada" in record.getMessage()


def test_the_json_formatter_writes_one_object_with_the_context_fields() -> None:
    logger = logging.getLogger("commandbus.worker")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            logger.name,
            logging.WARNING,
            __file__,
            1,
            "command %s failed",
            ("abc",),
            sys.exc_info(),
            extra={"command_id": "abc", "attempt": 2, "command_type": 'Say "hi"\n'},
        )
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "commandbus.worker"
    assert entry["message"] == "command abc failed"
    assert (entry["command_id"], entry["attempt"]) == ("abc", 2)
    assert entry["command_type"] == 'Say "hi"\n'
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00")


def test_log_format_json_on_the_command_line_writes_json_lines() -> None:
    script = (
        "import logging\n"
        "from commandbus.cli.main import cli\n"
        "cli.main(['--log-format', 'json', '--log-level', 'info', 'schema', 'sql'],"
        " standalone_mode=False)\n"
        "logging.getLogger('commandbus.worker').warning('hello %s', 'there',"
        " extra={'command_id': 'c-1'})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    [line] = [line for line in done.stderr.splitlines() if line.startswith("{")]
    entry = json.loads(line)
    assert (entry["message"], entry["command_id"], entry["level"]) == (
        "hello there",
        "c-1",
        "WARNING",
    )


# -- a database outage --------------------------------------------------------------


class OutageBackend:
    """An in-memory backend whose database can be taken down: while ``down``, every
    transaction, read and claim raises ``DatabaseUnavailableError``, as the PostgreSQL
    adapter does when the server is unreachable."""

    def __init__(self, inner: InMemoryBackend) -> None:
        self._inner = inner
        self.down = False
        self.clock = inner.clock
        self.processes = inner.processes
        self.queue = _Guarded(inner.queue, self)
        self.commands = _Guarded(inner.commands, self)

    def check(self) -> None:
        if self.down:
            raise DatabaseUnavailableError("the database is unavailable: connection refused")

    @asynccontextmanager
    async def transaction(self, conn: Any = None) -> AsyncIterator[Any]:
        self.check()
        async with self._inner.transaction(conn) as tx:
            yield tx

    def listen(self, queues: Sequence[str]) -> Any:
        return self._inner.listen(queues)

    async def close(self) -> None:
        await self._inner.close()


class _Guarded:
    def __init__(self, inner: Any, backend: OutageBackend) -> None:
        self._inner = inner
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            self._backend.check()
            return await attribute(*args, **kwargs)

        return guarded


async def run_through_outage(
    consumer: Worker | ProcessReplyRouter, backend: OutageBackend, clock: VirtualClock
) -> None:
    """Run ``consumer`` 5 s up, 35 s down (1 s polls), 5 s up again."""
    run = asyncio.create_task(consumer.run(poll_interval=1.0, use_notify=False))
    await clock.advance(5)
    backend.down = True
    for _ in range(35):
        await clock.advance(1)
    backend.down = False
    await clock.advance(5)
    await consumer.stop(timeout=5)
    await run


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    # In memory: records of the PostgreSQL adapter come from elsewhere (a listener of an
    # earlier test's backend may still be retrying in the background).
    return [
        r
        for r in caplog.records
        if r.name.startswith("commandbus") and not r.name.startswith("commandbus.postgres")
    ]


async def test_a_router_reports_an_outage_in_a_few_lines_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    backend = OutageBackend(InMemoryBackend(clock=clock))
    bus = CommandBus(backend)  # type: ignore[arg-type]
    manager = StatementReportProcess(bus, backend.processes, "reporting__process_replies")
    router = ProcessReplyRouter(backend, backend.processes, [manager])  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="commandbus")
    await run_through_outage(router, backend, clock)
    lines = outage_lines(caplog)
    # 35 s of failed polls every second: the first, one every 10 s, and the recovery.
    why = "the database is unavailable: connection refused"
    assert [
        r.getMessage().removeprefix("router on reporting__process_replies: ") for r in lines
    ] == [
        f"the database is unavailable ({why}); reconnecting every 1s",
        f"the database is still unavailable after 10s (11 failed attempts): {why}; reconnecting",
        f"the database is still unavailable after 20s (21 failed attempts): {why}; reconnecting",
        f"the database is still unavailable after 30s (31 failed attempts): {why}; reconnecting",
        "the database is reachable again after 35s (35 failed attempts)",
    ]
    assert all(r.exc_info is None for r in lines)


async def test_a_worker_reports_an_outage_in_a_few_lines_and_then_catches_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    backend = OutageBackend(InMemoryBackend(clock=clock))
    done: list[str] = []

    async def charge(command: Any, context: Any) -> None:
        done.append(command.data["n"])

    bus = CommandBus(backend)  # type: ignore[arg-type]
    worker = Worker(backend, DOMAIN, registry_with(charge))  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="commandbus")
    run = asyncio.create_task(worker.run(poll_interval=1.0, use_notify=False))
    backend.down = True
    for _ in range(25):
        await clock.advance(1)
    backend.down = False
    await bus.send(DOMAIN, "Charge", uuid4(), {"n": "after"})
    await clock.advance(3)
    await worker.stop(timeout=5)
    await run
    assert done == ["after"]
    lines = outage_lines(caplog)
    assert len(lines) == 4  # first failure, after 10 s, after 20 s, recovery
    assert "unavailable (" in lines[0].getMessage()
    assert "reachable again" in lines[-1].getMessage()
    assert all(r.exc_info is None and r.levelno == logging.WARNING for r in lines)


def test_the_outage_reporter_counts_attempts_and_reports_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    reporter = OutageReporter(logging.getLogger("commandbus.test"), "router on q", clock, 10)
    caplog.set_level(logging.INFO, logger="commandbus")
    reporter.succeeded()  # no outage: nothing to say
    error = DatabaseUnavailableError("down")
    reporter.failed(error, 1)
    reporter.failed(error, 1)
    assert reporter.in_outage and len(caplog.records) == 1
    reporter.succeeded()
    assert not reporter.in_outage
    assert caplog.records[-1].getMessage() == (
        "router on q: the database is reachable again after 0s (2 failed attempts)"
    )
