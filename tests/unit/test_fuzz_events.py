"""Fuzzing the event store and subscriptions in memory (properties: tests/fuzz_events.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests import fuzz_events as fe
from tests import fuzz_strategies as fs
from tests import fuzz_support as fsup

from commandbus.memory import InMemoryBackend

FUZZ = settings(
    max_examples=fsup.examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(stream=fe.stream_names, specs=fe.events, expected=fe.expected_versions)
@example(  # an id given as text: found by the fuzzer, pinned
    stream="order-1",
    specs=[("Happened", {}, {}, None), ("Happened", {}, {}, fs.FRESH_STR)],
    expected=None,
)
async def test_append_succeeds_or_raises_a_bus_error_and_writes_nothing(
    stream, specs, expected
) -> None:
    await fe.check_append(InMemoryBackend(), stream, specs, expected)


@settings(FUZZ, max_examples=fsup.examples(60))
@given(outcomes=st.lists(st.sampled_from([0, 0, 1, 2, 3, 9]), min_size=1, max_size=8),
       batch_size=st.integers(1, 5))  # fmt: skip
async def test_a_failing_handler_never_stops_its_subscription(outcomes, batch_size) -> None:
    await fe.check_subscription(InMemoryBackend(), outcomes, batch_size)
