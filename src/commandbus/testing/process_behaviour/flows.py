"""Process behaviour: the happy path, conditional steps, stray and malformed messages."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from typing import Any
from uuid import uuid4

from commandbus.models import Reply, ReplyOutcome
from commandbus.process.models import (
    ProcessMessageDisposition,
    ProcessStatus,
)
from commandbus.process.router import ProcessReplyRouter
from commandbus.testing.process_behaviour._pipeline import (
    DOMAIN,
    REPLIES,
    BehaviourBase,
    Env,
    PipelineState,
    S,
)


class FlowBehaviour(BehaviourBase):
    """Process behaviour: the happy path, conditional steps, stray and malformed messages."""

    # -- happy path, audit, conditional steps -------------------------------------------

    async def test_happy_path_completes_with_typed_state_and_ordered_audit(self, env: Env) -> None:
        pid = await env.manager.start({})
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY
        assert p.current_step is S.A
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert isinstance(p.state, PipelineState)
        assert p.state.results == {
            "a": "StepA-ok",
            "b": "StepB-ok",
            "c": "StepC-ok",
            "d": "StepD-ok",
        }
        assert p.current_step is S.D
        assert p.completed_at is not None and p.awaiting_command_id is None
        trail = await env.manager.get_audit_trail(pid)
        assert [(e.step_name, e.command_type, e.reply_outcome) for e in trail] == [
            ("a", "StepA", ReplyOutcome.SUCCESS),
            ("b", "StepB", ReplyOutcome.SUCCESS),
            ("c", "StepC", ReplyOutcome.SUCCESS),
            ("d", "StepD", ReplyOutcome.SUCCESS),
        ]
        assert trail[1].command_data == {"step": "b", "seen": ["a"]}
        assert trail[2].reply_data == {"value": "StepC-ok"}
        assert trail[2].command_data == {"step": "c", "seen": ["a", "b"]}
        for earlier, later in itertools.pairwise(trail):
            assert earlier.received_at is not None and earlier.received_at <= later.sent_at
        # The commands were sent with the process id as correlation id.
        for e in trail:
            meta = await env.bus.get_command(DOMAIN, e.command_id)
            assert meta is not None and meta.correlation_id == pid
            assert meta.reply_to == REPLIES
        assert env.router.stats.applied == 4

    async def test_conditional_step_is_skipped(self, env: Env) -> None:
        pid = await env.manager.start({"skip_b": True})
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert await self.steps_sent(env, pid) == [
            ("a", "SUCCESS"),
            ("c", "SUCCESS"),
            ("d", "SUCCESS"),
        ]

    async def test_find_by_status(self, env: Env) -> None:
        done = await env.manager.start({})
        await self.drive(env)
        waiting = await env.manager.start({})
        found = await env.manager.find_by_status([ProcessStatus.WAITING_FOR_REPLY])
        assert [p.process_id for p in found] == [waiting]
        found = await env.manager.find_by_status([ProcessStatus.COMPLETED])
        assert [p.process_id for p in found] == [done]
        assert isinstance(found[0].state, PipelineState)

    # -- strays ----------------------------------------------------------------------------

    async def test_duplicate_reply_is_ignored(self, env: Env) -> None:
        pid = await env.manager.start({})
        await self.drive(env)
        before = await self.process(env, pid)
        first = (await env.manager.get_audit_trail(pid))[0]
        dup = Reply(first.command_id, pid, ReplyOutcome.SUCCESS, {"value": "again"})
        await self.inject(env, dup.to_message())
        await self.drive(env)
        after = await self.process(env, pid)
        assert after.version == before.version and after.state == before.state
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == ["process is COMPLETED"]
        assert await env.backend.queue.depth(REPLIES) == 0

    async def test_duplicate_reply_while_running_is_ignored(self, env: Env) -> None:
        pid = await env.manager.start({})
        await env.worker.process_once()
        await env.router.process_once()  # A answered, B sent
        first = (await env.manager.get_audit_trail(pid))[0]
        dup = Reply(first.command_id, pid, ReplyOutcome.SUCCESS, {"value": "again"})
        await self.inject(env, dup.to_message())
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.current_step is S.B and p.state.results == {"a": "StepA-ok"}
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == [
            "duplicate reply: command already answered SUCCESS"
        ]
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
        assert len(await env.manager.get_audit_trail(pid)) == 4

    async def test_replies_for_unknown_process_without_correlation_and_malformed(
        self, env: Env
    ) -> None:
        unknown = Reply(uuid4(), uuid4(), ReplyOutcome.SUCCESS, {})
        uncorrelated = Reply(uuid4(), None, ReplyOutcome.SUCCESS, {})
        await self.inject(env, unknown.to_message(), uncorrelated.to_message(), {"what": "is this"})
        assert await env.router.process_once() == 3
        assert await env.backend.queue.depth(REPLIES) == 0
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == [
            "unknown process",
            "reply has no correlation id",
        ]
        [parked] = await env.router.parked_messages()
        assert parked.message == {"what": "is this"}
        assert parked.reason.startswith("malformed reply message")

    async def test_messages_that_are_not_objects_are_parked_and_the_queue_moves_on(
        self, env: Env
    ) -> None:
        # Anyone can write to a queue: none of these may stop the router.
        junk: list[Any] = [[], "a string", None, 42, True, 1.5, {"kind": 7}]
        junk.append({"kind": "commandbus.process_timer", "domain": ["x"], "process_id": 1})
        bad_types = Reply(uuid4(), uuid4(), ReplyOutcome.FAILED).to_message()
        bad_types.update(error_code=["E"], error_message={"no": "text"})
        junk.append(bad_types)
        await self.inject(env, *junk)
        pid = await env.manager.start({})  # a canary behind the junk
        await self.drive(env)
        assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
        parked = await env.router.parked_messages()
        canonical = functools.partial(json.dumps, sort_keys=True)
        assert sorted(canonical(r.message) for r in parked) == sorted(map(canonical, junk))
        assert all(r.reason.startswith("malformed") for r in parked), [r.reason for r in parked]
        assert await env.backend.queue.depth(REPLIES) == 0

    async def test_reply_for_a_command_of_another_process_is_ignored(self, env: Env) -> None:
        pid = await env.manager.start({})
        stray = Reply(uuid4(), pid, ReplyOutcome.SUCCESS, {"value": "x"})
        await self.inject(env, stray.to_message())
        await env.router.process_once()
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.version == 1
        assert await self.log(env, ProcessMessageDisposition.IGNORED) == [
            "command was not sent by this process"
        ]

    async def test_two_routers_racing_on_duplicates_advance_once(self, env: Env) -> None:
        pids = [await env.manager.start({}) for _ in range(5)]
        await env.worker.process_once()  # the five A commands reply
        # Duplicate every reply: 10 replies for 5 commands.
        messages = []
        for pid in pids:
            first = (await env.manager.get_audit_trail(pid))[0]
            messages.append(Reply(first.command_id, pid, ReplyOutcome.SUCCESS, {"value": "v"}))
        await self.inject(env, *[m.to_message() for m in messages])
        other = ProcessReplyRouter(env.backend, managers=[env.manager], batch_size=1)
        env.router.batch_size = 1

        async def run(router: ProcessReplyRouter) -> None:
            while await router.process_once():  # noqa: ASYNC110 - yield between batches
                await asyncio.sleep(0)

        await asyncio.gather(run(env.router), run(other))
        for pid in pids:
            assert await self.steps_sent(env, pid) == [("a", "SUCCESS"), ("b", None)]
            p = await self.process(env, pid)
            assert p.command_seq == 2 and p.current_step is S.B
        assert env.router.stats.applied + other.stats.applied == 5
        assert env.router.stats.ignored + other.stats.ignored == 5
        await self.drive(env)
        for pid in pids:
            assert (await self.process(env, pid)).status is ProcessStatus.COMPLETED
