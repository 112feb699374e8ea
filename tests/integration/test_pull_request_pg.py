"""The pull-request previews process (seeds 002/003) end to end on PostgreSQL."""

from __future__ import annotations

from tests import pull_request_scenarios as scenarios

from commandbus.postgres import PostgresBackend
from commandbus.testing.pg import make_due


async def test_opened_updated_closed(pg_backend: PostgresBackend) -> None:
    await scenarios.opened_updated_closed(pg_backend)


async def test_update_while_deploying(pg_backend: PostgresBackend) -> None:
    await scenarios.update_while_deploying(pg_backend)


async def test_a_failed_deploy_tears_down_the_others(pg_backend: PostgresBackend) -> None:
    await scenarios.a_failed_deploy_tears_down_the_others(pg_backend)


async def test_duplicates_and_strays_change_nothing(pg_backend: PostgresBackend) -> None:
    await scenarios.duplicates_and_strays_change_nothing(pg_backend)


async def test_a_deploy_that_times_out(pg_backend: PostgresBackend) -> None:
    async def advance(seconds: float) -> None:
        await make_due(pg_backend, seconds)  # the database keeps its own time

    await scenarios.a_deploy_that_times_out(pg_backend, advance)


async def test_cancelled_by_an_operator(pg_backend: PostgresBackend) -> None:
    await scenarios.cancelled_by_an_operator(pg_backend)


async def test_two_start_events_racing_make_one_process(pg_backend: PostgresBackend) -> None:
    await scenarios.two_start_events_racing_make_one_process(pg_backend)


async def test_a_bad_event_is_parked_and_the_rest_go_on(pg_backend: PostgresBackend) -> None:
    await scenarios.a_bad_event_is_parked_and_the_rest_go_on(pg_backend)
