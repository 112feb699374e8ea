"""commandbus and PgQueuer side by side: the same N, the same server, the same method.

Run from the repository root::

    python -m benchmarks.peers                     # 3 rounds, DATABASE_URL or embedded
    python -m benchmarks.peers --rounds 5 --commands 20000 --sends 5000

PgQueuer 1.6.0 (``pgqueuer[asyncpg,psycopg]``) is installed from PyPI into a virtualenv
of its own (``--venv``, by default under the system's temporary directory, kept for the
next run): it is not a dependency of the project. Each system gets a fresh database on
the server of ``DATABASE_URL`` (dropped at the end). Every round runs, for each system
in turn (the order alternates from round to round, so that drift of a shared machine
hits both alike), each figure in a fresh subprocess:

1. **send_batch**: ``--commands`` commands in one ``send_batch`` call; PgQueuer: the
   same number of jobs, ``enqueue`` of ``--chunk`` jobs per call;
2. **end to end**: ``--procs`` worker processes drain the queue (commandbus: ``Worker``
   with ``--concurrency``, batch ``--batch``, every command with a reply; PgQueuer:
   ``QueueManager.run`` in drain mode with batch ``--batch``);
3. **one at a time**: ``--sends`` sequential ``send()`` / ``enqueue()`` calls.

Times are taken on the database clock (``clock_timestamp()`` before, and the last
completion as the database recorded it), tables are truncated, vacuumed and
checkpointed before each run (the method of ``shared/peerbench/bench_pgq.py``), and each
run is checked: every command or job completed exactly once (handled once by a
handler, one completion each, nothing left in the queue, commandbus: one reply each).

Exit status: 0; 2 when a run was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
PGQUEUER = "pgqueuer[asyncpg,psycopg]==1.6.0"
PGQUEUER_VERSION = "1.6.0"
SYSTEMS = ("commandbus", "pgqueuer")
FIGURES = {
    "send": "send_batch",
    "process": "end to end",
    "loop": "one send() at a time",
}

console = Console(highlight=False, width=max(Console().width, 120))


# -- environment ---------------------------------------------------------------------------


def default_venv() -> Path:
    return Path(tempfile.gettempdir()) / "commandbus-peers" / f"pgqueuer-{PGQUEUER_VERSION}"


def ensure_pgqueuer(venv: Path) -> Path:
    """The interpreter of a virtualenv with PgQueuer 1.6.0, created on first use."""
    python = venv / "bin" / "python"
    probe = "import importlib.metadata as m; print(m.version('pgqueuer'))"
    if python.exists():
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
        if found.stdout.strip() == PGQUEUER_VERSION:
            return python
    console.print(escape(f"Installing {PGQUEUER} into {venv} …"))
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PGQUEUER],
        check=True,
    )
    return python


def server_url(explicit: str | None) -> str:
    url = explicit or os.environ.get("COMMANDBUS_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    from commandbus.embedded import database_url

    return database_url()


def database_url(server: str, dbname: str) -> str:
    """A ``postgresql://`` URL (asyncpg takes no ``key=value`` strings) for ``dbname``."""
    params = conninfo_to_dict(server)
    user = quote(str(params.get("user") or "postgres"), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else f"{user}@"
    host = str(params.get("host") or "127.0.0.1")
    if host.startswith("/"):  # a socket directory
        return f"postgresql://{auth}/{dbname}?host={quote(host, safe='')}"
    return f"postgresql://{auth}{host}:{params.get('port') or 5432}/{dbname}"


def create_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# -- one measurement -----------------------------------------------------------------------


class Runner:
    """Runs one measurement of one system in a fresh subprocess; returns its JSON."""

    def __init__(self, pgq_python: Path, urls: dict[str, str], args: argparse.Namespace):
        self.commands = {
            "commandbus": [sys.executable, "-m", "benchmarks.peer_commandbus"],
            "pgqueuer": [str(pgq_python), str(ROOT / "benchmarks" / "peer_pgqueuer.py")],
        }
        self.urls = urls
        self.args = args

    def run(self, system: str, action: str, *extra: str) -> dict[str, Any]:
        argv = [*self.commands[system], action, "--dsn", self.urls[system], *extra]
        env = dict(os.environ)
        if system == "commandbus":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT)]))
        done = subprocess.run(
            argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"{system} {action} failed:\n{done.stdout}\n{done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def measure(self, system: str, figure: str) -> dict[str, Any]:
        a = self.args
        self.run(system, "reset")
        if figure == "send":
            extra = ["-n", str(a.commands)]
            if system == "pgqueuer":
                extra += ["--chunk", str(a.chunk)]
            return self.run(system, "send", *extra)
        if figure == "loop":
            return self.run(system, "loop", "-n", str(a.sends))
        raise ValueError(figure)

    def end_to_end(self, system: str) -> dict[str, Any]:
        a = self.args
        extra = ["-n", str(a.commands), "--procs", str(a.procs), "--batch", str(a.batch)]
        if system == "commandbus":
            extra += ["--concurrency", str(a.concurrency)]
        return self.run(system, "process", *extra)


def problems(system: str, figure: str, n: int, result: dict[str, Any]) -> list[str]:
    """What makes a run wrong: not every command or job completed exactly once."""
    found: list[str] = []
    if figure in ("send", "loop"):
        if result["stored"] != n:
            found.append(f"{result['stored']} stored of {n}")
        return found
    if result["timed_out"]:
        found.append("timed out")
    for key in ("handled", "completed", "distinct_completed"):
        if result[key] != n:
            found.append(f"{key} {result[key]} of {n}")
    if result["left"] != 0:
        found.append(f"{result['left']} left in the queue")
    if system == "commandbus":
        if result["replies"] != n:
            found.append(f"{result['replies']} replies for {n} commands")
        if result["command_statuses"] != {"COMPLETED attempts=1": n}:
            found.append(f"command rows {result['command_statuses']}")
    return found


# -- report --------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):,.0f}/s [{min(values):,.0f}-{max(values):,.0f}]"


def report_cpu(cpu: dict[str, list[tuple[float, float | None]]]) -> None:
    """CPU per command of the end-to-end runs: the worker processes and the database's
    backends (the measure that matters on a machine whose cores both sides share)."""
    table = Table(title="CPU per command, end to end: median µs", title_justify="left")
    for header in ("system", "worker processes", "PostgreSQL backends", "both"):
        table.add_column(header, justify="left" if header == "system" else "right")
    for system, runs in cpu.items():
        client = statistics.median(c for c, _ in runs)
        servers = [s for _, s in runs if s is not None]
        server = statistics.median(servers) if servers else None
        table.add_row(
            system,
            f"{client:.0f}",
            "?" if server is None else f"{server:.0f}",
            "?" if server is None else f"{client + server:.0f}",
        )
    console.print(table)


def report(
    results: dict[str, dict[str, list[float]]],
    cpu: dict[str, list[tuple[float, float | None]]],
    args: argparse.Namespace,
) -> None:
    table = Table(
        title=escape(
            f"commandbus vs PgQueuer {PGQUEUER_VERSION} (asyncpg), {args.rounds} interleaved "
            "rounds: median [range]"
        ),
        title_justify="left",
    )
    for header in ("figure", "commandbus", "PgQueuer", "ratio", "ratio per round"):
        table.add_column(header, justify="left" if header == "figure" else "right")
    labels = {
        "send": f"send_batch {args.commands:,}",
        "process": f"end to end {args.commands:,}, {args.procs} processes, batch {args.batch}",
        "loop": f"one send() at a time, {args.sends:,}",
    }
    for figure, label in labels.items():
        ours, theirs = results[figure]["commandbus"], results[figure]["pgqueuer"]
        if not ours or not theirs:
            continue
        ratio = statistics.median(ours) / statistics.median(theirs)
        per_round = [o / t for o, t in zip(ours, theirs, strict=True)]
        table.add_row(
            label,
            summary(ours),
            summary(theirs),
            f"{ratio:.2f}",
            f"{min(per_round):.2f}-{max(per_round):.2f}",
        )
    console.print(table)
    if cpu["commandbus"] and cpu["pgqueuer"]:
        report_cpu(cpu)
    load = os.getloadavg()
    console.print(
        f"[dim]commandbus: {args.procs} worker processes x concurrency {args.concurrency}, "
        f"every command with a reply; PgQueuer: enqueue chunks of {args.chunk}. Database "
        f"clock. {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f}.[/]"
    )


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", help="server to use (default: DATABASE_URL or embedded)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commands", type=int, default=20_000, help="send_batch and end to end")
    parser.add_argument("--sends", type=int, default=5_000, help="one-at-a-time sends")
    parser.add_argument("--procs", type=int, default=2, help="worker processes per system")
    parser.add_argument("--batch", type=int, default=50, help="commands / jobs per claim")
    parser.add_argument("--concurrency", type=int, default=200, help="commandbus, per process")
    parser.add_argument("--chunk", type=int, default=1000, help="PgQueuer jobs per enqueue")
    parser.add_argument("--venv", type=Path, default=default_venv(), help="PgQueuer's virtualenv")
    parser.add_argument("--json", type=Path, help="append every run to this file (JSON lines)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pgq_python = ensure_pgqueuer(args.venv)
    server = server_url(args.database_url)
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = {system: f"cb_peers_{tag}_{system}" for system in SYSTEMS}
    urls = {system: database_url(server, name) for system, name in names.items()}
    results: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    cpu: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    wrong: list[str] = []
    try:
        for name in names.values():
            create_database(server, name)
        from commandbus.postgres.schema import apply_schema

        asyncio.run(apply_schema(urls["commandbus"]))
        pgq = pgq_python.parent / "pgq"
        subprocess.run(
            [str(pgq), "--pg-dsn", urls["pgqueuer"], "install"], check=True, capture_output=True
        )
        runner = Runner(pgq_python, urls, args)
        for number in range(args.rounds):
            order = SYSTEMS if number % 2 == 0 else SYSTEMS[::-1]
            for figure in ("send", "loop"):
                for system in order:
                    runs = [(figure, runner.measure(system, figure))]
                    if figure == "send":
                        runs.append(("process", runner.end_to_end(system)))
                    for name, result in runs:
                        n = args.sends if name == "loop" else args.commands
                        bad = problems(system, name, n, result)
                        wrong.extend(f"round {number + 1} {system} {name}: {p}" for p in bad)
                        results[name][system].append(result["per_second"])
                        if name == "process":
                            backends = result["server_cpu_s"]
                            cpu[system].append(
                                (
                                    result["client_cpu_s"] / n * 1e6,
                                    None if backends is None else backends / n * 1e6,
                                )
                            )
                        console.print(
                            f"round {number + 1} {system:10} {FIGURES[name]:21} "
                            f"{result['per_second']:>9,.0f}/s"
                            + (f"  [red]{'; '.join(bad)}[/]" if bad else "")
                        )
                        if args.json:
                            with args.json.open("a") as out:
                                record = {"round": number + 1, "system": system, "figure": name}
                                out.write(json.dumps({**record, **result}, default=str) + "\n")
        report(results, cpu, args)
    finally:
        for name in names.values():
            drop_database(server, name)
    for line in wrong:
        console.print(f"[red]{line}[/]")
    return 2 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
