"""The troubleshooting queue's decisions are pure: metadata in, OperatorSettlement out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from commandbus import AuditEventType, CommandStatus, InvalidOperationError, ReplyOutcome
from commandbus.models import CommandMetadata
from commandbus.ops import decisions

NOW = datetime(2026, 1, 1, tzinfo=UTC)
META = CommandMetadata(
    domain="payments",
    command_id=uuid4(),
    command_type="Debit",
    status=CommandStatus.IN_TROUBLESHOOTING_QUEUE,
    attempts=3,
    max_attempts=3,
    correlation_id=uuid4(),
    reply_to="payments__replies",
    created_at=NOW,
    updated_at=NOW,
)


def test_retry_requeues_with_no_reply_yet() -> None:
    settlement = decisions.retry(META, "alice")
    assert settlement.status is CommandStatus.PENDING and settlement.requeue
    assert settlement.audit == ((AuditEventType.OPERATOR_RETRY, {"operator": "alice"}),)
    assert settlement.reply is None


def test_cancel_replies_canceled_with_the_reason() -> None:
    settlement = decisions.cancel(META, "duplicate order", "bob")
    assert settlement.status is CommandStatus.CANCELED and not settlement.requeue
    assert settlement.reply is not None and settlement.reply.queue == "payments__replies"
    reply = settlement.reply.reply
    assert reply.outcome is ReplyOutcome.CANCELED
    assert (reply.error_code, reply.error_message) == ("CANCELED", "duplicate order")
    assert reply.correlation_id == META.correlation_id and reply.command_type == "Debit"


def test_complete_replies_success_with_the_result_and_no_reply_without_reply_to() -> None:
    settlement = decisions.complete(META, {"manual": True}, None)
    assert settlement.status is CommandStatus.COMPLETED
    assert settlement.reply is not None and settlement.reply.reply.data == {"manual": True}
    assert settlement.reply.reply.error_code is None
    assert decisions.complete(replace(META, reply_to=None), None, None).reply is None


@pytest.mark.parametrize(
    "status", [s for s in CommandStatus if s.name != "IN_TROUBLESHOOTING_QUEUE"]
)
def test_only_commands_in_the_tsq_can_be_acted_on(status: CommandStatus) -> None:
    meta = replace(META, status=status)
    for act in (
        lambda: decisions.retry(meta, None),
        lambda: decisions.cancel(meta, "why", None),
        lambda: decisions.complete(meta, None, None),
    ):
        with pytest.raises(InvalidOperationError, match="not in the troubleshooting queue"):
            act()
