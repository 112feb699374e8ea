"""The console app over HTTP (httpx against the ASGI app, in-memory backend): no anonymous
access, a viewer sees and cannot act, CSRF on every POST, payloads escaped, actions
audited with the operator's name."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
import pytest_asyncio

from commandbus import CommandBus, HandlerRegistry, PermanentCommandError, RetryPolicy, Worker
from commandbus.console import ConsoleUsers, create_app
from commandbus.console.auth import Role, parse_user
from commandbus.errors import ValidationError
from commandbus.memory import InMemoryBackend
from commandbus.models import AuditEventType, CommandStatus
from commandbus.testing.clock import VirtualClock

DOMAIN = "payments"
SCRIPT = "<script>alert('x')</script>"
OPERATOR = ("ada", "s3cret")
VIEWER = ("vic", "look")


class Shop:
    def __init__(self) -> None:
        self.backend = InMemoryBackend(clock=VirtualClock())
        self.bus = CommandBus(self.backend, retry_policy=RetryPolicy(max_attempts=1))
        registry = HandlerRegistry()

        @registry.handler(DOMAIN, "Debit")
        async def debit(command: Any, context: Any) -> None:
            raise PermanentCommandError("CARD_EXPIRED", f"card {command.data['card']} expired")

        self.worker = Worker(self.backend, DOMAIN, registry)

    async def park(self, card: str) -> str:
        sent = await self.bus.send(DOMAIN, "Debit", uuid4(), {"card": card})
        await self.worker.drain()
        return str(sent.command_id)


@pytest_asyncio.fixture
async def shop() -> Shop:
    return Shop()


@pytest_asyncio.fixture
async def client(shop: Shop) -> AsyncIterator[httpx.AsyncClient]:
    users = ConsoleUsers.from_specs(
        [f"{OPERATOR[0]}:{OPERATOR[1]}", f"{VIEWER[0]}:{VIEWER[1]}:viewer"], token="tok-1"
    )
    app = create_app(shop.backend, users, domains=[DOMAIN])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        yield http


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page) or re.search(
        r'"X-CSRF-Token": "([0-9a-f]+)"', page
    )
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


async def test_no_anonymous_access_and_wrong_credentials_are_refused(
    client: httpx.AsyncClient,
) -> None:
    anonymous = await client.get("/")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert (await client.get("/", auth=("ada", "wrong"))).status_code == 401
    assert (await client.get("/tsq", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await client.get("/", headers={"Authorization": "Bearer tok-1"})).status_code == 200
    # The static files (htmx, CSS) are served without credentials: they hold nothing.
    htmx = await client.get("/static/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:200]


async def test_payloads_and_errors_are_escaped(shop: Shop, client: httpx.AsyncClient) -> None:
    command_id = await shop.park(SCRIPT)
    for path in (f"/tsq/{DOMAIN}/{command_id}", f"/commands/{DOMAIN}/{command_id}", "/tsq"):
        page = (await client.get(path, auth=OPERATOR)).text
        assert SCRIPT not in page
        assert "&lt;script&gt;alert(" in page


async def test_a_viewer_sees_no_action_and_is_refused_when_posting(
    shop: Shop, client: httpx.AsyncClient
) -> None:
    command_id = await shop.park("4242")
    page = (await client.get(f"/tsq/{DOMAIN}/{command_id}", auth=VIEWER)).text
    assert "CARD_EXPIRED" in page
    assert 'id="retry"' not in page and '<form method="post"' not in page
    token = csrf_of(page)
    refused = await client.post(
        f"/tsq/{DOMAIN}/{command_id}/retry", data={"csrf_token": token}, auth=VIEWER
    )
    assert refused.status_code == 403
    meta = await shop.bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE


async def test_every_post_needs_the_users_csrf_token(shop: Shop, client: httpx.AsyncClient) -> None:
    command_id = await shop.park("4242")
    path = f"/tsq/{DOMAIN}/{command_id}/retry"
    assert (await client.post(path, auth=OPERATOR)).status_code == 403
    viewer_token = csrf_of((await client.get("/", auth=VIEWER)).text)
    wrong = await client.post(path, data={"csrf_token": viewer_token}, auth=OPERATOR)
    assert wrong.status_code == 403  # another user's token is not this user's
    meta = await shop.bus.get_command(DOMAIN, command_id)
    assert meta is not None and meta.status is CommandStatus.IN_TROUBLESHOOTING_QUEUE


async def test_retry_cancel_and_complete_are_audited_with_the_operators_name(
    shop: Shop, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    retried, canceled, completed = [await shop.park(str(n)) for n in range(3)]
    token = csrf_of((await client.get(f"/tsq/{DOMAIN}/{retried}", auth=OPERATOR)).text)
    caplog.set_level(logging.INFO, logger="commandbus.console")
    done = await client.post(
        f"/tsq/{DOMAIN}/{retried}/retry", data={"csrf_token": token}, auth=OPERATOR
    )
    assert done.status_code == 303 and "notice=command+retried" in done.headers["location"]
    htmx = await client.post(
        f"/tsq/{DOMAIN}/{canceled}/cancel",
        data={"reason": "customer asked"},
        headers={"HX-Request": "true", "X-CSRF-Token": token},
        auth=OPERATOR,
    )
    assert htmx.status_code == 200 and htmx.headers["hx-redirect"].startswith("/commands/")
    bad = await client.post(
        f"/tsq/{DOMAIN}/{completed}/complete",
        data={"csrf_token": token, "result": "[1, 2]"},
        auth=OPERATOR,
    )
    assert bad.status_code == 400 and "must be a JSON object" in bad.text
    await client.post(
        f"/tsq/{DOMAIN}/{completed}/complete",
        data={"csrf_token": token, "result": '{"paid": true}'},
        auth=OPERATOR,
    )
    expected = {
        retried: (AuditEventType.OPERATOR_RETRY, CommandStatus.PENDING),
        canceled: (AuditEventType.OPERATOR_CANCEL, CommandStatus.CANCELED),
        completed: (AuditEventType.OPERATOR_COMPLETE, CommandStatus.COMPLETED),
    }
    for command_id, (event_type, status) in expected.items():
        meta = await shop.bus.get_command(DOMAIN, command_id)
        assert meta is not None and meta.status is status
        [event] = [
            e for e in await shop.bus.get_audit_trail(command_id) if e.event_type is event_type
        ]
        assert event.details is not None and event.details.get("operator") == "ada"
    console_lines = [r for r in caplog.records if r.name == "commandbus.console.audit"]
    assert [getattr(r, "operator", None) for r in console_lines] == ["ada"] * 3
    # Acting twice is refused: the command is no longer in the TSQ.
    again = await client.post(
        f"/tsq/{DOMAIN}/{retried}/retry", data={"csrf_token": token}, auth=OPERATOR
    )
    assert again.status_code == 400


async def test_bulk_retry_retries_the_filtered_set(shop: Shop, client: httpx.AsyncClient) -> None:
    ids = [await shop.park(str(n)) for n in range(3)]
    token = csrf_of((await client.get("/tsq", auth=OPERATOR)).text)
    done = await client.post(
        "/tsq/bulk-retry",
        data={"csrf_token": token, "domain": DOMAIN, "command_type": "Debit"},
        auth=OPERATOR,
    )
    assert done.status_code == 303 and "3+retried" in done.headers["location"]
    for command_id in ids:
        meta = await shop.bus.get_command(DOMAIN, command_id)
        assert meta is not None and meta.status is CommandStatus.PENDING


async def test_dashboard_and_search_pages(shop: Shop, client: httpx.AsyncClient) -> None:
    command_id = await shop.park("1")
    dashboard = (await client.get("/", auth=VIEWER)).text
    assert "in the TSQ" in dashboard and 'hx-trigger="every 5s"' in dashboard
    partial = (await client.get("/partials/summary", auth=VIEWER)).text
    assert "<html" not in partial and "commands queued" in partial
    found = (await client.get("/commands", params={"status": "IN_TROUBLESHOOTING_QUEUE"},
                              auth=VIEWER)).text  # fmt: skip
    assert command_id in found
    meta = await shop.bus.get_command(DOMAIN, command_id)
    assert meta is not None
    by_correlation = await client.get(
        "/commands", params={"correlation_id": str(meta.correlation_id)}, auth=VIEWER
    )
    assert command_id in by_correlation.text
    nothing = await client.get("/commands", params={"correlation_id": str(uuid4())}, auth=VIEWER)
    assert command_id not in nothing.text
    bad = await client.get("/commands", params={"status": "NOPE"}, auth=VIEWER)
    assert bad.status_code == 400


def test_users_and_roles_are_parsed_with_clear_errors() -> None:
    assert parse_user("ada:pw") == ("ada", "pw", Role.OPERATOR)
    assert parse_user("vic:pw:viewer") == ("vic", "pw", Role.VIEWER)
    with pytest.raises(ValidationError, match="role must be one of"):
        parse_user("x:pw:admin")
    with pytest.raises(ValidationError, match="NAME:PASSWORD"):
        parse_user("justaname")
    with pytest.raises(ValidationError, match="no anonymous access"):
        ConsoleUsers.from_specs([])
