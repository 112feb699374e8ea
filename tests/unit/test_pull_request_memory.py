"""The pull-request previews process (seeds 002/003) end to end in memory."""

from __future__ import annotations

from tests import pull_request_scenarios as scenarios

from commandbus.memory import InMemoryBackend
from commandbus.testing.clock import VirtualClock


def backend() -> InMemoryBackend:
    return InMemoryBackend(clock=VirtualClock())


async def test_opened_updated_closed() -> None:
    await scenarios.opened_updated_closed(backend())


async def test_update_while_deploying() -> None:
    await scenarios.update_while_deploying(backend())


async def test_a_failed_deploy_tears_down_the_others() -> None:
    await scenarios.a_failed_deploy_tears_down_the_others(backend())


async def test_duplicates_and_strays_change_nothing() -> None:
    await scenarios.duplicates_and_strays_change_nothing(backend())


async def test_a_deploy_that_times_out() -> None:
    memory = backend()
    clock = memory.clock
    assert isinstance(clock, VirtualClock)
    await scenarios.a_deploy_that_times_out(memory, clock.advance)


async def test_cancelled_by_an_operator() -> None:
    await scenarios.cancelled_by_an_operator(backend())


async def test_two_start_events_racing_make_one_process() -> None:
    await scenarios.two_start_events_racing_make_one_process(backend())


async def test_a_bad_event_is_parked_and_the_rest_go_on() -> None:
    await scenarios.a_bad_event_is_parked_and_the_rest_go_on(backend())
