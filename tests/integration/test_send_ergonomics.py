"""Everyday sending: an id generated when none is given, and typed payloads (dates,
decimals, UUIDs, enums, registered types) encoded without hand conversion; anything else
is a clear error. On the in-memory backend and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID, uuid4

import pytest

from commandbus import CommandBus, HandlerRegistry, Worker, register_json_encoder
from commandbus.errors import DuplicateCommandError, ValidationError
from commandbus.ports import Backend


class Colour(Enum):
    RED = "red"


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents


class Unknown:
    pass


register_json_encoder(Money, lambda m: {"cents": m.cents})

received: list[dict[str, Any]] = []
registry = HandlerRegistry()


@registry.handler("ergonomics", "Record")
async def record(command: Any, context: Any) -> dict[str, Any]:
    received.append(command.data)
    return {"at": datetime(2025, 1, 2, 3, 4, tzinfo=UTC), "price": Money(250)}


async def test_send_without_an_id_generates_one(backend: Backend) -> None:
    bus = CommandBus(backend)
    sent = await bus.send("ergonomics", "Record", data={"n": 1})
    assert isinstance(sent.command_id, UUID)
    meta = await bus.get_command("ergonomics", sent.command_id)
    assert meta is not None
    again = await bus.send("ergonomics", "Record", data={"n": 1})
    assert again.command_id != sent.command_id  # a new command each time
    mine = uuid4()
    await bus.send("ergonomics", "Record", mine, {"n": 2})
    with pytest.raises(DuplicateCommandError):  # an explicit id stays the idempotency key
        await bus.send("ergonomics", "Record", mine, {"n": 2})
    with pytest.raises(ValidationError, match="needs data"):
        await bus.send("ergonomics", "Record")


async def test_typed_payloads_are_encoded_and_the_rest_is_refused(backend: Backend) -> None:
    received.clear()
    bus = CommandBus(backend)
    data = {
        "day": date(2025, 1, 31),
        "at": datetime(2025, 1, 31, 12, 30, tzinfo=UTC),
        "amount": Decimal("10.10"),
        "ref": UUID(int=7),
        "colour": Colour.RED,
        "price": Money(990),
    }
    sent = await bus.send("ergonomics", "Record", data=data, reply_to="ergonomics__replies")
    await Worker(backend, "ergonomics", registry).drain()
    assert received == [
        {
            "day": "2025-01-31",
            "at": "2025-01-31T12:30:00+00:00",
            "amount": "10.10",  # exact, not a float
            "ref": "00000000-0000-0000-0000-000000000007",
            "colour": "red",
            "price": {"cents": 990},
        }
    ]
    [reply] = await bus.read_replies("ergonomics__replies")
    assert reply.reply.command_id == sent.command_id
    assert reply.reply.data == {"at": "2025-01-02T03:04:00+00:00", "price": {"cents": 250}}
    with pytest.raises(ValidationError, match=r"Unknown.*register_json_encoder"):
        await bus.send("ergonomics", "Record", data={"x": Unknown()})
    with pytest.raises(ValidationError, match="set"):
        await bus.send("ergonomics", "Record", data={"x": {1, 2}})
