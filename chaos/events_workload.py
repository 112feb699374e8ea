"""The event-driven part of a chaos run: processes started by events (seed 003).

``OrderPlaced`` events (stream category ``chaos``, business key ``order``) each start a
``ChaosSteps`` process, which runs three tasks one after the other (``EventStep`` in
domain ``chaos_events``, failing transiently at the workload's rate) and completes. The
router agents run the engine's subscription (one consumer at a time, the others stand by)
and its ``ProcessEventRouter``; the worker agents run a worker for ``chaos_events``.

The events' ids are derived from their keys, so that a send whose outcome is unknown can
be checked (which ids are stored) and completed without a second event.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from commandbus import HandlerRegistry, TransientCommandError
from commandbus.events import NewEvent
from commandbus.handler import HandlerContext
from commandbus.models import Command
from commandbus.process import ProcessStatus
from commandbus.process_manager import (
    Decision,
    EventSourcedProcessManager,
    ProcessEvent,
    ProcessLocator,
    Task,
)

__all__ = [
    "EVENT_COMMAND_QUEUE",
    "EVENT_DOMAIN",
    "EVENT_PROCESS_TYPE",
    "EVENT_REPLY_QUEUE",
    "EVENT_STEPS",
    "ChaosSteps",
    "event_for",
    "event_keys",
    "register_event_handlers",
]

EVENT_DOMAIN = "chaos_events"
EVENT_PROCESS_TYPE = "chaos_steps"
EVENT_COMMAND_QUEUE = f"{EVENT_DOMAIN}__commands"
EVENT_REPLY_QUEUE = f"{EVENT_DOMAIN}__process_events"
EVENT_STEPS = 3
_KEYS = uuid.UUID("6f1c3a52-35a8-4c4e-9b0b-3e7f1d7c0a11")


class ChaosSteps(EventSourcedProcessManager[dict[str, Any]]):
    process_type = EVENT_PROCESS_TYPE
    domain = EVENT_DOMAIN
    categories = ("chaos",)
    starts_on = ("OrderPlaced",)
    locator = ProcessLocator.by_field("order")
    snapshot_every = 5  # small, so that snapshots are taken (and used) under faults

    def initial_state(self) -> dict[str, Any]:
        return {"order": None, "done": 0}

    def evolve(self, state: dict[str, Any], event: ProcessEvent) -> dict[str, Any]:
        if event.event_type == "OrderPlaced":
            return {"order": event.data["order"], "done": 0}
        if event.event_type == "TaskCompleted":
            return {**state, "done": state["done"] + 1}
        return state

    def decide(self, state: dict[str, Any], event: ProcessEvent) -> Decision:
        if event.event_type == "OrderPlaced" or event.event_type == "TaskCompleted":
            if state["done"] == EVENT_STEPS:
                return Decision(finish=ProcessStatus.COMPLETED)
            step = state["done"] + 1
            task = Task(f"step-{step}", "EventStep", {"order": state["order"], "step": step})
            return Decision(commands=[task])
        if event.event_type == "TaskFailed":
            return Decision(finish=ProcessStatus.FAILED, error_code=event.data["reason"])
        return Decision()


def event_keys(seed: int, count: int) -> list[str]:
    return [f"{seed}-{n}" for n in range(count)]


def event_for(key: str) -> NewEvent:
    return NewEvent("OrderPlaced", {"order": key}, event_id=uuid.uuid5(_KEYS, key))


def register_event_handlers(registry: HandlerRegistry, seed: int, rate: float) -> None:
    rng = random.Random(seed + 2)

    async def step(command: Command, context: HandlerContext) -> dict[str, Any]:
        if rng.random() < rate:
            raise TransientCommandError("CHAOS_TRANSIENT", "injected transient failure")
        return {"step": command.data["step"]}

    registry.register(EVENT_DOMAIN, "EventStep", step)
