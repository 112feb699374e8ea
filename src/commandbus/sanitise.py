"""Make what a handler raised storable, whatever it holds.

A handler's error code, message and details go into the command row, the audit trail and
the reply. Unlike a caller's input, they cannot be rejected (the handler already ran and
its outcome must be recorded), so they are *sanitised*: characters PostgreSQL refuses
(NUL, lone UTF-16 surrogates) become visible escapes, values JSON cannot hold (sets,
datetimes, arbitrary objects, NaN) become text, and sizes are capped. Pure functions; the
worker applies them to every failure outcome.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any
from uuid import UUID

from commandbus.models import JsonObject
from commandbus.validation import json_text

#: Characters PostgreSQL cannot store in text or jsonb: NUL and UTF-16 surrogates (in a
#: Python ``str`` a surrogate code point is always unpaired).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

MAX_ERROR_CODE_CHARS = 200
MAX_ERROR_MESSAGE_CHARS = 4_000
MAX_DETAILS_BYTES = 16 * 1024
_MAX_DEPTH = 20
_TRUNCATED = "…[truncated]"


def _escape(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def safe_str(value: object) -> str:
    """``str(value)``, or its default repr if ``__str__`` itself raises."""
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:
        return object.__repr__(value)


def describe_exception(exc: BaseException) -> str:
    """``"TypeName: message"``, safe whatever the exception's ``__str__`` does."""
    return f"{type(exc).__name__}: {safe_str(exc)}"


def storable_text(value: object, max_chars: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """``value`` as text PostgreSQL can store: unstorable characters escaped (``\\x00``,
    ``\\ud800``), cut to ``max_chars``."""
    text = safe_str(value)
    if len(text) > max_chars:
        text = text[:max_chars] + _TRUNCATED
    if "\x00" in text or not text.isascii():
        text = _UNSTORABLE.sub(_escape, text)
    return text


def storable_details(value: object, max_bytes: int = MAX_DETAILS_BYTES) -> JsonObject | None:
    """Error details as a JSON object that jsonb accepts, or None when empty. Too large
    details are replaced by a preview of their JSON."""
    if value is None or (isinstance(value, Mapping) and not value):
        return None
    converted = _jsonable(value, 0)
    details: JsonObject = converted if isinstance(converted, dict) else {"value": converted}
    encoded = json_text(details)
    if len(encoded) > max_bytes:
        return {"truncated": True, "preview": encoded[: min(1_000, max_bytes // 2)]}
    return details


def _jsonable(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # huge ones have no decimal text (int_max_str_digits)
        return int(value) if value.bit_length() <= 256 else f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return storable_text(value)
    if depth >= _MAX_DEPTH:
        return _TRUNCATED
    if isinstance(value, Mapping):
        return {
            storable_text(key, MAX_ERROR_CODE_CHARS): _jsonable(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(item, depth + 1) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(item, depth + 1) for item in value), key=repr)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    return storable_text(text)


__all__ = ["describe_exception", "safe_str", "storable_details", "storable_text"]
