"""What a handler raised is made storable: the result always passes the same validation
as a command's data (so PostgreSQL accepts it), for any input hypothesis can build."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

from hypothesis import given
from hypothesis import strategies as st

from commandbus.sanitise import describe_exception, safe_str, storable_details, storable_text
from commandbus.validation import encode_payload, text_problem

anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.datetimes(timezones=st.just(UTC))
    | st.dates()
    | st.uuids()
    | st.builds(object),
    lambda children: (
        st.lists(children, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=5), max_size=4)
        | st.dictionaries(st.text() | st.integers() | st.none(), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=30,
)


@given(st.text() | st.integers() | st.floats() | st.none())
def test_storable_text_is_always_storable(value: Any) -> None:
    text = storable_text(value, max_chars=50)
    assert text_problem(text) is None
    assert len(text) <= 50 + len("…[truncated]")


def test_storable_text_escapes_what_it_cannot_keep_and_keeps_the_rest() -> None:
    assert storable_text("a\x00b\ud800c é \U0001f600") == "a\\x00b\\ud800c é \U0001f600"
    assert storable_text("x" * 10, max_chars=4) == "xxxx…[truncated]"


@given(anything)
def test_storable_details_always_pass_payload_validation(value: Any) -> None:
    details = storable_details(value)
    if details is not None:
        encoded = encode_payload(details, "details")
        assert json.loads(encoded) == details  # nothing merged or changed on the way


def test_storable_details_turn_what_json_cannot_hold_into_text() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    some_id = uuid4()
    details = storable_details(
        {
            "set": {3, 1},
            "when": when,
            "day": date(2026, 2, 3),
            "id": some_id,
            "nan": float("inf"),
            7: "int key",
            "big": 10**400,
        }
    )
    assert details == {
        "set": [1, 3],
        "when": "2026-01-01T00:00:00+00:00",
        "day": "2026-02-03",
        "id": str(some_id),
        "nan": "inf",
        "7": "int key",
        "big": "<int of 1329 bits>",
    }
    assert storable_details(["not", "a", "dict"]) == {"value": ["not", "a", "dict"]}
    assert storable_details({}) is None and storable_details(None) is None
    huge = storable_details({str(n): "x" * 3_000 for n in range(10)})
    assert huge is not None and huge["truncated"] is True


def test_an_exception_whose_str_raises_is_still_described() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe_exception(Nasty()).startswith("Nasty: <")
    assert safe_str(Nasty()).startswith("<")
