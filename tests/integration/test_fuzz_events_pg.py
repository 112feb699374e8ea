"""Fuzzing the event store and subscriptions on PostgreSQL (properties: tests/fuzz_events.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests import fuzz_events as fe
from tests import fuzz_support as fsup

from commandbus.postgres import PostgresBackend

FUZZ = settings(
    max_examples=fsup.examples(50),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@FUZZ
@given(stream=fe.stream_names, specs=fe.events, expected=fe.expected_versions)
async def test_append_succeeds_or_raises_a_bus_error_and_writes_nothing(
    pg_backend: PostgresBackend, stream, specs, expected
) -> None:
    await fe.check_append(pg_backend, stream, specs, expected)


@settings(FUZZ, max_examples=fsup.examples(20))
@given(outcomes=st.lists(st.sampled_from([0, 0, 1, 2, 3, 9]), min_size=1, max_size=6),
       batch_size=st.integers(1, 4))  # fmt: skip
async def test_a_failing_handler_never_stops_its_subscription(
    pg_backend: PostgresBackend, outcomes, batch_size
) -> None:
    await fe.check_subscription(pg_backend, outcomes, batch_size)
