"""Handler registration and the context a handler runs with."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from commandbus.errors import HandlerAlreadyRegisteredError, HandlerNotFoundError
from commandbus.models import Command, JsonObject
from commandbus.validation import validate_command_type, validate_name

HandlerFn = Callable[[Command, "HandlerContext"], Awaitable[JsonObject | None]]
F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__commandbus_handler__"


def _in_a_thread(fn: Callable[..., Any]) -> HandlerFn:
    """A plain (sync) handler, run in the default thread pool so that it never blocks the
    event loop: other handlers, the heartbeat and settlements go on while it works. It
    cannot be interrupted: a worker stopping with a timeout abandons it, and its command is
    delivered again after the visibility timeout, as for any handler still running."""

    @functools.wraps(fn)
    async def run(command: Command, context: HandlerContext) -> JsonObject | None:
        result: JsonObject | None = await asyncio.to_thread(fn, command, context)
        return result

    return run


@dataclass
class HandlerContext:
    """What a handler gets besides the command.

    ``conn`` is set only for handlers registered with ``transactional=True``: it is the open
    transaction in which the command will be settled, so the handler's own writes commit
    atomically with the command's completion (or roll back with its failure). It is the
    backend's own handle — a ``psycopg.AsyncConnection`` on PostgreSQL — typed ``Any`` so
    that a handler can call its methods (the ports see it as the opaque ``Conn``).
    """

    command: Command
    attempt: int
    max_attempts: int
    msg_id: int
    conn: Any = None
    _extend: Callable[[float], Awaitable[bool]] | None = field(default=None, repr=False)

    async def extend_visibility(self, seconds: float) -> bool:
        """Keep the command invisible to other workers for ``seconds`` more from now.

        Call it from long-running handlers before the worker's visibility timeout runs out;
        returns False if the message is gone (e.g. settled by an operator meanwhile).
        """
        if self._extend is None:
            return False
        return await self._extend(seconds)


@dataclass(frozen=True)
class RegisteredHandler:
    domain: str
    command_type: str
    fn: HandlerFn
    transactional: bool = False


class HandlerRegistry:
    """Maps ``(domain, command_type)`` to an async handler."""

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], RegisteredHandler] = {}

    def register(
        self, domain: str, command_type: str, fn: HandlerFn, *, transactional: bool = False
    ) -> None:
        validate_name(domain)
        validate_command_type(command_type)
        if not callable(fn):
            raise TypeError(f"handler for {command_type!r} must be a function, got {fn!r}")
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects are fine too
        )
        if not is_async:
            if transactional:
                raise TypeError(
                    f"transactional handler for {command_type!r} must be an async function: "
                    "it writes through context.conn, an async connection"
                )
            fn = _in_a_thread(fn)
        key = (domain, command_type)
        if key in self._handlers:
            raise HandlerAlreadyRegisteredError(domain, command_type)
        self._handlers[key] = RegisteredHandler(domain, command_type, fn, transactional)

    def handler(
        self, domain: str, command_type: str, *, transactional: bool = False
    ) -> Callable[[F], F]:
        """Decorator: ``@registry.handler("payments", "Debit")``."""

        def decorate(fn: F) -> F:
            self.register(domain, command_type, fn, transactional=transactional)
            return fn

        return decorate

    def register_instance(self, obj: object) -> list[tuple[str, str]]:
        """Register every method of ``obj`` marked with the module-level ``@handler``."""
        registered: list[tuple[str, str]] = []
        for name in dir(type(obj)):
            attr = getattr(type(obj), name, None)
            mark = getattr(attr, _MARK, None)
            if mark is None:
                continue
            domain, command_type, transactional = mark
            self.register(domain, command_type, getattr(obj, name), transactional=transactional)
            registered.append((domain, command_type))
        return registered

    def get(self, domain: str, command_type: str) -> RegisteredHandler:
        try:
            return self._handlers[(domain, command_type)]
        except KeyError:
            raise HandlerNotFoundError(domain, command_type) from None

    def find(self, domain: str, command_type: str) -> RegisteredHandler | None:
        return self._handlers.get((domain, command_type))

    def domains(self) -> set[str]:
        return {domain for domain, _ in self._handlers}

    def command_types(self, domain: str) -> list[str]:
        return sorted(ct for d, ct in self._handlers if d == domain)

    def __len__(self) -> int:
        return len(self._handlers)


def handler(domain: str, command_type: str, *, transactional: bool = False) -> Callable[[F], F]:
    """Mark a method as a handler; ``HandlerRegistry.register_instance(obj)`` registers it."""
    validate_name(domain)
    validate_command_type(command_type)

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (domain, command_type, transactional))
        return fn

    return mark
