"""Bodies of the fuzz properties, shared by the memory and PostgreSQL suites.

Each ``check_*`` runs one hypothesis example against a ``Harness`` (which backend, and how
to tell whether anything was written). A non-``CommandBusError`` exception, a hang (every
call runs under ``asyncio.wait_for``) or a failed assertion fails the example.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

from commandbus import (
    BusinessRuleException,
    CommandBus,
    HandlerRegistry,
    PermanentCommandError,
    ProcessReplyRouter,
    ProcessStatus,
    ReplyOutcome,
    SendRequest,
    TransientCommandError,
    TroubleshootingQueue,
    Worker,
)
from tests.fuzz_strategies import VALID, fresh_domain, realize, resolve_message, resolve_uuid
from tests.fuzz_support import (
    DEFAULT_MAX_ATTEMPTS,
    NO_BACKOFF,
    TERMINAL_OR_TSQ,
    FuzzProcess,
    Harness,
    expect_bus_error_only,
    has_key_collision,
    json_equivalent,
    new_bus,
    queues_of,
    short,
    within,
)

# -- 1. send -----------------------------------------------------------------------------


async def check_send(h: Harness, **args: Any) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain() if args["domain"] == VALID else realize(args["domain"])
    command_type = realize(args["command_type"])
    command_id = resolve_uuid(args["command_id"])
    correlation_id = resolve_uuid(args["correlation_id"])
    reply_to = f"{domain}__replies" if args["reply_to"] == VALID else realize(args["reply_to"])
    data = realize(args["data"])
    max_attempts, delay = args["max_attempts"], args["delay"]
    domains = [domain] if isinstance(domain, str) else []
    before = await h.snapshot(backend, domains)
    sent, error = await expect_bus_error_only(
        bus.send(
            domain,
            command_type,
            command_id,
            data,
            correlation_id=correlation_id,
            reply_to=reply_to,
            max_attempts=max_attempts,
            delay=delay,
        )
    )
    if error is not None:
        after = await h.snapshot(backend, domains)
        assert after == before, f"{type(error).__name__} ({error}) but something was written"
        return
    assert not has_key_collision(data), "two keys became one JSON key: data silently merged"
    meta = await bus.get_command(domain, sent.command_id)
    assert meta is not None and meta.command_type == command_type
    assert meta.max_attempts == (max_attempts or DEFAULT_MAX_ATTEMPTS)
    assert meta.reply_to == reply_to
    if correlation_id is not None:
        assert meta.correlation_id == UUID(str(correlation_id))
    if delay:
        return  # not visible yet
    seen: list[Any] = []
    registry = HandlerRegistry()

    @registry.handler(domain, command_type)
    async def capture(command: Any, context: Any) -> None:
        seen.append(command.data)

    await within(Worker(backend, domain, registry, retry_policy=NO_BACKOFF).drain())
    assert len(seen) == 1, f"the command was accepted but delivered {len(seen)} times"
    assert json_equivalent(data, seen[0]), f"sent {short(data)}, handler got {short(seen[0])}"


#: How the one bad request of a batch is bad ("<first>": the id of the batch's first request,
#: "<existing>": the id of a command sent before).
BAD_REQUESTS: dict[str, dict[str, Any]] = {
    "duplicate_in_batch": {"command_id": "<first>"},
    "duplicate_of_existing": {"command_id": "<existing>"},
    "surrogate_data": {"data": {"s": "\ud800"}},
    "surrogate_key": {"data": {"\udfff": 1}},
    "nul_data": {"data": {"s": "\x00"}},
    "set_data": {"data": {"s": {1}}},
    "colliding_keys": {"data": {1: "a", "1": "b"}},
    "max_attempts_2_31": {"max_attempts": 2**31},
    "max_attempts_float": {"max_attempts": 1.5},
    "delay_1e13": {"delay": 1e13},
    "delay_nan": {"delay": float("nan")},
    "bad_domain": {"domain": "Bad__Domain"},
    "bad_reply_to": {"reply_to": "a__b__c"},
}
BAD_KINDS = sorted(BAD_REQUESTS)


def bad_request(kind: str, domain: str, first: UUID, existing: UUID) -> SendRequest:
    fields: dict[str, Any] = {"domain": domain, "command_type": "Cmd", "command_id": uuid4()}
    fields |= {"data": {"i": -1}} | BAD_REQUESTS[kind]
    ids = {"<first>": first, "<existing>": existing}
    fields["command_id"] = ids.get(str(fields["command_id"]), fields["command_id"])
    return SendRequest(**fields)


async def check_batch(h: Harness, size: int, position: float, bad: str) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    existing = (await bus.send(domain, "Cmd", uuid4(), {"pre": True})).command_id
    good = [SendRequest(domain, "Cmd", uuid4(), {"i": i}) for i in range(size)]
    index = min(int(position * size), size)
    requests = [
        *good[:index],
        bad_request(bad, domain, good[0].command_id, existing),
        *good[index:],
    ]
    before = await h.snapshot(backend, [domain])
    _, error = await expect_bus_error_only(bus.send_batch(requests))
    after = await h.snapshot(backend, [domain])
    assert error is not None, f"a batch with a bad request ({bad}) was accepted"
    assert after == before, (
        f"send_batch of {len(requests)} raised {type(error).__name__} but wrote part of the "
        f"batch: {before} -> {after}"
    )


# -- 2. read_replies -----------------------------------------------------------------------


async def check_read_replies(h: Harness, queue: Any, limit: Any, visibility_timeout: Any) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    queue = f"{domain}__replies" if queue == VALID else realize(queue)
    good = {"command_id": str(uuid4()), "correlation_id": None, "outcome": "SUCCESS"}
    if queue == f"{domain}__replies":
        await h.inject(backend, queue, {"command_id": "nope", "outcome": 1})
        await h.inject(backend, queue, good)
    got, _ = await expect_bus_error_only(bus.read_replies(queue, limit, visibility_timeout))
    if got is None:
        return
    assert all(isinstance(r.reply.outcome, ReplyOutcome) for r in got)
    sane = type(limit) is int and limit >= 2 and isinstance(visibility_timeout, int | float)
    if sane and queue == f"{domain}__replies" and 1 <= visibility_timeout <= 1e6:
        assert [str(r.reply.command_id) for r in got] == [good["command_id"]]


# -- 3. handlers that fail, or return junk -------------------------------------------------


HANDLER_KINDS = ["transient", "permanent", "business", "value_error", "unprintable", "return"]


class BadStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


def make_handler(kind: str, code: Any, message: Any, details: Any, result: Any) -> Any:
    code, message, details, result = map(realize, (code, message, details, result))

    async def bad(command: Any, context: Any) -> Any:
        if kind == "transient":
            raise TransientCommandError(code, message, details)
        if kind == "permanent":
            raise PermanentCommandError(code, message, details)
        if kind == "business":
            raise BusinessRuleException(code, message, details)
        if kind == "value_error":
            raise ValueError(message)
        if kind == "unprintable":
            raise BadStrError()
        return result

    return bad


def canary_registry(domain: str) -> HandlerRegistry:
    registry = HandlerRegistry()

    @registry.handler(domain, "Canary")
    async def canary(command: Any, context: Any) -> dict[str, Any]:
        return {"ok": True}

    for step in ("StepOne", "StepTwo"):
        registry.register(domain, step, canary)
    return registry


async def collect_replies(bus: CommandBus, queue: str) -> dict[UUID, list[Any]]:
    found: dict[UUID, list[Any]] = {}
    for _ in range(50):
        got = await within(bus.read_replies(queue, limit=50))
        if not got:
            break
        for received in got:
            found.setdefault(received.reply.command_id, []).append(received.reply)
            await bus.ack_reply(queue, received.msg_id)
    return found


async def check_handler_failure(h: Harness, kind: str, **fuzz: Any) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    replies = f"{domain}__replies"
    registry = canary_registry(domain)
    registry.register(domain, "Bad", make_handler(kind, **fuzz))
    worker = Worker(backend, domain, registry, retry_policy=NO_BACKOFF)
    bad = await bus.send(domain, "Bad", uuid4(), {"x": 1}, reply_to=replies)
    await within(worker.drain())
    canary = await bus.send(domain, "Canary", uuid4(), {}, reply_to=replies)
    await within(worker.drain())
    bad_meta = await bus.get_command(domain, bad.command_id)
    canary_meta = await bus.get_command(domain, canary.command_id)
    assert bad_meta is not None and bad_meta.status.value in TERMINAL_OR_TSQ, bad_meta
    assert canary_meta is not None and canary_meta.status.value == "COMPLETED", canary_meta
    found = await collect_replies(bus, replies)
    assert [r.outcome for r in found.get(canary.command_id, [])] == [ReplyOutcome.SUCCESS]
    assert found.get(bad.command_id), "the failed command's reply never arrived"


async def check_handler_failure_running_worker(h: Harness, kind: str, **fuzz: Any) -> None:
    """The same with ``worker.run()``: the bad and the canary command settle together."""
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    registry = canary_registry(domain)
    registry.register(domain, "Bad", make_handler(kind, **fuzz))
    worker = Worker(backend, domain, registry, retry_policy=NO_BACKOFF)
    task = asyncio.create_task(worker.run(concurrency=4, poll_interval=0.05))
    statuses: tuple[str, str] = ("?", "?")
    try:
        bad = await bus.send(domain, "Bad", uuid4(), {})
        canary = await bus.send(domain, "Canary", uuid4(), {})
        for _ in range(80):
            metas = [await bus.get_command(domain, c.command_id) for c in (bad, canary)]
            statuses = (metas[0].status.value, metas[1].status.value)  # type: ignore[union-attr]
            if statuses[0] in TERMINAL_OR_TSQ and statuses[1] == "COMPLETED":
                break
            await asyncio.sleep(0.05)
    finally:
        stopped = True
        try:
            await asyncio.wait_for(worker.stop(timeout=1), 3)
            await asyncio.wait_for(task, 3)
        except TimeoutError:
            stopped = False
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert statuses[0] in TERMINAL_OR_TSQ and statuses[1] == "COMPLETED" and stopped, (
        f"after 4 s: bad command {statuses[0]}, canary {statuses[1]}; settle errors: "
        f"{worker.stats.settle_errors}; worker.stop() {'returned' if stopped else 'hung'}"
    )


# -- 4. operator actions -------------------------------------------------------------------


async def tsq_view(backend: Any, bus: CommandBus, domain: str, command_id: UUID) -> Any:
    tsq = TroubleshootingQueue(backend)
    items = await tsq.list_troubleshooting(domain)
    meta = await bus.get_command(domain, command_id)
    trail = await bus.get_audit_trail(command_id, domain)
    depths = [await backend.queue.depth(q) for q in queues_of(domain)]
    return items, meta, [(e.event_type, e.details) for e in trail], depths


async def check_operator_action(h: Harness, action: str, **fuzz: Any) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    registry = HandlerRegistry()

    @registry.handler(domain, "Stuck")
    async def stuck(command: Any, context: Any) -> None:
        raise PermanentCommandError("STUCK", "needs an operator")

    sent = await bus.send(domain, "Stuck", uuid4(), {"a": 1}, reply_to=f"{domain}__replies")
    await within(Worker(backend, domain, registry, retry_policy=NO_BACKOFF).drain())
    await collect_replies(bus, f"{domain}__replies")  # the TSQ notice
    before = await tsq_view(backend, bus, domain, sent.command_id)
    assert before[1].status.value == "IN_TROUBLESHOOTING_QUEUE"
    totals = await h.snapshot(backend, [domain])
    operator = realize(fuzz["operator"])
    tsq = TroubleshootingQueue(backend)
    if action == "retry":
        call = tsq.operator_retry(domain, sent.command_id, operator=operator)
    elif action == "cancel":
        reason = realize(fuzz["reason"])
        call = tsq.operator_cancel(domain, sent.command_id, reason=reason, operator=operator)
    else:
        result = realize(fuzz["result_data"])
        call = tsq.operator_complete(domain, sent.command_id, result_data=result, operator=operator)
    _, error = await expect_bus_error_only(call)
    after = await tsq_view(backend, bus, domain, sent.command_id)
    if error is not None:
        assert after == before, f"{type(error).__name__} ({error}) but the TSQ item changed"
        assert await h.snapshot(backend, [domain]) == totals
        return
    expected = {"retry": "PENDING", "cancel": "CANCELED", "complete": "COMPLETED"}[action]
    assert after[1].status.value == expected
    assert len(after[2]) == len(before[2]) + 1, "no audit event for the operator action"
    details = after[2][-1][1] or {}
    assert json_equivalent(operator, details.get("operator")), short(details)
    if action == "cancel":
        assert not has_key_collision(reason) and json_equivalent(reason, details.get("reason"))
    if action == "complete":
        assert not has_key_collision(result), "result_data silently merged"
    if action != "retry":
        found = await collect_replies(bus, f"{domain}__replies")
        assert sent.command_id in found, "the operator action's reply is missing or unreadable"


# -- 5. raw messages on every queue the library reads ------------------------------------


async def run_until_quiet(worker: Worker, router: Any, bus: CommandBus, replies: str) -> Any:
    found: dict[UUID, list[Any]] = {}
    for _ in range(30):
        moved = await within(worker.drain()) + await within(router.drain())
        got = await collect_replies(bus, replies)
        for key, value in got.items():
            found.setdefault(key, []).extend(value)
        if not moved and not got:
            break
    return found


async def check_raw_messages(
    h: Harness, commands: list[Any], replies: list[Any], process: list[Any]
) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    reply_queue = f"{domain}__replies"
    for queue, messages in zip(queues_of(domain), (commands, replies, process), strict=True):
        for message in messages:
            await h.inject(backend, queue, resolve_message(message, domain))
    manager = FuzzProcess(bus, domain)
    router = ProcessReplyRouter(backend, managers=[manager])
    worker = Worker(backend, domain, canary_registry(domain), retry_policy=NO_BACKOFF)
    await run_until_quiet(worker, router, bus, reply_queue)  # must not raise or hang
    canary = await bus.send(domain, "Canary", uuid4(), {}, reply_to=reply_queue)
    process_id = await within(manager.start({"n": 1}))
    found = await run_until_quiet(worker, router, bus, reply_queue)
    meta = await bus.get_command(domain, canary.command_id)
    assert meta is not None and meta.status.value == "COMPLETED", meta
    assert [r.outcome for r in found.get(canary.command_id, [])] == [ReplyOutcome.SUCCESS]
    started = await manager.get(process_id)
    assert started is not None and started.status is ProcessStatus.COMPLETED, started


# -- 6. process start and cancel ---------------------------------------------------------


async def check_process_start(h: Harness, initial_data: Any, process_id: Any) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    manager = FuzzProcess(bus, domain)
    data, pid = realize(initial_data), resolve_uuid(process_id)
    before = await h.snapshot(backend, [domain])
    started, error = await expect_bus_error_only(manager.start(data, process_id=pid))
    if error is not None:
        after = await h.snapshot(backend, [domain])
        assert after == before, f"{type(error).__name__} ({error}) but something was written"
        return
    assert not has_key_collision(data), "initial_data silently merged"
    process = await manager.get(started)
    assert process is not None and process.status is ProcessStatus.WAITING_FOR_REPLY
    assert json_equivalent(data, process.initial_data), short(process.initial_data)
    assert json_equivalent(data, process.state.data), short(process.state.data)
    assert len(await bus.query_commands(domain=domain)) == 1


async def check_process_cancel(h: Harness, target: str, reason: Any) -> None:
    backend = await h.backend()
    bus = new_bus(backend)
    domain = fresh_domain()
    manager = FuzzProcess(bus, domain)
    started = await manager.start({"n": 1})
    pid = {"real": started, "unknown": uuid4()}.get(target) or resolve_uuid(target)
    before = await manager.get(started)
    totals = await h.snapshot(backend, [domain])
    reason = realize(reason)
    _, error = await expect_bus_error_only(manager.cancel(pid, reason=reason))
    after = await manager.get(started)
    if error is not None:
        assert after == before, f"{type(error).__name__} ({error}) but the process changed"
        assert await h.snapshot(backend, [domain]) == totals
        return
    assert target == "real", f"cancel({pid!r}) succeeded"
    assert after is not None and after.status is ProcessStatus.CANCELED, after
    router = ProcessReplyRouter(backend, managers=[manager])
    worker = Worker(backend, domain, canary_registry(domain), retry_policy=NO_BACKOFF)
    await run_until_quiet(worker, router, bus, f"{domain}__replies")
    final = await manager.get(started)
    assert final is not None and final.status is ProcessStatus.CANCELED, final
