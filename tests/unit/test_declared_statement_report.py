"""One kernel: the StatementReport process written by hand, in the step DSL and as a state
machine gives the same history, byte for byte, under the seeded simulation with the same
seed — the process rows, their audit trails and every command they sent — and each form
replays the others' stored processes."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

from examples.statement_report import StatementReportProcess, StatementReportStep
from examples.statement_report.machine import StatementReportMachine
from examples.statement_report.steps import StatementReportSteps

from commandbus.process import TimeoutAction
from commandbus.process.fsm import MachineState
from commandbus.process.replay import replay_process
from commandbus.process.repository import state_to_dict
from commandbus.testing.simulation import (
    FailureRates,
    OperatorPolicy,
    ProcessSimulation,
    SimulationConfig,
)

Step = StatementReportStep


def initial_data(index: int, rng: random.Random) -> dict[str, Any]:
    return {
        "from_date": f"2025-01-{rng.randint(1, 28):02d}",
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

#: Every path: business failures, the troubleshooting queue and its operators, transient
#: retries, duplicate replies, user cancels.
TROUBLED = SimulationConfig(
    processes=200,
    seed=7,
    latency=(0.0, 5.0),
    failures=FailureRates(transient=0.1, permanent=0.05, business=0.05),
    duplicate_rate=0.1,
    operator=OperatorPolicy(retry=0.5, cancel=0.3, complete=0.2, reaction=(10, 120)),
    cancel_rate=0.05,
    cancel_after=(0.0, 8.0),
)


async def full_history(manager: Any, config: SimulationConfig) -> bytes:
    """The simulation's own history, then every stored field of every process, its audit
    trail, and each command's row and command audit, as JSON lines."""
    sim = ProcessSimulation(manager, initial_data, RESULTS, config)
    report = await sim.run()
    report.raise_for_violations()
    processes, audits = await sim._load()
    lines = [report.history]
    for process in processes:
        row = dataclasses.asdict(dataclasses.replace(process, state=state_to_dict(process.state)))
        lines.append(_json(["process", row]))
        for entry in audits[process.process_id]:
            lines.append(_json(["audit", dataclasses.asdict(entry)]))
            command = await sim.backend.commands.get(process.domain, entry.command_id)
            events = await sim.backend.commands.audit_trail(process.domain, entry.command_id)
            lines.append(_json(["command", command and dataclasses.asdict(command)]))
            lines.append(_json(["command_audit", [dataclasses.asdict(e) for e in events]]))
    return b"\n".join(lines)


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


async def test_three_forms_give_byte_identical_histories() -> None:
    by_hand = await full_history(StatementReportProcess, TROUBLED)
    assert by_hand.count(b'["command", null]') == 0  # every command was found
    assert await full_history(StatementReportSteps, TROUBLED) == by_hand
    assert await full_history(StatementReportMachine, TROUBLED) == by_hand
    # ... and the comparison can fail: another seed is another history, and so is a
    # definition whose render command carries one more field.
    other = dataclasses.replace(TROUBLED, seed=8)
    assert await full_history(StatementReportSteps, other) != by_hand
    assert await full_history(RenderWithLocale, TROUBLED) != by_hand


def _with_locale(step: Any) -> Any:
    if step.name != Step.RENDER:
        return step
    build = step.data
    return dataclasses.replace(step, data=lambda s: {**build(s).to_dict(), "locale": "en"})


class RenderWithLocale(StatementReportSteps):
    flow = tuple(_with_locale(s) for s in StatementReportSteps.flow)


# -- with step timeouts: the query must answer within 3 s, sent 3 times, then given up ---


def query_timeout(state: Any, attempt: int) -> TimeoutAction:
    return TimeoutAction.RETRY if attempt < 3 else TimeoutAction.COMPENSATE


class SlowQueryByHand(StatementReportProcess):
    def get_step_timeout(self, step: Any, state: Any) -> float | None:
        return 3.0 if step is Step.QUERY else None

    def on_step_timeout(self, step: Any, state: Any, attempt: int) -> TimeoutAction:
        return query_timeout(state, attempt)


def _timed(step: Any) -> Any:
    if step.name != Step.QUERY:
        return step
    return dataclasses.replace(step, timeout_seconds=3.0, on_timeout=query_timeout)


class SlowQuerySteps(StatementReportSteps):
    flow = tuple(_timed(s) for s in StatementReportSteps.flow)


class SlowQueryMachine(StatementReportMachine):
    states = tuple(
        MachineState(s.name, _timed(s.step) if s.step else None, s.initial)
        for s in StatementReportMachine.states
    )


async def test_timeouts_declared_in_each_form_give_the_same_history() -> None:
    config = SimulationConfig(processes=150, seed=11, latency=(0.0, 6.0), duplicate_rate=0.2)
    by_hand = await full_history(SlowQueryByHand, config)
    assert b"timed_out_at" in by_hand and b'"timed_out_at": null' in by_hand
    assert by_hand.count(b'"timed_out_at": "') > 0  # some query did time out
    assert await full_history(SlowQuerySteps, config) == by_hand
    assert await full_history(SlowQueryMachine, config) == by_hand


async def test_each_form_replays_the_processes_the_hand_written_one_stored() -> None:
    sim = ProcessSimulation(StatementReportProcess, initial_data, RESULTS, TROUBLED)
    (await sim.run()).raise_for_violations()
    processes, audits = await sim._load()
    for manager_class in (StatementReportSteps, StatementReportMachine):
        manager = manager_class(sim.bus)
        for process in processes:
            result = await replay_process(
                manager,
                process,
                audits[process.process_id],
                initial_data=sim.initial_data[process.process_id],
            )
            assert result.ok, result.mismatches
