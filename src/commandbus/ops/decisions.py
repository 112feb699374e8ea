"""Pure decisions of the troubleshooting queue: what an operator's action writes.

``TroubleshootingQueue`` locks the command row, asks one of these functions for an
``OperatorSettlement`` and hands it to ``CommandStore.apply_operator``: decide with a pure
function, apply with one call, as the worker does with ``settlement.settle_outcome``.
"""

from __future__ import annotations

from commandbus.errors import InvalidOperationError
from commandbus.models import (
    AuditEventType,
    CommandMetadata,
    CommandStatus,
    JsonObject,
    OperatorSettlement,
    QueuedReply,
    Reply,
    ReplyOutcome,
)


def _in_tsq(meta: CommandMetadata) -> None:
    if meta.status is not CommandStatus.IN_TROUBLESHOOTING_QUEUE:
        raise InvalidOperationError(
            f"command {meta.command_id} is {meta.status.value}, not in the troubleshooting "
            "queue; operator actions apply only to IN_TROUBLESHOOTING_QUEUE commands"
        )


def _reply(meta: CommandMetadata, reply: Reply) -> QueuedReply | None:
    return None if meta.reply_to is None else QueuedReply(meta.reply_to, reply)


def retry(meta: CommandMetadata, operator: str | None) -> OperatorSettlement:
    """Back on the queue with its original payload and a fresh attempt budget; its
    eventual outcome is replied as usual."""
    _in_tsq(meta)
    return OperatorSettlement(
        domain=meta.domain,
        command_id=meta.command_id,
        status=CommandStatus.PENDING,
        audit=((AuditEventType.OPERATOR_RETRY, {"operator": operator}),),
        requeue=True,
    )


def cancel(meta: CommandMetadata, reason: str, operator: str | None) -> OperatorSettlement:
    """CANCELED, with a CANCELED reply carrying the reason."""
    _in_tsq(meta)
    reply = Reply.answering(
        meta, ReplyOutcome.CANCELED, error_code="CANCELED", error_message=reason
    )
    return OperatorSettlement(
        domain=meta.domain,
        command_id=meta.command_id,
        status=CommandStatus.CANCELED,
        audit=((AuditEventType.OPERATOR_CANCEL, {"operator": operator, "reason": reason}),),
        reply=_reply(meta, reply),
    )


def complete(
    meta: CommandMetadata, result: JsonObject | None, operator: str | None
) -> OperatorSettlement:
    """COMPLETED, with a SUCCESS reply carrying the operator's result."""
    _in_tsq(meta)
    return OperatorSettlement(
        domain=meta.domain,
        command_id=meta.command_id,
        status=CommandStatus.COMPLETED,
        audit=((AuditEventType.OPERATOR_COMPLETE, {"operator": operator}),),
        reply=_reply(meta, Reply.answering(meta, ReplyOutcome.SUCCESS, result)),
    )
