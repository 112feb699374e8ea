"""Process behaviour: starting processes, bad input, bad state and failing hooks."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import pytest

from commandbus.bus import CommandBus
from commandbus.errors import (
    ValidationError,
)
from commandbus.process.errors import ProcessAlreadyExistsError, ProcessHookError
from commandbus.process.models import (
    ProcessStatus,
)
from commandbus.process.router import ProcessReplyRouter
from commandbus.testing.process_behaviour._pipeline import (
    DOMAIN,
    REPLIES,
    BehaviourBase,
    Env,
    OtherProcess,
    PipelineProcess,
    RouterCrash,
    S,
)


class EdgeBehaviour(BehaviourBase):
    """Process behaviour: starting processes, bad input, bad state and failing hooks."""

    # -- starting ----------------------------------------------------------------------

    async def test_start_with_bad_input_writes_nothing(self, env: Env) -> None:
        # One rule for every hook: create_initial_state's error is a ProcessHookError too.
        with pytest.raises(ProcessHookError, match="create_initial_state raised ValueError"):
            await env.manager.start({"invalid": True}, process_id=uuid4())
        assert await env.manager.find_by_status(list(ProcessStatus)) == []
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 0

    async def test_start_stores_a_copy_of_the_start_input(self, env: Env) -> None:
        given: dict[str, Any] = {"skip_b": True, "meta": {"tags": ["x"], "ratio": 0.5}}
        pid = await env.manager.start(given)
        given["meta"]["tags"].append("changed later")  # the stored copy is a deep copy
        expected = {"skip_b": True, "meta": {"tags": ["x"], "ratio": 0.5}}
        assert (await self.process(env, pid)).initial_data == expected
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED
        assert p.initial_data == expected  # step updates never change it
        [many] = await env.manager.start_many([(uuid4(), {"n": 1})])
        assert (await self.process(env, many)).initial_data == {"n": 1}

    async def test_start_input_must_be_a_json_object_within_the_limit(self, env: Env) -> None:
        small = PipelineProcess(CommandBus(env.backend, max_payload_bytes=64))
        bad: list[Any] = [
            ["not", "an", "object"],
            {"nan": float("nan")},
            {"blob": "x" * 100},
        ]
        for data in bad:
            with pytest.raises(ValidationError, match="initial_data"):
                # all or nothing: the good item before it is not started either
                await small.start_many([{"skip_b": True}, data])
        assert await env.manager.find_by_status(list(ProcessStatus)) == []
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 0
        assert (await small.get(await small.start({"blob": "x" * 10}))) is not None

    async def test_start_is_idempotent_for_a_given_id(self, env: Env) -> None:
        pid = uuid4()
        assert await env.manager.start({}, process_id=pid) == pid
        assert await env.manager.start({}, process_id=pid) == pid  # same request: same process
        with pytest.raises(ProcessAlreadyExistsError, match="other initial data"):
            await env.manager.start({"skip_b": True}, process_id=pid)
        assert len(await env.manager.get_audit_trail(pid)) == 1
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 1
        other = OtherProcess(env.bus)
        with pytest.raises(ProcessAlreadyExistsError):
            await other.start({}, process_id=pid)

    async def test_start_joins_the_callers_transaction(self, env: Env) -> None:
        class Boom(Exception):
            pass

        pid = uuid4()
        with pytest.raises(Boom):
            async with env.backend.transaction() as tx:
                await env.manager.start({}, process_id=pid, conn=tx)
                raise Boom
        assert await env.manager.get(pid) is None
        assert await env.backend.queue.depth(f"{DOMAIN}__commands") == 0
        async with env.backend.transaction() as tx:
            await env.manager.start({}, process_id=pid, conn=tx)
        assert (await self.process(env, pid)).status is ProcessStatus.WAITING_FOR_REPLY

    # -- bad state and hook failures ---------------------------------------------------

    async def test_unloadable_state_parks_the_reply_and_a_replay_after_the_fix_continues(
        self, env: Env
    ) -> None:
        pid = await env.manager.start({})
        await env.worker.process_once()
        # A deploy whose from_dict cannot read the stored state (here: the state changed
        # behind the manager's back).
        repo = env.manager.process_repo
        raw = await repo.get_by_id(DOMAIN, pid)
        assert raw is not None
        good_state = raw.state
        raw.state = {"unexpected": True}
        await repo.update(raw)
        await env.router.process_once()
        raw = await repo.get_by_id(DOMAIN, pid)
        assert raw is not None
        assert raw.status is ProcessStatus.WAITING_FOR_REPLY  # not failed: flagged
        assert raw.error_code == "STATE_LOAD_FAILED"
        assert raw.state == {"unexpected": True}  # kept as it was
        [parked] = await env.router.parked_messages()
        assert parked.process_id == pid and parked.message["outcome"] == "SUCCESS"
        assert await env.backend.queue.depth(REPLIES) == 0
        # The fix (here: the state readable again), then the operator replays the reply.
        raw.state = good_state
        await repo.update(raw)
        assert parked.id is not None
        assert await env.router.replay_parked(parked.id) is True
        await self.drive(env)
        p = await self.process(env, pid)
        assert p.status is ProcessStatus.COMPLETED and p.error_code is None

    async def test_a_reply_that_kills_the_router_is_parked_and_spares_its_batch(
        self, env: Env
    ) -> None:
        env.manager.crash_update_on = "a"
        bad = await env.manager.start({"poison": True})
        good = await env.manager.start({})
        await env.worker.process_once()  # both A commands reply: one batch of two
        router = ProcessReplyRouter(env.backend, managers=[env.manager], max_reply_attempts=3)
        crashes = 0
        for _ in range(20):
            try:
                if await router.process_once() == 0:
                    if await env.backend.queue.depth(REPLIES) == 0:
                        break
                    await self.advance(env.backend, 31)  # a lease of a dead router ran out
            except RouterCrash:
                crashes += 1  # a new router process would start here: same storage
                router = ProcessReplyRouter(
                    env.backend, managers=[env.manager], max_reply_attempts=3
                )
                await self.advance(env.backend, 31)
        assert crashes == 3  # the batch once, then the suspect alone, up to the cap
        g = await self.process(env, good)
        assert g.current_step is S.B  # the healthy reply went through
        b = await self.process(env, bad)
        assert b.current_step is S.A and b.version == 1  # nothing of the poison applied
        [parked] = await router.parked_messages()
        assert parked.process_id == bad and "delivered 4 times" in parked.reason

    async def test_hook_error_is_retried_then_parked_without_blocking_others(
        self, env: Env
    ) -> None:
        env.manager.fail_update_on = "a"
        bad = await env.manager.start({"poison": True})
        await env.worker.process_once()
        router = ProcessReplyRouter(env.backend, managers=[env.manager], max_reply_attempts=2)
        await router.process_once()
        assert router.stats.retried == 1
        p = await self.process(env, bad)
        assert p.status is ProcessStatus.WAITING_FOR_REPLY and p.version == 1
        # Meanwhile another process goes through.
        good = await env.manager.start({})
        await env.worker.process_once()
        await self.advance(env.backend, 31)  # the failed reply becomes visible again
        await router.process_once()
        assert router.stats.parked == 1
        # The failed reply is a suspect now: handled alone, the good one given back ...
        await router.process_once()
        g = await self.process(env, good)
        assert g.current_step is S.B  # ... and applied right after
        [parked] = await router.parked_messages()
        assert parked.process_id == bad and "update_state" in parked.reason
        # Fix the bug and replay: the process continues.
        env.manager.fail_update_on = None
        assert parked.id is not None
        assert await router.replay_parked(parked.id) is True
        await self.drive(env)
        assert (await self.process(env, bad)).status is ProcessStatus.COMPLETED
        assert await router.parked_messages() == []

    async def test_two_replays_of_one_parked_message_put_it_back_once(self, env: Env) -> None:
        await self.inject(env, {"not": "a reply"})
        await env.router.process_once()  # parked as malformed
        [parked] = await env.router.parked_messages()
        assert parked.id is not None
        results = await asyncio.gather(
            env.router.replay_parked(parked.id), env.router.replay_parked(parked.id)
        )
        assert sorted(results) == [False, True]
        assert await env.backend.queue.depth(REPLIES) == 1
