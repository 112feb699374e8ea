"""Test toolkit for commandbus users.

- ``VirtualClock``: time moves only when a test advances it (no sleeping).
- ``ProcessScenario``: given/when/then tests of a process manager, no database.
- ``ProcessSimulation``: many processes against simulated services, seeded and
  deterministic, with invariants checked at the end.
- ``replay_process`` / ``check_replay``: fold stored histories through current code.
- ``BackendContract`` (``commandbus.testing.contracts``): the behaviour suite every backend
  passes; ``commandbus.testing.pg``: real-database fixtures (template database per session).
- The pytest plugin (auto-loaded) provides ``virtual_clock``, ``commandbus_memory`` and
  ``commandbus_postgres`` fixtures.
"""

from commandbus.process.replay import ReplayMismatch, ReplayResult, check_replay, replay_process
from commandbus.testing.clock import VirtualClock
from commandbus.testing.event_scenario import EventProcessScenario, PlannedCommand
from commandbus.testing.event_simulation import EventSimulation, EventSimulationReport
from commandbus.testing.scenario import ProcessScenario, ScenarioAssertionError, SentCommand
from commandbus.testing.simulation import (
    FailureRates,
    OperatorPolicy,
    ProcessSimulation,
    SimulationConfig,
    SimulationReport,
)

__all__ = [
    "EventProcessScenario",
    "EventSimulation",
    "EventSimulationReport",
    "FailureRates",
    "OperatorPolicy",
    "PlannedCommand",
    "ProcessScenario",
    "ProcessSimulation",
    "ReplayMismatch",
    "ReplayResult",
    "ScenarioAssertionError",
    "SentCommand",
    "SimulationConfig",
    "SimulationReport",
    "VirtualClock",
    "check_replay",
    "replay_process",
]
