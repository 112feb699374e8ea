"""Telemetry off costs nothing: no hook is called, no header is written; ``combine``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from examples.statement_report import StatementReportProcess
from examples.statement_report.handlers import register_statement_handlers

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.memory import InMemoryBackend
from commandbus.process import ProcessReplyRouter, ProcessStatus
from commandbus.telemetry import NO_TELEMETRY, Telemetry, combine
from commandbus.testing.clock import VirtualClock


class Tripwire(Telemetry):
    """Disabled, and fails the test if any hook is called anyway."""

    enabled = False

    def __getattribute__(self, name: str) -> Any:
        if name == "enabled" or name.startswith("__"):
            return object.__getattribute__(self, name)
        raise AssertionError(f"hook {name} called with telemetry off")


class Counting(Telemetry):
    enabled = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    def commands_sent(self, domain: str, command_type: str, count: int = 1) -> None:
        self.calls.append(f"sent {command_type} {count}")

    def outgoing_headers(self, causation_id: str | None = None) -> dict[str, Any] | None:
        return {"from": type(self).__name__}


async def test_with_telemetry_off_no_hook_runs_and_no_header_is_stored() -> None:
    clock = VirtualClock()
    backend = InMemoryBackend(clock=clock)
    tripwire = Tripwire()
    bus = CommandBus(backend, telemetry=tripwire)
    manager = StatementReportProcess(bus)
    registry = HandlerRegistry()
    register_statement_handlers(registry)
    worker = Worker(backend, "reporting", registry, telemetry=tripwire)
    router = ProcessReplyRouter(backend, managers=[manager], telemetry=tripwire)
    pid = await manager.start(
        {
            "from_date": "2024-01-01",
            "to_date": "2024-01-02",
            "account_list": ["A"],
            "output_type": "pdf",
        }
    )
    [message] = await backend.queue.read("reporting__commands", 1, 0.001)
    assert "headers" not in message.message
    await clock.advance(1)  # the peek's lease runs out
    for _ in range(20):
        if await worker.process_once() == 0 and await router.process_once() == 0:
            break
    process = await manager.get(pid)
    assert process is not None and process.status is ProcessStatus.COMPLETED


def test_combine_skips_disabled_parts_and_calls_each_enabled_one() -> None:
    assert combine() is NO_TELEMETRY
    assert combine(None, NO_TELEMETRY) is NO_TELEMETRY
    one = Counting()
    assert combine(one, NO_TELEMETRY) is one
    two = Counting()
    both = combine(one, two)
    both.commands_sent("d", "T", 3)
    assert one.calls == two.calls == ["sent T 3"]
    assert both.outgoing_headers() == {"from": "Counting"}
    with both.span("x", {"a": 1}) as span:
        span.set("b", 2)


def test_the_base_hooks_do_nothing() -> None:
    headers: Mapping[str, Any] = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    with NO_TELEMETRY.span("commandbus.handle", {}, headers) as span:
        span.set("k", "v")
        span.error(ValueError("x"))
    assert NO_TELEMETRY.outgoing_headers("c") is None
    assert NO_TELEMETRY.enabled is False
