"""Fuzz sending, reply reading, handlers and operator actions on a real PostgreSQL.

Property bodies are shared with the memory suite (``tests/fuzz_properties.py``). One
database serves a whole test; every example uses fresh domains and ids, and "nothing was
written" is checked by counting the rows of every commandbus table.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests import fuzz_properties as props
from tests import fuzz_strategies as fs
from tests import fuzz_support as fsup
from tests.fuzz_strategies import Big

FUZZ = settings(
    max_examples=fsup.examples(50),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
FEW = settings(FUZZ, max_examples=fsup.examples(12))


@pytest.fixture
def harness(pg_backend) -> fsup.Harness:
    return fsup.PgHarness(pg_backend)


@FUZZ
@given(args=fs.send_args)
@fsup.explicit("args", fs.SEND_EXAMPLES)
async def test_send_succeeds_or_raises_a_bus_error_and_writes_nothing(harness, args) -> None:
    await props.check_send(harness, **args)


@FEW
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


@FUZZ
@given(
    kind=st.sampled_from(props.HANDLER_KINDS),
    code=st.one_of(fs.texts, st.sampled_from([None, 7, {"x": 1}])),
    message=st.one_of(fs.texts, st.none()),
    details=st.one_of(st.none(), fs.payloads, fs.not_json()),
    result=fs.payloads,
)
async def test_a_failing_handler_never_blocks_the_worker(harness, kind, **fuzz) -> None:
    await props.check_handler_failure(harness, kind, **fuzz)


# worker.run() settles what finished together in one transaction: one unstorable outcome
# must not hold back the others. Curated cases (each failing case waits for a timeout).
RUNNING_CASES = {
    "nul_in_code": ("transient", "BAD\x00CODE", "m", None, None),
    "surrogate_in_message": ("permanent", "P", "\ud800 oops", None, None),
    "nul_in_value_error": ("value_error", None, "a\x00b", None, None),
    "set_in_details": ("transient", "T", "m", {"s": {1, 2}}, None),
    "datetime_in_business_details": ("business", "B", "m", {"at": datetime(2024, 1, 1)}, None),
    "surrogate_in_result": ("return", None, None, None, {"s": "\udfff"}),
    "huge_message": ("permanent", "P", Big(300_000, "x"), None, None),
    "unprintable_exception": ("unprintable", None, None, None, None),
}


@pytest.mark.parametrize("case", sorted(RUNNING_CASES))
async def test_a_failing_handler_never_blocks_a_running_worker(harness, case) -> None:
    kind, code, message, details, result = RUNNING_CASES[case]
    await props.check_handler_failure_running_worker(
        harness, kind, code=code, message=message, details=details, result=result
    )


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
