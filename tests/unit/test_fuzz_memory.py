"""Fuzz the public API on the in-memory backend (``CommandBus.in_memory()``).

The same properties as ``tests/integration/test_fuzz_*_pg.py`` (bodies in
``tests/fuzz_properties.py``): whatever a caller, a handler, an operator or another program
on a queue passes in, only ``CommandBusError`` reaches the caller, a refused call writes
nothing, and workers, routers and reply readers keep going.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests import fuzz_properties as props
from tests import fuzz_strategies as fs
from tests import fuzz_support as fsup

FUZZ = settings(
    max_examples=fsup.examples(200),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
SLOW = settings(FUZZ, max_examples=fsup.examples(25))


@pytest.fixture
def harness() -> fsup.Harness:
    return fsup.MemoryHarness()


@FUZZ
@given(args=fs.send_args)
@fsup.explicit("args", fs.SEND_EXAMPLES)
async def test_send_succeeds_or_raises_a_bus_error_and_writes_nothing(harness, args) -> None:
    await props.check_send(harness, **args)


@SLOW
@given(
    size=st.sampled_from([1, 40, 5_001, 6_500]),
    position=st.floats(0, 1),
    bad=st.sampled_from(props.BAD_KINDS),
)
@example(size=5_001, position=1.0, bad="duplicate_in_batch")  # over one chunk: still atomic
async def test_a_batch_with_one_bad_request_writes_nothing(harness, size, position, bad) -> None:
    await props.check_batch(harness, size, position, bad)


@FUZZ
@given(
    queue=st.one_of(st.just(fs.VALID), fs.reply_tos),
    limit=fs.limits,
    visibility_timeout=fs.timeouts,
)
async def test_read_replies_raises_only_bus_errors(
    harness, queue, limit, visibility_timeout
) -> None:
    await props.check_read_replies(harness, queue, limit, visibility_timeout)


handler_fuzz = {
    "kind": st.sampled_from(props.HANDLER_KINDS),
    "code": st.one_of(fs.texts, st.sampled_from([None, 7, {"x": 1}])),
    "message": st.one_of(fs.texts, st.none()),
    "details": st.one_of(st.none(), fs.payloads, fs.not_json()),
    "result": fs.payloads,
}


@FUZZ
@given(**handler_fuzz)
async def test_a_failing_handler_never_blocks_the_worker(harness, kind, **fuzz) -> None:
    await props.check_handler_failure(harness, kind, **fuzz)


@SLOW
@given(**handler_fuzz)
async def test_a_failing_handler_never_blocks_a_running_worker(harness, kind, **fuzz) -> None:
    await props.check_handler_failure_running_worker(harness, kind, **fuzz)


@FUZZ
@given(
    action=st.sampled_from(["retry", "cancel", "complete"]),
    operator=fs.operators,
    reason=fs.reasons,
    result_data=st.one_of(st.none(), fs.payloads),
)
async def test_operator_actions_raise_only_bus_errors_and_keep_the_item(
    harness, action, **fuzz
) -> None:
    await props.check_operator_action(harness, action, **fuzz)


# The memory queue stores JSON objects only (``enqueue`` refuses anything else), so the
# raw messages injected here are dicts; the PostgreSQL suite also injects other JSON values.
raw = st.lists(fs.raw_dict_messages, max_size=4)


@FUZZ
@given(commands=raw, replies=raw, process=raw)
async def test_raw_messages_on_any_queue_stop_nothing(harness, commands, replies, process) -> None:
    await props.check_raw_messages(harness, commands, replies, process)


@FUZZ
@given(initial_data=fs.payloads, process_id=st.one_of(st.none(), fs.uuids))
@example(initial_data={"": datetime(2024, 1, 1, tzinfo=UTC)}, process_id=None)  # built-in encoder
async def test_process_start_raises_only_bus_errors_and_writes_nothing(
    harness, initial_data, process_id
) -> None:
    await props.check_process_start(harness, initial_data, process_id)


@FUZZ
@given(
    target=st.one_of(st.sampled_from(["real", "unknown"]), fs.uuids),
    reason=fs.reasons,
)
async def test_process_cancel_raises_only_bus_errors(harness, target, reason) -> None:
    await props.check_process_cancel(harness, target, reason)
