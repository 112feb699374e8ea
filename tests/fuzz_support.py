"""Support for the fuzz suites: harnesses (which backend, how to see writes), helpers that
bound every call, what a value means once it went through JSON, and a process manager
whose hooks accept anything (so that only the library can refuse an input)."""

from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any
from uuid import UUID

from hypothesis import example

from commandbus import (
    BaseProcessManager,
    CommandBus,
    CommandBusError,
    ProcessCommand,
    ProcessStatus,
    Reply,
    RetryPolicy,
)

#: ``COMMANDBUS_FUZZ_SCALE=10`` runs ten times as many examples (a longer bug hunt).
SCALE = float(os.environ.get("COMMANDBUS_FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, int(count * SCALE))


def explicit(name: str, values: list[Any]) -> Any:
    """``@example(name=v)`` for each value: known troublemakers, always tried first."""

    def decorate(test: Any) -> Any:
        for value in reversed(values):
            test = example(**{name: value})(test)
        return test

    return decorate


NO_BACKOFF = RetryPolicy(max_attempts=2, backoff_schedule=(0,))
TIMEOUT = 15.0
DEFAULT_MAX_ATTEMPTS = 2


async def within(awaitable: Any, timeout: float = TIMEOUT) -> Any:
    """Await with a deadline: a hang fails the example instead of the whole run."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"no answer within {timeout} s (hang)") from None


class Harness:
    """How a suite provides backends and observes writes."""

    async def backend(self) -> Any:  # the backend for one example
        raise NotImplementedError

    async def snapshot(self, backend: Any, domains: list[str]) -> Any:
        """Something that changes whenever anything is written (for ``domains``)."""
        raise NotImplementedError

    async def inject(self, backend: Any, queue: str, message: Any) -> None:
        await backend.queue.enqueue(queue, [message])


PG_COUNTS = """
SELECT (SELECT count(*) FROM commandbus.command),
       (SELECT count(*) FROM commandbus.queue_message),
       (SELECT count(*) FROM commandbus.queue_archive),
       (SELECT count(*) FROM commandbus.audit),
       (SELECT count(*) FROM commandbus.process),
       (SELECT count(*) FROM commandbus.process_audit),
       (SELECT count(*) FROM commandbus.process_message_log)
"""
PG_TABLES = ("command", "queue_message", "queue_archive", "audit", "process", "audit_p", "log")


class PgHarness(Harness):
    """One database for the whole test (examples use fresh domains); writes are counted
    over every commandbus table."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    async def backend(self) -> Any:
        return self._backend

    async def snapshot(self, backend: Any, domains: list[str]) -> Any:
        async with backend.pool.connection() as conn:
            row = await (await conn.execute(PG_COUNTS)).fetchone()
        return dict(zip(PG_TABLES, row, strict=True))

    async def inject(self, backend: Any, queue: str, message: Any) -> None:
        """Through the port; if the port refuses the message, with a plain INSERT (what a
        program that does not use commandbus, or an operator's SQL, could store)."""
        try:
            await backend.queue.enqueue(queue, [message])
        except CommandBusError:
            await self.insert(backend, queue, message)

    async def insert(self, backend: Any, queue: str, message: Any) -> None:
        async with backend.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO commandbus.queue_message (queue_name, message) VALUES (%s, %s::jsonb)",
                (queue, json.dumps(message)),
            )


class MemoryHarness(Harness):
    """A fresh in-memory backend per example; writes are seen through the public API."""

    async def backend(self) -> Any:
        return CommandBus.in_memory().backend

    async def snapshot(self, backend: Any, domains: list[str]) -> Any:
        bus = CommandBus(backend)
        seen: dict[str, Any] = {"commands": len(await bus.query_commands(limit=10_000))}
        for domain in domains:
            for queue in queues_of(domain):
                seen[queue] = await backend.queue.depth(queue)
            found = await backend.processes.find_by_status(domain, list(ProcessStatus))
            seen[domain] = [(p.process_id, p.status, p.version) for p in found]
        return seen


def queues_of(domain: str) -> list[str]:
    return [f"{domain}__commands", f"{domain}__replies", f"{domain}__process_replies"]


def new_bus(backend: Any) -> CommandBus:
    return CommandBus(backend, retry_policy=NO_BACKOFF)


async def expect_bus_error_only(call: Any) -> tuple[Any, BaseException | None]:
    """``(result, None)`` or ``(None, error)`` for a ``CommandBusError``; anything else
    propagates (and fails the example)."""
    try:
        return await within(call), None
    except CommandBusError as exc:
        return None, exc


# -- what a value means once it went through JSON ---------------------------------------------


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key)
    raise TypeError(f"not a JSON key: {key!r}")


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return []


def has_key_collision(value: Any) -> bool:
    """True if two keys of one dict (at any depth) become the same JSON key."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            try:
                if len({_json_key(k) for k in item}) != len(item):
                    return True
            except TypeError:
                pass
        stack.extend(_children(item))
    return False


def _builtin_encoding(value: Any) -> Any:
    """The JSON form the library documents for the types it encodes out of the box."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def json_equivalent(sent: Any, got: Any) -> bool:
    """Whether ``got`` is what JSON makes of ``sent`` (keys as JSON text, tuples as lists,
    numbers compared by value). Iterative: payloads may be nested deeply."""
    stack = [(sent, got)]
    while stack:
        a, b = stack.pop()
        a = _builtin_encoding(a)
        if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
            if a is not b:
                return False
        elif isinstance(a, str):
            if not isinstance(b, str) or a != b:
                return False
        elif isinstance(a, int | float):
            if not isinstance(b, int | float):
                return False
            if isinstance(a, int) and isinstance(b, int):
                if a != b:
                    return False
            elif not (math.isfinite(float(a)) and float(a) == float(b)):
                return False
        elif isinstance(a, dict):
            if not isinstance(b, dict) or len(a) != len(b):
                return False
            for key, value in a.items():
                name = _json_key(key)
                if name not in b:
                    return False
                stack.append((value, b[name]))
        elif isinstance(a, list | tuple):
            if not isinstance(b, list) or len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        else:
            return False
    return True


def short(value: Any, limit: int = 300) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# -- a small process manager whose hooks accept anything --------------------------------------


class FuzzStep(StrEnum):
    FIRST = "first"
    SECOND = "second"


@dataclass
class FuzzState:
    data: dict[str, Any] = field(default_factory=dict)
    results: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "results": self.results}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FuzzState:
        return cls(data=data.get("data", {}), results=list(data.get("results", [])))


class FuzzProcess(BaseProcessManager[FuzzState, FuzzStep]):
    """Two steps (``StepOne``, ``StepTwo`` commands); the state keeps the start input."""

    process_type = "Fuzz"

    def __init__(self, bus: Any, domain: str) -> None:
        self._domain = domain
        super().__init__(bus)

    @property
    def domain(self) -> str:
        return self._domain

    def create_initial_state(self, initial_data: dict[str, Any]) -> FuzzState:
        return FuzzState(data=initial_data)

    def get_first_step(self, state: FuzzState) -> FuzzStep:
        return FuzzStep.FIRST

    def build_command(self, step: FuzzStep, state: FuzzState) -> ProcessCommand[Any]:
        if step is FuzzStep.FIRST:
            return ProcessCommand("StepOne", {"echo": state.data})
        return ProcessCommand("StepTwo", {"n": len(state.results)})

    def update_state(self, state: FuzzState, step: FuzzStep, reply: Reply) -> None:
        state.results.append(str(step))

    def get_next_step(self, current_step: FuzzStep, reply: Reply, state: FuzzState) -> Any:
        return FuzzStep.SECOND if current_step is FuzzStep.FIRST else None


TERMINAL_OR_TSQ = {"COMPLETED", "FAILED", "CANCELED", "IN_TROUBLESHOOTING_QUEUE"}
