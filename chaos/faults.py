"""The faults of a chaos run: which, in what order, and how long each took to recover from.

The plan is drawn up front from the seeded generator: ``kills`` SIGKILLs of a random
worker or router (the killed agent is restarted at once, as a supervisor would), one
``pg_ctl restart -m fast`` (clients get "terminating connection due to administrator
command") and one ``-m immediate`` (the server dies without notice and runs crash
recovery), in random order; optionally (``--outage S``) one stop of S seconds, longer
than any restart.

Faults are injected one at a time, spread over the time the remaining work should take
(so that there is load to recover to), and never before the previous fault has recovered
(or ``recovery_timeout`` passed) plus MIN_PAUSE: each recovery is measured on its own,
against the rate of the calm seconds before its fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from chaos.agents import AgentSet
from chaos.metrics import (
    MIN_RATE,
    Sampler,
    pre_fault_rate,
    rate_between,
    recovery_seconds,
)
from chaos.pgcluster import PgCluster

#: The shortest pause between a fault's recovery and the next fault (its pre-fault window).
MIN_PAUSE = 3.0
#: The rate the time left is estimated from: the mean over this many last seconds.
ETA_WINDOW = 5.0


@dataclass
class Fault:
    kind: str  # "kill", "pg-fast", "pg-immediate", "pg-outage"
    target: str = ""  # the agent, for kills
    t: float | None = None  # database clock when injected
    detail: str = ""
    pre_rate: float | None = None
    recovery: float | None = None  # seconds; None: not (yet) recovered
    note: str = ""

    @property
    def label(self) -> str:
        if self.kind == "kill":
            return f"kill {self.target}"
        if self.kind == "pg-outage":
            return "PG outage"
        return f"restart {self.kind[3:]}"


def plan_faults(
    rng: random.Random, agents: AgentSet, kills: int, outage: float = 0.0
) -> list[Fault]:
    workers, routers = agents.names("worker"), agents.names("router")
    faults: list[Fault] = []
    for i in range(kills):
        # The first two kills take one worker and one router (both roles get killed),
        # the others any agent.
        if i < 2 and workers and routers:
            pool = workers if i == 0 else routers
        else:
            pool = workers + routers
        faults.append(Fault("kill", rng.choice(pool)))
    faults += [Fault("pg-fast"), Fault("pg-immediate")]
    if outage > 0:
        faults.append(Fault("pg-outage", detail=f"{outage:g}"))
    rng.shuffle(faults)
    return faults


class FaultInjector:
    def __init__(
        self,
        faults: list[Fault],
        rng: random.Random,
        sampler: Sampler,
        agents: AgentSet,
        cluster: PgCluster,
        *,
        warmup: float = 3.0,
        recovery_timeout: float = 20.0,
        log: Callable[[str], None] = print,
    ) -> None:
        self.faults = faults
        self.rng = rng
        self.sampler = sampler
        self.agents = agents
        self.cluster = cluster
        self.warmup = warmup
        self.recovery_timeout = recovery_timeout
        self.log = log
        self.done = asyncio.Event()
        self._calm_since = 0.0

    async def run(
        self, stop: asyncio.Event, work_left: Callable[[], float], idle: Callable[[], bool]
    ) -> None:
        """Inject every fault, one at a time. The pause before each spreads the faults
        left over the time the work left should take at the current rate (with seeded
        jitter), so that faults land while there is load, in a short open-loop run as in a
        long saturated one; it is never shorter than MIN_PAUSE. ``work_left()``
        is the number of work items not done yet; ``idle()`` says that nothing is left to
        do right now (a recovery wait then ends early)."""
        try:
            # Warm-up: the first fault needs a pre-fault window of steady work.
            await self._wait(stop, lambda: self._has_work_for(self.warmup), 120)
            for i, fault in enumerate(self.faults):
                jitter = self.rng.uniform(0.0, 0.5) if i == 0 else self.rng.uniform(0.7, 1.0)
                floor = 0.0 if i == 0 else MIN_PAUSE
                calm_from = time.monotonic()
                left = len(self.faults) - i
                due = functools.partial(self._due, calm_from, jitter, floor, left, work_left, idle)
                await self._wait(stop, due, 3600)
                if stop.is_set():
                    return
                await self._inject(fault)
                await self._wait_recovered(fault, stop, idle)
                # The next pre-fault window starts here: the catch-up after this fault
                # must not count as the normal rate.
                self._calm_since = self.sampler.db_now()
        finally:
            self.done.set()

    def _due(
        self,
        calm_from: float,
        jitter: float,
        floor: float,
        faults_left: int,
        work_left: Callable[[], float],
        idle: Callable[[], bool],
    ) -> bool:
        """Whether the next fault is due. Re-estimated on every tick: right after a long
        recovery the rate is still low and would make the pause far too long; it shortens
        as the catch-up speeds up. With no work left at all there is nothing to wait for."""
        waited = time.monotonic() - calm_from
        if idle() and waited >= floor:
            return True
        return waited >= max(floor, jitter * self._gap(work_left(), faults_left))

    def _gap(self, left: float, faults_left: int) -> float:
        """Seconds to the next fault: the estimated time to finish, cut into one piece
        more than there are faults left (room for the last one's recovery). Estimated
        afresh before each fault, so a slow recovery shortens the gaps after it."""
        samples = self.sampler.samples
        rate = None
        if samples:
            rate = rate_between(samples, samples[-1].t - ETA_WINDOW, samples[-1].t)
        if rate is None or rate < MIN_RATE:
            return MIN_PAUSE
        return max(left / rate / (faults_left + 1), MIN_PAUSE)

    def _has_work_for(self, seconds: float) -> bool:
        """Whether work items have been completing for at least ``seconds``."""
        samples = self.sampler.samples
        first = next((s for s in samples if s.units > 0), None)
        return first is not None and samples[-1].t - first.t >= seconds

    async def _inject(self, fault: Fault) -> None:
        t_local = time.time()
        fault.t = t_local + self.sampler.offset
        fault.pre_rate = pre_fault_rate(self.sampler.samples, fault.t, self._calm_since)
        if fault.kind == "kill":
            pid = self.agents.kill(fault.target)
            self.agents.start(fault.target)
            fault.detail = f"SIGKILL pid {pid}, restarted"
        elif fault.kind == "pg-outage":
            took = await self.cluster.outage(float(fault.detail))
            fault.detail = f"pg_ctl stop -m fast, start: down {took:.2f}s"
        else:
            mode = fault.kind[3:]
            took = await self.cluster.restart(mode)
            fault.detail = f"pg_ctl restart -m {mode}: {took:.2f}s"
        pre = f"{fault.pre_rate:.0f}/s" if fault.pre_rate is not None else "n/a"
        self.log(f"fault: {fault.label} ({fault.detail}); pre-fault rate {pre}")

    async def _wait_recovered(
        self, fault: Fault, stop: asyncio.Event, idle: Callable[[], bool]
    ) -> None:
        assert fault.t is not None
        if fault.pre_rate is None or fault.pre_rate < MIN_RATE:
            fault.note = "no load before the fault"
            return
        pre = fault.pre_rate
        t0 = fault.t

        def recovered() -> bool:
            fault.recovery = recovery_seconds(self.sampler.samples, t0, pre)
            return fault.recovery is not None or idle()

        await self._wait(stop, recovered, self.recovery_timeout)
        if fault.recovery is not None:
            self.log(f"  back to >= 90% of {pre:.0f}/s after {fault.recovery:.2f}s")
        elif idle():
            self.log("  no work left to measure the recovery on")
        else:
            self.log(f"  not back to 90% of {pre:.0f}/s within {self.recovery_timeout:.0f}s")

    def finalize(self) -> None:
        """Recompute recoveries on every sample of the run (a recovery that took longer
        than the live wait may have happened before the end)."""
        for fault in self.faults:
            if fault.t is None or fault.pre_rate is None or fault.pre_rate < MIN_RATE:
                continue
            fault.recovery = recovery_seconds(self.sampler.samples, fault.t, fault.pre_rate)

    async def _wait(self, stop: asyncio.Event, condition: Callable[[], bool], limit: float) -> None:
        deadline = time.monotonic() + limit
        while not stop.is_set() and not condition() and time.monotonic() < deadline:
            await self._sleep(stop, 0.25)

    @staticmethod
    async def _sleep(stop: asyncio.Event, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
