"""Fuzz batches on the in-memory backend (bodies in ``tests/fuzz_batches.py``)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests import fuzz_batches as fb
from tests import fuzz_strategies as fs
from tests import fuzz_support as fsup

FUZZ = settings(
    max_examples=fsup.examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def harness() -> fsup.Harness:
    return fsup.MemoryHarness()


@FUZZ
@given(args=fb.create_args)
@fsup.explicit("args", fb.CREATE_EXAMPLES)
async def test_create_batch_succeeds_or_raises_a_bus_error_and_writes_nothing(
    harness, args
) -> None:
    await fb.check_create_batch(harness, args)


@FUZZ
@given(target=fb.targets, data=fs.payloads)
async def test_only_an_open_batch_takes_a_command(harness, target, data) -> None:
    await fb.check_send_to_batch(harness, target, data)


@FUZZ
@given(
    domain=fs.names,
    status=st.one_of(st.none(), st.sampled_from(["PENDING", "DONE", 5, b"x"]), fs.texts),
    limit=fs.limits,
    kind=st.one_of(st.none(), st.sampled_from(["COMMANDS", "processes", 1])),
)
async def test_batch_queries_raise_only_bus_errors(harness, domain, status, limit, kind) -> None:
    await fb.check_batch_queries(harness, domain, status, limit, kind)


@FUZZ
@given(message=fs.raw_messages)
async def test_junk_on_a_notice_queue_is_set_aside(harness, message) -> None:
    await fb.check_notice_queue(harness, message)
