"""Process behaviour: a step's command in the troubleshooting queue, operator actions."""

from __future__ import annotations

from uuid import UUID

import pytest

from commandbus.errors import (
    ValidationError,
)
from commandbus.models import ReplyOutcome
from commandbus.process.models import (
    AuditEntryKind,
    ProcessStatus,
)
from commandbus.testing.process_behaviour._pipeline import (
    DOMAIN,
    BehaviourBase,
    Env,
    S,
)


class TroubleshootingBehaviour(BehaviourBase):
    """Process behaviour: a step's command in the troubleshooting queue, operator actions."""

    # -- troubleshooting queue ---------------------------------------------------------

    async def _to_tsq(self, env: Env, step_type: str = "StepB") -> tuple[UUID, UUID]:
        env.services.plan[step_type] = ["permanent"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_TSQ
        assert (p.error_code, p.error_message) == ("BROKEN", f"{step_type} is broken")
        assert p.awaiting_command_id is not None
        return pid, p.awaiting_command_id

    async def test_tsq_then_operator_retry_continues(self, env: Env) -> None:
        pid, command_id = await self._to_tsq(env)
        trail = await env.manager.get_audit_trail(pid)
        assert trail[1].reply_outcome is ReplyOutcome.IN_TROUBLESHOOTING_QUEUE
        await env.tsq.operator_retry(DOMAIN, command_id, operator="ops")
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.error_code is None
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "SUCCESS"),
        ]

    async def test_tsq_then_operator_complete_continues_with_its_result(self, env: Env) -> None:
        pid, command_id = await self._to_tsq(env)
        await env.tsq.operator_complete(DOMAIN, command_id, {"value": "by-hand"}, operator="ops")
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.state.results["b"] == "by-hand"

    async def test_tsq_cancel_compensates_newest_first_and_ends_compensated_after_all(
        self, env: Env
    ) -> None:
        env.services.plan["StepD"] = ["permanent"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_TSQ and p.current_step is S.D
        assert p.awaiting_command_id is not None
        await env.tsq.operator_cancel(DOMAIN, p.awaiting_command_id, "give up", operator="ops")
        # The CANCELED reply starts compensation: C first (newest), B has none, then A.
        await env.router.process_once()
        p = await self.process(env, pid)
        assert (p.status, p.current_step) == (ProcessStatus.COMPENSATING, S.UNDO_C)
        await env.worker.process_once()
        await env.router.process_once()
        p = await self.process(env, pid)
        assert (p.status, p.current_step) == (ProcessStatus.COMPENSATING, S.UNDO_A)
        await env.worker.process_once()
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPENSATED
        assert p.state.undone == ["undo_c", "undo_a"]
        assert p.completed_at is not None
        trail = await env.manager.get_audit_trail(pid)
        assert [(e.step_name, e.kind, e.reply_outcome) for e in trail] == [
            ("a", AuditEntryKind.STEP, ReplyOutcome.SUCCESS),
            ("b", AuditEntryKind.STEP, ReplyOutcome.SUCCESS),
            ("c", AuditEntryKind.STEP, ReplyOutcome.SUCCESS),
            ("d", AuditEntryKind.STEP, ReplyOutcome.CANCELED),
            ("undo_c", AuditEntryKind.COMPENSATION, ReplyOutcome.SUCCESS),
            ("undo_a", AuditEntryKind.COMPENSATION, ReplyOutcome.SUCCESS),
        ]

    async def test_business_rule_failure_compensates_then_ends_failed(self, env: Env) -> None:
        env.services.plan["StepD"] = ["business"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED
        assert (p.error_code, p.error_message) == ("REFUSED", "StepD refused")
        assert p.state.undone == ["undo_c", "undo_a"]
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "FAILED"),
            ("undo_c", "SUCCESS"),
            ("undo_a", "SUCCESS"),
        ]

    async def test_business_rule_failure_of_first_step_fails_at_once(self, env: Env) -> None:
        env.services.plan["StepA"] = ["business"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED and p.error_code == "REFUSED"
        assert await self.steps_sent(env, pid) == [("a", "FAILED")]

    async def test_cancel_with_a_reason_that_cannot_be_stored_is_rejected(self, env: Env) -> None:
        pid = await env.manager.start({})
        before = await self.process(env, pid)
        for reason in ({"a": 1}, ["x"], "nul\x00", "lone \ud800", "x" * 10_001):
            with pytest.raises(ValidationError, match="reason"):
                await env.manager.cancel(pid, reason=reason)  # type: ignore[arg-type]
        after = await self.process(env, pid)
        assert after.status is before.status and after.version == before.version

    async def test_failing_compensation_is_recorded_and_the_rest_continue(self, env: Env) -> None:
        env.services.plan["StepD"] = ["business"]
        env.services.plan["UndoC"] = ["business"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED
        assert p.error_code == "COMPENSATION_FAILED"
        assert p.error_message == ("compensation failed for: undo_c (after REFUSED: StepD refused)")
        assert p.compensation is not None and p.compensation.failed == ("undo_c",)
        assert p.state.undone == ["undo_a"]  # the next compensation still ran
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "FAILED"),
            ("undo_c", "FAILED"),
            ("undo_a", "SUCCESS"),
        ]
