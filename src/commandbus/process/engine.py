"""The engine: applies kernel decisions to storage, a batch per transaction.

``ProcessEngine.handle`` takes a batch of incoming messages (replies and timers read from a
process reply queue, or a manager's own ``handle_reply``/``cancel``), locks the processes
they concern (``FOR UPDATE``, one statement, fixed order), loads their audit trails (one
statement, *after* the locks so it sees what earlier lock holders committed), lets the
kernel decide each message in order — a second message for the same process sees the
first one's outcome — and then writes everything in a few batched statements of the
caller's transaction: process rows (version-checked), audit entries, the message log,
the commands to send (``CommandStore.insert``) and the step timers (delayed messages on
the reply queue). The caller deletes the handled messages in the same transaction.

Nothing is written for a message until the whole batch is decided, so one bad message is
isolated without a savepoint: a hook that raises (``ProcessHookError``) leaves that message
for a later retry, or parks it in the message log once it was read ``max_reply_attempts``
times; a state that cannot be loaded (a ``from_dict`` bug after a deploy) parks the message
and flags its process (error ``STATE_LOAD_FAILED``; status, state and awaited command are
kept), so that replaying the parked message after the fix continues the process. The other
messages of the batch go through.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

from commandbus.clusters.ports import OutboxStore
from commandbus.models import JsonObject
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend, Conn
from commandbus.process.decisions import (
    StepCompletionRequested,
    StepRetryRequested,
)
from commandbus.process.errors import ProcessAlreadyExistsError, ProcessHookError, StateLoadError
from commandbus.process.kernel import (
    CancelRequested,
    Decision,
    Ignored,
    IncomingMessage,
    ReplyReceived,
    TimerFired,
    decide,
)
from commandbus.process.models import (
    ProcessMessageDisposition,
    ProcessMessageRecord,
    ProcessMetadata,
    ProcessSnapshot,
)
from commandbus.process.repository import (
    JsonText,
    ProcessRepository,
    ProcessWrites,
)
from commandbus.process.staging import (
    EngineManager,
    Outgoing,
    Staged,
    checked_state,
    state_upgrade,
)
from commandbus.process.withdrawal import hold_command, withdraw_held
from commandbus.sanitise import storable_text
from commandbus.telemetry import NO_TELEMETRY, Telemetry, count_sent

__all__ = ["STATE_LOAD_FAILED", "Envelope", "EnvelopeResult", "Handled", "ProcessEngine"]

logger = logging.getLogger(__name__)

#: A logged message's reason (often an exception's text) is cut to this length.
MAX_REASON_CHARS = 2_000

STATE_LOAD_FAILED = "STATE_LOAD_FAILED"


class EnvelopeResult(Enum):
    APPLIED = "applied"  # decided and written
    IGNORED = "ignored"  # recorded in the message log, nothing else changed
    PARKED = "parked"  # could not be handled; kept in the message log for an operator
    RETRY = "retry"  # a hook failed; leave the message to be read again later


@dataclass(frozen=True)
class Envelope:
    """One incoming message for the engine (read only).

    ``message`` is None when the raw message could not be parsed (``error`` says why).
    ``domain`` is known for timers (and manager calls); for replies the process is looked up
    by id in the domains of the registered managers.
    """

    raw: JsonObject
    message: IncomingMessage | None
    process_id: UUID | None = None
    domain: str | None = None
    error: str | None = None
    read_count: int = 1
    msg_id: int | None = None
    queue_name: str | None = None
    #: The message's headers (a reply's trace context), with telemetry on.
    headers: JsonObject | None = None


@dataclass(frozen=True)
class Handled:
    """What the engine did with one envelope (``handle`` returns one per envelope, in
    order). ``ignored`` says why an ignored message changed nothing; ``reason`` is the
    text of an ignored, parked or retried message; ``decision`` is set when applied."""

    result: EnvelopeResult
    reason: str | None = None
    ignored: Ignored | None = None
    decision: Decision[Any, Any] | None = None
    exception: BaseException | None = None


class ProcessEngine:
    """Decides and applies batches of messages for a set of managers (by process type)."""

    def __init__(
        self,
        backend: Backend,
        repo: ProcessRepository,
        managers: Mapping[str, EngineManager],
        *,
        max_reply_attempts: int = 5,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.backend = backend
        self.repo = repo
        self.telemetry: Telemetry = telemetry or NO_TELEMETRY
        self.managers = dict(managers)
        self.domains = sorted({m.domain for m in self.managers.values()})
        self.max_reply_attempts = max_reply_attempts
        #: A cluster's outbox (``commandbus.clusters``): where commands this process sent
        #: to other clusters are found again, to withdraw them.
        self._outbox: OutboxStore | None = getattr(backend, "outbox", None)

    async def start(
        self,
        manager: EngineManager,
        new: Sequence[ProcessMetadata[Any, Any]],
        decisions: Mapping[UUID, Decision[Any, Any]],
        *,
        conn: Conn,
    ) -> list[ProcessMetadata[Any, Any]]:
        """Write new processes (rows with their state already encoded) and what their
        start decisions send, in ``conn``; returns those inserted. A process id that
        exists already with the manager's type and the same initial data is skipped (an
        idempotent start); with another type or other data it raises
        ``ProcessAlreadyExistsError``."""
        telemetry = self.telemetry
        if not telemetry.enabled:
            return await self._start(manager, new, decisions, None, conn)
        attributes = {
            "commandbus.process_type": manager.process_type,
            "commandbus.processes": len(new),
        }
        # The span starts each process's trace (in the caller's, if it has one): the first
        # commands carry it, and everything after them follows.
        with telemetry.span("commandbus.process.start", attributes):
            outgoing = telemetry.outgoing_headers()
            return await self._start(manager, new, decisions, lambda: outgoing, conn)

    async def _start(
        self,
        manager: EngineManager,
        new: Sequence[ProcessMetadata[Any, Any]],
        decisions: Mapping[UUID, Decision[Any, Any]],
        headers: Outgoing | None,
        conn: Conn,
    ) -> list[ProcessMetadata[Any, Any]]:
        staged = Staged()
        inserted = set(await self.repo.insert_new(new, conn=conn))
        telemetry = self.telemetry
        for process in new:
            pid = process.process_id
            if pid in inserted:
                staged.add_effects(manager, process.domain, pid, decisions[pid], headers)
                if telemetry.enabled:
                    telemetry.process_changed(
                        process.domain, process.process_type, process.status.value
                    )
                continue
            existing = await self.repo.get_by_id(process.domain, pid, conn=conn)
            if existing is None or existing.process_type != manager.process_type:
                raise ProcessAlreadyExistsError(
                    process.domain, pid, existing.process_type if existing else None
                )
            if existing.initial_data != process.initial_data:
                # Idempotent only for the same request: other data is another process.
                raise ProcessAlreadyExistsError(
                    process.domain,
                    pid,
                    existing.process_type,
                    detail="it was started with other initial data",
                )
        await self.flush(staged, conn=conn)
        return [p for p in new if p.process_id in inserted]

    async def handle(
        self, envelopes: Sequence[Envelope], *, conn: Conn, raise_errors: bool = False
    ) -> list[Handled]:
        """Decide and apply ``envelopes`` in ``conn``; returns what happened to each, in
        order.

        With ``raise_errors`` (a manager's own call) a hook or state error is raised
        instead of parking the message."""
        now = self.backend.clock.now()
        ids = sorted({e.process_id for e in envelopes if e.process_id is not None}, key=str)
        domains = sorted(set(self.domains) | {e.domain for e in envelopes if e.domain})
        loaded = await self.repo.lock(domains, ids, conn=conn) if ids else []
        raw_by_id: dict[UUID, ProcessSnapshot[Any, Any]] = {}
        for snap in loaded:
            raw_by_id.setdefault(snap.process.process_id, snap)
        typed: dict[UUID, tuple[EngineManager, ProcessSnapshot[Any, Any], int]] = {}
        failed_load: set[UUID] = set()
        staged = Staged()
        # Messages still to come per process: deciding the last one of a process needs no
        # copy of its state (nothing looks at that snapshot again, even if a hook fails).
        remaining = Counter(e.process_id for e in envelopes if e.process_id is not None)

        handled: list[Handled] = []
        telemetry = self.telemetry
        for env in envelopes:
            if not telemetry.enabled:
                handled.append(
                    await self._handle_one(
                        env,
                        raw_by_id,
                        typed,
                        failed_load,
                        remaining,
                        staged,
                        now,
                        raise_errors,
                        conn,
                    )
                )
                continue

            def attributes(env: Envelope = env) -> dict[str, Any]:  # if the span records
                return {"commandbus.process_id": str(env.process_id)}

            with telemetry.span("commandbus.process.decide", attributes, env.headers) as span:
                # The commands this decision sends are children of this span, caused by
                # the message (the command the reply or timer is about); the headers are
                # made only for a decision that sends.
                def headers(env: Envelope = env) -> JsonObject | None:
                    return telemetry.outgoing_headers(causation_id=_command_id_of(env))

                result = await self._handle_one(
                    env,
                    raw_by_id,
                    typed,
                    failed_load,
                    remaining,
                    staged,
                    now,
                    raise_errors,
                    conn,
                    headers,
                )
                if result.exception is not None:
                    span.error(result.exception)
            handled.append(result)
        await self.flush(staged, conn=conn)
        return handled

    async def _handle_one(
        self,
        env: Envelope,
        raw_by_id: Mapping[UUID, ProcessSnapshot[Any, Any]],
        typed: dict[UUID, tuple[EngineManager, ProcessSnapshot[Any, Any], int]],
        failed_load: set[UUID],
        remaining: Counter[UUID],
        staged: Staged,
        now: datetime,
        raise_errors: bool,
        conn: Conn,
        headers: Outgoing | None = None,
    ) -> Handled:
        parked = ProcessMessageDisposition.PARKED
        ignored = ProcessMessageDisposition.IGNORED
        if env.message is None:
            return self._log(staged, env, parked, env.error or "malformed")
        if env.process_id is None:
            return self._log(
                staged, env, ignored, "reply has no correlation id", because=Ignored.NO_CORRELATION
            )
        snap = raw_by_id.get(env.process_id)
        if snap is None or (env.domain is not None and snap.process.domain != env.domain):
            return self._log(
                staged, env, ignored, "unknown process", because=Ignored.UNKNOWN_PROCESS
            )
        manager = self.managers.get(snap.process.process_type)
        if manager is None:
            reason = f"no process manager registered for type {snap.process.process_type!r}"
            return self._log(staged, env, parked, reason, snap.process)
        if env.process_id in failed_load:
            reason = "the process state cannot be loaded"
            return self._log(staged, env, parked, reason, snap.process)
        current = typed.get(env.process_id)
        if current is None:
            try:
                current = (manager, manager.load_snapshot(snap), snap.process.version)
                upgrade = state_upgrade(manager, snap.process)
                if upgrade is not None:
                    staged.upgrades[env.process_id] = upgrade
            except StateLoadError as exc:
                if raise_errors:
                    raise
                failed_load.add(env.process_id)
                self._flag_unloadable(staged, snap.process, exc, now)
                return self._log(staged, env, parked, str(exc), snap.process, exception=exc)
            typed[env.process_id] = current
        manager, snapshot, version = current
        remaining[env.process_id] -= 1
        message = env.message
        if isinstance(message, CancelRequested):
            message = await self._with_awaited_fact(message, snapshot, staged, conn)
        try:
            decision = await decide(
                manager,
                snapshot,
                message,
                now,
                copy_state=remaining[env.process_id] > 0,
            )
            state_json = JsonText("{}")
            if decision.process is not None:
                state_json = checked_state(decision, manager.process_type)
        except ProcessHookError as exc:
            if raise_errors:
                raise
            if env.read_count >= self.max_reply_attempts:
                logger.error("parking message %s: %s", env.msg_id, exc)
                return self._log(staged, env, parked, str(exc), snap.process, exception=exc)
            logger.warning(
                "message %s failed (read %d of %d), retrying later: %s",
                env.msg_id,
                env.read_count,
                self.max_reply_attempts,
                exc,
            )
            return Handled(EnvelopeResult.RETRY, reason=str(exc), exception=exc)
        if decision.ignored is not None:
            return self._log(
                staged,
                env,
                ignored,
                decision.ignored,
                snap.process,
                because=decision.ignored_because,
                decision=decision,
            )
        upgrade = staged.upgrades.pop(env.process_id, None)
        if upgrade is not None:  # written for the first time since the upgrade: record it
            staged.add_upgrade(snap.process, *upgrade, now)
        staged.add_decision(manager, decision, version, state_json, headers)
        assert decision.process is not None
        typed[env.process_id] = (manager, _advance(snapshot, decision), version)
        return Handled(EnvelopeResult.APPLIED, decision=decision)

    async def _with_awaited_fact(
        self,
        cancel: CancelRequested,
        snapshot: ProcessSnapshot[Any, Any],
        staged: Staged,
        conn: Conn,
    ) -> CancelRequested:
        """The cancel with the fact the kernel needs: has the awaited command started?
        Read under the command row's lock, which holds until the cancel commits."""
        entry = snapshot.awaited_entry()
        if entry is None or entry.is_answered:
            return cancel
        commands = self.backend.commands
        held = await hold_command(commands, commands, self._outbox, entry.command_id, conn=conn)
        staged.locked_commands[entry.command_id] = held
        return CancelRequested(
            cancel.reason, awaited_started=held.started, awaited_elsewhere=held.elsewhere
        )

    def _log(
        self,
        staged: Staged,
        env: Envelope,
        disposition: ProcessMessageDisposition,
        reason: str,
        process: ProcessMetadata[Any, Any] | None = None,
        *,
        because: Ignored | None = None,
        decision: Decision[Any, Any] | None = None,
        exception: BaseException | None = None,
    ) -> Handled:
        """Record an ignored or parked message in the message log (manager calls are only
        logged); returns what happened to it."""
        result = (
            EnvelopeResult.IGNORED
            if disposition is ProcessMessageDisposition.IGNORED
            else EnvelopeResult.PARKED
        )
        handled = Handled(
            result, reason=reason, ignored=because, decision=decision, exception=exception
        )
        command_id: UUID | None = None
        message = env.message
        if isinstance(message, ReplyReceived):
            command_id = message.reply.command_id
        elif isinstance(message, TimerFired):
            command_id = message.command_id
        log = logger.info if disposition is ProcessMessageDisposition.IGNORED else logger.error
        log(
            "%s process message %s (process %s, command %s): %s",
            disposition.value.lower(),
            env.msg_id,
            env.process_id,
            command_id,
            reason,
        )
        if isinstance(message, CancelRequested | StepRetryRequested | StepCompletionRequested):
            return handled  # a manager call, not a queue message: nothing to keep
        staged.messages.append(
            ProcessMessageRecord(
                disposition=disposition,
                reason=storable_text(reason, MAX_REASON_CHARS),
                message=env.raw,
                domain=process.domain if process else env.domain,
                process_id=env.process_id,
                command_id=command_id,
                queue_name=env.queue_name,
                msg_id=env.msg_id,
            )
        )
        return handled

    def _flag_unloadable(
        self,
        staged: Staged,
        process: ProcessMetadata[Any, Any],
        exc: StateLoadError,
        now: datetime,
    ) -> None:
        """Flag a process whose state cannot be loaded (error ``STATE_LOAD_FAILED``) and
        leave it as it is otherwise: its status, its stored state and what it awaits. The
        message is parked; once the code is fixed, replaying it continues the process."""
        if process.status.is_terminal:
            return
        raw = process.copy(
            error_code=STATE_LOAD_FAILED, error_message=storable_text(exc), updated_at=now
        )
        staged.updates[(process.domain, process.process_id)] = raw

    async def flush(self, staged: Staged, *, conn: Conn) -> None:
        """Write everything staged, in the caller's transaction."""
        writes = ProcessWrites(
            updates=list(staged.updates.values()),
            audit_inserts=[(d, p, e) for (d, p, _), e in staged.audit_inserts.items()],
            audit_updates=[(d, p, e) for (d, p, _), e in staged.audit_updates.items()],
            messages=staged.messages,
        )
        if writes:
            await self.repo.apply(writes, conn=conn)
        commands = self.backend.commands
        outbox = self._outbox
        for command_id, process_id, reason in staged.withdrawals:
            held = staged.locked_commands.get(command_id)
            if held is None:
                held = await hold_command(commands, commands, outbox, command_id, conn=conn)
            await withdraw_held(commands, outbox, held, process_id, reason, conn=conn)
        if staged.commands:
            await self.backend.commands.insert(
                staged.commands, RetryPolicy().max_attempts, conn=conn
            )
            if self.telemetry.enabled:
                count_sent(self.telemetry, staged.commands)
        for (queue, delay), messages in staged.timers.items():
            await self.backend.queue.enqueue(queue, messages, delay, conn=conn)


def _command_id_of(env: Envelope) -> str | None:
    """The command a message is about (a reply's, a timer's), as the causation id."""
    message = env.message
    if isinstance(message, ReplyReceived):
        return str(message.reply.command_id)
    command_id = getattr(message, "command_id", None)
    return str(command_id) if command_id is not None else None


def _advance(
    snapshot: ProcessSnapshot[Any, Any], decision: Decision[Any, Any]
) -> ProcessSnapshot[Any, Any]:
    """The snapshot after ``decision`` (for the next message of the same batch)."""
    assert decision.process is not None
    updated = {e.command_id: e for e in decision.audit_updates}
    audit = [updated.get(e.command_id, e) for e in snapshot.audit]
    audit.extend(decision.audit_inserts)
    return ProcessSnapshot(decision.process, audit)
