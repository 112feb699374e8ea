"""Retry step and complete step in a real browser (Chromium headless, Playwright), on a
console served by uvicorn over a real PostgreSQL with a router running: a statement
report's query step times out, nobody answers it, and the process waits for an operator.
A viewer sees it waiting, has no button and is refused when it posts anyway; an operator
retries the step, then (timed out again) completes it by hand, each behind a
confirmation, with its name in the process's audit trail."""

from __future__ import annotations

from typing import Any

from examples.statement_report import StatementReportProcess
from examples.statement_report.models import StatementReportStep as Step
from tests.acceptance.test_console_browser import (
    INPUT,
    OPERATOR,
    VIEWER,
    Running,
    browser,
    open_as,
    screenshot,
    serving,
)

from commandbus.postgres import PostgresBackend
from commandbus.process import ProcessStatus

__all__ = ["browser"]  # the fixture, imported for the tests below

REPLIES = "reporting__process_replies"


class TimedReport(StatementReportProcess):
    """The example with a 60 s timeout on its query step (default action: an operator)."""

    def get_step_timeout(self, step: Step, state: Any) -> float | None:
        return 60.0 if step is Step.QUERY else None


async def time_out(system: Running, pid: Any) -> None:
    """Make the step's timer due now (instead of waiting a minute); the router fires it."""
    async with system.backend.pool.connection() as conn:
        await conn.execute(
            "UPDATE commandbus.queue_message SET vt = now() WHERE queue_name = %s", (REPLIES,)
        )
    await system.wait_for_status(pid, ProcessStatus.WAITING_FOR_OPERATOR)


async def test_an_operator_retries_and_completes_a_step_a_viewer_cannot(
    pg_backend: PostgresBackend, browser: Any
) -> None:
    system = Running(pg_backend, manager=TimedReport)
    async with serving(system, worker=False) as running:
        pid = await running.manager.start(INPUT)
        await time_out(running, pid)
        url = f"{running.base}/processes/reporting/{pid}"

        viewer = await open_as(browser, VIEWER)
        await viewer.goto(url)
        assert "waits for an operator" in await viewer.locator("#waiting-for-operator").inner_text()
        assert await viewer.locator("#retry-step, #complete-step").count() == 0
        status = await viewer.evaluate(
            """async ([url]) => {
                const token = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRF-Token"];
                const response = await fetch(url, {
                    method: "POST",
                    headers: {"Content-Type": "application/x-www-form-urlencoded"},
                    body: "csrf_token=" + encodeURIComponent(token),
                });
                return response.status;
            }""",
            [f"/processes/reporting/{pid}/retry-step"],
        )
        assert status == 403
        assert await running.status_of(pid) is ProcessStatus.WAITING_FOR_OPERATOR

        page = await open_as(browser, OPERATOR)  # accepts every confirmation
        await page.goto(url)
        await screenshot(page, "process-waiting")
        await page.click("#retry-step")
        await page.wait_for_selector("text=step retried")
        assert await page.locator("#process-status").inner_text() == "WAITING"
        trail = await running.manager.get_audit_trail(pid)
        assert [e.error_code for e in trail] == ["OPERATOR_RETRY", None]
        assert "by ada" in str(trail[0].error_message)

        await time_out(running, pid)
        await page.goto(url)
        await page.fill("#step-result", '{"result_path": "s3://statements/by-hand.json"}')
        await page.click("#complete-step")
        await page.wait_for_selector("text=step completed")
        assert "statement_data_aggregation" in await page.locator("dl.meta").inner_text()
        process = await running.manager.get(pid)
        assert process is not None and process.current_step is Step.AGGREGATE
        assert process.state.query_result_path == "s3://statements/by-hand.json"
        trail = await running.manager.get_audit_trail(pid)
        assert trail[1].error_code == "OPERATOR_COMPLETED" and "by ada" in str(
            trail[1].error_message
        )
