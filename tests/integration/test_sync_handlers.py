"""Plain (sync) handlers run in a thread pool: while one blocks, the event loop goes on —
other handlers finish, and the worker settles them. On memory and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import uuid4

from commandbus import CommandBus, HandlerRegistry, Worker
from commandbus.models import CommandStatus
from commandbus.ports import Backend


async def test_a_blocking_sync_handler_does_not_block_the_worker(backend: Backend) -> None:
    release = threading.Event()
    started = threading.Event()
    seen: list[str] = []
    registry = HandlerRegistry()

    @registry.handler("legacy", "Export")
    def export(command: Any, context: Any) -> dict[str, Any]:  # a plain, blocking function
        started.set()
        assert release.wait(30), "never released"
        seen.append(threading.current_thread().name)
        return {"rows": command.data["rows"]}

    @registry.handler("legacy", "Ping")
    async def ping(command: Any, context: Any) -> dict[str, Any]:
        return {"pong": True}

    bus = CommandBus(backend)
    slow, quick = uuid4(), uuid4()
    await bus.send("legacy", "Export", slow, {"rows": 3})
    worker = Worker(backend, "legacy", registry)
    running = asyncio.create_task(worker.run(concurrency=2, poll_interval=0.05))
    assert await asyncio.to_thread(started.wait, 30)  # the sync handler is blocking now
    await bus.send("legacy", "Ping", quick, {})
    for _ in range(600):  # the loop is free: the async handler finishes meanwhile
        meta = await bus.get_command("legacy", quick)
        if meta is not None and meta.status is CommandStatus.COMPLETED:
            break
        await asyncio.sleep(0.05)
    quick_meta = await bus.get_command("legacy", quick)
    assert quick_meta is not None and quick_meta.status is CommandStatus.COMPLETED
    slow_meta = await bus.get_command("legacy", slow)
    assert slow_meta is not None and slow_meta.status is CommandStatus.IN_PROGRESS
    release.set()
    for _ in range(600):
        meta = await bus.get_command("legacy", slow)
        if meta is not None and meta.status is CommandStatus.COMPLETED:
            break
        await asyncio.sleep(0.05)
    await worker.stop(timeout=10)
    await running
    slow_meta = await bus.get_command("legacy", slow)
    assert slow_meta is not None and slow_meta.status is CommandStatus.COMPLETED
    assert seen and seen[0] != threading.main_thread().name  # it ran in a worker thread
