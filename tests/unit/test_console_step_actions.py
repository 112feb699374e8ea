"""Retry step and complete step from the console, for a process that waits for an
operator (its step timed out): confirmation in the page, CSRF, the operator's name in the
process's audit trail and on the audit log, refused for a viewer (httpx against the ASGI
app, in-memory backend on a virtual clock)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from examples.statement_report import StatementReportProcess
from examples.statement_report.models import StatementReportStep as Step

from commandbus import CommandBus
from commandbus.console import ConsoleUsers, create_app
from commandbus.memory import InMemoryBackend
from commandbus.process import ProcessReplyRouter, ProcessStatus
from commandbus.testing.clock import VirtualClock

OPERATOR = ("ada", "s3cret")
VIEWER = ("vic", "look")
INPUT = {"from_date": "2025-01-01", "to_date": "2025-01-31", "account_list": ["A-1"],
         "output_type": "csv"}  # fmt: skip


class TimedReport(StatementReportProcess):
    """The example with a 60 s timeout on its query step (default action: an operator)."""

    def get_step_timeout(self, step: Step, state: Any) -> float | None:
        return 60.0 if step is Step.QUERY else None


class Stalled:
    """A report whose query step nobody answers: after 60 s it waits for an operator."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.backend = InMemoryBackend(clock=self.clock)
        self.manager = TimedReport(CommandBus(self.backend))
        self.router = ProcessReplyRouter(self.backend, managers=[self.manager])

    async def time_out(self, pid: Any = None) -> Any:
        pid = pid or await self.manager.start(INPUT)
        await self.clock.advance(61)
        await self.router.drain()
        process = await self.manager.get(pid)
        assert process is not None and process.status is ProcessStatus.WAITING_FOR_OPERATOR
        return pid


def csrf_of(page: str) -> str:
    found = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page)
    assert found is not None
    return found.group(1)


@pytest_asyncio.fixture
async def stalled() -> Stalled:
    return Stalled()


@pytest_asyncio.fixture
async def client(stalled: Stalled) -> AsyncIterator[httpx.AsyncClient]:
    users = ConsoleUsers.from_specs(
        [f"{OPERATOR[0]}:{OPERATOR[1]}", f"{VIEWER[0]}:{VIEWER[1]}:viewer"]
    )
    app = create_app(stalled.backend, users, managers=[stalled.manager])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console"
    ) as http:
        yield http


async def test_an_operator_retries_then_completes_the_step(
    stalled: Stalled, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    pid = await stalled.time_out()
    path = f"/processes/reporting/{pid}"
    page = (await client.get(path, auth=OPERATOR)).text
    assert 'id="waiting-for-operator"' in page and "STEP_TIMEOUT" in page
    assert 'hx-confirm="Send step statement_query again, as a new command?"' in page
    assert 'id="complete-step"' in page
    token = csrf_of(page)
    caplog.set_level(logging.INFO, logger="commandbus.console")

    retried = await client.post(f"{path}/retry-step", data={"csrf_token": token}, auth=OPERATOR)
    assert retried.status_code == 303
    assert (
        "step+retried%3A+the+process+is+WAITING+at+step+statement_query"
        in (retried.headers["location"])
    )
    trail = await stalled.manager.get_audit_trail(pid)
    assert [e.error_code for e in trail] == ["OPERATOR_RETRY", None]
    assert trail[0].error_message is not None and "by ada" in trail[0].error_message
    # Acting again is refused: the process no longer waits for an operator.
    again = await client.post(f"{path}/retry-step", data={"csrf_token": token}, auth=OPERATOR)
    assert again.status_code == 400 and "not waiting for an operator" in again.text
    assert 'id="retry-step"' not in (await client.get(path, auth=OPERATOR)).text

    await stalled.time_out(pid)
    bad = await client.post(
        f"{path}/complete-step", data={"csrf_token": token, "result": "[1]"}, auth=OPERATOR
    )
    assert bad.status_code == 400 and "must be a JSON object" in bad.text
    done = await client.post(
        f"{path}/complete-step",
        data={"result": '{"result_path": "s3://by-hand"}'},
        headers={"HX-Request": "true", "X-CSRF-Token": token},
        auth=OPERATOR,
    )
    assert done.status_code == 200 and done.headers["hx-redirect"].startswith(path)
    process = await stalled.manager.get(pid)
    assert process is not None and process.current_step is Step.AGGREGATE
    assert process.state.query_result_path == "s3://by-hand"
    trail = await stalled.manager.get_audit_trail(pid)
    assert trail[1].error_code == "OPERATOR_COMPLETED" and "by ada" in str(trail[1].error_message)
    lines = [r for r in caplog.records if r.name == "commandbus.console.audit"]
    assert [(getattr(r, "operator", None), r.getMessage().split(" ")[2]) for r in lines] == [
        ("ada", "retry"),
        ("ada", "complete"),
    ]


async def test_a_viewer_sees_no_step_action_and_is_refused(
    stalled: Stalled, client: httpx.AsyncClient
) -> None:
    pid = await stalled.time_out()
    path = f"/processes/reporting/{pid}"
    page = (await client.get(path, auth=VIEWER)).text
    assert 'id="waiting-for-operator"' in page
    assert 'id="retry-step"' not in page and '<form method="post"' not in page
    token = csrf_of(page)
    for verb in ("retry", "complete"):
        refused = await client.post(f"{path}/{verb}-step", data={"csrf_token": token}, auth=VIEWER)
        assert refused.status_code == 403
    # An operator without the CSRF token is refused too.
    assert (await client.post(f"{path}/retry-step", auth=OPERATOR)).status_code == 403
    process = await stalled.manager.get(pid)
    assert process is not None and process.status is ProcessStatus.WAITING_FOR_OPERATOR
    assert [e.error_code for e in await stalled.manager.get_audit_trail(pid)] == [None]


async def test_without_its_manager_the_console_cannot_act_on_the_step(stalled: Stalled) -> None:
    pid = await stalled.time_out()
    users = ConsoleUsers.from_specs([f"{OPERATOR[0]}:{OPERATOR[1]}"])
    app = create_app(stalled.backend, users, domains=["reporting"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console"
    ) as http:
        page = (await http.get(f"/processes/reporting/{pid}", auth=OPERATOR)).text
        assert 'id="retry-step"' not in page and "start it with <code>--processes</code>" in page
        refused = await http.post(
            f"/processes/reporting/{pid}/retry-step",
            data={"csrf_token": csrf_of(page)},
            auth=OPERATOR,
        )
    assert refused.status_code == 400 and "no manager for process type" in refused.text
