"""The process manager part of ``make demo``: a few hundred StatementReport processes.

``python -m commandbus.demo`` calls :func:`run_process_demo` after its command-bus part
(found through ``commandbus.demo.PROCESS_DEMOS``). On the same database it starts
StatementReport processes (QUERY -> AGGREGATE -> RENDER) in waves, runs a worker and a
``ProcessReplyRouter`` in background tasks and shows the processes by status, live.

What goes wrong is chosen up front from a seeded random generator, per process, so the
story is the same on every run:

- some steps fail transiently once (the worker retries them, the process never notices);
- some steps break a business rule: the process deletes what its completed steps produced
  (compensation), then ends FAILED;
- some steps fail permanently and wait in the troubleshooting queue (the process is
  WAITING_FOR_TSQ) until an operator *retries* them (after fixing the cause: the process
  continues and completes), *completes* them by hand (idem), or *cancels* them (the
  process compensates and ends COMPENSATED).

It ends with the processes of this run by status and the audit trail of one compensated
process. The process domain is fixed (``reporting``), so the demo keeps the ids of the
processes it started and counts only those: repeated runs on one database stay correct.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from examples.statement_report.handlers import (
    CLEANUP_COMMANDS,
    DOMAIN,
    STEP_COMMANDS,
    register_statement_handlers,
)
from examples.statement_report.process import StatementReportProcess
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from commandbus.bus import CommandBus
from commandbus.errors import BusinessRuleException, PermanentCommandError, TransientCommandError
from commandbus.handler import HandlerContext, HandlerFn, HandlerRegistry
from commandbus.models import Command, JsonObject, TroubleshootingItem
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend
from commandbus.process import AuditEntryKind, ProcessAuditEntry, ProcessReplyRouter, ProcessStatus
from commandbus.worker import Worker

__all__ = ["Plan", "ProcessDemoOutcome", "Scenario", "run_process_demo"]

TERMINAL = frozenset(
    {
        ProcessStatus.COMPLETED,
        ProcessStatus.COMPENSATED,
        ProcessStatus.FAILED,
        ProcessStatus.CANCELED,
    }
)
#: The order of the rows of the live view and of the final table.
SHOWN_STATUSES = (
    ProcessStatus.WAITING_FOR_REPLY,
    ProcessStatus.WAITING_FOR_TSQ,
    ProcessStatus.COMPENSATING,
    ProcessStatus.COMPLETED,
    ProcessStatus.FAILED,
    ProcessStatus.COMPENSATED,
    ProcessStatus.CANCELED,
)
STYLES = {
    ProcessStatus.WAITING_FOR_REPLY: "cyan",
    ProcessStatus.WAITING_FOR_TSQ: "magenta",
    ProcessStatus.COMPENSATING: "yellow",
    ProcessStatus.COMPLETED: "green",
    ProcessStatus.FAILED: "red",
    ProcessStatus.COMPENSATED: "yellow",
    ProcessStatus.CANCELED: "yellow",
}

# Counts this run's processes by status: constant text, the domain and the ids are
# parameters (PostgreSQL only; other backends are asked through the repository).
_STATUS_COUNTS_SQL = (
    "SELECT status, count(*) FROM commandbus.process"
    " WHERE domain = %s AND process_id = ANY(%s) GROUP BY status"
)


@dataclass(frozen=True)
class Scenario:
    """What the simulated service does to one process's ``command_type``."""

    kind: str  # "transient", "refuse", "tsq_retry", "tsq_complete" or "tsq_cancel"
    command_type: str
    error_code: str
    error_message: str


#: The scripted failures: (kind, command type, error code, message, how many processes).
FAILURES: tuple[tuple[str, str, str, str, int], ...] = (
    ("refuse", "StatementDataAggregation", "ACCOUNT_CLOSED", "an account was closed", 8),
    ("refuse", "StatementRender", "REPORT_TOO_LARGE", "the statement exceeds 500 pages", 6),
    ("tsq_retry", "StatementDataAggregation", "MISSING_FX_RATE", "no EUR/CHF rate on 03-29", 4),
    ("tsq_complete", "StatementQuery", "ARCHIVE_OFFLINE", "the 2019 archive is offline", 2),
    ("tsq_cancel", "StatementRender", "TEMPLATE_MISSING", "no template for this account", 3),
)
TRANSIENT_FAILURES = 24


@dataclass
class Plan:
    """The processes to start, and which ones fail how (drawn from ``seed``)."""

    inputs: list[tuple[UUID, dict[str, Any]]]
    scenarios: dict[UUID, Scenario]
    #: Processes whose permanent failure an operator has fixed (their retry succeeds).
    fixed: set[UUID] = field(default_factory=set)

    @classmethod
    def draw(cls, processes: int, seed: int) -> Plan:
        scripted = sum(failure[4] for failure in FAILURES) + TRANSIENT_FAILURES
        if processes < scripted:
            raise ValueError(f"the process demo needs at least {scripted} processes")
        rng = random.Random(seed)
        inputs: list[tuple[UUID, dict[str, Any]]] = []
        for n in range(processes):
            month = rng.randint(1, 12)
            accounts = sorted(rng.sample(range(1, 1000), rng.randint(1, 3)))
            data = {
                "from_date": f"2024-{month:02d}-01",
                "to_date": f"2024-{month:02d}-28",
                "account_list": [f"ACC-{a:03d}" for a in accounts],
                "output_type": ("pdf", "html", "csv")[n % 3],
            }
            inputs.append((uuid4(), data))
        chosen = iter(rng.sample(range(processes), scripted))
        scenarios: dict[UUID, Scenario] = {}
        for kind, command_type, code, message, count in FAILURES:
            for _ in range(count):
                pid = inputs[next(chosen)][0]
                scenarios[pid] = Scenario(kind, command_type, code, message)
        for _ in range(TRANSIENT_FAILURES):
            pid = inputs[next(chosen)][0]
            command_type = rng.choice(STEP_COMMANDS)
            scenarios[pid] = Scenario("transient", command_type, "SERVICE_BUSY", "try again")
        return cls(inputs, scenarios)

    @property
    def process_ids(self) -> list[UUID]:
        return [pid for pid, _ in self.inputs]

    def count(self, kind: str) -> int:
        return sum(1 for s in self.scenarios.values() if s.kind == kind)

    def expected(self) -> dict[str, int]:
        """The final statuses this plan leads to."""
        failed = self.count("refuse")
        compensated = self.count("tsq_cancel")
        return {
            ProcessStatus.COMPLETED.value: len(self.inputs) - failed - compensated,
            ProcessStatus.FAILED.value: failed,
            ProcessStatus.COMPENSATED.value: compensated,
        }

    def first(self, kind: str) -> UUID:
        return next(pid for pid, _ in self.inputs if self.scenarios.get(pid, _NONE).kind == kind)


_NONE = Scenario("", "", "", "")


@dataclass
class ProcessDemoOutcome:
    """What the process demo did (for tests)."""

    process_ids: list[UUID]
    statuses: dict[str, int]
    expected: dict[str, int]
    operator_actions: dict[str, int]
    compensated_example: UUID
    trail: list[ProcessAuditEntry]
    seconds: float


def build_registry(plan: Plan, slow: bool) -> HandlerRegistry:
    """The example's simulated services (``handlers.py``), failing as ``plan`` says."""
    services = HandlerRegistry()
    register_statement_handlers(services)  # no random failures: the plan decides
    registry = HandlerRegistry()

    def scripted(inner: HandlerFn) -> HandlerFn:
        async def handle(command: Command, ctx: HandlerContext) -> JsonObject | None:
            if slow:
                await asyncio.sleep(random.uniform(0.01, 0.06))  # the service's latency
            pid = command.correlation_id
            scenario = plan.scenarios.get(pid) if pid is not None else None
            if scenario is not None and scenario.command_type == command.command_type:
                what = scenario.error_message
                if scenario.kind == "transient" and ctx.attempt == 1:
                    raise TransientCommandError(scenario.error_code, what)
                if scenario.kind == "refuse":
                    raise BusinessRuleException(scenario.error_code, what)
                if scenario.kind.startswith("tsq_") and pid not in plan.fixed:
                    raise PermanentCommandError(scenario.error_code, what)
            return await inner(command, ctx)

        return handle

    for command_type in (*STEP_COMMANDS, *CLEANUP_COMMANDS):
        registry.register(DOMAIN, command_type, scripted(services.get(DOMAIN, command_type).fn))
    return registry


async def run_process_demo(
    backend: Backend,
    console: Console,
    *,
    processes: int = 240,
    seed: int = 2024,
    waves: int = 12,
    wave_interval: float = 0.35,
    concurrency: int = 20,
    slow_handlers: bool = True,
    timeout: float = 60.0,
) -> ProcessDemoOutcome:
    """Run the StatementReport part of the demo on ``backend`` (schema applied)."""
    started = time.perf_counter()
    plan = Plan.draw(processes, seed)
    policy = RetryPolicy(max_attempts=3, backoff_schedule=(0.05,))
    bus = CommandBus(backend, retry_policy=policy)
    manager = StatementReportProcess(bus)
    worker = Worker(bus.backend, DOMAIN, build_registry(plan, slow_handlers), retry_policy=policy)
    router = ProcessReplyRouter(bus.backend, managers=[manager])
    tsq = TroubleshootingQueue(bus.backend)
    view = _View(bus.backend, plan, worker, router)

    console.rule(f"[bold]5. Run {processes} StatementReport processes[/] (process manager)")
    console.print(
        "Each process runs [cyan]StatementQuery → StatementDataAggregation → "
        "StatementRender[/]; if a step is refused (business rule) or an operator cancels it, "
        "the process undoes the completed steps ([yellow]DeleteAggregatedData, "
        "DeleteQueryResult[/]).\nThe simulated services (seed "
        f"{seed}): {plan.count('transient')} steps fail once (retried), "
        f"{plan.count('refuse')} refuse (business rule), "
        f"{plan.count('tsq_retry') + plan.count('tsq_complete') + plan.count('tsq_cancel')} "
        "fail permanently (troubleshooting queue). "
        f"Processes start in {waves} waves on domain [cyan]{DOMAIN}[/]."
    )
    tasks = [
        asyncio.create_task(worker.run(concurrency=concurrency, poll_interval=0.1)),
        asyncio.create_task(router.run(concurrency=2, poll_interval=0.1)),
    ]
    operator_actions: dict[str, int] = {}
    try:
        view.tasks = tasks
        size = -(-processes // waves)
        with Live(view.render(), console=console, refresh_per_second=8) as live:
            for offset in range(0, processes, size):
                await manager.start_many(plan.inputs[offset : offset + size])
                view.started = min(offset + size, processes)
                await view.refresh(live)
                await _sleep_refreshing(view, live, wave_interval)
            # Until every process has ended or waits for an operator.
            await view.wait(live, _only(TERMINAL | {ProcessStatus.WAITING_FOR_TSQ}), timeout)
        _end_live(console)

        console.rule("[bold]6. An operator works the troubleshooting queue[/]")
        operator_actions = await _operator(console, tsq, plan)
        with Live(view.render(), console=console, refresh_per_second=8) as live:
            await view.wait(live, _only(TERMINAL), timeout)
        _end_live(console)
    finally:
        await worker.stop(5)
        await router.stop(5)
        await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started

    example = plan.first("tsq_cancel")
    outcome = ProcessDemoOutcome(
        process_ids=plan.process_ids,
        statuses={s.value: n for s, n in view.counts.items()},
        expected=plan.expected(),
        operator_actions=operator_actions,
        compensated_example=example,
        trail=await manager.get_audit_trail(example),
        seconds=seconds,
    )
    await _summary(console, manager, plan, outcome)
    return outcome


def _end_live(console: Console) -> None:
    """Rich leaves a finished live view without its last newline when the output is not
    a terminal (a file, a pipe): add it there."""
    if not console.is_terminal:
        console.line()


def _only(statuses: frozenset[ProcessStatus]) -> Callable[[dict[ProcessStatus, int]], bool]:
    """Whether every process is in one of ``statuses``."""
    return lambda counts: counts.keys() <= statuses


async def _sleep_refreshing(view: _View, live: Live, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.1))
        await view.refresh(live)


class _View:
    """The live table: this run's processes by status, and the worker's and router's
    counters."""

    def __init__(
        self, backend: Backend, plan: Plan, worker: Worker, router: ProcessReplyRouter
    ) -> None:
        self.backend = backend
        self.plan = plan
        self.worker = worker
        self.router = router
        self.started = 0
        self.counts: dict[ProcessStatus, int] = {}
        self.tasks: Sequence[asyncio.Task[None]] = ()
        self._began = time.monotonic()

    async def refresh(self, live: Live) -> None:
        for task in self.tasks:
            if task.done():
                task.result()  # re-raise what stopped it
                raise RuntimeError("the worker or the router stopped unexpectedly")
        self.counts = await _count_statuses(self.backend, self.plan.process_ids)
        live.update(self.render(), refresh=True)

    async def wait(
        self, live: Live, done: Callable[[dict[ProcessStatus, int]], bool], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            await self.refresh(live)
            if sum(self.counts.values()) == len(self.plan.inputs) and done(self.counts):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes still running after {timeout:.0f} s: {self.counts}")
            await asyncio.sleep(0.1)

    def render(self) -> Group:
        total = len(self.plan.inputs)
        finished = sum(n for s, n in self.counts.items() if s in TERMINAL)
        header = Text.from_markup(
            f"[bold]StatementReport processes of this run[/]: {self.started}/{total} started, "
            f"{finished} finished, {time.monotonic() - self._began:.1f} s"
        )
        table = Table(show_edge=False, box=None, padding=(0, 1))
        table.add_column("status", min_width=16)
        table.add_column("processes", justify="right")
        table.add_column("", min_width=40)
        for status in SHOWN_STATUSES:
            n = self.counts.get(status, 0)
            style = STYLES[status]
            bar = "█" * round(40 * n / total) if total else ""
            table.add_row(Text(status.value, style=style), str(n), Text(bar, style=style))
        w, r = self.worker.stats, self.router.stats
        counters = Text.from_markup(
            f"commands: [green]✓ {w.completed}[/] [yellow]↻ {w.retried} retried[/] "
            f"[magenta]⚠ {w.to_troubleshooting} to TSQ[/] "
            f"[red]✗ {w.business_failures} refused[/]   "
            f"router: {r.applied} replies applied"
        )
        return Group(header, table, counters)


async def _count_statuses(backend: Backend, ids: list[UUID]) -> dict[ProcessStatus, int]:
    from commandbus.postgres import PostgresBackend

    counts: Counter[str] = Counter()
    if isinstance(backend, PostgresBackend):
        async with backend.transaction() as conn:
            cursor = await conn.execute(_STATUS_COUNTS_SQL, (DOMAIN, ids))
            for status, n in await cursor.fetchall():
                counts[status] = n
    else:
        wanted = set(ids)
        for process in await backend.processes.find_by_status(DOMAIN, list(ProcessStatus)):
            if process.process_id in wanted:
                counts[process.status.value] += 1
    return {status: counts[status.value] for status in ProcessStatus if counts[status.value]}


async def _operator(console: Console, tsq: TroubleshootingQueue, plan: Plan) -> dict[str, int]:
    """List this run's commands in the TSQ, then retry, complete or cancel each."""
    actions = {
        "tsq_retry": "fix the FX rate, retry",
        "tsq_complete": "run the query by hand, complete",
        "tsq_cancel": "cancel (customer withdrew)",
    }
    order = list(actions)

    def kind(item: TroubleshootingItem) -> str:
        pid = item.correlation_id  # the process id: only this run's are in plan
        return plan.scenarios.get(pid, _NONE).kind if pid is not None else ""

    listed = await tsq.list_troubleshooting(DOMAIN, limit=10_000)
    items = sorted(
        (item for item in listed if kind(item) in actions), key=lambda i: order.index(kind(i))
    )
    table = Table(title=f"commandbus tsq list --domain {DOMAIN}", title_justify="left")
    table.add_column("command id", no_wrap=True)
    table.add_column("type")
    table.add_column("error", overflow="fold")
    table.add_column("operator action", overflow="fold")
    for item in items:
        table.add_row(
            str(item.command_id)[:8] + "…",
            item.command_type,
            f"{item.last_error_code}: {item.last_error_msg}",
            actions[kind(item)],
        )
    console.print(table)
    done: Counter[str] = Counter()
    for item in items:
        assert item.correlation_id is not None
        pid = item.correlation_id
        action = kind(item)
        if action == "tsq_retry":
            plan.fixed.add(pid)
            await tsq.operator_retry(DOMAIN, item.command_id, operator="demo-operator")
        elif action == "tsq_complete":
            path = f"s3://statements/query/manual/{pid}.json"
            await tsq.operator_complete(
                DOMAIN, item.command_id, {"result_path": path}, operator="demo-operator"
            )
        elif action == "tsq_cancel":
            await tsq.operator_cancel(
                DOMAIN, item.command_id, "customer withdrew the request", "demo-operator"
            )
        done[action] += 1
    console.print(
        f"The operator retried {done['tsq_retry']} commands "
        "([dim]commandbus tsq retry[/]), completed "
        f"{done['tsq_complete']} by hand ([dim]commandbus tsq complete[/]) and canceled "
        f"{done['tsq_cancel']} ([dim]commandbus tsq cancel[/]); their processes go on:"
    )
    return dict(done)


async def _summary(
    console: Console,
    manager: StatementReportProcess,
    plan: Plan,
    outcome: ProcessDemoOutcome,
) -> None:
    console.rule("[bold]7. Processes by status[/]")
    meaning = {
        ProcessStatus.COMPLETED: (
            f"all steps done ({plan.count('transient')} after a retried step, "
            f"{plan.count('tsq_retry') + plan.count('tsq_complete')} after an operator "
            "retry or completion)"
        ),
        ProcessStatus.FAILED: "a step refused (business rule): compensated, then FAILED",
        ProcessStatus.COMPENSATED: "step canceled by an operator in the TSQ: compensated",
    }
    table = Table(
        title=f"{len(outcome.process_ids)} StatementReport processes in {outcome.seconds:.1f} s",
        title_justify="left",
    )
    table.add_column("status")
    table.add_column("processes", justify="right")
    table.add_column("what happened", overflow="fold")
    for status in SHOWN_STATUSES:
        n = outcome.statuses.get(status.value, 0)
        if n:
            table.add_row(Text(status.value, style=STYLES[status]), str(n), meaning.get(status, ""))
    table.add_section()
    table.add_row("total", str(sum(outcome.statuses.values())), "")
    console.print(table)
    if outcome.statuses != outcome.expected:
        console.print(f"[red]Expected {outcome.expected}, got {outcome.statuses}.[/]")

    process = await manager.get(outcome.compensated_example)
    assert process is not None
    trail = Table(
        title=(
            f"Audit trail of a compensated process: {process.process_id}\n"
            f"status {process.status.value}, error {process.error_code}: "
            f"{process.error_message}"
        ),
        title_justify="left",
    )
    trail.add_column("#", justify="right")
    trail.add_column("step", no_wrap=True)
    trail.add_column("command", no_wrap=True)
    trail.add_column("reply", overflow="fold")
    for index, entry in enumerate(outcome.trail, 1):
        step = Text(entry.step_name)
        if entry.kind is AuditEntryKind.COMPENSATION:
            step = Text.assemble(("↩ compensation:\n", "yellow"), entry.step_name)
        reply = Text(entry.reply_outcome.value if entry.reply_outcome else "-")
        if entry.error_code:
            reply.append(f" ({entry.error_code}: {entry.error_message})", style="dim")
        trail.add_row(str(index), step, entry.command_type, reply)
    console.print(trail)
    console.print(
        Panel.fit(
            "Explore the processes with the CLI (same database):\n"
            f"  commandbus process list -d {DOMAIN} --status COMPENSATED\n"
            f"  commandbus process show -d {DOMAIN} \\\n      {process.process_id}",
            title="Next",
        )
    )
