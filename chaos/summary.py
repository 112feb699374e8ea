"""The printed summary of a chaos run: outcome table, faults, throughput over time, agents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.agents import AgentSet, Finding
from chaos.faults import Fault
from chaos.metrics import Sample, rate_between
from chaos.report import Accounting


@dataclass
class RunFigures:
    seed: int
    workers: int
    routers: int
    wall_seconds: float
    run_seconds: float  # first send to last completion (or the deadline)
    deadline_hit: bool
    units: int
    commands_done: int
    processes_done: int
    unsent_commands: int
    unsent_processes: int
    send_retries: int
    sampler_errors: int
    agent_errors: dict[str, int] = field(default_factory=dict)  # ERROR lines per agent log

    @property
    def throughput(self) -> float:
        return self.units / self.run_seconds if self.run_seconds > 0 else 0.0


def _fmt_seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def failures(acc: Accounting, figures: RunFigures, findings: list[Finding]) -> list[str]:
    """Why the run fails (empty: it passed)."""
    reasons = []
    if acc.lost:
        reasons.append(f"{acc.lost} lost")
    if acc.duplicated:
        reasons.append(f"{acc.duplicated} duplicated / inconsistent")
    if acc.stuck:
        reasons.append(f"{acc.stuck} stuck (nothing will move them)")
    if figures.deadline_hit and acc.in_flight:
        reasons.append(f"{acc.in_flight} still in flight at the deadline")
    # A stall that never ended: the agent was still not consuming at the end.
    crashes = [f for f in findings if f.kind in ("exited", "heartbeat") or f.seconds is None]
    if crashes:
        reasons.append(f"{len(crashes)} agent crash/hang findings")
    return reasons


def print_summary(
    console: Console,
    acc: Accounting,
    figures: RunFigures,
    faults: list[Fault],
    samples: list[Sample],
    agents: AgentSet,
) -> list[str]:
    table = Table(title="chaos run: outcome", title_justify="left")
    table.add_column("")
    table.add_column("commands", justify="right")
    table.add_column("processes", justify="right")
    table.add_column("event processes", justify="right")
    table.add_column("total", justify="right")
    ev = acc.events
    rows: list[tuple[str, int, int, int]] = [
        ("sent (committed)", acc.commands_sent, acc.processes_sent, ev.sent),
        ("completed", acc.cmd("COMPLETED"), acc.proc("COMPLETED"), ev.count("COMPLETED")),
        ("failed / canceled / compensated", acc.cmd("FAILED", "CANCELED"),
         acc.proc("FAILED", "CANCELED", "COMPENSATED"),
         ev.count("FAILED", "CANCELED", "COMPENSATED")),
        ("in TSQ", acc.cmd("IN_TROUBLESHOOTING_QUEUE"), acc.proc("WAITING_FOR_TSQ"),
         ev.count("WAITING_FOR_TSQ")),
        ("still in flight", acc.commands_in_flight, acc.processes_in_flight, ev.in_flight),
        ("stuck", acc.commands_stuck, acc.processes_stuck, ev.stuck + ev.parked),
        ("lost", acc.cmd("LOST"), acc.proc("LOST"), ev.lost),
    ]  # fmt: skip
    for label, c, p, e in rows:
        style = "red" if label in ("stuck", "lost") and c + p + e else None
        table.add_row(label, f"{c:,}", f"{p:,}", f"{e:,}", f"{c + p + e:,}", style=style)
    table.add_row("duplicated / inconsistent", "", "", "", f"{acc.duplicated:,}",
                  style="red" if acc.duplicated else None)  # fmt: skip
    if figures.unsent_commands or figures.unsent_processes:
        table.add_row(
            "not sent (deadline)",
            f"{figures.unsent_commands:,}",
            f"{figures.unsent_processes:,}",
            "",
            "",
        )
    console.print(table)

    dups = Table(title="duplicate checks", title_justify="left")
    dups.add_column("check")
    dups.add_column("count", justify="right")
    for name, n in acc.duplicates.items():
        dups.add_row(name, str(n), style="red" if n else None)
    for disposition, n in sorted(acc.message_log.items()):
        dups.add_row(f"router: reply-queue messages {disposition} (info)", str(n))
    console.print(dups)
    for example in acc.stuck_examples:
        console.print(f"  stuck: {example}", style="red")

    ft = Table(title="faults (recovery: seconds until throughput >= 90% of the pre-fault rate)",
               title_justify="left")  # fmt: skip
    for name, justify in (("#", "right"), ("t (s)", "right"), ("fault", "left"),
                          ("detail", "left"), ("pre-fault /s", "right"),
                          ("recovery (s)", "right")):  # fmt: skip
        ft.add_column(name, justify=justify)  # type: ignore[arg-type]
    t0 = samples[0].t if samples else 0.0
    for i, fault in enumerate(faults, 1):
        if fault.t is None:
            ft.add_row(str(i), "", fault.label, "not injected (run ended)", "", "n/a")
            continue
        pre = f"{fault.pre_rate:.0f}" if fault.pre_rate is not None else "n/a"
        detail = fault.detail + (f"; {fault.note}" if fault.note else "")
        ft.add_row(str(i), f"{fault.t - t0:.1f}", fault.label, detail, pre,
                   _fmt_seconds(fault.recovery))  # fmt: skip
    console.print(ft)

    print_timeline(console, samples, faults)
    print_agents(console, agents, figures)

    console.print(
        f"throughput: {figures.throughput:,.0f} work items/s over {figures.run_seconds:.1f}s "
        f"({figures.units:,} items = {figures.commands_done:,} commands + "
        f"{figures.units - figures.commands_done:,} process steps; "
        f"{figures.commands_done / max(figures.run_seconds, 1e-9):,.0f} commands/s, "
        f"{figures.processes_done / max(figures.run_seconds, 1e-9):,.0f} processes/s)"
    )
    console.print(
        f"wall time {figures.wall_seconds:.1f}s; seed {figures.seed}; {figures.workers} "
        f"workers, {figures.routers} routers; send retries {figures.send_retries}; "
        f"sampler errors {figures.sampler_errors}"
        + ("; DEADLINE REACHED" if figures.deadline_hit else "")
    )
    reasons = failures(acc, figures, agents.findings)
    if reasons:
        console.print("FAIL: " + "; ".join(reasons), style="bold red")
    else:
        console.print("PASS: nothing lost, duplicated or stuck", style="bold green")
    return reasons


def print_timeline(console: Console, samples: list[Sample], faults: list[Fault]) -> None:
    if len(samples) < 2:
        return
    t0, t_end = samples[0].t, samples[-1].t
    span = t_end - t0
    # About 40 rows whatever the length of the run, in whole seconds.
    step = max(1.0, round(span / 40))
    peak = 0.0
    rows: list[tuple[float, float, list[str]]] = []
    t = t0
    while t < t_end:
        rate = rate_between(samples, t, min(t + step, t_end)) or 0.0
        marks = [f.label for f in faults if f.t is not None and t <= f.t < t + step]
        rows.append((t - t0, rate, marks))
        peak = max(peak, rate)
        t += step
    console.print(f"throughput over time (work items/s, {step:.0f}s buckets, database clock)")
    for start, rate, marks in rows:
        bar = "#" * round(40 * rate / peak) if peak else ""
        note = ("  <- " + ", ".join(marks)) if marks else ""
        console.print(f"  {start:6.0f}s {rate:8.0f} {bar}{note}", highlight=False)


def _listening(value: object) -> str:
    """The agent's last word on its LISTEN connection (NO: it only polls)."""
    return "yes" if value is True else "NO" if value is False else "?"


def print_agents(console: Console, agents: AgentSet, figures: RunFigures) -> None:
    table = Table(title="agents", title_justify="left")
    for name in ("agent", "incarnations", "claimed", "completed", "retried", "to TSQ",
                 "replies applied", "LISTEN up", "ERROR log lines"):  # fmt: skip
        table.add_column(name, justify="left" if name == "agent" else "right")
    for agent in agents.agents.values():
        stats: dict[str, Any] = agents.stats(agent)
        status = agent.status() or {}
        table.add_row(
            agent.name,
            str(agent.incarnation),
            str(stats.get("claimed", "")),
            str(stats.get("completed", "")),
            str(stats.get("retried", "")),
            str(stats.get("to_troubleshooting", "")),
            str(stats.get("applied", "")),
            _listening(status.get("listening")),
            str(figures.agent_errors.get(agent.name, 0)),
        )
    console.print(table)
    if agents.findings:
        console.print("agent findings:", style="bold yellow")
        for f in agents.findings:
            length = f" (lasted {f.seconds:.1f}s)" if f.seconds is not None else ""
            console.print(f"  {f.agent}: {f.kind}: {f.detail}{length}", style="yellow")
