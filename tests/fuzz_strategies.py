"""Hypothesis strategies and helpers shared by the fuzz suites (memory and PostgreSQL).

The project's rule under test: no single message, payload, error text or operator input can
stop a worker, a router or a subscription, or make a call write part of what it was asked
to write; only ``CommandBusError`` subclasses reach the caller.

Names that must be unique per example (domains, command ids) are generated as *tokens*
(``VALID``, ``FRESH``) and replaced by fresh values when the example runs, so examples never
see each other's rows and a failing example replays the same way on a shared database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from hypothesis import strategies as st

# -- tokens replaced per example ------------------------------------------------------------

VALID = "<valid>"  # a fresh valid domain / queue
FRESH = "<fresh-uuid>"  # a fresh UUID object
FRESH_STR = "<fresh-uuid-str>"  # a fresh UUID as text (upper case, braces: still valid)


def fresh_domain() -> str:
    return "fz" + uuid4().hex[:16]


def resolve_uuid(token: Any) -> Any:
    if token == FRESH:
        return uuid4()
    if token == FRESH_STR:
        return "{" + str(uuid4()).upper() + "}"
    return token


# -- values that are built when the example runs (their repr stays short) -------------------


@dataclass(frozen=True)
class Big:
    """A long string, ``text * size``."""

    size: int
    text: str = "y"


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` levels deep (lists or dicts)."""

    depth: int
    kind: str = "list"


@dataclass(frozen=True)
class HugeInt:
    """``10 ** digits`` (more than 4,300 digits cannot even be printed)."""

    digits: int


@dataclass(frozen=True)
class Circular:
    """A dict that contains itself."""


def realize(value: Any) -> Any:
    """Build the ``Big``/``Deep``/``Circular`` placeholders inside ``value``."""
    if isinstance(value, Big):
        return value.text * value.size
    if isinstance(value, Deep):
        built: Any = 0
        for _ in range(value.depth):
            built = [built] if value.kind == "list" else {"k": built}
        return built
    if isinstance(value, HugeInt):
        return 10**value.digits
    if isinstance(value, Circular):
        data: dict[str, Any] = {"a": 1}
        data["self"] = data
        return data
    if isinstance(value, dict):
        return {k: realize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [realize(v) for v in value]
    if isinstance(value, tuple):
        return tuple(realize(v) for v in value)
    return value


# -- leaves -----------------------------------------------------------------------------

NASTY_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "x\ud83dy",
    "\\u0000",
    "\\ud800",
    "\u2028\u2029",
    "\ufeff",
    "é🙂",
    "'; DROP TABLE commandbus.command; --",
    "%s %(x)s {0}",
    Big(300_000, "x"),  # over the default 256 KiB payload limit
    Big(10_000, "\x00"),
    Big(20_000, "\ud800"),
]

_chars = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),  # lone surrogates
    st.sampled_from(["\x00", "\x01", "\\", '"', "\u2028"]),
)
texts = st.one_of(st.sampled_from(NASTY_TEXT), st.text(_chars, max_size=12))
short_texts = st.one_of(st.sampled_from(NASTY_TEXT[:-3]), st.text(_chars, max_size=8))

huge_ints = st.sampled_from([2**31, 2**63, -(2**63) - 1, 2**64, 10**300, HugeInt(5000)])
numbers = st.one_of(
    st.integers(-1000, 1000),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, 5e-324, -0.0, 1e16, 0.1]),
)


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


class _BadStr:
    """An object whose ``str`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        return "<BadStr>"


def not_json() -> st.SearchStrategy[Any]:
    """Values the JSON encoder refuses (or that are not JSON at all), and values only the
    built-in encoders (``commandbus.register_json_encoder``) turn into JSON."""
    return st.sampled_from(
        [
            {1, 2},
            frozenset({"a"}),
            datetime(2024, 1, 1, tzinfo=UTC),
            date(2024, 1, 1),
            Decimal("1.5"),
            b"bytes",
            bytearray(b"x"),
            complex(1, 2),
            UUID(int=1),
            _Opaque(),
            _BadStr(),
            float("nan"),
            float("inf"),
            HugeInt(5000),
        ]
    )


json_leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
keys = st.one_of(
    short_texts,
    st.sampled_from([1, "1", True, "true", None, "null", 1.5, "1.5", 0, False, "false"]),
    st.sampled_from([(1, 2), float("nan"), b"k"]),
)


DEPTHS = [3, 50, 300, 600, 800, 900, 950, 990, 1_100, 5_000, 100_000]
deep_values = st.builds(Deep, st.sampled_from(DEPTHS), st.sampled_from(["list", "dict"]))

values = st.recursive(
    st.one_of(json_leaves, not_json()),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.tuples(children),
    ),
    max_leaves=12,
)

COLLIDING = [
    {1: "int", "1": "str"},
    {True: "bool", "true": "str"},
    {None: "none", "null": "str"},
    {"a": {0: "x", "0": "y"}},
    {"list": [{1.5: "f", "1.5": "s"}]},
]

#: ``data`` / ``initial_data`` / ``result_data``: mostly dicts, some of anything.
payloads = st.one_of(
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),  # plain (shrinks here)
    st.dictionaries(keys, values, max_size=5),
    st.builds(lambda v: {"deep": v}, deep_values),
    st.sampled_from(COLLIDING),
    st.just({"loop": Circular()}),
    st.builds(lambda n: {"big": Big(n)}, st.sampled_from([1_000, 262_000, 262_144, 300_000])),
    values,
)

#: Anything JSON can carry and PostgreSQL can store (what another program could have put on
#: a queue): no NUL, no lone surrogate.
_storable = st.characters(exclude_categories=["Cs"], exclude_characters=["\x00"])
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(_storable, max_size=10),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(_storable, max_size=5), children, max_size=3),
    ),
    max_leaves=8,
)

# -- names and numbers --------------------------------------------------------------------

names = st.one_of(
    st.just(VALID),
    st.sampled_from(["", "A", "a__b", "_a", "1a", "a" * 64, "a-b", "a\x00", "é", " a"]),
    st.sampled_from([None, 1, b"a", ["a"]]),
    st.text(_chars, max_size=6),
)
command_types = st.one_of(
    st.sampled_from(["Cmd", "Do.It-now_2"]),
    st.sampled_from(["", "1x", "x" * 129, "a b", "a\x00", "é", None, 5]),
    st.text(_chars, max_size=6),
)
uuids = st.one_of(
    st.sampled_from([FRESH, FRESH_STR]),
    st.sampled_from(["", "not-a-uuid", "-" * 32, "0" * 31, "0" * 33, None, 1, b"x" * 16]),
    st.text(_chars, max_size=8),
)
optional_uuids = st.one_of(st.none(), uuids)
reply_tos = st.one_of(
    st.none(),
    st.just(VALID),
    st.sampled_from(["", "a__b__c", "A", "x" * 64, "a\x00", 7]),
    st.text(_chars, max_size=6),
)
max_attempts = st.one_of(
    st.none(),
    st.integers(1, 5),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63, 10**400, True, False, 1.5, "3", None]),
)
delays = st.one_of(
    st.none(),
    st.sampled_from([0, 0.0, 0.5, 3600]),
    st.sampled_from([-1, 1e13, 1e300, 10**400, float("nan"), float("inf"), "1", True]),
    st.floats(allow_nan=True, allow_infinity=True),
)
limits = st.one_of(
    st.integers(-5, 20),
    st.sampled_from([2**31, 2**63, 10**400, True, False, 1.5, float("nan"), float("inf")]),
)
timeouts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e13, 1e300, 10**400, 2**63, True]),
)
_SEND_FUZZ = {
    "domain": names,
    "command_type": command_types,
    "command_id": uuids,
    "data": payloads,
    "correlation_id": optional_uuids,
    "reply_to": reply_tos,
    "max_attempts": max_attempts,
    "delay": delays,
}
_SEND_VALID = {
    "domain": st.just(VALID),
    "command_type": st.sampled_from(["Cmd", "Do.It-now_2"]),
    "command_id": st.sampled_from([FRESH, FRESH_STR]),
    "data": st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    "correlation_id": st.sampled_from([None, FRESH, FRESH_STR]),
    "reply_to": st.sampled_from([None, VALID]),
    "max_attempts": st.one_of(st.none(), st.integers(1, 5)),
    "delay": st.sampled_from([None, 0]),
}
_SEND_OK = {
    "domain": VALID,
    "command_type": "Cmd",
    "command_id": FRESH,
    "data": {},
    "correlation_id": None,
    "reply_to": None,
    "max_attempts": None,
    "delay": None,
}
#: Arguments of ``send`` that broke it once.
SEND_EXAMPLES = [
    _SEND_OK | {"data": {"s": "\ud800"}},
    _SEND_OK | {"data": {"s": "a\x00b"}},
    _SEND_OK | {"data": {1: "int", "1": "str"}},
    _SEND_OK | {"max_attempts": 2**31},
    _SEND_OK | {"delay": 1e13},
    _SEND_OK | {"delay": 10**400},
]
#: Arguments of ``send``: one of them fuzzed (the others valid), or all of them.
send_args = st.one_of(
    st.sampled_from(sorted(_SEND_FUZZ)).flatmap(
        lambda name: st.fixed_dictionaries(_SEND_VALID | {name: _SEND_FUZZ[name]})
    ),
    st.fixed_dictionaries(_SEND_FUZZ),
)

operators = st.one_of(st.none(), texts, st.sampled_from([1, {"a": 1}, ["x"], {1, 2}]))
reasons = st.one_of(texts, st.none(), st.sampled_from([1, {"x": {1}}, *COLLIDING]), payloads)

# -- raw queue messages ---------------------------------------------------------------------

_bad_field = st.one_of(
    json_values,
    st.sampled_from(["", "-" * 32, "0" * 32, "00000000-0000-0000-0000-00000000000g", "SUCCESS"]),
    st.builds(lambda: str(uuid4())),
)
_outcomes = st.one_of(
    st.sampled_from(["SUCCESS", "FAILED", "CANCELED", "IN_TROUBLESHOOTING_QUEUE", "success"]),
    json_values,
)
reply_like = st.fixed_dictionaries(
    {},
    optional={
        "command_id": _bad_field,
        "correlation_id": _bad_field,
        "outcome": _outcomes,
        "result": st.one_of(json_values, st.just({"x": 1})),
        "error_code": _bad_field,
        "error_message": _bad_field,
        "domain": st.one_of(st.just(VALID), _bad_field),
        "command_type": st.one_of(st.just("Canary"), _bad_field),
        "data": json_values,
    },
)
timer_like = st.fixed_dictionaries(
    {"kind": st.just("commandbus.process_timer")},
    optional={
        "domain": st.one_of(st.just(VALID), _bad_field),
        "process_id": _bad_field,
        "correlation_id": _bad_field,
        "command_id": _bad_field,
        "fire_at": st.one_of(
            st.sampled_from(["2024-01-01T00:00:00+00:00", "not a date", "9999-12-31T23:59:59"]),
            json_values,
        ),
    },
)
command_like = st.fixed_dictionaries(
    {"command_id": st.one_of(_bad_field, st.from_regex(r"\A[0-9a-fA-F-]{32,36}\Z"))},
    optional={
        "domain": st.one_of(st.just(VALID), _bad_field),
        "command_type": st.one_of(st.just("Canary"), _bad_field),
        "data": json_values,
    },
)
raw_dict_messages = st.one_of(
    st.just({}),
    command_like,
    reply_like,
    timer_like,
    st.dictionaries(st.text(_storable, max_size=6), json_values),
)
raw_messages = st.one_of(
    raw_dict_messages,
    st.sampled_from([[], "a string", None, 42, True, 1.5, [{"command_id": "x"}]]),
    json_values,
)


def resolve_message(message: Any, domain: str) -> Any:
    """Put the example's domain where the strategy asked for a valid one."""
    if isinstance(message, dict):
        return {k: (domain if v == VALID else v) for k, v in message.items()}
    return message
