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

A command sent to a domain of another cluster (``commandbus.clusters``) has no row here.
While it waits in this cluster's outbox its outbox row is locked instead, and withdrawing
it deletes the row: it never reaches its cluster. Once relayed, whether it has started is
known only on its cluster: a cancel waits for its outcome as for a started command, and
the withdrawal goes through the outbox (``withdraw_relayed`` applies it there, and
answers CANCELED if the command had not started).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from commandbus.clusters.ports import Forwarded, OutboxEntry, OutboxKind, OutboxStore
from commandbus.models import (
    AuditEventType,
    CommandMetadata,
    CommandStatus,
    JsonObject,
    Reply,
    ReplyOutcome,
)
from commandbus.ports import CommandOperations, CommandQueries, Conn, MessageQueue

__all__ = [
    "WITHDRAWABLE",
    "WITHDRAWN",
    "HeldCommand",
    "hold_command",
    "locked_command",
    "withdraw",
    "withdraw_held",
    "withdraw_relayed",
    "withdraw_relayed_entries",
]

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


@dataclass(frozen=True)
class HeldCommand:
    """A command a process may withdraw, as its engine holds it: its row here (locked),
    or what this cluster forwarded of it to another (its outbox row locked while there);
    neither when there is no such command."""

    row: CommandMetadata | None = None
    forwarded: Forwarded | None = None

    @property
    def elsewhere(self) -> bool:
        """Relayed to another cluster: whether it started is known only there."""
        return self.forwarded is not None and not self.forwarded.pending

    @property
    def started(self) -> bool:
        """Whether it must be treated as started (its handler runs, or may run)."""
        if self.row is not None:
            return self.row.status not in WITHDRAWABLE
        return self.elsewhere


async def hold_command(
    commands: CommandOperations,
    queries: CommandQueries,
    outbox: OutboxStore | None,
    command_id: UUID,
    *,
    conn: Conn,
) -> HeldCommand:
    """``locked_command``, or the command as this cluster's outbox forwarded it."""
    row = await locked_command(commands, queries, command_id, conn=conn)
    if row is not None or outbox is None:
        return HeldCommand(row)
    return HeldCommand(forwarded=await outbox.lock_forwarded(command_id, conn=conn))


async def withdraw_held(
    commands: CommandOperations,
    outbox: OutboxStore | None,
    held: HeldCommand,
    process_id: UUID,
    reason: str,
    *,
    conn: Conn,
) -> bool:
    """Withdraw what ``hold_command`` returned: ``withdraw`` for a row here; for a
    forwarded command, its outbox row is deleted (still here: True) or a withdrawal is
    sent to its cluster (False: it cancels it there if it has not started)."""
    if held.forwarded is not None and outbox is not None:
        return await outbox.withdraw_forwarded(held.forwarded, process_id, reason, conn=conn)
    return await withdraw(commands, held.row, process_id, reason, conn=conn)


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


#: The error code of the CANCELED reply to a command withdrawn on another cluster.
WITHDRAWN = "WITHDRAWN"


async def withdraw_relayed(
    commands: CommandOperations,
    queue: MessageQueue,
    domain: str,
    command_id: UUID,
    process_id: str,
    reason: str,
    *,
    conn: Conn,
) -> bool:
    """On the cluster of a command that a process on another cluster withdraws (a
    relayed WITHDRAW): cancel it as ``withdraw`` does if it has not started, and answer
    its ``reply_to`` with CANCELED (error code ``WITHDRAWN``), because the process could
    not tell whether it had started and waits for its outcome. Idempotent: a second
    withdrawal finds it canceled and does nothing; a started command is left to run
    (its own reply follows). True if it was withdrawn."""
    row = await commands.lock(domain, command_id, conn=conn)
    if row is None or row.status not in WITHDRAWABLE:
        return False
    await commands.set_status(domain, command_id, CommandStatus.CANCELED, conn=conn)
    details: JsonObject = {
        "process_id": process_id,
        "reason": reason,
        "was": row.status.value,
        "relayed": True,
    }
    await commands.append_audit(
        domain, command_id, [(AuditEventType.WITHDRAWN, details)], conn=conn
    )
    if row.reply_to is not None:
        reply = Reply(
            command_id=command_id,
            correlation_id=row.correlation_id,
            outcome=ReplyOutcome.CANCELED,
            error_code=WITHDRAWN,
            error_message=f"withdrawn before it started: {reason}",
            domain=domain,
            command_type=row.command_type,
        )
        await queue.enqueue(row.reply_to, [reply.to_message()], conn=conn)
    return True


async def withdraw_relayed_entries(
    commands: CommandOperations,
    queue: MessageQueue,
    entries: Sequence[OutboxEntry],
    *,
    conn: Conn,
) -> int:
    """The WITHDRAW entries among relayed outbox ``entries``, each applied as
    ``withdraw_relayed`` does; returns how many commands were withdrawn."""
    withdrawn = 0
    for entry in entries:
        if entry.kind is OutboxKind.WITHDRAW:
            withdrawn += await withdraw_relayed(
                commands,
                queue,
                entry.target_domain,
                entry.command_id,
                str(entry.payload.get("process_id")),
                str(entry.payload.get("reason") or "withdrawn"),
                conn=conn,
            )
    return withdrawn
