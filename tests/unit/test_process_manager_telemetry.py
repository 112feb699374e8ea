"""Telemetry of event-driven processes: with it on, the engine counts the commands it
sends, reports status changes, opens a span per batch and gives its commands a trace
context caused by the input they answer; with it off, no hook runs."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from examples.pull_request import PreviewCloud, PullRequestPreviews
from tests.unit.test_telemetry import Tripwire

from commandbus import HandlerRegistry, Worker
from commandbus.events import EventStore, NewEvent
from commandbus.memory import InMemoryBackend
from commandbus.process_manager import ProcessEngine, ProcessEventRouter
from commandbus.telemetry import Span, Telemetry
from commandbus.testing.clock import VirtualClock


class Recording(Telemetry):
    enabled = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    def commands_sent(self, domain: str, command_type: str, count: int = 1) -> None:
        self.calls.append(f"sent {command_type} x{count}")

    def process_changed(self, domain: str, process_type: str, status: str) -> None:
        self.calls.append(f"{process_type} {status}")

    def outgoing_headers(self, causation_id: str | None = None) -> dict[str, Any] | None:
        return {"traceparent": "00-trace-span-01", "causation_id": causation_id}

    def span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> AbstractContextManager[Span]:
        @contextmanager
        def opened() -> Any:
            self.calls.append(f"span {name} {dict(attributes or {})}")
            yield Span()

        return opened()


async def run(telemetry: Telemetry) -> Any:
    backend = InMemoryBackend(clock=VirtualClock())
    engine = ProcessEngine(backend, PullRequestPreviews(), telemetry=telemetry)
    subscription, router = engine.subscription(), ProcessEventRouter(engine)
    worker = Worker(backend, "previews", PreviewCloud().register(HandlerRegistry()))
    opened = {"pr": "a#1", "environments": ["qa"], "commit": "c1"}
    await EventStore(backend).append("pullrequest-1", NewEvent("PullRequestOpened", opened))
    await subscription.drain()
    [message] = await backend.queue.read("previews__commands", 1, 0.001)
    await backend.queue.release("previews__commands", [message.msg_id])
    while await worker.drain() + await router.drain():
        pass
    return engine, message


async def test_with_telemetry_on_commands_statuses_and_spans_are_reported() -> None:
    telemetry = Recording()
    engine, message = await run(telemetry)
    assert telemetry.calls == [
        "span commandbus.process_manager.apply {'process_type': 'pr_previews', 'inputs': 1}",
        "sent DeployPreview x1",
        "pr_previews WAITING",
        "span commandbus.process_manager.apply {'process_type': 'pr_previews', 'inputs': 1}",
        "pr_previews IN_PROGRESS",
    ]
    headers = message.message.get("headers") or {}
    assert headers.get("traceparent") == "00-trace-span-01"
    assert headers.get("causation_id")  # the input (the start event) that caused it
    instance = await engine.load(engine.process_id("a#1"))
    assert instance.book.data["state_name"] == "previewing"


async def test_with_telemetry_off_no_hook_runs() -> None:
    engine, message = await run(Tripwire())
    assert "headers" not in message.message or not message.message["headers"]
    assert (await engine.load(engine.process_id("a#1"))).book.data["state_name"] == "previewing"
