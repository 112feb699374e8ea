"""Renamed: the process behaviour contract is ``commandbus.testing.process_behaviour``
(``commandbus.testing.scenario`` is the user-facing harness); this module keeps the old
import path."""

from commandbus.testing.process_behaviour import (
    Env,
    OtherProcess,
    PipelineProcess,
    PipelineState,
    PipelineStep,
    ProcessBehaviourContract,
    Services,
)

__all__ = [
    "Env",
    "OtherProcess",
    "PipelineProcess",
    "PipelineState",
    "PipelineStep",
    "ProcessBehaviourContract",
    "Services",
]
