"""Input validation done before anything reaches storage.

Names are only ever used as *values* in SQL, never as identifiers; validating them still
keeps queue names predictable (``{domain}__commands``) and errors early and clear.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

from commandbus.errors import PayloadTooLargeError, ValidationError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COMMAND_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
#: Default limit on an encoded payload (command data, reply result, process state).
MAX_PAYLOAD_BYTES = 256 * 1024


def validate_name(value: object, what: str = "domain") -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or "__" in value:
        raise ValidationError(
            f"invalid {what} {value!r}: use 1-63 characters of lower-case letters, digits and "
            "single underscores, starting with a letter (e.g. 'payments')"
        )
    return value


def validate_queue_name(value: object) -> str:
    """Queue names are ``domain`` or ``domain__suffix`` (e.g. ``reporting__process_replies``)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 63:
        raise ValidationError(f"invalid queue name {value!r}: 1-63 characters expected")
    parts = value.split("__")
    if len(parts) > 2 or not all(NAME_PATTERN.fullmatch(p) for p in parts):
        raise ValidationError(
            f"invalid queue name {value!r}: use 'domain' or 'domain__suffix' with lower-case "
            "letters, digits and single underscores"
        )
    return value


def validate_command_type(value: object) -> str:
    if not isinstance(value, str) or not COMMAND_TYPE_PATTERN.fullmatch(value):
        raise ValidationError(
            f"invalid command type {value!r}: use 1-128 characters of letters, digits, '_', '.'"
            " or '-', starting with a letter (e.g. 'DebitAccount')"
        )
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


def encode_payload(data: object, what: str = "payload", max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """Check that ``data`` is a JSON object within the size limit; return its encoding."""
    if not isinstance(data, dict):
        raise ValidationError(f"{what} must be a JSON object (dict), got {type(data).__name__}")
    try:
        encoded = json.dumps(data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} is not JSON-serialisable: {exc}") from exc
    size = len(encoded.encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"{what} is {size} bytes encoded; the limit is {max_bytes} bytes "
            "(store large data elsewhere and send a reference)"
        )
    if "\\u0000" in encoded:
        raise ValidationError(f"{what} contains a NUL character, which PostgreSQL cannot store")
    return encoded


def validate_payload(
    data: object, what: str = "payload", max_bytes: int = MAX_PAYLOAD_BYTES
) -> dict[str, Any]:
    encode_payload(data, what, max_bytes)
    assert isinstance(data, dict)
    return data


def command_queue(domain: str) -> str:
    return f"{domain}__commands"


def process_reply_queue(domain: str) -> str:
    return f"{domain}__process_replies"


__all__ = [
    "MAX_PAYLOAD_BYTES",
    "command_queue",
    "encode_payload",
    "process_reply_queue",
    "validate_command_type",
    "validate_name",
    "validate_payload",
    "validate_queue_name",
    "validate_uuid",
]
