"""10,000 StatementReport processes simulated on the memory backend, all invariants checked.

Prints the summary with the wall time (``pytest -s``); the run takes seconds of CPU, not
minutes. The figure is not asserted (shared CI machines vary); the work done is.
"""

from __future__ import annotations

from examples.statement_report import StatementReportProcess
from tests.unit.test_simulation import RESULTS, initial_data

from commandbus.testing.simulation import (
    FailureRates,
    OperatorPolicy,
    ProcessSimulation,
    SimulationConfig,
)

CONFIG = SimulationConfig(
    processes=10_000,
    seed=2025,
    latency=(0.0, 5.0),
    failures=FailureRates(transient=0.05, permanent=0.02, business=0.02),
    duplicate_rate=0.05,
    operator=OperatorPolicy(retry=0.5, cancel=0.3, complete=0.2, reaction=(30, 300)),
    cancel_rate=0.01,
)


async def test_ten_thousand_processes() -> None:
    report = await ProcessSimulation(StatementReportProcess, initial_data, RESULTS, CONFIG).run()
    print()
    print(report.summary())
    report.raise_for_violations()
    assert report.processes == 10_000
    assert set(report.by_status) == {"COMPLETED", "COMPENSATED", "FAILED", "CANCELED"}
    assert report.by_status["COMPLETED"] > 9_000
    # Every command of every process was handled: ~3 per process plus failures.
    assert sum(report.deliveries.values()) > 30_000
    assert report.router.parked == 0
