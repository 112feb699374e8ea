"""Leases on the in-memory backend and a virtual clock: the heartbeat keeps a slow
handler's command, and a handler that outlives its lease anyway is reported as such."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

from commandbus import AuditEventType, CommandBus, HandlerRegistry, RetryPolicy, Worker
from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock

DOMAIN = "reports"


def slow_registry(clock: VirtualClock, calls: list[int], seconds: float) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Render")
    async def render(command: Any, context: Any) -> dict[str, Any]:
        calls.append(context.attempt)
        await clock.sleep(seconds)
        return {"pages": 3}

    return registry


async def run_two_workers(
    backend: InMemoryBackend, clock: VirtualClock, registry: HandlerRegistry, **options: Any
) -> tuple[Worker, Worker]:
    first = Worker(backend, DOMAIN, registry, visibility_timeout=30, **options)
    second = Worker(backend, DOMAIN, registry, visibility_timeout=30, **options)
    tasks = [asyncio.create_task(w.run(concurrency=2, poll_interval=1)) for w in (first, second)]
    for _ in range(130):  # 130 virtual seconds, a second at a time
        await clock.advance(1)
    for worker in (first, second):
        await worker.stop()
    await asyncio.gather(*tasks)
    return first, second


async def test_the_heartbeat_keeps_the_lease_of_a_handler_slower_than_its_timeout() -> None:
    clock = VirtualClock()
    backend = InMemoryBackend(clock=clock)
    bus = CommandBus(backend)
    command_id = uuid4()
    await bus.send(DOMAIN, "Render", command_id, {})
    calls: list[int] = []
    first, second = await run_two_workers(backend, clock, slow_registry(clock, calls, 100))
    assert calls == [1]  # one delivery, although it ran 100 s on a 30 s lease
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status.value == "COMPLETED" and meta.attempts == 1
    assert first.leases.extensions + second.leases.extensions >= 3


async def test_a_handler_that_outlives_its_lease_is_named_as_the_cause_in_the_tsq() -> None:
    clock = VirtualClock()
    backend = InMemoryBackend(clock=clock)
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1))
    command_id = uuid4()
    await bus.send(DOMAIN, "Render", command_id, {})
    calls: list[int] = []
    registry = slow_registry(clock, calls, 100)
    first, second = await run_two_workers(backend, clock, registry, heartbeat=False)
    assert calls == [1]  # the second delivery was past max_attempts: not run
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status.value == "IN_TROUBLESHOOTING_QUEUE"
    assert meta.last_error_code == "LEASE_EXPIRED"
    assert meta.last_error_msg is not None
    assert "ran 100.0 s, longer than the visibility timeout (30 s)" in meta.last_error_msg
    assert "crashed" not in meta.last_error_msg
    trail = await bus.get_audit_trail(command_id)
    [expired] = [e for e in trail if e.event_type is AuditEventType.LEASE_EXPIRED]
    assert expired.details == {"attempt": 1, "held_seconds": 100.0, "visibility_timeout": 30.0}
    # The late result was not counted as completed.
    assert first.stats.completed + second.stats.completed == 0
    assert first.stats.lease_expired + second.stats.lease_expired == 1


async def test_a_later_delivery_past_the_limit_says_leases_expired() -> None:
    clock = VirtualClock()
    backend = InMemoryBackend(clock=clock)
    bus = CommandBus(backend, retry_policy=RetryPolicy(max_attempts=2))
    command_id = uuid4()
    await bus.send(DOMAIN, "Render", command_id, {})
    calls: list[int] = []
    await run_two_workers(backend, clock, slow_registry(clock, calls, 45), heartbeat=False)
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status.value == "IN_TROUBLESHOOTING_QUEUE"
    assert meta.last_error_msg is not None
    assert "longer than the visibility timeout (30 s)" in meta.last_error_msg, meta
    assert "crashed" not in meta.last_error_msg
