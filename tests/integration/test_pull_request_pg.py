"""The pull-request previews process (seeds 002/003) end to end on PostgreSQL."""

from __future__ import annotations

from tests import pull_request_scenarios as scenarios

from commandbus.postgres import PostgresBackend


async def test_opened_updated_closed(pg_backend: PostgresBackend) -> None:
    await scenarios.opened_updated_closed(pg_backend)


async def test_update_while_deploying(pg_backend: PostgresBackend) -> None:
    await scenarios.update_while_deploying(pg_backend)


async def test_a_failed_deploy_tears_down_the_others(pg_backend: PostgresBackend) -> None:
    await scenarios.a_failed_deploy_tears_down_the_others(pg_backend)


async def test_duplicates_and_strays_change_nothing(pg_backend: PostgresBackend) -> None:
    await scenarios.duplicates_and_strays_change_nothing(pg_backend)
