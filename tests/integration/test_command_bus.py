"""The command bus end to end on a real PostgreSQL: send, worker, retries, TSQ, replies."""

from __future__ import annotations

import asyncio
from collections import Counter
from uuid import uuid4

import pytest

from commandbus import (
    AuditEventType,
    BusinessRuleException,
    CommandBus,
    CommandNotFoundError,
    CommandStatus,
    DuplicateCommandError,
    HandlerRegistry,
    InvalidOperationError,
    PayloadTooLargeError,
    PermanentCommandError,
    ReplyOutcome,
    RetryPolicy,
    SendRequest,
    TransientCommandError,
    TroubleshootingQueue,
    ValidationError,
    Worker,
)

DOMAIN = "payments"
REPLIES = "payments__replies"
NO_BACKOFF = RetryPolicy(max_attempts=3, backoff_schedule=(0,))


async def expire_visibility(pool) -> None:
    """Make every claimed message visible again, as if its visibility timeout ran out."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE commandbus.queue_message SET vt = now() - interval '1 second'")


def audit_types(trail):
    return [event.event_type for event in trail]


@pytest.fixture
def bus(pg_backend):
    return CommandBus(pg_backend, retry_policy=NO_BACKOFF)


@pytest.fixture
def registry():
    return HandlerRegistry()


@pytest.fixture
def worker(pg_backend, registry):
    return Worker(pg_backend, DOMAIN, registry, visibility_timeout=30, retry_policy=NO_BACKOFF)


async def test_success_completes_replies_and_audits(bus, registry, worker):
    seen = []

    @registry.handler(DOMAIN, "Debit")
    async def debit(command, context):
        seen.append((command.data, context.attempt, context.max_attempts))
        return {"balance": 90}

    command_id = uuid4()
    sent = await bus.send(DOMAIN, "Debit", command_id, {"amount": 10}, reply_to=REPLIES)
    assert sent.command_id == command_id and sent.msg_id > 0

    assert await worker.process_once() == 1
    assert seen == [({"amount": 10}, 1, 3)]

    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None
    assert meta.status is CommandStatus.COMPLETED
    assert meta.attempts == 1 and meta.max_attempts == 3
    assert meta.correlation_id is not None  # generated when none is given

    replies = await bus.read_replies(REPLIES)
    assert len(replies) == 1
    reply = replies[0].reply
    assert reply.command_id == command_id
    assert reply.outcome is ReplyOutcome.SUCCESS
    assert reply.data == {"balance": 90}
    assert reply.correlation_id == meta.correlation_id
    assert await bus.ack_reply(REPLIES, replies[0].msg_id) is True
    assert await bus.read_replies(REPLIES) == []

    trail = await bus.get_audit_trail(command_id, DOMAIN)
    assert audit_types(trail) == [
        AuditEventType.SENT,
        AuditEventType.RECEIVED,
        AuditEventType.COMPLETED,
    ]
    assert [e.timestamp for e in trail] == sorted(e.timestamp for e in trail)
    assert await worker.process_once() == 0


async def test_send_inside_a_rolled_back_caller_transaction_leaves_nothing(bus, pg_pool):
    kept, dropped = uuid4(), uuid4()
    async with pg_pool.connection() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.orders (id uuid PRIMARY KEY)")
    with pytest.raises(RuntimeError, match="business failure"):
        async with pg_pool.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO public.orders VALUES (%s)", (dropped,))
            await bus.send(DOMAIN, "Debit", dropped, {"amount": 1}, conn=conn)
            raise RuntimeError("business failure")
    async with pg_pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO public.orders VALUES (%s)", (kept,))
        await bus.send(DOMAIN, "Debit", kept, {"amount": 1}, conn=conn)

    assert await bus.get_command(DOMAIN, dropped) is None
    assert await bus.get_audit_trail(dropped) == []
    assert (await bus.get_command(DOMAIN, kept)) is not None
    async with pg_pool.connection() as conn:
        rows = await (await conn.execute("SELECT id FROM public.orders")).fetchall()
        depth = await (
            await conn.execute("SELECT count(*) FROM commandbus.queue_message")
        ).fetchone()
    assert [r[0] for r in rows] == [kept]
    assert depth is not None and depth[0] == 1


async def test_transient_failure_is_retried_then_succeeds_with_the_right_attempt_count(
    bus, registry, worker
):
    attempts = []

    @registry.handler(DOMAIN, "Debit")
    async def flaky(command, context):
        attempts.append(context.attempt)
        if context.attempt == 1:
            raise TransientCommandError("TIMEOUT", "bank did not answer")
        return None

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {"amount": 5})
    assert await worker.process_once() == 1
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.PENDING
    assert (meta.last_error_code, meta.last_error_msg) == ("TIMEOUT", "bank did not answer")

    assert await worker.process_once() == 1
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.COMPLETED
    assert meta.attempts == 2
    assert attempts == [1, 2]
    assert audit_types(await bus.get_audit_trail(command_id)) == [
        AuditEventType.SENT,
        AuditEventType.RECEIVED,
        AuditEventType.FAILED,
        AuditEventType.RETRY_SCHEDULED,
        AuditEventType.RECEIVED,
        AuditEventType.COMPLETED,
    ]


async def test_backoff_delays_the_next_attempt(pg_backend, registry):
    bus = CommandBus(pg_backend)
    worker = Worker(
        pg_backend, DOMAIN, registry, retry_policy=RetryPolicy(backoff_schedule=(3600,))
    )

    @registry.handler(DOMAIN, "Debit")
    async def failing(command, context):
        raise TransientCommandError("DOWN", "service down")

    await bus.send(DOMAIN, "Debit", uuid4(), {})
    assert await worker.process_once() == 1
    assert await worker.process_once() == 0  # not visible for an hour


async def test_exhausted_retries_park_in_the_tsq_with_a_notice_and_no_more_deliveries(
    bus, registry, worker
):
    calls = 0

    @registry.handler(DOMAIN, "Debit")
    async def always_failing(command, context):
        nonlocal calls
        calls += 1
        raise ConnectionError("ledger unreachable")

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {"amount": 7}, reply_to=REPLIES, max_attempts=2)
    assert await worker.process_once() == 1
    assert await worker.process_once() == 1
    assert await worker.process_once() == 0
    assert calls == 2

    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None
    assert meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert meta.last_error_type == "ConnectionError"
    assert meta.last_error_msg == "ledger unreachable"

    tsq = TroubleshootingQueue(bus.backend)
    items = await tsq.list_troubleshooting(DOMAIN)
    assert [(i.command_id, i.data, i.attempts) for i in items] == [(command_id, {"amount": 7}, 2)]
    assert await tsq.count_troubleshooting(DOMAIN) == 1

    [notice] = await bus.read_replies(REPLIES)
    assert notice.reply.outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE
    assert notice.reply.error_message == "ledger unreachable"
    assert audit_types(await bus.get_audit_trail(command_id))[-3:] == [
        AuditEventType.FAILED,
        AuditEventType.RETRY_EXHAUSTED,
        AuditEventType.MOVED_TO_TSQ,
    ]


async def test_redelivery_after_the_visibility_timeout(bus, registry, worker, pg_backend, pg_pool):
    attempts = []

    @registry.handler(DOMAIN, "Debit")
    async def ok(command, context):
        attempts.append(context.attempt)
        return None

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {})
    # A worker claims the command and dies before settling it.
    [claimed] = await pg_backend.commands.claim(DOMAIN, 10, 30)
    assert claimed.attempt == 1
    assert await worker.process_once() == 0  # still invisible

    await expire_visibility(pg_pool)
    assert await worker.process_once() == 1
    assert attempts == [2]
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.COMPLETED and meta.attempts == 2


async def test_a_message_that_keeps_crashing_workers_goes_to_the_tsq(
    bus, registry, worker, pg_backend, pg_pool
):
    ran = []

    @registry.handler(DOMAIN, "Debit")
    async def never_reached(command, context):
        ran.append(command.command_id)

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {}, max_attempts=2)
    for _ in range(2):  # two deliveries, each lost with its crashed worker
        assert len(await pg_backend.commands.claim(DOMAIN, 10, 30)) == 1
        await expire_visibility(pg_pool)

    assert await worker.process_once() == 1
    assert ran == []
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert meta.last_error_code == "DELIVERY_LIMIT_EXCEEDED"
    assert await worker.process_once() == 0


async def test_permanent_error_goes_to_the_tsq_at_once(bus, registry, worker):
    @registry.handler(DOMAIN, "Debit")
    async def bad(command, context):
        raise PermanentCommandError("ACCOUNT_CLOSED", "account 42 is closed")

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {}, max_attempts=5)
    assert await worker.process_once() == 1
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None
    assert meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert meta.attempts == 1
    assert meta.last_error_code == "ACCOUNT_CLOSED"


async def test_business_rule_failure_fails_and_replies_with_the_code(bus, registry, worker):
    @registry.handler(DOMAIN, "Debit")
    async def refuse(command, context):
        raise BusinessRuleException("INSUFFICIENT_FUNDS", "balance 3 < 10", {"balance": 3})

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {"amount": 10}, reply_to=REPLIES)
    assert await worker.process_once() == 1
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.FAILED
    [received] = await bus.read_replies(REPLIES)
    assert received.reply.outcome is ReplyOutcome.FAILED
    assert received.reply.error_code == "INSUFFICIENT_FUNDS"
    assert received.reply.error_message == "balance 3 < 10"
    trail = await bus.get_audit_trail(command_id)
    assert audit_types(trail)[-1] is AuditEventType.BUSINESS_RULE_FAILED
    assert trail[-1].details is not None and trail[-1].details["details"] == {"balance": 3}
    assert await TroubleshootingQueue(bus.backend).count_troubleshooting(DOMAIN) == 0


async def test_unknown_command_type_is_retried_then_parked(bus, worker):
    command_id = uuid4()
    await bus.send(DOMAIN, "NobodyHandlesThis", command_id, {}, max_attempts=2)
    assert await worker.process_once() == 1
    assert await worker.process_once() == 1
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert meta.last_error_type == "HandlerNotFoundError"


async def test_a_handler_returning_a_non_json_value_is_parked(bus, registry, worker):
    @registry.handler(DOMAIN, "Debit")
    async def returns_garbage(command, context):
        return {"when": object()}

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {})
    assert await worker.process_once() == 1
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert meta.last_error_code == "INVALID_HANDLER_RESULT"


class Ledger:
    """A downstream service that is broken until an operator fixes it."""

    def __init__(self):
        self.broken = True
        self.payloads = []

    async def debit(self, command, context):
        if self.broken:
            raise PermanentCommandError("BROKEN", "needs an operator")
        self.payloads.append((command.data, context.attempt))
        return {"fixed": True}


async def _park(bus, registry, worker, ledger=None, reply_to=REPLIES):
    registry.register(DOMAIN, "Debit", (ledger or Ledger()).debit)

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {"amount": 3}, reply_to=reply_to)
    assert await worker.process_once() == 1
    [notice] = await bus.read_replies(REPLIES)
    await bus.ack_reply(REPLIES, notice.msg_id)
    return command_id


async def test_operator_retry_requeues_the_original_payload(bus, registry, worker):
    ledger = Ledger()
    command_id = await _park(bus, registry, worker, ledger)
    tsq = TroubleshootingQueue(bus.backend)
    ledger.broken = False

    await tsq.operator_retry(DOMAIN, command_id, operator="alice")
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.PENDING and meta.attempts == 0
    assert await worker.process_once() == 1
    assert ledger.payloads == [({"amount": 3}, 1)]
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.COMPLETED
    [reply] = await bus.read_replies(REPLIES)
    assert reply.reply.outcome is ReplyOutcome.SUCCESS and reply.reply.data == {"fixed": True}
    trail = await bus.get_audit_trail(command_id)
    retry = [e for e in trail if e.event_type is AuditEventType.OPERATOR_RETRY]
    assert len(retry) == 1 and retry[0].details == {"operator": "alice"}
    assert await tsq.count_troubleshooting(DOMAIN) == 0


async def test_operator_cancel_replies_canceled(bus, registry, worker):
    command_id = await _park(bus, registry, worker)
    tsq = TroubleshootingQueue(bus.backend)
    await tsq.operator_cancel(DOMAIN, command_id, reason="customer withdrew", operator="bob")
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.CANCELED
    [reply] = await bus.read_replies(REPLIES)
    assert reply.reply.outcome is ReplyOutcome.CANCELED
    assert reply.reply.error_message == "customer withdrew"
    with pytest.raises(InvalidOperationError, match="CANCELED"):
        await tsq.operator_retry(DOMAIN, command_id)


async def test_operator_complete_replies_success_with_the_operator_result(bus, registry, worker):
    command_id = await _park(bus, registry, worker)
    tsq = TroubleshootingQueue(bus.backend)
    await tsq.operator_complete(DOMAIN, command_id, result_data={"manual": True}, operator="eve")
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.COMPLETED
    [reply] = await bus.read_replies(REPLIES)
    assert reply.reply.outcome is ReplyOutcome.SUCCESS
    assert reply.reply.data == {"manual": True}
    assert audit_types(await bus.get_audit_trail(command_id))[-1] is (
        AuditEventType.OPERATOR_COMPLETE
    )


async def test_operator_actions_on_wrong_state_or_unknown_ids(bus, registry, worker):
    tsq = TroubleshootingQueue(bus.backend)
    with pytest.raises(CommandNotFoundError):
        await tsq.operator_retry(DOMAIN, uuid4())
    pending = uuid4()
    await bus.send(DOMAIN, "Debit", pending, {})
    with pytest.raises(InvalidOperationError, match="PENDING"):
        await tsq.operator_complete(DOMAIN, pending)
    with pytest.raises(ValidationError):
        await tsq.operator_cancel(DOMAIN, "not-a-uuid", reason="x")
    with pytest.raises(ValidationError):
        await tsq.operator_complete(DOMAIN, pending, result_data=["not", "an", "object"])  # type: ignore[arg-type]


async def test_two_operators_at_once_produce_one_effect(bus, registry, worker):
    command_id = await _park(bus, registry, worker)
    tsq = TroubleshootingQueue(bus.backend)
    results = await asyncio.gather(
        tsq.operator_retry(DOMAIN, command_id, operator="a"),
        tsq.operator_cancel(DOMAIN, command_id, reason="b", operator="b"),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], InvalidOperationError)
    trail = audit_types(await bus.get_audit_trail(command_id))
    operator_events = [
        e for e in trail if e in (AuditEventType.OPERATOR_RETRY, AuditEventType.OPERATOR_CANCEL)
    ]
    assert len(operator_events) == 1


async def test_duplicate_command_ids_are_refused(bus):
    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {"n": 1})
    with pytest.raises(DuplicateCommandError) as info:
        await bus.send(DOMAIN, "Debit", command_id, {"n": 2})
    assert info.value.command_ids == [command_id]
    # A batch containing one duplicate writes nothing at all.
    fresh = uuid4()
    with pytest.raises(DuplicateCommandError):
        await bus.send_batch(
            [
                SendRequest(DOMAIN, "Debit", fresh, {}),
                SendRequest(DOMAIN, "Debit", command_id, {}),
            ]
        )
    assert await bus.get_command(DOMAIN, fresh) is None
    # The same id in another domain is a different command.
    await bus.send("refunds", "Debit", command_id, {})


async def test_send_batch_of_several_statements_keeps_request_order_and_is_atomic(bus, monkeypatch):
    """A batch larger than one INSERT statement is several statements in one transaction:
    results come back in request order, and a duplicate anywhere writes nothing at all."""
    import commandbus.postgres.sending as sending_module

    monkeypatch.setattr(sending_module, "FIRST_INSERT_CHUNK", 3)
    monkeypatch.setattr(sending_module, "INSERT_CHUNK", 3)
    requests = [SendRequest(DOMAIN, "Debit", uuid4(), {"n": n}) for n in range(10)]
    results = await bus.send_batch(requests)
    assert [r.command_id for r in results] == [r.command_id for r in requests]
    assert len({r.msg_id for r in results}) == 10

    taken = requests[0].command_id
    fresh = [SendRequest(DOMAIN, "Debit", uuid4(), {}) for _ in range(3)]
    failing = [SendRequest(DOMAIN, "Debit", uuid4(), {}), SendRequest(DOMAIN, "Debit", taken, {})]
    with pytest.raises(DuplicateCommandError) as info:
        await bus.send_batch([*fresh, *failing])  # statements: fresh (3), failing (2)
    assert info.value.command_ids == [taken]
    for request in [*fresh, *failing[:1]]:
        assert await bus.get_command(DOMAIN, request.command_id) is None


async def test_a_failed_send_batch_inside_the_callers_transaction_leaves_it_usable(
    bus, pg_pool, monkeypatch
):
    import commandbus.postgres.sending as sending_module

    monkeypatch.setattr(sending_module, "FIRST_INSERT_CHUNK", 2)
    monkeypatch.setattr(sending_module, "INSERT_CHUNK", 2)
    taken = uuid4()
    await bus.send(DOMAIN, "Debit", taken, {})
    kept = uuid4()
    async with pg_pool.connection() as conn, conn.transaction():
        await bus.send(DOMAIN, "Debit", kept, {}, conn=conn)
        batch = [SendRequest(DOMAIN, "Debit", uuid4(), {}) for _ in range(3)]
        with pytest.raises(DuplicateCommandError):
            await bus.send_batch([*batch, SendRequest(DOMAIN, "Debit", taken, {})], conn=conn)
    assert await bus.get_command(DOMAIN, kept) is not None
    for request in batch:
        assert await bus.get_command(DOMAIN, request.command_id) is None


async def test_send_batch_validates_its_later_parts_while_writing_and_a_bad_one_writes_nothing(
    bus, pg_pool, monkeypatch
):
    """The parts after the first are validated while the server writes the ones before
    (the statements of one transaction); a request refused in the last part leaves none
    of the call written, also inside the caller's transaction, which stays usable."""
    import commandbus.postgres.sending as sending_module

    monkeypatch.setattr(sending_module, "FIRST_INSERT_CHUNK", 2)
    monkeypatch.setattr(sending_module, "INSERT_CHUNK", 3)
    good = [SendRequest(DOMAIN, "Debit", uuid4(), {"n": n}) for n in range(8)]
    bad = [
        SendRequest("Bad-Domain", "Debit", uuid4(), {}),
        SendRequest(DOMAIN, "Debit", uuid4(), {"blob": "x" * 300_000}),
        SendRequest(DOMAIN, "Debit", uuid4(), {"nan": float("nan")}),
        SendRequest(DOMAIN, "Debit", "not-a-uuid", {}),
    ]
    for refused in bad:
        with pytest.raises(ValidationError):
            await bus.send_batch([*good, refused])
    assert await bus.query_commands(domain=DOMAIN) == []

    kept = uuid4()
    async with pg_pool.connection() as conn, conn.transaction():
        await bus.send(DOMAIN, "Debit", kept, {}, conn=conn)
        with pytest.raises(ValidationError):
            await bus.send_batch([*good, bad[0]], conn=conn)
        await bus.send(DOMAIN, "Debit", uuid4(), {}, conn=conn)
    assert len(await bus.query_commands(domain=DOMAIN)) == 2
    results = await bus.send_batch(good)
    assert [r.command_id for r in results] == [r.command_id for r in good]


async def test_send_batch_takes_any_iterable_of_requests(bus):
    requests = [SendRequest(DOMAIN, "Debit", uuid4(), {"n": n}) for n in range(600)]
    results = await bus.send_batch(request for request in requests)  # a generator, once
    assert [r.command_id for r in results] == [r.command_id for r in requests]
    assert len(await bus.query_commands(domain=DOMAIN, limit=1000)) == 600


async def test_concurrent_duplicate_sends_yield_exactly_one_command(bus):
    command_id = uuid4()
    results = await asyncio.gather(
        *(bus.send(DOMAIN, "Debit", command_id, {"try": n}) for n in range(4)),
        return_exceptions=True,
    )
    successes = [r for r in results if not isinstance(r, BaseException)]
    duplicates = [r for r in results if isinstance(r, DuplicateCommandError)]
    assert len(successes) == 1 and len(duplicates) == 3
    trail = await bus.get_audit_trail(command_id)
    assert audit_types(trail) == [AuditEventType.SENT]


async def test_bad_input_is_rejected_and_nothing_is_written(bus):
    cases = [
        (dict(domain="Bad-Domain"), ValidationError),
        (dict(command_type="drop table;"), ValidationError),
        (dict(command_id="123"), ValidationError),
        (dict(data=["not", "a", "dict"]), ValidationError),
        (dict(data={"blob": "x" * 300_000}), PayloadTooLargeError),
        (dict(reply_to="Bad Queue"), ValidationError),
        (dict(max_attempts=0), ValidationError),
        (dict(delay=-1), ValidationError),
        (dict(correlation_id="nope"), ValidationError),
    ]
    for override, error in cases:
        args = dict(domain=DOMAIN, command_type="Debit", command_id=uuid4(), data={"amount": 1})
        args.update(override)
        with pytest.raises(error):
            await bus.send(**args)
    assert await bus.query_commands(domain=DOMAIN) == []


async def test_delayed_send_is_not_visible_before_its_delay(bus, worker, registry):
    @registry.handler(DOMAIN, "Debit")
    async def ok(command, context):
        return None

    await bus.send(DOMAIN, "Debit", uuid4(), {}, delay=3600)
    assert await worker.process_once() == 0


async def test_query_commands_filters_and_pages(bus):
    ids = [uuid4() for _ in range(5)]
    for n, command_id in enumerate(ids):
        await bus.send(DOMAIN, "Debit" if n % 2 == 0 else "Credit", command_id, {})
    debits = await bus.query_commands(domain=DOMAIN, command_type="Debit")
    assert {c.command_id for c in debits} == {ids[0], ids[2], ids[4]}
    pending = await bus.query_commands(status=CommandStatus.PENDING, domain=DOMAIN, limit=2)
    assert len(pending) == 2
    second_page = await bus.query_commands(status="PENDING", domain=DOMAIN, limit=2, offset=2)
    assert not {c.command_id for c in pending} & {c.command_id for c in second_page}
    with pytest.raises(ValidationError, match="unknown status"):
        await bus.query_commands(status="SLEEPING")


async def test_transactional_handler_writes_commit_with_completion_or_roll_back(
    bus, registry, worker, pg_pool
):
    async with pg_pool.connection() as conn:
        await conn.execute("CREATE TABLE public.ledger (command_id uuid, attempt int)")

    @registry.handler(DOMAIN, "Debit", transactional=True)
    async def debit(command, context):
        await context.conn.execute(
            "INSERT INTO public.ledger VALUES (%s, %s)", (command.command_id, context.attempt)
        )
        if context.attempt == 1:
            raise TransientCommandError("RETRY", "first attempt fails after writing")
        return {"ok": True}

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {})
    assert await worker.process_once() == 1
    assert await worker.process_once() == 1
    async with pg_pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT command_id, attempt FROM public.ledger")
        ).fetchall()
    assert rows == [(command_id, 2)]  # the failed attempt's write was rolled back
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.COMPLETED


@pytest.mark.parametrize("transactional", [False, True])
async def test_an_overrunning_delivery_does_not_settle_over_the_newer_one(
    bus, registry, worker, pg_backend, pg_pool, transactional
):
    async with pg_pool.connection() as conn:
        await conn.execute("CREATE TABLE public.ledger (command_id uuid, attempt int)")
    other = Worker(pg_backend, DOMAIN, registry, visibility_timeout=30, retry_policy=NO_BACKOFF)

    @registry.handler(DOMAIN, "Debit", transactional=transactional)
    async def debit(command, context):
        if context.conn is not None:
            await context.conn.execute(
                "INSERT INTO public.ledger VALUES (%s, %s)", (command.command_id, context.attempt)
            )
        if context.attempt == 1:
            # Overrun the lease: another worker claims the command again and finishes it.
            await expire_visibility(pg_pool)
            assert await other.process_once() == 1
        return {"attempt": context.attempt}

    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {}, reply_to=REPLIES)
    assert await worker.process_once() == 1

    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None
    assert (meta.status, meta.attempts) == (CommandStatus.COMPLETED, 2)
    trail = audit_types(await bus.get_audit_trail(command_id, DOMAIN))
    assert trail.count(AuditEventType.COMPLETED) == 1
    replies = await pg_backend.queue.read(REPLIES, 10, 30)
    assert [m.message["result"] for m in replies] == [{"attempt": 2}]
    if transactional:  # the stale delivery's writes were rolled back
        async with pg_pool.connection() as conn:
            cur = await conn.execute("SELECT attempt FROM public.ledger")
            assert await cur.fetchall() == [(2,)]


async def test_extend_visibility_keeps_a_long_handler_exclusive(
    bus, registry, worker, pg_backend, pg_pool
):
    @registry.handler(DOMAIN, "Debit")
    async def long_running(command, context):
        assert await context.extend_visibility(3600) is True
        await expire_visibility_of_others(pg_pool)
        # Another worker polling now must not see the command.
        assert await pg_backend.commands.claim(DOMAIN, 10, 30) == []
        return None

    async def expire_visibility_of_others(pool):
        async with pool.connection() as conn:
            await conn.execute(
                "UPDATE commandbus.queue_message SET vt = now() - interval '1 second' "
                "WHERE vt < now() + interval '60 seconds'"
            )

    await bus.send(DOMAIN, "Debit", uuid4(), {})
    assert await worker.process_once() == 1


async def test_two_workers_never_complete_a_command_twice(pg_backend):
    bus = CommandBus(pg_backend)
    registry = HandlerRegistry()
    calls: Counter = Counter()
    total = 400

    @registry.handler(DOMAIN, "Debit")
    async def count(command, context):
        calls[command.command_id] += 1
        await asyncio.sleep(0)
        return None

    await bus.send_batch([SendRequest(DOMAIN, "Debit", uuid4(), {"n": n}) for n in range(total)])
    workers = [Worker(pg_backend, DOMAIN, registry, batch_size=20) for _ in range(2)]
    tasks = [asyncio.create_task(w.run(concurrency=20, poll_interval=0.05)) for w in workers]
    try:
        async with asyncio.timeout(60):
            while sum(w.stats.completed for w in workers) < total:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        for w in workers:
            await w.stop(timeout=10)
        await asyncio.gather(*tasks)
    assert len(calls) == total
    assert set(calls.values()) == {1}
    assert all(w.stats.completed > 0 for w in workers)
    completed = await bus.query_commands(status=CommandStatus.COMPLETED, limit=1000)
    assert len(completed) == total


async def test_stop_lets_an_in_flight_handler_finish(bus, registry, pg_backend):
    started, release = asyncio.Event(), asyncio.Event()

    @registry.handler(DOMAIN, "Debit")
    async def slow(command, context):
        started.set()
        await release.wait()
        return {"finished": True}

    worker = Worker(pg_backend, DOMAIN, registry)
    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {})
    run = asyncio.create_task(worker.run(concurrency=4, poll_interval=0.05))
    async with asyncio.timeout(10):
        await started.wait()
    stopping = asyncio.create_task(worker.stop(timeout=10))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waits for the handler
    release.set()
    async with asyncio.timeout(10):
        await stopping
        await run
    meta = await bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.COMPLETED


async def test_notify_wakes_an_idle_worker_long_before_its_poll_interval(bus, registry, pg_backend):
    done = asyncio.Event()

    @registry.handler(DOMAIN, "Debit")
    async def ok(command, context):
        done.set()

    worker = Worker(pg_backend, DOMAIN, registry)
    run = asyncio.create_task(worker.run(poll_interval=3600, use_notify=True))
    try:
        await asyncio.sleep(0.2)  # let the worker go idle on its LISTEN connection
        await bus.send(DOMAIN, "Debit", uuid4(), {})
        async with asyncio.timeout(10):  # the poll interval is an hour
            await done.wait()
    finally:
        await worker.stop(timeout=5)
        await run


async def test_the_public_classes_accept_a_plain_psycopg_pool(pg_pool):
    """``CommandBus(pool)`` as users of the seed API write it: no backend object needed."""
    registry = HandlerRegistry()

    @registry.handler(DOMAIN, "Debit")
    async def refuse(command, context):
        raise PermanentCommandError("NOPE", "needs a human")

    bus = CommandBus(pg_pool)
    worker = Worker(pg_pool, DOMAIN, registry)
    tsq = TroubleshootingQueue(pg_pool)
    command_id = uuid4()
    await bus.send(DOMAIN, "Debit", command_id, {"amount": 1}, reply_to=REPLIES)
    assert await worker.process_once() == 1
    assert [i.command_id for i in await tsq.list_troubleshooting(DOMAIN)] == [command_id]
    await tsq.operator_complete(DOMAIN, command_id, result_data={"by": "hand"})
    replies = [r.reply.outcome for r in await bus.read_replies(REPLIES)]
    assert replies == [ReplyOutcome.IN_TROUBLESHOOTING_QUEUE, ReplyOutcome.SUCCESS]
    with pytest.raises(TypeError, match="AsyncConnectionPool or a commandbus Backend"):
        CommandBus("postgresql://not-a-pool")
