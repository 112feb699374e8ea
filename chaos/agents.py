"""The worker and router OS processes of a chaos run: start, kill, watch, stop.

Each agent is ``python -m chaos.agent`` in a session of its own (a Ctrl-C in the terminal
reaches only the driver, which then stops them in order). Its output goes to
``<run dir>/<name>.log``, appended to by every incarnation.

Watching, every ``check()``:

- an agent that exited without being killed by the driver is a finding (the library's
  loops are supposed to outlive a database restart); it is restarted so the run goes on;
- a heartbeat older than ``HEARTBEAT_STALE`` seconds means its event loop is blocked;
- no progress for ``STALL_SECONDS`` while one of its queues has visible messages means
  it is alive but not consuming (e.g. waiting forever on a dead connection). An episode
  is recorded once, with its length when the agent moves again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from chaos.workload import COMMAND_QUEUE, PROCESS_COMMAND_QUEUE, PROCESS_REPLY_QUEUE

REPO_ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_STALE = 10.0
STALL_SECONDS = 10.0
QUEUES = {"worker": (COMMAND_QUEUE, PROCESS_COMMAND_QUEUE), "router": (PROCESS_REPLY_QUEUE,)}


@dataclass
class Finding:
    t: float  # wall clock
    agent: str
    kind: str  # "exited", "heartbeat", "stalled"
    detail: str
    seconds: float | None = None  # for stalls: how long, once it ended


@dataclass
class Agent:
    name: str
    role: str
    index: int
    status_file: Path
    log_file: Path
    incarnation: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: TextIO | None = None
    killed: bool = False  # by the driver: its exit is expected
    started_at: float = 0.0
    progress: int = -1
    progress_at: float = 0.0
    stall: Finding | None = None
    heartbeat_flagged: bool = False
    totals: dict[str, int] = field(default_factory=dict)  # counters of dead incarnations

    def status(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if self.process is None or data.get("pid") != self.process.pid:
            return None  # a previous incarnation's file
        return data


class AgentSet:
    def __init__(self, dsn: str, run_dir: Path, workers: int, routers: int, seed: int) -> None:
        self.dsn = dsn
        self.run_dir = run_dir
        self.seed = seed
        self.findings: list[Finding] = []
        self.agents: dict[str, Agent] = {}
        for role, count in (("worker", workers), ("router", routers)):
            for i in range(count):
                name = f"{role}-{i}"
                self.agents[name] = Agent(
                    name, role, i, run_dir / f"{name}.status.json", run_dir / f"{name}.log"
                )

    def names(self, role: str) -> list[str]:
        return [a.name for a in self.agents.values() if a.role == role]

    def start(self, name: str) -> None:
        agent = self.agents[name]
        agent.incarnation += 1
        # A new seed per incarnation: a restarted worker does not replay the same failures.
        seed = self.seed * 1000 + agent.index * 100 + agent.incarnation
        command = [
            sys.executable,
            "-m",
            "chaos.agent",
            agent.role,
            "--dsn",
            self.dsn,
            "--name",
            name,
            "--status-file",
            str(agent.status_file),
            "--seed",
            str(seed),
        ]
        if agent.log is None:
            agent.log = agent.log_file.open("a", encoding="utf-8")
        agent.log.write(f"--- incarnation {agent.incarnation} ---\n")
        agent.log.flush()
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
        agent.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=agent.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if agent.stall is not None:  # ended by the restart, not by the agent moving again
            agent.stall.seconds = time.time() - agent.progress_at
            agent.stall.detail += "; ended by a restart"
        agent.killed = False
        agent.started_at = time.time()
        agent.progress, agent.progress_at = -1, time.time()
        agent.stall, agent.heartbeat_flagged = None, False

    def start_all(self) -> None:
        for name in self.agents:
            self.start(name)

    def all_ready(self) -> bool:
        return all((s := a.status()) is not None and s["ready"] for a in self.agents.values())

    def kill(self, name: str) -> int:
        """SIGKILL the agent (no clean-up of any kind) and reap it; returns its pid."""
        agent = self.agents[name]
        assert agent.process is not None
        self._keep_totals(agent)
        agent.killed = True
        pid = agent.process.pid
        os.kill(pid, signal.SIGKILL)
        agent.process.wait(timeout=10)
        return pid

    def _keep_totals(self, agent: Agent) -> None:
        status = agent.status()
        for key, value in (status or {}).get("stats", {}).items():
            agent.totals[key] = agent.totals.get(key, 0) + int(value)

    def stats(self, agent: Agent) -> dict[str, int]:
        """Counters over all incarnations (a killed one's as of its last status file)."""
        current = (agent.status() or {}).get("stats", {})
        keys = set(agent.totals) | set(current)
        return {k: agent.totals.get(k, 0) + int(current.get(k, 0)) for k in sorted(keys)}

    def check(self, backlog: dict[str, int], backlog_fresh: bool) -> None:
        now = time.time()
        for agent in self.agents.values():
            process = agent.process
            if process is None:
                continue
            code = process.poll()
            if code is not None and not agent.killed:
                self._keep_totals(agent)
                self.findings.append(
                    Finding(now, agent.name, "exited", f"exited by itself with status {code}")
                )
                self.start(agent.name)
                continue
            status = agent.status()
            if status is None:
                continue  # still starting up
            if now - float(status["heartbeat"]) > HEARTBEAT_STALE and not agent.heartbeat_flagged:
                agent.heartbeat_flagged = True
                age = now - float(status["heartbeat"])
                self.findings.append(
                    Finding(now, agent.name, "heartbeat", f"no heartbeat for {age:.1f}s")
                )
            stats = status["stats"]
            progress = int(stats.get("claimed", 0)) + int(stats.get("batches", 0))
            if progress != agent.progress:
                if agent.stall is not None:
                    agent.stall.seconds = now - agent.progress_at
                    agent.stall = None
                agent.progress, agent.progress_at = progress, now
                continue
            waiting = sum(backlog.get(q, 0) for q in QUEUES[agent.role])
            idle_for = now - agent.progress_at
            if backlog_fresh and waiting and idle_for > STALL_SECONDS and agent.stall is None:
                agent.stall = Finding(
                    now,
                    agent.name,
                    "stalled",
                    f"no progress for {idle_for:.0f}s while its queues had {waiting} "
                    f"visible messages (listening={status.get('listening')})",
                )
                self.findings.append(agent.stall)

    def stop_all(self, timeout: float = 15.0) -> dict[str, int | None]:
        """SIGTERM (graceful: in-flight work settles), then SIGKILL what is left; returns
        the exit status of each agent's last incarnation."""
        codes: dict[str, int | None] = {}
        # An agent restarted a moment ago may not have its SIGTERM handler yet (Python is
        # still importing): give it a few seconds to come up, or SIGTERM kills it outright.
        ready_by = time.monotonic() + 10
        while time.monotonic() < ready_by and not all(
            (s := a.status()) is not None and s["ready"]
            for a in self.agents.values()
            if a.process is not None and a.process.poll() is None
        ):
            time.sleep(0.1)
        for agent in self.agents.values():
            if agent.process is not None and agent.process.poll() is None:
                agent.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for agent in self.agents.values():
            if agent.process is None:
                continue
            try:
                agent.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait(timeout=10)
                self.findings.append(
                    Finding(time.time(), agent.name, "exited", "did not stop on SIGTERM")
                )
            codes[agent.name] = agent.process.returncode
            if agent.process.returncode not in (0, None) and not agent.killed:
                self.findings.append(
                    Finding(
                        time.time(),
                        agent.name,
                        "exited",
                        f"stopped with status {agent.process.returncode}",
                    )
                )
        return codes

    def kill_all(self) -> None:
        """Last resort (errors, Ctrl-C): SIGKILL every agent still running."""
        for agent in self.agents.values():
            if agent.process is not None and agent.process.poll() is None:
                agent.killed = True
                os.kill(agent.process.pid, signal.SIGKILL)
                agent.process.wait(timeout=10)
            if agent.log is not None:
                agent.log.close()
                agent.log = None
