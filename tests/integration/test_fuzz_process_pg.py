"""Fuzz what the library reads from its queues, and process start/cancel, on PostgreSQL.

Raw messages (any JSON value, not only objects: another program, an old version or an
operator's SQL may have put them there) are enqueued straight into the queues the library
reads: ``{domain}__commands`` (worker), ``{domain}__replies`` (``read_replies``) and
``{domain}__process_replies`` (process router). Draining must neither raise nor hang, and
a canary command and a canary process still complete afterwards.
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
    max_examples=fsup.examples(50),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
RAW = settings(FUZZ, max_examples=fsup.examples(30))


class SqlHarness(fsup.PgHarness):
    """Injects with a plain INSERT, as a program that does not use commandbus would."""

    async def inject(self, backend, queue, message) -> None:
        await self.insert(backend, queue, message)


@pytest.fixture
def harness(pg_backend) -> fsup.Harness:
    return fsup.PgHarness(pg_backend)


@pytest.fixture
def sql_harness(pg_backend) -> fsup.Harness:
    return SqlHarness(pg_backend)


raw = st.lists(fs.raw_messages, max_size=4)

# Known troublemakers, always tried first.
EDGE = [
    [],
    "a string",
    None,
    42,
    True,
    {},
    {"command_id": "-" * 32},
    {"command_id": "0" * 32, "outcome": "SUCCESS"},
    {"command_id": 5, "outcome": ["SUCCESS"], "correlation_id": {"a": 1}, "error_code": 1},
    {"kind": "commandbus.process_timer"},
    {"kind": "commandbus.process_timer", "domain": fs.VALID, "process_id": "x", "fire_at": 1},
    {"kind": "commandbus.process_timer", "domain": 1, "process_id": None, "command_id": []},
]


@RAW
@given(commands=raw, replies=raw, process=raw)
async def test_raw_messages_on_any_queue_stop_nothing(harness, commands, replies, process) -> None:
    await props.check_raw_messages(harness, commands, replies, process)


@pytest.mark.parametrize("index", range(len(EDGE)))
async def test_known_malformed_messages_stop_nothing(sql_harness, index) -> None:
    message = [EDGE[index]]
    await props.check_raw_messages(sql_harness, message, message, message)


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
