"""Withdrawing the commands a process no longer awaits, so that they never run.

A cancel, or a step timeout that re-sends (``RETRY``), gives up (``COMPENSATE``) or
fails the process (``FAIL``), leaves a command behind that nothing waits for. If it has
not started — PENDING, or parked in the troubleshooting queue — it is canceled here, in
the engine's transaction: status CANCELED and a ``WITHDRAWN`` audit event, no reply (the
process already moved on). A claim racing with us waits for the row lock and then skips
the command (it is terminal); its queue message is dropped by the next claim that sees
it, like any message of a finished command. Only the command row is locked (never its
queue message), so this cannot deadlock with a claim, which locks the message first.

A command that has started cannot be withdrawn: its handler runs. Its late reply is
ignored (a timeout), or awaited (a cancel waits for it, see ``CancelRequested``).
"""

from __future__ import annotations

from uuid import UUID

from commandbus.models import AuditEventType, CommandMetadata, CommandStatus
from commandbus.ports import CommandOperations, CommandQueries, Conn

__all__ = ["WITHDRAWABLE", "locked_command", "withdraw"]

#: The statuses of a command that has not started (and so can be withdrawn).
WITHDRAWABLE = frozenset({CommandStatus.PENDING, CommandStatus.IN_TROUBLESHOOTING_QUEUE})


async def locked_command(
    commands: CommandOperations, queries: CommandQueries, command_id: UUID, *, conn: Conn
) -> CommandMetadata | None:
    """The command's row, locked until ``conn`` ends; None if no such command. A process
    audit entry does not name its command's domain, the command's audit trail does."""
    events = await queries.audit_trail(command_id, conn=conn)
    if not events:
        return None
    return await commands.lock(events[0].domain, command_id, conn=conn)


async def withdraw(
    commands: CommandOperations,
    row: CommandMetadata | None,
    process_id: UUID,
    reason: str,
    *,
    conn: Conn,
) -> bool:
    """Cancel the command whose row ``locked_command`` returned, if it has not started;
    True if it was withdrawn."""
    if row is None or row.status not in WITHDRAWABLE:
        return False
    await commands.set_status(row.domain, row.command_id, CommandStatus.CANCELED, conn=conn)
    details = {"process_id": str(process_id), "reason": reason, "was": row.status.value}
    await commands.append_audit(
        row.domain, row.command_id, [(AuditEventType.WITHDRAWN, details)], conn=conn
    )
    return True
