"""Deterministic simulation of StatementReport processes on the memory backend."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from examples.statement_report import StatementReportProcess, StatementReportStep
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commandbus.models import Command
from commandbus.process import ProcessStatus, TimeoutAction
from commandbus.testing.simulation import (
    FailureRates,
    OperatorPolicy,
    ProcessSimulation,
    SimulationConfig,
    SimulationReport,
    check_invariants,
)

Step = StatementReportStep
ROOT = Path(__file__).resolve().parents[2]


def initial_data(index: int, rng: random.Random) -> dict[str, Any]:
    day = rng.randint(1, 28)
    return {
        "from_date": f"2025-01-{day:02d}",
        "to_date": "2025-02-28",
        "account_list": [f"ACC-{index}", f"ACC-{rng.randint(1, 999)}"],
        "output_type": rng.choice(["pdf", "html", "csv"]),
    }


RESULTS = {
    "StatementQuery": lambda c: {"result_path": f"s3://query/{c.command_id}.json"},
    "StatementDataAggregation": lambda c: {
        "result_path": c.data["data_path"].replace("query", "aggregated")
    },
    "StatementRender": lambda c: {
        "result_path": f"{c.data['aggregated_data_path']}.{c.data['output_type']}"
    },
    "DeleteQueryResult": lambda c: {"deleted": c.data["path"]},
    "DeleteAggregatedData": lambda c: {"deleted": c.data["path"]},
}

TROUBLED = SimulationConfig(
    processes=300,
    seed=7,
    latency=(0.0, 5.0),
    failures=FailureRates(transient=0.1, permanent=0.05, business=0.05),
    duplicate_rate=0.1,
    operator=OperatorPolicy(retry=0.5, cancel=0.3, complete=0.2, reaction=(10, 120)),
    cancel_rate=0.05,
    cancel_after=(0.0, 8.0),
)


async def simulate(config: SimulationConfig, manager: Any = StatementReportProcess) -> Any:
    return await ProcessSimulation(manager, initial_data, RESULTS, config).run()


async def test_happy_simulation_completes_everything() -> None:
    report = await simulate(SimulationConfig(processes=200, seed=1))
    report.raise_for_violations()
    assert report.by_status == {"COMPLETED": 200}
    assert report.deliveries == {"SUCCESS": 600}
    assert report.router.applied == 600 and report.router.ignored == 0


async def test_same_seed_same_history_byte_for_byte() -> None:
    first = await simulate(TROUBLED)
    second = await simulate(TROUBLED)
    first.raise_for_violations()
    assert first.history == second.history
    assert first.digest == second.digest
    # The run exercised every path: all final statuses, retries, TSQ, duplicates, operators.
    assert set(first.by_status) == {"COMPLETED", "COMPENSATED", "FAILED", "CANCELED"}
    # (a cancel of a compensating process, or one whose compensation fails, ends otherwise)
    assert first.cancels["canceled"] >= first.by_status["CANCELED"] > 0
    assert first.cancels["too_late"] > 0
    assert first.deliveries["TRANSIENT"] > 0 and first.deliveries["PERMANENT"] > 0
    assert first.deliveries["BUSINESS"] > 0
    assert first.duplicates > 0 and first.router.ignored > 0
    assert set(first.operator_actions) == {"retry", "cancel", "complete"}
    assert first.history.count(b'"deliver"') == sum(first.deliveries.values())

    other = await simulate(SimulationConfig(**{**vars(TROUBLED), "seed": 8}))
    other.raise_for_violations()
    assert other.history != first.history


async def test_without_operators_tsq_items_leave_processes_waiting() -> None:
    config = SimulationConfig(
        processes=50, seed=3, failures=FailureRates(permanent=0.2), operator=None
    )
    report = await simulate(config)
    waiting = report.by_status.get("WAITING_FOR_TSQ", 0)
    assert waiting > 0
    terminal = [v for v in report.violations if v.invariant == "terminal"]
    assert len(terminal) == waiting
    assert "ended the simulation WAITING_FOR_TSQ" in terminal[0].detail
    assert {v.invariant for v in report.violations} == {"terminal"}


class SlowQueryReport(StatementReportProcess):
    """The query step times out after 3 s and is sent again (twice), then compensates."""

    def get_step_timeout(self, step: Step, state: Any) -> float | None:
        return 3.0 if step is Step.QUERY else None

    def on_step_timeout(self, step: Step, state: Any, attempt: int) -> TimeoutAction:
        return TimeoutAction.RETRY if attempt < 3 else TimeoutAction.COMPENSATE


async def test_timeouts_retries_and_late_replies() -> None:
    config = SimulationConfig(processes=200, seed=11, latency=(0.0, 6.0), duplicate_rate=0.2)
    report = await simulate(config, SlowQueryReport)
    report.raise_for_violations()
    assert set(report.by_status) == {"COMPLETED", "FAILED"}
    # Commands answered after their step was re-sent: stale replies were ignored.
    assert report.router.ignored > report.duplicates


async def test_invariants_catch_a_manager_that_advances_twice() -> None:
    sim = ProcessSimulation(StatementReportProcess, initial_data, RESULTS, SimulationConfig(5))
    report = await sim.run()
    report.raise_for_violations()
    processes, audits = await sim._load()
    # Tamper with the stored history: the query step recorded as completed twice, and
    # the compensation order reversed.
    victim = processes[0]
    audit = audits[victim.process_id]
    audits[victim.process_id] = [audit[0], audit[0], *audit[1:]]
    found = await check_invariants(sim.manager, processes, audits)
    assert [v.invariant for v in found] == ["single_advance", "single_advance"]
    assert "completed 2 times" in str(found[1])

    sim2 = ProcessSimulation(
        StatementReportProcess,
        initial_data,
        RESULTS,
        SimulationConfig(
            20, seed=5, failures_by_type={"StatementRender": FailureRates(business=1.0)}
        ),
    )
    report2 = await sim2.run()
    report2.raise_for_violations()
    assert report2.by_status == {"FAILED": 20}
    processes, audits = await sim2._load()
    victim = processes[0]
    audit = audits[victim.process_id]
    audits[victim.process_id] = [*audit[:3], audit[4], audit[3]]
    found = await check_invariants(sim2.manager, processes, audits, initial_data=sim2.initial_data)
    assert {v.invariant for v in found} == {"compensation_order", "audit_matches_state"}
    assert "expected ['delete_aggregated_data', 'delete_query_result']" in str(found[0])


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    transient=st.floats(0, 0.3),
    permanent=st.floats(0, 0.2),
    business=st.floats(0, 0.2),
    duplicates=st.floats(0, 0.5),
    high_latency=st.floats(0, 20),
    cancels=st.floats(0, 0.3),
)
async def test_invariants_hold_for_any_seed_and_rates(
    seed: int,
    transient: float,
    permanent: float,
    business: float,
    duplicates: float,
    high_latency: float,
    cancels: float,
) -> None:
    config = SimulationConfig(
        processes=25,
        seed=seed,
        latency=(0.0, high_latency),
        failures=FailureRates(transient, permanent, business),
        duplicate_rate=duplicates,
        operator=OperatorPolicy(retry=0.4, cancel=0.3, complete=0.3, reaction=(1, 50)),
        cancel_rate=cancels,
        cancel_after=(0.0, 30.0),
    )
    report: SimulationReport = await simulate(config, SlowQueryReport)
    report.raise_for_violations()
    assert report.processes == 25
    assert all(ProcessStatus(s).is_terminal for s in report.by_status)


async def test_handlers_see_the_real_commands() -> None:
    seen: list[Command] = []

    def query(command: Command) -> dict[str, Any]:
        seen.append(command)
        return {"result_path": "s3://q"}

    results = {**RESULTS, "StatementQuery": query}
    sim = ProcessSimulation(StatementReportProcess, initial_data, results, SimulationConfig(3))
    report = await sim.run()
    report.raise_for_violations()
    assert sorted(c.correlation_id for c in seen) == sorted(sim.process_ids)
    assert all(c.reply_to == "reporting__process_replies" for c in seen)


SEPARATE_RUN = """
import asyncio, dataclasses
from tests.unit.test_simulation import TROUBLED, RESULTS, SlowQueryReport, initial_data
from commandbus.testing.simulation import ProcessSimulation

config = dataclasses.replace(TROUBLED, processes=60)
report = asyncio.run(ProcessSimulation(SlowQueryReport, initial_data, RESULTS, config).run())
print(report.digest)
"""


def test_history_is_the_same_in_other_interpreters() -> None:
    """Nothing depends on the interpreter run: object addresses, hash seeds, wall time."""
    digests = set()
    for hash_seed in ("0", "1", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", SEPARATE_RUN],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"},
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        digests.add(result.stdout.strip())
    assert len(digests) == 1
