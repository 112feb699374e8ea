"""The chaos driver: own cluster, agents, load, faults, then the accounting.

Order of a run (``python -m chaos --help`` for the options):

1. a fresh PostgreSQL cluster of its own (``chaos.pgcluster``), the commandbus schema and
   the user table ``chaos_effect``;
2. ``--workers`` worker and ``--routers`` router OS processes (``chaos.agent``), until
   each reports ready;
3. at the same time: the paced sender (``chaos.load``), the throughput sampler
   (``chaos.metrics``), the fault injector (``chaos.faults``) and a watch loop that
   restarts agents which died by themselves (a finding) and looks for hung ones;
4. the run ends when everything was sent, every fault injected and every item is terminal
   or in the TSQ, or at ``--duration-limit``; the agents are stopped (SIGTERM), the
   database is counted (``chaos.report``) and the summary printed (``chaos.summary``);
5. the agents and the cluster are removed whatever happens (error, Ctrl-C, SIGTERM).

The exit status is 1 when anything was lost, duplicated or stuck (or still in flight at
the deadline, or an agent crashed or hung), else 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from rich.console import Console

from chaos.agents import AgentSet
from chaos.events_workload import event_keys
from chaos.faults import FaultInjector, plan_faults
from chaos.load import Sender
from chaos.metrics import Sampler
from chaos.pgcluster import PgCluster
from chaos.report import PROCESS_STEPS, account
from chaos.summary import RunFigures, print_summary
from chaos.workload import EFFECT_TABLE_SQL, command_ids, process_ids
from commandbus.postgres import PostgresBackend, apply_schema

_SETTLED_SQL = """
SELECT (SELECT count(*) FROM commandbus.command WHERE domain = 'chaos'
          AND status IN ('COMPLETED', 'FAILED', 'CANCELED', 'IN_TROUBLESHOOTING_QUEUE')),
       (SELECT count(*) FROM commandbus.process WHERE domain = 'reporting'
          AND status IN ('COMPLETED', 'COMPENSATED', 'FAILED', 'CANCELED', 'WAITING_FOR_TSQ')),
       (SELECT count(*) FROM commandbus.process WHERE domain = 'chaos_events'
          AND status IN ('COMPLETED', 'COMPENSATED', 'FAILED', 'CANCELED', 'WAITING_FOR_TSQ'))
"""


@dataclass(frozen=True)
class Options:
    commands: int
    processes: int
    workers: int
    routers: int
    seed: int
    duration_limit: float
    send_seconds: float
    kills: int
    outage: float
    recovery_timeout: float
    json_path: Path | None
    keep_logs: bool
    event_processes: int = 0


def main(opts: Options) -> int:
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=120)  # a log file or CI: no wrapping
    wall0 = time.monotonic()
    run_dir = Path(tempfile.mkdtemp(prefix="commandbus-chaos-logs-"))
    cluster = PgCluster()
    agents = AgentSet(cluster.url, run_dir, opts.workers, opts.routers, opts.seed)
    code = 2

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through the finally below, like Ctrl-C

    # Connection errors during the restarts are expected: the driver's own library logs
    # (pool, listener, sender) go to a file next to the agents' logs, not to the summary.
    logging.basicConfig(
        filename=run_dir / "driver.log",
        level=logging.INFO,
        format="%(asctime)s driver %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        console.print(f"PostgreSQL: own cluster in {cluster.root}, {cluster.url}")
        cluster.start()
        code = asyncio.run(_drive(console, cluster, agents, opts, wall0))
        return code
    except KeyboardInterrupt:
        console.print("interrupted: stopping agents and the cluster", style="yellow")
        return 130
    finally:
        agents.kill_all()
        cluster.teardown()
        signal.signal(signal.SIGTERM, previous)
        if code == 0 and not opts.keep_logs:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            console.print(f"agent logs kept in {run_dir}")


async def _settled(backend: PostgresBackend) -> tuple[int, int, int] | None:
    try:
        async with backend.pool.connection() as conn:
            cur = await conn.execute(_SETTLED_SQL)
            row = await cur.fetchone()
    except Exception:
        return None  # the server is restarting; ask again later
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


def _error_lines(path: Path) -> int:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return sum(1 for line in handle if " ERROR " in line)
    except OSError:
        return 0


async def _drive(
    console: Console, cluster: PgCluster, agents: AgentSet, opts: Options, wall0: float
) -> int:
    dsn = cluster.url
    await apply_schema(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(EFFECT_TABLE_SQL)
    agents.start_all()
    ready_by = time.monotonic() + 90
    while not agents.all_ready():
        agents.check({}, backlog_fresh=False)
        if time.monotonic() > ready_by:
            raise RuntimeError(f"agents not ready after 90s; logs in {agents.run_dir}")
        await asyncio.sleep(0.1)
    console.print(f"{opts.workers} workers and {opts.routers} routers ready")

    backend = await PostgresBackend.connect(dsn, min_size=2, max_size=6)
    rng = random.Random(opts.seed)
    sampler = Sampler(dsn)
    faults = plan_faults(rng, agents, opts.kills, opts.outage)
    injector = FaultInjector(
        faults,
        rng,
        sampler,
        agents,
        cluster,
        recovery_timeout=opts.recovery_timeout,
        log=lambda text: console.print(f"[{time.monotonic() - wall0:6.1f}s] {text}"),
    )
    sender = Sender(
        backend,
        command_ids(opts.seed, opts.commands),
        process_ids(opts.seed, opts.processes),
        opts.send_seconds,
        event_keys(opts.seed, opts.event_processes),
    )
    console.print(
        f"sending {opts.commands:,} commands, starting {opts.processes:,} processes and "
        f"{opts.event_processes:,} event-driven ones over {opts.send_seconds:.0f}s; faults: "
        + ", ".join(f.label for f in faults)
    )
    stop = asyncio.Event()

    def idle() -> bool:
        """No work left: everything sent and no visible message in the consumer queues."""
        return sender.finished and not any(sampler.backlog.values())

    def work_left() -> float:
        """Work items not done yet: each command is one, each process three steps (the
        event-driven processes are not sampled: faults are paced by the others)."""
        done = sampler.last.units if sampler.last else 0
        return opts.commands + PROCESS_STEPS * opts.processes - done

    deadline = time.monotonic() + opts.duration_limit
    tasks = [
        asyncio.create_task(sampler.run(stop), name="sampler"),
        asyncio.create_task(sender.run(deadline), name="sender"),
        asyncio.create_task(injector.run(stop, work_left, idle), name="faults"),
    ]
    deadline_hit = False
    next_check = next_progress = 0.0
    try:
        while True:
            now = time.monotonic()
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise RuntimeError(f"{task.get_name()} failed") from task.exception()
            agents.check(sampler.backlog, backlog_fresh=time.time() - sampler.backlog_at < 2.5)
            if now > deadline:
                deadline_hit = True
                break
            if now >= next_progress:
                next_progress = now + 5
                _progress(console, sampler, sender, injector, now - wall0)
            if sender.finished and injector.done.is_set() and now >= next_check:
                next_check = now + 1.0
                settled = await _settled(backend)
                wanted = (
                    len(sender.sent_commands),
                    len(sender.sent_processes),
                    len(sender.sent_events),
                )
                if settled is not None and all(
                    s >= w for s, w in zip(settled, wanted, strict=True)
                ):
                    # One more sample, taken after everything settled, so that the last
                    # sample holds the final counts.
                    sampler.sampled.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(sampler.sampled.wait(), 2)
                    break
            await asyncio.sleep(0.25)
    finally:
        stop.set()
        for task in tasks:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await backend.close()

    # A graceful stop: deliveries in flight settle before the counting.
    await asyncio.to_thread(agents.stop_all)
    injector.finalize()
    acc = await account(dsn, sender.sent_commands, sender.sent_processes, sender.sent_events)
    samples = sampler.samples
    last = samples[-1]
    start_t = sender.started_at + sampler.offset
    done_t = next((s.t for s in samples if s.units == last.units), last.t)
    figures = RunFigures(
        seed=opts.seed,
        workers=opts.workers,
        routers=opts.routers,
        wall_seconds=time.monotonic() - wall0,
        run_seconds=max(done_t - start_t, 1e-9),
        deadline_hit=deadline_hit,
        units=last.units,
        commands_done=last.commands,
        processes_done=last.processes,
        unsent_commands=opts.commands - len(sender.sent_commands),
        unsent_processes=opts.processes - len(sender.sent_processes),
        send_retries=sender.retries,
        sampler_errors=sampler.errors,
        agent_errors={a.name: _error_lines(a.log_file) for a in agents.agents.values()},
    )
    reasons = print_summary(console, acc, figures, faults, samples, agents)
    if opts.json_path is not None:
        timeline = [(round(x.t - samples[0].t, 3), x.commands, x.steps) for x in samples]
        _write_json(opts.json_path, acc.as_dict(), figures, faults, agents, reasons, timeline)
    return 1 if reasons else 0


def _progress(
    console: Console, sampler: Sampler, sender: Sender, injector: FaultInjector, at: float
) -> None:
    last = sampler.last
    done = last.units if last else 0
    injected = sum(1 for f in injector.faults if f.t is not None)
    backlog = sum(sampler.backlog.values())
    console.print(
        f"[{at:6.1f}s] sent {len(sender.sent_commands):,} commands, "
        f"{len(sender.sent_processes):,} processes; done {done:,} work items; "
        f"visible backlog {backlog:,}; faults {injected}/{len(injector.faults)}"
    )


def _write_json(
    path: Path,
    accounting: dict[str, Any],
    figures: RunFigures,
    faults: list[Any],
    agents: AgentSet,
    reasons: list[str],
    timeline: list[tuple[float, int, int]],
) -> None:
    data = {
        "passed": not reasons,
        "failures": reasons,
        "accounting": accounting,
        "figures": asdict(figures) | {"throughput": figures.throughput},
        "faults": [asdict(f) for f in faults],
        "findings": [asdict(f) for f in agents.findings],
        "agents": {a.name: agents.stats(a) for a in agents.agents.values()},
        "samples (t, commands, process steps)": timeline,
    }
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
