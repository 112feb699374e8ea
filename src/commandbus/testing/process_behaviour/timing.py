"""Process behaviour: step timeouts and recovery after a restart."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from commandbus.models import CommandStatus
from commandbus.process.models import (
    ProcessMessageDisposition,
    ProcessStatus,
    TimeoutAction,
)
from commandbus.process.router import ProcessReplyRouter
from commandbus.testing.process_behaviour._pipeline import (
    DOMAIN,
    BehaviourBase,
    Env,
    PipelineProcess,
    S,
)


class TimeoutBehaviour(BehaviourBase):
    """Process behaviour: step timeouts and recovery after a restart."""

    # -- timeouts ----------------------------------------------------------------------

    async def test_step_timeout_default_parks_for_operator_and_late_reply_continues(
        self, env: Env
    ) -> None:
        env.manager.timeouts = {"b": 30}
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # B sent with a 30 s timer
        p = await self.process(env, pid)
        assert p.deadline_at is not None
        await self.advance(env.backend, 31)
        assert await env.router.process_once() == 1  # the timer
        p = await self.process(env, pid)
        # The status says what is true: an operator decides (nothing is in the TSQ).
        assert p.status is ProcessStatus.WAITING_FOR_OPERATOR
        assert p.error_code == "STEP_TIMEOUT"
        assert await env.tsq.count_troubleshooting(DOMAIN) == 0
        trail = await env.manager.get_audit_trail(pid)
        assert trail[1].timed_out_at is not None and trail[1].reply_outcome is None
        await self.drive(env)  # B's reply arrives late: still awaited -> continues
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.error_code is None

    async def test_step_timeout_retry_sends_again_and_withdraws_the_first(self, env: Env) -> None:
        env.manager.timeouts = {"b": 30}
        env.manager.timeout_action = TimeoutAction.RETRY
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # B sent (not claimed yet)
        first_b = (await self.process(env, pid)).awaiting_command_id
        assert first_b is not None
        await self.advance(env.backend, 31)
        await env.router.process_once()  # timer: B sent again, the first B withdrawn
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.command_seq == 3
        first = await env.bus.get_command(DOMAIN, first_b)
        assert first is not None and first.status is CommandStatus.CANCELED
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("b", None),
            ("b", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "SUCCESS"),
        ]
        assert env.services.calls.count("StepB") == 1  # the superseded B never ran
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == []

    async def test_step_timeout_compensate(self, env: Env) -> None:
        env.manager.timeouts = {"b": 30}
        env.manager.timeout_action = TimeoutAction.COMPENSATE
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()
        await self.advance(env.backend, 31)
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPENSATING and p.current_step is S.UNDO_A
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED and p.error_code == "STEP_TIMEOUT"
        assert p.state.undone == ["undo_a"] and "b" not in p.state.results

    async def test_timer_after_the_reply_is_ignored(self, env: Env) -> None:
        env.manager.timeouts = {"a": 30}
        pid = await env.manager.start({})
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
        await self.advance(env.backend, 31)
        assert await env.router.process_once() == 1
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == ["process is COMPLETED"]

    async def test_a_step_sent_later_runs_then_and_times_out_from_then(self, env: Env) -> None:
        env.manager.delays = {"b": 3 * 86400}  # "remind in 3 days"
        env.manager.timeouts = {"b": 60}
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # B written now, to run in 3 days
        p = await self.process(env, pid)
        trail = await env.manager.get_audit_trail(pid)
        assert trail[1].step_name == "b" and trail[1].scheduled_for is not None
        assert (trail[1].scheduled_for - trail[1].sent_at).total_seconds() == 3 * 86400
        assert p.deadline_at == trail[1].scheduled_for + timedelta(seconds=60)
        assert await env.worker.process_once() == 0  # not yet
        assert "StepB" not in env.services.calls
        await self.advance(env.backend, 2 * 86400)
        assert await env.worker.process_once() == 0  # still not
        await self.advance(env.backend, 86400 + 1)
        assert await env.worker.process_once() == 1  # due: it runs
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED and p.error_code is None

    async def deadline_passed_at_b(self, env: Env, action: TimeoutAction) -> UUID:
        env.manager.process_timeout = 100
        env.manager.process_timeout_action = action
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # B sent, not claimed
        await self.advance(env.backend, 101)
        assert await env.router.process_once() == 1  # the process deadline
        return pid

    async def test_process_deadline_waits_for_an_operator_by_default(self, env: Env) -> None:
        pid = await self.deadline_passed_at_b(env, TimeoutAction.TSQ)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_OPERATOR
        assert p.error_code == "PROCESS_TIMEOUT"
        b = (await env.manager.get_audit_trail(pid))[1]
        assert b.timed_out_at is not None and b.error_code == "PROCESS_TIMEOUT"
        await self.drive(env)  # B's late reply still continues the process
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED

    async def test_process_deadline_fail_withdraws_the_awaited_step(self, env: Env) -> None:
        pid = await self.deadline_passed_at_b(env, TimeoutAction.FAIL)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED and p.error_code == "PROCESS_TIMEOUT"
        b_command = (await env.manager.get_audit_trail(pid))[1].command_id
        meta = await env.bus.get_command(DOMAIN, b_command)
        assert meta is not None and meta.status is CommandStatus.CANCELED
        await self.drive(env)
        assert "StepB" not in env.services.calls

    async def test_process_deadline_compensate(self, env: Env) -> None:
        pid = await self.deadline_passed_at_b(env, TimeoutAction.COMPENSATE)
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.FAILED and p.error_code == "PROCESS_TIMEOUT"
        assert p.state.undone == ["undo_a"] and "StepB" not in env.services.calls

    async def test_process_deadline_after_the_end_is_ignored(self, env: Env) -> None:
        env.manager.process_timeout = 100
        pid = await env.manager.start({})
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
        await self.advance(env.backend, 101)
        assert await env.router.process_once() == 1
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == ["process is COMPLETED"]

    # -- recovery ----------------------------------------------------------------------

    async def test_new_routers_continue_in_flight_processes(self, env: Env) -> None:
        pids = [await env.manager.start({}) for _ in range(3)]
        await env.worker.process_once()
        await env.router.process_once()
        # "Restart": new manager, router and worker objects on the same storage.
        manager = PipelineProcess(env.bus)
        router = ProcessReplyRouter(env.backend, managers=[manager])
        for _ in range(10):
            await env.worker.process_once()
            await router.process_once()
        for pid in pids:
            p = await manager.get(pid)
            assert p is not None and p.status is ProcessStatus.COMPLETED

    async def test_recover_lists_processes_past_their_deadline(self, env: Env) -> None:
        env.manager.timeouts = {"a": 30}
        pid = await env.manager.start({})
        now = env.backend.clock.now()
        assert await env.router.recover(now) == []
        later = now + timedelta(seconds=60)
        stuck = await env.router.recover(later)
        assert [p.process_id for p in stuck] == [pid]
        assert await env.router.recover(later, grace_seconds=3600) == []
        # Without a deadline to go by: idle for longer than stuck_after.
        idle = await env.router.recover(later, grace_seconds=3600, stuck_after=30.0)
        assert [p.process_id for p in idle] == [pid]
        assert await env.router.recover(later, grace_seconds=3600, stuck_after=3600.0) == []
        # Refire: a timer visible at once acts exactly once.
        await env.router.recover(later, refire_timers=True)
        assert await env.router.process_once() == 1
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_OPERATOR and p.error_code == "STEP_TIMEOUT"
