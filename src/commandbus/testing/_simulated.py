"""The simulated world of a ``ProcessSimulation``: recorded events, observed command
store and queue, and the simulated services (handlers with seeded outcomes)."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from commandbus.handler import HandlerFn, HandlerRegistry, RegisteredHandler
from commandbus.models import (
    Command,
    CommandStatus,
    JsonObject,
    SendRequest,
    SendResult,
    Settlement,
)
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import (
    ProcessMetadata,
)


class SimulationHooks(Protocol):
    """What the observed store and queue call back on the simulation that owns them."""

    _events: _Events

    def _latency(self) -> float: ...

    def _now(self) -> datetime: ...

    def _schedule_operator(self, domain: str, command_id: UUID) -> None: ...

    def _draw_duplicate(self) -> bool: ...

    async def _duplicate(self, queue: str, message: JsonObject) -> None: ...


AnyManager = BaseProcessManager[Any, Any]
AnyProcess = ProcessMetadata[Any, Any]

#: A simulated service: the result of a command that succeeds (None: no result).
ResultFn = Callable[[Command], JsonObject | None]
#: Builds the start input of the ``index``-th process from the simulation's generator.
InitialDataFn = Callable[[int, random.Random], JsonObject]


class _Events:
    """Due times of the simulation (a heap), each with an optional action."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, Callable[[], Any] | None]] = []
        self._seq = 0

    def at(self, when: datetime, action: Callable[[], Any] | None = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action))

    def pop_due(self, now: datetime) -> list[Callable[[], Any]]:
        due: list[Callable[[], Any]] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, action = heapq.heappop(self._heap)
            if action is not None:
                due.append(action)
        return due

    def next_time(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None


class _Recorder:
    def __init__(self, start: datetime) -> None:
        self.start = start
        self.lines: list[str] = []

    def add(self, now: datetime, kind: str, *fields: Any) -> None:
        offset = round((now - self.start).total_seconds(), 6)
        self.lines.append(_dumps([offset, kind, *fields]))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class _ObservedCommands:
    """The backend's command store, seen by the simulation: sends get their latency,
    settlements may be delivered twice and schedule what becomes due."""

    def __init__(self, inner: Any, sim: SimulationHooks) -> None:
        self._inner = inner
        self._sim = sim

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Any = None,
        prepare: Callable[[SendRequest], SendRequest] | None = None,
    ) -> list[SendResult]:
        if prepare is not None:  # routed (or delayed) by what the requests really are
            requests = [prepare(r) for r in requests]
        sim = self._sim
        delayed = []
        for request in requests:
            latency = sim._latency()
            delayed.append(replace(request, delay=(request.delay or 0.0) + latency))
            sim._events.at(sim._now() + timedelta(seconds=latency + (request.delay or 0.0)))
        result: list[SendResult] = await self._inner.insert(
            delayed, default_max_attempts, conn=conn
        )
        return result

    async def settle(self, settlements: Sequence[Settlement], *, conn: Any = None) -> int:
        applied: int = await self._inner.settle(settlements, conn=conn)
        sim = self._sim
        for s in settlements:
            if s.status is CommandStatus.PENDING:  # a retry after the backoff
                sim._events.at(sim._now() + timedelta(seconds=s.retry_delay))
            elif s.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE:
                sim._schedule_operator(s.domain, s.command_id)
            if s.reply is not None and sim._draw_duplicate():
                await sim._duplicate(s.reply.queue, s.reply.reply.to_message())
        return applied


class _ObservedQueue:
    """The backend's queue: delayed messages (step timers) schedule their due time."""

    def __init__(self, inner: Any, sim: SimulationHooks) -> None:
        self._inner = inner
        self._sim = sim

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def enqueue(
        self, queue: str, messages: Sequence[JsonObject], delay: float = 0.0, *, conn: Any = None
    ) -> list[int]:
        ids: list[int] = await self._inner.enqueue(queue, messages, delay, conn=conn)
        self._sim._events.at(self._sim._now() + timedelta(seconds=max(delay, 0.0)))
        return ids


class _SimulatedServices(HandlerRegistry):
    """A registry that hands every command of a served domain to the simulated service."""

    def __init__(self) -> None:
        super().__init__()
        self._services: dict[str, HandlerFn] = {}

    def serve(self, domain: str, fn: HandlerFn) -> None:
        self._services[domain] = fn

    def find(self, domain: str, command_type: str) -> RegisteredHandler | None:
        fn = self._services.get(domain)
        if fn is None:
            return super().find(domain, command_type)
        return RegisteredHandler(domain, command_type, fn, False)
