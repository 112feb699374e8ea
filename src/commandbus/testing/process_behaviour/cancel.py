"""Process behaviour: ``cancel()`` leaves no work behind.

The awaited command is withdrawn if it has not started (it never runs, so its step needs
no compensation); if its handler runs already, the cancel waits for the outcome and
compensates that step too when it succeeded. Only then are late replies ignored.
"""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from commandbus.errors import InvalidOperationError, ProcessNotFoundError
from commandbus.models import AuditEventType, CommandStatus
from commandbus.process.models import ProcessMessageDisposition, ProcessStatus, TimeoutAction
from commandbus.testing.process_behaviour._pipeline import DOMAIN, BehaviourBase, Env, S


class CancelBehaviour(BehaviourBase):
    """Process behaviour: ``cancel()`` withdraws or waits for the awaited command."""

    async def command(self, env: Env, command_id: UUID | None) -> CommandStatus:
        assert command_id is not None
        meta = await env.bus.get_command(DOMAIN, command_id)
        assert meta is not None
        return meta.status

    async def test_cancel_withdraws_a_command_that_has_not_started(self, env: Env) -> None:
        # A and B done, C sent but not claimed: cancel -> C never runs, UndoA only.
        pid = await env.manager.start({})
        for _ in range(2):
            await env.worker.process_once()
            await env.router.process_once()
        p = await self.process(env, pid)
        assert p.current_step is S.C
        c_command = p.awaiting_command_id
        canceled = await env.manager.cancel(pid, "customer withdrew")
        assert canceled.status is ProcessStatus.COMPENSATING
        assert canceled.current_step is S.UNDO_A
        assert await self.command(env, c_command) is CommandStatus.CANCELED
        assert c_command is not None
        events = [e.event_type for e in await env.bus.get_audit_trail(c_command, DOMAIN)]
        assert events[-1] is AuditEventType.WITHDRAWN
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.CANCELED
        assert (p.error_code, p.error_message) == ("CANCELED", "customer withdrew")
        assert "StepC" not in env.services.calls  # withdrawn: it never ran
        assert "c" not in p.state.results
        assert p.state.undone == ["undo_a"]
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", "SUCCESS"),
            ("c", "CANCELED"),
            ("undo_a", "SUCCESS"),
        ]
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == []
        with pytest.raises(InvalidOperationError, match="it has finished"):
            await env.manager.cancel(pid, "again")
        with pytest.raises(ProcessNotFoundError):
            await env.manager.cancel(uuid4(), "nothing")

    async def test_cancel_waits_for_a_running_step_and_compensates_it(self, env: Env) -> None:
        # A done, C's handler running when the cancel comes: it succeeds, so UndoC too.
        pid = await env.manager.start({"skip_b": True})
        await env.worker.process_once()
        await env.router.process_once()
        env.services.plan["StepC"] = ["hold"]
        running = asyncio.create_task(env.worker.process_once())
        await asyncio.wait_for(env.services.holding.wait(), 30)  # C's handler is running
        canceled = await env.manager.cancel(pid, "too late for C")
        assert canceled.status is ProcessStatus.COMPENSATING
        assert canceled.current_step is S.C  # still awaiting C's outcome
        assert canceled.compensation is not None and canceled.compensation.waiting_for == "c"
        assert await self.command(env, canceled.awaiting_command_id) is CommandStatus.IN_PROGRESS
        env.services.released.set()
        await running
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.CANCELED
        assert p.state.results["c"] == "StepC-ok"  # the step did happen ...
        assert p.state.undone == ["undo_c", "undo_a"]  # ... and was compensated, newest first
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == []

    async def test_cancel_withdraws_a_step_parked_in_the_troubleshooting_queue(
        self, env: Env
    ) -> None:
        env.services.plan["StepA"] = ["permanent"]
        pid = await env.manager.start({})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_TSQ
        assert await env.tsq.count_troubleshooting(DOMAIN) == 1
        await env.manager.cancel(pid, "not needed")
        assert await env.tsq.count_troubleshooting(DOMAIN) == 0  # no operator can revive it
        assert await self.command(env, p.awaiting_command_id) is CommandStatus.CANCELED
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.CANCELED
        assert env.services.calls == ["StepA"]

    async def test_a_timeout_fail_withdraws_the_awaited_command(self, env: Env) -> None:
        env.manager.timeouts = {"b": 30}
        env.manager.timeout_action = TimeoutAction.FAIL
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()
        b_command = (await self.process(env, pid)).awaiting_command_id
        await self.advance(env.backend, 31)
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED and p.error_code == "STEP_TIMEOUT"
        assert await self.command(env, b_command) is CommandStatus.CANCELED
        await self.drive(env)
        assert "StepB" not in env.services.calls
