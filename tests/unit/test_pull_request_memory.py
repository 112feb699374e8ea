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
