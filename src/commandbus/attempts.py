"""What a failed handler attempt becomes: its outcome, with texts and details made
storable whatever the handler put in them, and the one WARNING record that reports it."""

from __future__ import annotations

import logging

from commandbus.errors import BusinessRuleException, PermanentCommandError, TransientCommandError
from commandbus.logs import failure_fields
from commandbus.models import ClaimedCommand, Settlement
from commandbus.sanitise import (
    MAX_ERROR_CODE_CHARS,
    storable_details,
    storable_text,
)
from commandbus.settlement import Outcome, OutcomeKind

__all__ = ["AFTER_FAILURE", "failure_outcome", "log_failed_attempt"]

logger = logging.getLogger("commandbus.worker")


def failure_outcome(
    kind: OutcomeKind,
    exc: BaseException,
    code: object,
    message: object,
    details: object,
) -> Outcome:
    """A failure outcome whose texts and details are storable whatever the handler put in
    them (NUL, lone surrogates, sets, datetimes, megabytes of text): see ``sanitise``."""
    return Outcome(
        kind,
        error_type=storable_text(type(exc).__name__, MAX_ERROR_CODE_CHARS),
        error_code=storable_text(code, MAX_ERROR_CODE_CHARS),
        error_message=storable_text(message),
        details=storable_details(details),
        exception=exc,
    )


#: What a failed attempt leads to, by the status its settlement gives the command.
AFTER_FAILURE = {
    "PENDING": "retry in {delay:.1f}s",
    "IN_TROUBLESHOOTING_QUEUE": "moved to the troubleshooting queue",
    "FAILED": "failed on a business rule",
}


def log_failed_attempt(claimed: ClaimedCommand, outcome: Outcome, settlement: Settlement) -> None:
    """One WARNING per failed attempt: command id, type, attempt, error and what follows.
    An unexpected exception (not one of the library's command errors) brings its
    traceback: that is a bug to find."""
    command = claimed.command
    after = AFTER_FAILURE.get(settlement.status.value, settlement.status.value).format(
        delay=settlement.retry_delay
    )
    exc = outcome.exception
    unexpected = exc is not None and not isinstance(
        exc, TransientCommandError | PermanentCommandError | BusinessRuleException
    )
    logger.warning(
        "command %s (%s) attempt %d/%d failed: %s %s: %s; %s",
        command.command_id,
        command.command_type,
        claimed.attempt,
        claimed.max_attempts,
        outcome.error_type,
        outcome.error_code,
        outcome.error_message,
        after,
        exc_info=exc if unexpected else None,
        extra={
            **failure_fields(
                command.domain, command.command_id, command.command_type, claimed.attempt
            ),
            "status": settlement.status.value,
            "error_code": outcome.error_code,
        },
    )
