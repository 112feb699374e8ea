"""Fuzz properties of batches, shared by the memory and PostgreSQL suites.

Whatever a caller passes to ``create_batch``, ``send(batch_id=...)``, ``close_batch`` or
the batch queries, and whatever lies on a notice queue, only ``CommandBusError`` reaches
the caller, a refused call writes nothing (no batch row, no command, no counter change),
and an accepted one stores exactly what was asked.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from hypothesis import strategies as st

from commandbus import BatchCommand, CommandBus
from commandbus.batches import BatchNotice
from tests import fuzz_strategies as fs
from tests.fuzz_support import Harness, expect_bus_error_only, new_bus

# -- strategies ------------------------------------------------------------------------------

#: A member of ``commands``: a good command, a bad one, or not a command at all.
members = st.one_of(
    st.just("good"),
    st.builds(
        lambda t, d, i, r, m: ("cmd", t, d, i, r, m),
        fs.command_types,
        fs.payloads,
        fs.optional_uuids,
        fs.reply_tos,
        fs.max_attempts,
    ),
    st.sampled_from(["existing_id", "repeated_id", "not_a_command", None, 7]),
)
create_args = st.fixed_dictionaries(
    {
        "domain": fs.names,
        "commands": st.one_of(
            st.lists(members, max_size=6), st.sampled_from([None, "abc", 5, {"a": 1}])
        ),
        "name": st.one_of(st.none(), fs.texts, st.sampled_from([5, ["x"], fs.Big(300)])),
        "reply_to": fs.reply_tos,
        "batch_id": st.one_of(st.none(), fs.uuids, st.just("existing_batch")),
        "keep_open": st.one_of(st.booleans(), st.sampled_from([None, 1, "yes"])),
    }
)
#: Calls that must succeed, always tried first.
CREATE_EXAMPLES = [
    {
        "domain": fs.VALID,
        "commands": ["good", "good", ("cmd", "Do.It-now_2", {"a": [1]}, fs.FRESH_STR, None, 2)],
        "name": "march",
        "reply_to": fs.VALID,
        "batch_id": fs.FRESH,
        "keep_open": False,
    },
    {
        "domain": fs.VALID,
        "commands": [],
        "name": None,
        "reply_to": None,
        "batch_id": None,
        "keep_open": True,
    },
    # refused: a command id that exists, a batch id that exists, a repeated command id
    {**dict.fromkeys(("name", "reply_to", "batch_id")), "domain": fs.VALID,
     "commands": ["good", "existing_id"], "keep_open": False},
    {**dict.fromkeys(("name", "reply_to")), "domain": fs.VALID, "commands": ["good"],
     "batch_id": "existing_batch", "keep_open": False},
    {**dict.fromkeys(("name", "reply_to", "batch_id")), "domain": fs.VALID,
     "commands": ["repeated_id", "good"], "keep_open": True},
]  # fmt: skip
targets = st.sampled_from(["open", "closed", "missing", "other_domain", "bad_id", "finished"])


async def _counts(bus: CommandBus, domain: str) -> Any:
    """What any write to ``domain`` changes: its batches and their counters, its commands,
    its queues."""
    batches = await bus.list_batches(domain=domain, limit=10_000) if _valid(domain) else []
    commands = await bus.query_commands(domain=domain, limit=10_000) if _valid(domain) else []
    return (
        sorted((str(b.batch_id), b.total, b.completed, b.status.value) for b in batches),
        sorted(str(c.command_id) for c in commands),
    )


def _valid(domain: Any) -> bool:
    return isinstance(domain, str) and domain.startswith("fz")


def _command(spec: Any, existing: Any, repeated: Any) -> Any:
    if spec == "good":
        return BatchCommand("Cmd", {"i": 1})
    if spec == "existing_id":
        return BatchCommand("Cmd", {"i": 2}, command_id=existing)
    if spec == "repeated_id":
        return BatchCommand("Cmd", {"i": 3}, command_id=repeated)
    if isinstance(spec, tuple):
        _, command_type, data, command_id, reply_to, max_attempts = spec
        return BatchCommand(
            fs.realize(command_type),
            fs.realize(data),
            command_id=fs.resolve_uuid(command_id),
            reply_to=fs.realize(reply_to),
            max_attempts=max_attempts,
        )
    return spec  # not a command at all


# -- properties ------------------------------------------------------------------------------


async def check_create_batch(h: Harness, args: dict[str, Any]) -> None:
    bus = new_bus(await h.backend())
    domain = fs.fresh_domain() if args["domain"] == fs.VALID else fs.realize(args["domain"])
    if _valid(domain):
        existing = (await bus.send(domain, "Cmd", uuid4(), {"pre": True})).command_id
        existing_batch = (
            await bus.create_batch(domain, [BatchCommand("Cmd", {"pre": 1})])
        ).batch_id
    else:
        existing, existing_batch = uuid4(), uuid4()
    repeated = uuid4()
    commands = args["commands"]
    if isinstance(commands, list):
        commands = [_command(spec, existing, repeated) for spec in commands]
        if sum(1 for spec in args["commands"] if spec == "repeated_id") == 1:
            commands.append(BatchCommand("Cmd", {"i": 4}, command_id=repeated))
    reply_to = f"{domain}__done" if args["reply_to"] == fs.VALID else fs.realize(args["reply_to"])
    batch_id = existing_batch if args["batch_id"] == "existing_batch" else args["batch_id"]
    before = await _counts(bus, domain) if _valid(domain) else None
    created, error = await expect_bus_error_only(
        bus.create_batch(
            domain,
            commands,
            name=fs.realize(args["name"]),
            reply_to=reply_to,
            batch_id=fs.resolve_uuid(batch_id),
            keep_open=args["keep_open"],
        )
    )
    if error is not None:
        if before is not None:
            assert await _counts(bus, domain) == before, f"refused ({error!r}) but wrote"
        return
    assert created is not None
    batch = await bus.get_batch(domain, created.batch_id)
    assert batch is not None and batch.total == len(commands) == created.total
    assert batch.is_open is args["keep_open"]
    for result in created.results:
        meta = await bus.get_command(domain, result.command_id)
        assert meta is not None and meta.batch_id == created.batch_id


async def check_send_to_batch(h: Harness, target: str, data: Any) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain, other = fs.fresh_domain(), fs.fresh_domain()
    open_id = (await bus.create_batch(domain, [], keep_open=True)).batch_id
    closed_id = (await bus.create_batch(domain, [BatchCommand("Cmd", {})])).batch_id
    finished_id = (await bus.create_batch(domain, [], keep_open=True)).batch_id
    await bus.close_batch(domain, finished_id)
    batch_id: Any = {
        "open": open_id,
        "closed": closed_id,
        "finished": finished_id,
        "missing": uuid4(),
        "other_domain": open_id,
        "bad_id": "not-a-uuid",
    }[target]
    send_domain = other if target == "other_domain" else domain
    before = (await _counts(bus, domain), await _counts(bus, other))
    sent, error = await expect_bus_error_only(
        bus.send(send_domain, "Cmd", data=fs.realize(data), batch_id=batch_id)
    )
    if target != "open" or error is not None:
        assert sent is None and error is not None, f"sent to a {target} batch"
        assert (await _counts(bus, domain), await _counts(bus, other)) == before
        return
    batch = await bus.get_batch(domain, open_id)
    assert batch is not None and batch.total == 1


async def check_batch_queries(h: Harness, domain: Any, status: Any, limit: Any, kind: Any) -> None:
    bus = new_bus(await h.backend())
    domain = fs.fresh_domain() if domain == fs.VALID else fs.realize(domain)
    found, error = await expect_bus_error_only(
        bus.list_batches(domain=domain, status=status, limit=limit, kind=kind)
    )
    assert error is not None or found == []
    for call in (bus.get_batch(domain, uuid4()), bus.close_batch(domain, "x")):
        await expect_bus_error_only(call)


async def check_notice_queue(h: Harness, message: Any) -> None:
    """Junk on a notice queue is set aside, never raised; a notice parses back."""
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fs.fresh_domain()
    queue = f"{domain}__done"
    message = fs.resolve_message(message, domain)
    unchecked = getattr(backend.queue, "enqueue_unchecked", None)  # the memory queue validates
    if unchecked is not None:
        await unchecked(queue, [message])
    else:
        await h.inject(backend, queue, message)
    created = await bus.create_batch(domain, [], keep_open=True, reply_to=queue)
    await bus.close_batch(domain, created.batch_id)  # an empty batch: no notice
    received, error = await expect_bus_error_only(bus.read_batch_notices(queue, limit=10))
    assert error is None, error
    for item in received:
        assert isinstance(item.notice, BatchNotice)
        assert BatchNotice.from_message(item.notice.to_message()) == item.notice
    assert await bus.read_batch_notices(queue, limit=10) == []  # the junk is set aside
