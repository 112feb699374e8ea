"""Process behaviour: an operator acts on a process that needs one.

After a step timeout (``TimeoutAction.TSQ``, the default) a process is
WAITING_FOR_OPERATOR: an operator retries the step, completes it with a result, or
cancels the process. The same step actions work while the step's command is in the
troubleshooting queue (WAITING_FOR_TSQ). Each is one transaction (replay folds them:
tests/unit/test_replay.py).
"""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from commandbus.errors import InvalidOperationError, ProcessNotFoundError, ValidationError
from commandbus.models import CommandStatus
from commandbus.process.models import ProcessStatus
from commandbus.testing.process_behaviour._pipeline import DOMAIN, BehaviourBase, Env, S


class StepActionBehaviour(BehaviourBase):
    """Process behaviour: ``retry_step`` and ``complete_step``."""

    async def timed_out_at_b(self, env: Env) -> tuple[UUID, UUID]:
        """A process whose step B timed out; returns its id and B's command id."""
        env.manager.timeouts = {"b": 30}
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # B sent with a timer, not claimed
        await self.advance(env.backend, 31)
        await env.router.process_once()  # the timer
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_OPERATOR
        assert p.awaiting_command_id is not None
        return pid, p.awaiting_command_id

    async def status_of(self, env: Env, command_id: UUID) -> CommandStatus:
        meta = await env.bus.get_command(DOMAIN, command_id)
        assert meta is not None
        return meta.status

    async def test_retry_step_sends_the_step_again(self, env: Env) -> None:
        pid, first_b = await self.timed_out_at_b(env)
        env.manager.timeouts = {}
        p = await env.manager.retry_step(pid, operator="alice")
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.current_step is S.B
        assert p.error_code is None and p.awaiting_command_id != first_b
        assert await self.status_of(env, first_b) is CommandStatus.CANCELED  # withdrawn
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert env.services.calls.count("StepB") == 1
        trail = await env.manager.get_audit_trail(pid)
        superseded = trail[1]
        assert (superseded.error_code, superseded.error_message) == (
            "OPERATOR_RETRY",
            "retried by alice",
        )

    async def test_complete_step_continues_with_the_operators_result(self, env: Env) -> None:
        pid, b_command = await self.timed_out_at_b(env)
        p = await env.manager.complete_step(pid, {"value": "by hand"}, operator="bob")
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.current_step is S.C
        assert p.state.results["b"] == "by hand"  # update_state saw the result
        assert await self.status_of(env, b_command) is CommandStatus.CANCELED
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert "StepB" not in env.services.calls

    async def test_complete_step_resolves_a_command_in_the_troubleshooting_queue(
        self, env: Env
    ) -> None:
        env.services.plan["StepA"] = ["permanent"]
        pid = await env.manager.start({})
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.WAITING_FOR_TSQ
        assert await env.tsq.count_troubleshooting(DOMAIN) == 1
        await env.manager.complete_step(pid, {"value": "fixed by hand"})
        assert await env.tsq.count_troubleshooting(DOMAIN) == 0
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED and p.state.results["a"] == "fixed by hand"

    async def test_step_actions_need_a_process_that_waits_for_an_operator(self, env: Env) -> None:
        pid = await env.manager.start({})
        with pytest.raises(InvalidOperationError, match="not waiting for an operator"):
            await env.manager.retry_step(pid)
        with pytest.raises(InvalidOperationError, match="not waiting for an operator"):
            await env.manager.complete_step(pid, {})
        with pytest.raises(ProcessNotFoundError):
            await env.manager.retry_step(uuid4())
        await self.drive(env)
        with pytest.raises(InvalidOperationError, match="it has finished"):
            await env.manager.complete_step(pid, {})

    async def test_step_actions_refuse_bad_input_and_write_nothing(self, env: Env) -> None:
        pid, _ = await self.timed_out_at_b(env)
        before = await self.process(env, pid)
        for result in (["not", "an", "object"], {"nul": "\x00"}, {"x": float("nan")}):
            with pytest.raises(ValidationError):
                await env.manager.complete_step(pid, result)  # type: ignore[arg-type]
        for operator in ("x" * 201, "nul\x00", 42):
            with pytest.raises(ValidationError, match="operator"):
                await env.manager.retry_step(pid, operator=operator)  # type: ignore[arg-type]
        after = await self.process(env, pid)
        assert after.version == before.version and after.status is before.status
