"""Pure decisions of the worker: what a delivery's outcome writes.

No I/O here. ``Worker`` runs the handler, classifies what happened into an ``Outcome``,
and asks ``settle_outcome`` for the ``Settlement`` that the storage adapter then applies in
one transaction. Keeping this pure makes every branch unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from commandbus.models import (
    AuditEventType,
    ClaimedCommand,
    Command,
    CommandStatus,
    JsonObject,
    QueuedReply,
    Reply,
    ReplyOutcome,
    SettleAction,
    Settlement,
)
from commandbus.policies import RetryPolicy


class OutcomeKind(StrEnum):
    SUCCESS = "SUCCESS"
    TRANSIENT = "TRANSIENT"  # retry while attempts remain, then TSQ
    PERMANENT = "PERMANENT"  # TSQ at once
    BUSINESS_RULE = "BUSINESS_RULE"  # FAILED + FAILED reply, no retry
    EXHAUSTED = "EXHAUSTED"  # delivered more often than allowed (a worker crashed on it)


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    result: JsonObject | None = None
    error_type: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    details: JsonObject | None = None
    #: The exception behind a failure, for the log only (never stored, never compared).
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    #: Headers for the reply (the handler's trace context), with telemetry on.
    reply_headers: JsonObject | None = field(default=None, compare=False)


def _queued_reply(
    command: Command, kind: ReplyOutcome, outcome: Outcome, data: JsonObject | None = None
) -> QueuedReply | None:
    if command.reply_to is None:
        return None
    return QueuedReply(
        command.reply_to,
        Reply.answering(
            command,
            kind,
            data,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            headers=outcome.reply_headers,
        ),
    )


def settle_outcome(claimed: ClaimedCommand, outcome: Outcome, policy: RetryPolicy) -> Settlement:
    """The settlement for one delivery of ``claimed`` that ended with ``outcome``."""
    command = claimed.command
    attempt = claimed.attempt
    if outcome.kind is OutcomeKind.SUCCESS:  # the common case, first and without detours
        return Settlement(
            domain=command.domain,
            command_id=command.command_id,
            msg_id=claimed.msg_id,
            action=SettleAction.DELETE,
            status=CommandStatus.COMPLETED,
            attempts=attempt,
            audit=((AuditEventType.COMPLETED, {"attempt": attempt}),),
            reply=_queued_reply(command, ReplyOutcome.SUCCESS, outcome, outcome.result),
            command_type=command.command_type,
            sent_at=command.created_at,
        )
    error: JsonObject = {
        "attempt": attempt,
        "error_type": outcome.error_type,
        "error_code": outcome.error_code,
        "error_message": outcome.error_message,
    }
    if outcome.details:
        error["details"] = outcome.details

    def reply(kind: ReplyOutcome) -> QueuedReply | None:
        return _queued_reply(command, kind, outcome)

    def make(
        action: SettleAction,
        status: CommandStatus,
        audit: tuple[tuple[AuditEventType, JsonObject | None], ...],
        *,
        retry_delay: float = 0.0,
        queued: QueuedReply | None = None,
    ) -> Settlement:
        return Settlement(
            domain=command.domain,
            command_id=command.command_id,
            msg_id=claimed.msg_id,
            action=action,
            status=status,
            attempts=attempt,
            audit=audit,
            retry_delay=retry_delay,
            error_type=outcome.error_type,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            reply=queued,
            command_type=command.command_type,
            sent_at=command.created_at,
        )

    if outcome.kind is OutcomeKind.BUSINESS_RULE:
        return make(
            SettleAction.ARCHIVE,
            CommandStatus.FAILED,
            ((AuditEventType.BUSINESS_RULE_FAILED, error),),
            queued=reply(ReplyOutcome.FAILED),
        )
    if outcome.kind is OutcomeKind.TRANSIENT and attempt < claimed.max_attempts:
        delay = policy.backoff(attempt, command.command_id)
        return make(
            SettleAction.RETRY,
            CommandStatus.PENDING,
            (
                (AuditEventType.FAILED, error),
                (AuditEventType.RETRY_SCHEDULED, {"delay": delay, "next_attempt": attempt + 1}),
            ),
            retry_delay=delay,
        )
    audit: tuple[tuple[AuditEventType, JsonObject | None], ...]
    if outcome.kind is OutcomeKind.TRANSIENT:
        audit = (
            (AuditEventType.FAILED, error),
            (AuditEventType.RETRY_EXHAUSTED, {"attempts": attempt}),
            (AuditEventType.MOVED_TO_TSQ, {"reason": "retries exhausted"}),
        )
    elif outcome.kind is OutcomeKind.EXHAUSTED:
        audit = (
            (AuditEventType.RETRY_EXHAUSTED, {"attempts": attempt}),
            (AuditEventType.MOVED_TO_TSQ, {"reason": outcome.error_message}),
        )
    else:
        audit = (
            (AuditEventType.FAILED, error),
            (AuditEventType.MOVED_TO_TSQ, {"reason": "permanent error"}),
        )
    return make(
        SettleAction.ARCHIVE,
        CommandStatus.IN_TROUBLESHOOTING_QUEUE,
        audit,
        queued=reply(ReplyOutcome.IN_TROUBLESHOOTING_QUEUE),
    )


def lease_expired_explanation(held_seconds: float | None, visibility_timeout: float) -> str:
    ran = f"ran {held_seconds:.1f} s, " if held_seconds is not None else "ran "
    return (
        f"the handler {ran}longer than the visibility timeout ({visibility_timeout:g} s), so "
        "the command was delivered again and the late result was discarded; keep the "
        "worker's heartbeat on, do not block the event loop in the handler, or raise "
        "visibility_timeout"
    )


def exhausted_outcome(
    claimed: ClaimedCommand, lease_expiries: int, visibility_timeout: float
) -> Outcome:
    """The outcome of a delivery past ``max_attempts`` (``claimed.attempt`` too high): the
    earlier deliveries never settled, either because their handlers outlived their leases
    (``lease_expiries`` of them did, as recorded in the audit trail) or because a worker
    died while running them."""
    why = (
        lease_expired_explanation(None, visibility_timeout)
        if lease_expiries
        else "its earlier deliveries never settled: a worker likely crashed or was killed "
        "while running it"
    )
    return Outcome(
        OutcomeKind.EXHAUSTED,
        error_type="DeliveryLimitExceeded",
        error_code=EXHAUSTED_CODE,
        error_message=exhausted_message(claimed.attempt, claimed.max_attempts, why),
    )


EXHAUSTED_CODE = "DELIVERY_LIMIT_EXCEEDED"


def exhausted_message(deliveries: int, max_attempts: int, why: str) -> str:
    return f"delivered {deliveries} times, more than max_attempts={max_attempts} allows: {why}"


def unsettleable(settlement: Settlement, reason: str) -> Settlement:
    """What replaces a settlement the database refused to store (``reason`` says why): the
    command goes to the TSQ, with a notice to ``reply_to``, and nothing of the refused
    outcome but its reason, so that one bad outcome cannot stop the worker."""
    queued = settlement.reply
    if queued is not None:
        notice = replace(
            queued.reply,
            outcome=ReplyOutcome.IN_TROUBLESHOOTING_QUEUE,
            data=None,
            error_code="SETTLEMENT_FAILED",
            error_message=reason,
        )
        queued = QueuedReply(queued.queue, notice)
    return Settlement(
        domain=settlement.domain,
        command_id=settlement.command_id,
        msg_id=settlement.msg_id,
        action=SettleAction.ARCHIVE,
        status=CommandStatus.IN_TROUBLESHOOTING_QUEUE,
        attempts=settlement.attempts,
        audit=((AuditEventType.MOVED_TO_TSQ, {"reason": reason}),),
        error_type="SettlementFailed",
        error_code="SETTLEMENT_FAILED",
        error_message=reason,
        reply=queued,
        command_type=settlement.command_type,
        sent_at=settlement.sent_at,
    )
