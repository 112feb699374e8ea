"""Input validation done before anything reaches storage.

Names are only ever used as *values* in SQL, never as identifiers; validating them still
keeps queue names predictable (``{domain}__commands``) and errors early and clear.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from commandbus.errors import PayloadTooLargeError, ValidationError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COMMAND_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
#: Default limit on an encoded payload (command data, reply result, process state).
MAX_PAYLOAD_BYTES = 256 * 1024


# Names already found valid: an application uses a handful of domains, queues and command
# types, and a batch of thousands of commands repeats them (a set look-up instead of a
# regular expression per command). Plain ``str`` only; cleared if it ever grows large.
_VALID_NAMES: set[str] = set()
_VALID_QUEUES: set[str] = set()
_VALID_TYPES: set[str] = set()
_MAX_REMEMBERED = 4096


def _remember(known: set[str], value: object) -> None:
    if type(value) is str:
        if len(known) >= _MAX_REMEMBERED:
            known.clear()
        known.add(value)


def validate_name(value: object, what: str = "domain") -> str:
    if type(value) is str and value in _VALID_NAMES:
        return value
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or "__" in value:
        raise ValidationError(
            f"invalid {what} {value!r}: use 1-63 characters of lower-case letters, digits and "
            "single underscores, starting with a letter (e.g. 'payments')"
        )
    _remember(_VALID_NAMES, value)
    return value


def validate_queue_name(value: object) -> str:
    """Queue names are ``domain`` or ``domain__suffix`` (e.g. ``reporting__process_replies``)."""
    if type(value) is str and value in _VALID_QUEUES:
        return value
    if not isinstance(value, str) or not 1 <= len(value) <= 63:
        raise ValidationError(f"invalid queue name {value!r}: 1-63 characters expected")
    parts = value.split("__")
    if len(parts) > 2 or not all(NAME_PATTERN.fullmatch(p) for p in parts):
        raise ValidationError(
            f"invalid queue name {value!r}: use 'domain' or 'domain__suffix' with lower-case "
            "letters, digits and single underscores"
        )
    _remember(_VALID_QUEUES, value)
    return value


def validate_command_type(value: object) -> str:
    if type(value) is str and value in _VALID_TYPES:
        return value
    if not isinstance(value, str) or not COMMAND_TYPE_PATTERN.fullmatch(value):
        raise ValidationError(
            f"invalid command type {value!r}: use 1-128 characters of letters, digits, '_', '.'"
            " or '-', starting with a letter (e.g. 'DebitAccount')"
        )
    _remember(_VALID_TYPES, value)
    return value


def validate_uuid(value: object, what: str = "command_id") -> UUID:
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise ValidationError(f"invalid {what} {value!r}: a UUID is required")


def _reject_non_finite(value: float) -> Any:
    raise ValidationError(f"payload contains a non-finite number ({value}); JSON has no NaN")


#: Encoders for types JSON has no form for: ``type -> function returning a JSON value``.
#: The defaults cover what typed payloads usually hold; ``register_json_encoder`` adds more.
_JSON_ENCODERS: dict[type, Callable[[Any], Any]] = {
    datetime: lambda v: v.isoformat(),
    date: lambda v: v.isoformat(),
    time: lambda v: v.isoformat(),
    Decimal: str,  # exact: a float would round it
    UUID: str,
    Enum: lambda v: v.value,
}


def register_json_encoder(type_: type, encode: Callable[[Any], Any]) -> None:
    """Let payloads (command data, results, process states) hold ``type_`` values:
    ``encode(value)`` returns their JSON form (a str, number, bool, None, list or dict).
    Subclasses are covered too; the most recently registered match wins."""
    if not isinstance(type_, type) or not callable(encode):
        raise TypeError("register_json_encoder(type, function) takes a class and a callable")
    _JSON_ENCODERS.pop(type_, None)
    _JSON_ENCODERS[type_] = encode


def _not_serialisable(value: object) -> Any:
    """JSON for values of the registered types; a clear ``TypeError`` for anything else."""
    for type_, encode in reversed(_JSON_ENCODERS.items()):
        if isinstance(value, type_):
            return encode(value)
    raise TypeError(
        f"Object of type {type(value).__name__} is not JSON serializable: convert it "
        "(e.g. with to_dict()), or register an encoder with "
        f"commandbus.register_json_encoder({type(value).__name__}, function)"
    )


def _c_encoder() -> Any:
    """``json``'s C encoder, configured once like ``json.dumps(..., separators=(",", ":"),
    allow_nan=False)``; None where the C accelerator is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return None
    # No markers dict: the circular-reference check becomes a RecursionError (turned into
    # the same ValueError below), and the encoder keeps no state between calls.
    return make(
        None,  # markers
        _not_serialisable,  # default
        json.encoder.encode_basestring_ascii,  # ensure_ascii, like json.dumps
        None,  # indent
        ":",  # key separator
        ",",  # item separator
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )


_ENCODE = _c_encoder()
_PY_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=_not_serialisable)


def json_text(value: object) -> str:
    """Compact JSON for ``value``: the same text as ``json.dumps(value, allow_nan=False,
    separators=(",", ":"))``, about three times faster on the small objects this library
    encodes (``json.dumps`` builds its C encoder again on every call). Raises ``TypeError``
    (not serialisable) or ``ValueError`` (NaN or infinity, circular reference)."""
    if _ENCODE is None:  # pragma: no cover
        return _PY_ENCODER.encode(value)
    if isinstance(value, str):
        return json.encoder.encode_basestring_ascii(value)
    try:
        return "".join(_ENCODE(value, 0))
    except RecursionError:
        raise ValueError("Circular reference detected (or nesting too deep)") from None


def encode_payload(data: object, what: str = "payload", max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """Check that ``data`` is a JSON object within the size limit; return its encoding."""
    if not isinstance(data, dict):
        raise ValidationError(f"{what} must be a JSON object (dict), got {type(data).__name__}")
    try:
        encoded = json_text(data)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serialisable: {exc}") from exc
    size = len(encoded)  # ASCII: every character is one byte
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"{what} is {size} bytes encoded; the limit is {max_bytes} bytes "
            "(store large data elsewhere and send a reference)"
        )
    # The encoding is ASCII, so characters PostgreSQL's jsonb refuses (NUL, and UTF-16
    # surrogates that are not part of a pair) show up as "\u0000" / "\udXXX" escapes: a
    # cheap hint, checked precisely only when present.
    problem = _unstorable(data, strings="\\u0000" in encoded or "\\ud" in encoded)
    if problem is not None:
        raise ValidationError(f"{what} {problem}")
    return encoded


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (NUL, lone surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL cannot store"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone UTF-16 surrogate, which is not valid Unicode text"
    return None


def _unstorable(data: object, *, strings: bool) -> str | None:
    """The first reason ``data`` (already JSON-encodable) would not round-trip through
    jsonb: a non-string object key (``json`` would silently turn ``1`` into ``"1"`` and
    merge it with a real ``"1"``), and with ``strings`` a NUL or lone surrogate."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return (
                        f"has a key {key!r} of type {type(key).__name__}: JSON object keys "
                        "must be strings"
                    )
                if strings and (problem := text_problem(key)) is not None:
                    return f"has a key {key!r} that {problem}"
                if isinstance(item, dict | list | tuple) or (strings and isinstance(item, str)):
                    stack.append(item)
        elif isinstance(value, list | tuple):
            stack.extend(
                item
                for item in value
                if isinstance(item, dict | list | tuple) or (strings and isinstance(item, str))
            )
        elif isinstance(value, str) and (problem := text_problem(value)) is not None:
            return f"has a text value {_preview(value)} that {problem}"
    return None


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def validate_payload(
    data: object, what: str = "payload", max_bytes: int = MAX_PAYLOAD_BYTES
) -> dict[str, Any]:
    encode_payload(data, what, max_bytes)
    assert isinstance(data, dict)
    return data


#: Bounds of numbers that end up in the database (its columns are 32-bit integers and
#: timestamps): checked here so that a bad value is a ``ValidationError``, not a driver error.
MAX_ATTEMPTS_LIMIT = 1_000_000
MAX_DELAY_SECONDS = 10 * 365 * 24 * 3600.0  # ten years
MAX_VISIBILITY_SECONDS = 365 * 24 * 3600.0  # one year
#: How long a message no reader can handle is made invisible ("set aside"): kept, never
#: lost, and no longer in the way of the messages behind it.
SET_ASIDE_SECONDS = MAX_VISIBILITY_SECONDS
MAX_BATCH_LIMIT = 10_000


def validate_count(value: object, what: str, maximum: int, minimum: int = 1) -> int:
    """An ``int`` (not a bool) within ``minimum..maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationError(
            f"{what} must be an integer from {minimum} to {maximum}, got {value!r}"
        )
    return value


def validate_seconds(
    value: object, what: str, maximum: float, *, allow_zero: bool = False
) -> float:
    """A finite number of seconds, > 0 (or >= 0 with ``allow_zero``), at most ``maximum``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
        or (value == 0 and not allow_zero)
        or value > maximum
    ):
        low = ">= 0" if allow_zero else "> 0"
        raise ValidationError(
            f"{what} must be a number of seconds {low} and at most {maximum:g}, got {value!r}"
        )
    return float(value)


def validate_text(value: object, what: str, max_chars: int) -> str:
    """Text an operator or caller typed (a reason, an operator name): a ``str`` PostgreSQL
    can store, of at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ValidationError(f"{what} is {len(value)} characters long; at most {max_chars}")
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(f"{what} {problem}")
    return value


def validate_optional_text(value: object, what: str, max_chars: int) -> str | None:
    return None if value is None else validate_text(value, what, max_chars)


def command_queue(domain: str) -> str:
    return f"{domain}__commands"


def process_reply_queue(domain: str) -> str:
    return f"{domain}__process_replies"


__all__ = [
    "MAX_ATTEMPTS_LIMIT",
    "MAX_BATCH_LIMIT",
    "MAX_DELAY_SECONDS",
    "MAX_PAYLOAD_BYTES",
    "MAX_VISIBILITY_SECONDS",
    "SET_ASIDE_SECONDS",
    "command_queue",
    "encode_payload",
    "json_text",
    "process_reply_queue",
    "text_problem",
    "validate_command_type",
    "validate_count",
    "validate_name",
    "validate_optional_text",
    "validate_payload",
    "validate_queue_name",
    "validate_seconds",
    "validate_text",
    "validate_uuid",
]
