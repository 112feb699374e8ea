"""Calling a handler: what it returns or raises, as the ``Outcome`` the worker settles."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from commandbus.attempts import failure_outcome
from commandbus.errors import (
    BusinessRuleException,
    PermanentCommandError,
    TransientCommandError,
    ValidationError,
)
from commandbus.handler import HandlerContext, RegisteredHandler
from commandbus.models import Command
from commandbus.ports import Conn
from commandbus.sanitise import safe_str, storable_text
from commandbus.settlement import Outcome, OutcomeKind
from commandbus.validation import encode_payload

__all__ = ["call_handler"]


async def call_handler(
    registered: RegisteredHandler,
    command: Command,
    attempt: int,
    max_attempts: int,
    msg_id: int,
    conn: Conn | None,
    extend: Callable[[float], Awaitable[bool]],
    max_result_bytes: int,
) -> Outcome:
    """Run ``registered``'s function on one delivery of ``command``. Its exceptions become
    failure outcomes (nothing it raises escapes), and a result that cannot be stored (not
    JSON, or over ``max_result_bytes``) a permanent one: retrying cannot change what the
    code returns."""
    context = HandlerContext(
        command=command,
        attempt=attempt,
        max_attempts=max_attempts,
        msg_id=msg_id,
        conn=conn,
        _extend=extend,
    )
    try:
        result = await registered.fn(command, context)
    except TransientCommandError as exc:
        return failure_outcome(OutcomeKind.TRANSIENT, exc, exc.code, exc.error_message, exc.details)
    except PermanentCommandError as exc:
        return failure_outcome(OutcomeKind.PERMANENT, exc, exc.code, exc.error_message, exc.details)
    except BusinessRuleException as exc:
        return failure_outcome(
            OutcomeKind.BUSINESS_RULE, exc, exc.code, exc.error_message, exc.details
        )
    except Exception as exc:
        # Logged with its traceback when the settlement is made (``log_failed_attempt``).
        return failure_outcome(OutcomeKind.TRANSIENT, exc, "UNEXPECTED_ERROR", safe_str(exc), None)
    if result is not None:
        try:
            encode_payload(result, "handler result", max_result_bytes)
        except ValidationError as exc:
            # Retrying cannot change what the code returns: park it for an operator.
            return Outcome(
                OutcomeKind.PERMANENT,
                error_type="InvalidHandlerResult",
                error_code="INVALID_HANDLER_RESULT",
                error_message=storable_text(exc),
            )
    return Outcome(OutcomeKind.SUCCESS, result=result)
