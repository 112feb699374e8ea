"""The event store from the command line: ``events show|tail`` and ``subscription
list|parked|reset``, each in a ``python -m commandbus`` subprocess against a fresh database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool
from tests.acceptance.test_process_cli import cli

from commandbus.events import EventContext, EventStore, NewEvent, RecordedEvent, Subscription
from commandbus.postgres import PostgresBackend

pytestmark = pytest.mark.acceptance


async def populate(pool: AsyncConnectionPool[Any]) -> tuple[EventStore, list[int]]:
    """Two orders and a customer; subscription ``orders`` handled them, failing on one."""
    backend = PostgresBackend(pool)
    store = EventStore(backend)
    placed = await store.append("order-1", [NewEvent("Placed", {"total": 30}), NewEvent("Paid")])
    await store.append("customer-7", NewEvent("Joined", {"name": "<b>Ada</b>"}))
    await store.append("order-2", NewEvent("Placed", {"total": 5}))
    bad = placed.positions[1]

    async def handle(event: RecordedEvent, context: EventContext) -> None:
        if event.position == bad:
            raise ValueError("no payment provider")

    subscription = Subscription(
        backend, "orders", handle, categories=["order"], max_attempts=2, retry_delay=0
    )
    await subscription.drain(wait=60)
    return store, placed.positions


async def test_events_show_and_tail(pg_pool: AsyncConnectionPool[Any], pg_dsn: str) -> None:
    await populate(pg_pool)
    shown = cli("events", "show", "order-1", dsn=pg_dsn)
    assert shown.returncode == 0, shown.stderr
    assert "Stream order-1 (2 shown)" in shown.stdout
    assert "Placed" in shown.stdout and "Paid" in shown.stdout and '{"total":30}' in shown.stdout
    as_json = json.loads(cli("events", "show", "order-1", "--json", dsn=pg_dsn).stdout)
    assert [e["version"] for e in as_json] == [1, 2]

    tail = cli("events", "tail", "--from-start", "--no-follow", "--json", dsn=pg_dsn)
    assert tail.returncode == 0, tail.stderr
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(e["stream"], e["event_type"]) for e in lines] == [
        ("order-1", "Placed"),
        ("order-1", "Paid"),
        ("customer-7", "Joined"),
        ("order-2", "Placed"),
    ]
    only = cli("events", "tail", "--from-start", "-c", "customer", "-n", "1", dsn=pg_dsn)
    assert only.returncode == 0, only.stderr
    assert "customer-7#1  Joined" in only.stdout and "<b>Ada</b>" in only.stdout
    # From the end (the default) with --no-follow: nothing new yet.
    nothing = cli("events", "tail", "--no-follow", dsn=pg_dsn)
    assert nothing.returncode == 0 and nothing.stdout == ""

    bad = cli("events", "show", "not a stream", dsn=pg_dsn)
    assert bad.returncode == 1 and "invalid stream name" in bad.stderr
    assert "Traceback" not in bad.stderr


async def test_subscription_list_parked_and_reset(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    store, positions = await populate(pg_pool)
    listed = cli("subscription", "list", dsn=pg_dsn)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.strip().startswith("orders"))
    assert row.split()[:5] == ["orders", str(positions[-1] + 2), "2", "0", "1"]
    info = json.loads(cli("subscription", "list", "--json", dsn=pg_dsn).stdout)
    assert info[0]["parked"] == 1 and info[0]["categories"] == ["order"]

    parked = cli("subscription", "parked", "orders", dsn=pg_dsn)
    assert parked.returncode == 0, parked.stderr
    assert "order-1#2" in parked.stdout and "ValueError: no payment provider" in parked.stdout
    unknown = cli("subscription", "parked", "nobody", dsn=pg_dsn)
    assert unknown.returncode == 1 and "no subscription named 'nobody'" in unknown.stderr

    reset = cli("subscription", "reset", "orders", "--yes", dsn=pg_dsn)
    assert reset.returncode == 0, reset.stderr
    assert "reset to position 0" in reset.stdout
    again = await store.subscription("orders")
    assert again is not None and again.checkpoint.position == 0 and again.lag == 3
    refused = cli("subscription", "reset", "orders", dsn=pg_dsn)  # no --yes, no terminal
    assert refused.returncode == 1 and "Aborted" in refused.stderr


async def test_process_show_puts_an_event_driven_process_branches_side_by_side(
    pg_pool: AsyncConnectionPool[Any], pg_dsn: str
) -> None:
    from tests.pull_request_scenarios import Previews

    system = Previews(PostgresBackend(pg_pool), failing={"qa"})
    await system.publish("PullRequestOpened", environments=["staging", "qa"], commit="a1")
    await system.settle()
    shown = cli("process", "show", "--domain", "previews", str(system.pid), dsn=pg_dsn)
    assert shown.returncode == 0, shown.stderr
    lanes = shown.stdout.split("Branches", 1)[1]
    header = lanes.splitlines()[2]
    assert "staging" in header and "qa" in header  # one column per branch
    assert "deploy-staging #1 DeployPreview" in lanes and "undone: yes" in lanes
    assert "deploy-qa #1 DeployPreview" in lanes and "FAILED" in lanes
    document = json.loads(
        cli("process", "show", "--domain", "previews", str(system.pid), "--json", dsn=pg_dsn).stdout
    )
    assert document["branches"]["qa"] == [
        {"task": "deploy-qa", "run": 1, "command": "DeployPreview", "outcome": "FAILED",
         "undone": ""}
    ]  # fmt: skip
    assert document["branches"]["staging"][0]["undone"] == "yes"
