"""Bad input is a ``commandbus`` error raised before the database, on both backends, and
writes nothing: the driver's own errors (PostgreSQL refusing NUL or a lone surrogate,
integer and timestamp overflows, unadaptable types) never reach the caller."""

from __future__ import annotations

import math
import time
from typing import Any
from uuid import uuid4

import pytest

from commandbus import (
    CommandBus,
    CommandBusError,
    HandlerRegistry,
    PermanentCommandError,
    RetryPolicy,
    SendRequest,
    TroubleshootingQueue,
    ValidationError,
    Worker,
)
from commandbus.errors import DatabaseUnavailableError
from commandbus.postgres import PostgresBackend

DOMAIN = "payments"
SURROGATE = "\ud800"


@pytest.fixture
def bus(backend: Any) -> CommandBus:
    return CommandBus(backend, retry_policy=RetryPolicy(max_attempts=1, backoff_schedule=(0,)))


async def written(bus: CommandBus) -> int:
    return len(await bus.query_commands(domain=DOMAIN, limit=10_000))


BAD_DATA: list[Any] = [
    {"text": SURROGATE},
    {"nested": [{"deep": "a" + SURROGATE + "b"}]},
    {SURROGATE: 1},
    {"nul": "a\x00b"},
    {"a\x00": 1},
    {1: "a", "1": "b"},  # json would merge these silently
    {"k": {None: 1}},
    {"k": [{2.5: "x"}]},
]


@pytest.mark.parametrize("data", BAD_DATA, ids=repr)
async def test_data_postgresql_cannot_store_is_rejected_before_anything_is_written(
    bus: CommandBus, data: dict[Any, Any]
) -> None:
    with pytest.raises(ValidationError, match="command data"):
        await bus.send(DOMAIN, "Debit", uuid4(), data)
    assert await written(bus) == 0


async def test_text_that_only_looks_like_an_escape_is_stored(bus: CommandBus) -> None:
    data = {"path": "C:\\u0000\\udead", "emoji": "\U0001f600", "accents": "é"}
    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, data)
    claimed = await bus.backend.commands.claim(DOMAIN, 1, 30)
    assert claimed[0].command.data == data


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 2**31}, "max_attempts"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"delay": 1e13}, "delay"),
        ({"delay": math.inf}, "delay"),
        ({"delay": math.nan}, "delay"),
        ({"delay": -1}, "delay"),
    ],
)
async def test_numbers_out_of_range_are_rejected(
    bus: CommandBus, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        await bus.send(DOMAIN, "Debit", uuid4(), {}, **options)
    assert await written(bus) == 0


async def test_a_batch_with_one_bad_request_writes_nothing(bus: CommandBus) -> None:
    requests = [SendRequest(DOMAIN, "Debit", uuid4(), {"n": i}) for i in range(5_000)]
    requests.append(SendRequest(DOMAIN, "Debit", uuid4(), {"bad": SURROGATE}))
    with pytest.raises(ValidationError):
        await bus.send_batch(requests)
    assert await written(bus) == 0


@pytest.mark.parametrize(
    ("limit", "visibility_timeout"),
    [(10, math.nan), (10, math.inf), (10, 0), (10, -5), (10, 1e13), (0, 30), (10**9, 30)],
)
async def test_read_replies_rejects_nonsense_numbers(
    bus: CommandBus, limit: int, visibility_timeout: float
) -> None:
    with pytest.raises(ValidationError):
        await bus.read_replies("payments__replies", limit, visibility_timeout)


async def test_replies_with_wrongly_typed_fields_are_set_aside(bus: CommandBus) -> None:
    queue = "payments__replies"
    good = {"command_id": str(uuid4()), "outcome": "FAILED", "error_code": "E"}
    bad = [
        {**good, "error_code": 7},
        {**good, "error_message": ["no"]},
        {**good, "command_id": 12345678901234567890123456789012},
        {**good, "correlation_id": 5},
    ]
    await bus.backend.queue.enqueue(queue, [*bad, good])
    replies = await bus.read_replies(queue)
    assert [r.reply.error_code for r in replies] == ["E"]


async def in_tsq(bus: CommandBus) -> Any:
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Debit")
    async def debit(command: Any, context: Any) -> None:
        raise PermanentCommandError("NO", "to the TSQ")

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {}, reply_to="payments__replies")
    await Worker(bus.backend, DOMAIN, registry).drain()
    return command_id


@pytest.mark.parametrize(
    "call",
    [
        lambda tsq, cid: tsq.operator_retry(DOMAIN, cid, operator="a" + SURROGATE),
        lambda tsq, cid: tsq.operator_retry(DOMAIN, cid, operator="a\x00"),
        lambda tsq, cid: tsq.operator_retry(DOMAIN, cid, operator=42),
        lambda tsq, cid: tsq.operator_cancel(DOMAIN, cid, reason="why" + SURROGATE),
        lambda tsq, cid: tsq.operator_cancel(DOMAIN, cid, reason="why\x00"),
        lambda tsq, cid: tsq.operator_cancel(DOMAIN, cid, reason={"a": 1}),
        lambda tsq, cid: tsq.operator_cancel(DOMAIN, cid, reason="ok", operator="x" * 10_000),
        lambda tsq, cid: tsq.operator_complete(DOMAIN, cid, result_data={"r": SURROGATE}),
        lambda tsq, cid: tsq.operator_complete(DOMAIN, cid, result_data={1: "x"}),
        lambda tsq, cid: tsq.list_troubleshooting(DOMAIN, command_type="a\x00"),
        lambda tsq, cid: tsq.list_troubleshooting(DOMAIN, limit="ten"),
    ],
)
async def test_operator_input_is_validated_and_the_item_stays_in_the_tsq(
    bus: CommandBus, call: Any
) -> None:
    command_id = await in_tsq(bus)
    tsq = TroubleshootingQueue(bus.backend)
    with pytest.raises(ValidationError):
        await call(tsq, command_id)
    [item] = await tsq.list_troubleshooting(DOMAIN)
    assert item.command_id == command_id
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status.value == "IN_TROUBLESHOOTING_QUEUE"
    trail = [e.event_type.value for e in await bus.get_audit_trail(command_id)]
    assert not [t for t in trail if t.startswith("OPERATOR")]


async def test_query_input_is_validated(bus: CommandBus) -> None:
    for kwargs in (
        {"command_type": "x\x00"},
        {"limit": "many"},
        {"offset": -1},
        {"created_after": "yesterday"},
    ):
        with pytest.raises(CommandBusError):
            await bus.query_commands(**kwargs)


async def test_connecting_to_a_server_that_is_down_fails_at_once_with_the_reason() -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="cannot connect") as caught:
        await PostgresBackend.connect("postgresql://someone:secret@127.0.0.1:1/nowhere")
    assert time.monotonic() - started < 5
    assert "secret" not in str(caught.value)
    with pytest.raises(ValidationError, match="invalid database URL"):
        await PostgresBackend.connect("this is not = a url ===")


async def test_junk_on_a_command_queue_is_archived_and_the_worker_goes_on(
    bus: CommandBus,
) -> None:
    junk: list[Any] = [
        [],
        "text",
        None,
        42,
        {"command_id": "-" * 32},
        {"command_id": "0000000000000000000000000000000-"},
        {"command_id": "{" + str(uuid4())},
        {"command_id": 7},
        {"command_id": str(uuid4())},  # looks right, but no such command
    ]
    queue = bus.backend.queue
    unchecked = getattr(queue, "enqueue_unchecked", None)  # the memory queue validates
    await (unchecked or queue.enqueue)(f"{DOMAIN}__commands", junk)
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Debit")
    async def debit(command: Any, context: Any) -> dict[str, Any]:
        return {"ok": True}

    canary = uuid4()
    await bus.send(DOMAIN, "Debit", canary, {})
    await Worker(bus.backend, DOMAIN, registry).drain()
    meta = await bus.get_command(DOMAIN, canary)
    assert meta is not None and meta.status.value == "COMPLETED"
    assert await bus.backend.queue.depth(f"{DOMAIN}__commands") == 0
