"""The worker's pure decision: what each outcome writes."""

from uuid import uuid4

import pytest

from commandbus.models import (
    AuditEventType,
    ClaimedCommand,
    Command,
    CommandStatus,
    ReplyOutcome,
    SettleAction,
)
from commandbus.policies import RetryPolicy
from commandbus.settlement import Outcome, OutcomeKind, settle_outcome

POLICY = RetryPolicy(max_attempts=3, backoff_schedule=(1.0, 5.0), jitter=0)


def claimed(attempt: int = 1, max_attempts: int = 3, reply_to: str | None = "app__replies"):
    command = Command(
        domain="payments",
        command_type="Debit",
        command_id=uuid4(),
        data={"amount": 1},
        correlation_id=uuid4(),
        reply_to=reply_to,
    )
    return ClaimedCommand(msg_id=7, command=command, attempt=attempt, max_attempts=max_attempts)


def audit_types(settlement):
    return [event for event, _ in settlement.audit]


def test_success_deletes_completes_and_replies_with_the_result():
    c = claimed(attempt=2)
    s = settle_outcome(c, Outcome(OutcomeKind.SUCCESS, result={"ok": True}), POLICY)
    assert s.action is SettleAction.DELETE
    assert s.status is CommandStatus.COMPLETED
    assert s.attempts == 2
    assert audit_types(s) == [AuditEventType.COMPLETED]
    assert s.error_type is None
    assert s.reply is not None and s.reply.queue == "app__replies"
    assert s.reply.reply.outcome is ReplyOutcome.SUCCESS
    assert s.reply.reply.data == {"ok": True}
    assert s.reply.reply.correlation_id == c.command.correlation_id
    assert s.reply.reply.command_id == c.command.command_id


def test_no_reply_without_reply_to():
    s = settle_outcome(claimed(reply_to=None), Outcome(OutcomeKind.SUCCESS), POLICY)
    assert s.reply is None


def test_transient_with_attempts_left_is_retried_after_the_backoff():
    outcome = Outcome(
        OutcomeKind.TRANSIENT, error_type="TimeoutError", error_code="T", error_message="slow"
    )
    first = settle_outcome(claimed(attempt=1), outcome, POLICY)
    assert first.action is SettleAction.RETRY
    assert first.status is CommandStatus.PENDING
    assert first.retry_delay == 1.0
    assert audit_types(first) == [AuditEventType.FAILED, AuditEventType.RETRY_SCHEDULED]
    assert first.reply is None
    assert (first.error_type, first.error_code, first.error_message) == (
        "TimeoutError",
        "T",
        "slow",
    )
    second = settle_outcome(claimed(attempt=2), outcome, POLICY)
    assert second.retry_delay == 5.0


def test_retry_delays_are_jittered_below_the_schedule_and_deterministic():
    outcome = Outcome(OutcomeKind.TRANSIENT, error_type="E", error_code="T", error_message="m")
    policy = RetryPolicy(max_attempts=3, backoff_schedule=(10.0,))  # the default jitter
    delays = [settle_outcome(claimed(attempt=1), outcome, policy).retry_delay for _ in range(200)]
    assert all(8.0 <= d <= 10.0 for d in delays)  # never later than the schedule
    assert len(set(delays)) > 150  # a burst spreads out
    one = claimed(attempt=1)
    assert (
        settle_outcome(one, outcome, policy).retry_delay
        == settle_outcome(one, outcome, policy).retry_delay
    )  # the same delivery, the same delay: settling stays pure
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.0)


def test_transient_on_the_last_attempt_goes_to_the_tsq_with_a_notice():
    outcome = Outcome(OutcomeKind.TRANSIENT, error_type="E", error_code="C", error_message="m")
    s = settle_outcome(claimed(attempt=3, max_attempts=3), outcome, POLICY)
    assert s.action is SettleAction.ARCHIVE
    assert s.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert audit_types(s) == [
        AuditEventType.FAILED,
        AuditEventType.RETRY_EXHAUSTED,
        AuditEventType.MOVED_TO_TSQ,
    ]
    assert s.reply is not None
    assert s.reply.reply.outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE
    assert (s.reply.reply.error_code, s.reply.reply.error_message) == ("C", "m")


def test_permanent_goes_to_the_tsq_at_once():
    outcome = Outcome(OutcomeKind.PERMANENT, error_type="PermanentCommandError", error_code="BAD")
    s = settle_outcome(claimed(attempt=1, max_attempts=5), outcome, POLICY)
    assert s.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert audit_types(s) == [AuditEventType.FAILED, AuditEventType.MOVED_TO_TSQ]


def test_business_rule_fails_without_retry_and_replies_failed_with_code():
    outcome = Outcome(
        OutcomeKind.BUSINESS_RULE,
        error_type="BusinessRuleException",
        error_code="INSUFFICIENT_FUNDS",
        error_message="balance too low",
        details={"balance": 3},
    )
    s = settle_outcome(claimed(attempt=1), outcome, POLICY)
    assert s.action is SettleAction.ARCHIVE
    assert s.status is CommandStatus.FAILED
    assert audit_types(s) == [AuditEventType.BUSINESS_RULE_FAILED]
    assert s.audit[0][1] is not None and s.audit[0][1]["details"] == {"balance": 3}
    assert s.reply is not None
    reply = s.reply.reply
    assert reply.outcome is ReplyOutcome.FAILED
    assert (reply.error_code, reply.error_message) == ("INSUFFICIENT_FUNDS", "balance too low")


@pytest.mark.parametrize("attempt", [4, 9])
def test_delivered_too_often_goes_to_the_tsq(attempt):
    outcome = Outcome(OutcomeKind.EXHAUSTED, error_type="DeliveryLimitExceeded", error_message="x")
    s = settle_outcome(claimed(attempt=attempt, max_attempts=3), outcome, POLICY)
    assert s.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE
    assert audit_types(s) == [AuditEventType.RETRY_EXHAUSTED, AuditEventType.MOVED_TO_TSQ]
    assert s.attempts == attempt
