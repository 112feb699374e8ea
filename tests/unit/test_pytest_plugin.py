"""The fixtures the auto-loaded pytest plugin gives users."""

from uuid import uuid4

from commandbus import CommandBus, CommandStatus, HandlerRegistry, RetryPolicy, Worker
from commandbus.memory import InMemoryBackend
from commandbus.testing import VirtualClock


async def test_memory_backend_runs_on_the_virtual_clock(commandbus_memory, virtual_clock):
    assert isinstance(virtual_clock, VirtualClock)
    assert isinstance(commandbus_memory, InMemoryBackend)
    assert commandbus_memory.clock is virtual_clock

    registry = HandlerRegistry()
    attempts = []

    @registry.handler("orders", "Ship")
    async def ship(command, context):
        attempts.append((context.attempt, virtual_clock.now()))
        if context.attempt == 1:
            raise ConnectionError("carrier offline")

    bus = CommandBus(commandbus_memory)
    worker = Worker(
        commandbus_memory, "orders", registry, retry_policy=RetryPolicy(backoff_schedule=(600,))
    )
    command_id = uuid4()
    await bus.send("orders", "Ship", command_id, {})
    assert await worker.process_once() == 1
    assert await worker.process_once() == 0  # the retry waits ten virtual minutes
    await virtual_clock.advance(600)
    assert await worker.process_once() == 1
    assert [a for a, _ in attempts] == [1, 2]
    assert (attempts[1][1] - attempts[0][1]).total_seconds() == 600
    meta = await bus.get_command("orders", command_id)
    assert meta is not None and meta.status is CommandStatus.COMPLETED
