"""The event-driven part of ``make demo`` (pull-request previews), in memory and on
PostgreSQL: each pull request ends as its story says, and what was deployed is what was
torn down but for the one left open."""

from __future__ import annotations

import io
from typing import Any

import pytest
from examples.pull_request.demo import run_process_demo
from rich.console import Console

from commandbus.memory import InMemoryBackend
from commandbus.postgres import PostgresBackend

pytestmark = pytest.mark.acceptance


async def check(backend: Any) -> str:
    out = io.StringIO()
    outcome = await run_process_demo(backend, Console(file=out, width=120))
    assert list(outcome.statuses.values()) == ["COMPLETED", "COMPENSATED", "IN_PROGRESS"]
    deployed = [(env, commit) for _, env, commit in outcome.cloud.deployed]
    torn_down = [(env, commit) for _, env, commit in outcome.cloud.torn_down]
    assert deployed == [("staging", c) for c in ("a1", "b2", "c3", "d4")]
    assert torn_down == [("staging", c) for c in ("a1", "b2", "c3")]
    text = out.getvalue()
    assert "DEPLOY_FAILED: deploy-qa: no capacity left in qa" in text
    return text


async def test_in_memory() -> None:
    await check(InMemoryBackend())


async def test_on_postgresql_twice(pg_backend: PostgresBackend) -> None:
    await check(pg_backend)
    await check(pg_backend)  # a second run on the same database starts new pull requests
