"""End-to-end behaviour of process managers, written once, run on every backend.

``ProcessBehaviourContract`` drives real workers, a real ``TroubleshootingQueue`` and
``ProcessReplyRouter`` s against a backend, with a small test process ("Pipeline": steps
A -> B -> C -> D, B skipped when the start input says so; A and C have compensations,
B and D have none). Subclass it as ``Test…`` with a ``backend`` fixture and an
``advance(backend, seconds)`` hook that moves the queue's time (a ``VirtualClock`` for the
memory backend; shifting visibility deadlines for PostgreSQL).

The contract is split by theme: ``FlowBehaviour``, ``TroubleshootingBehaviour``,
``TimeoutBehaviour``, ``EdgeBehaviour``, ``CancelBehaviour`` and ``StepActionBehaviour``
share ``BehaviourBase``;
``ProcessBehaviourContract`` is all of them.
"""

from commandbus.testing.process_behaviour._pipeline import (
    BehaviourBase,
    Env,
    OtherProcess,
    PipelineProcess,
    PipelineState,
    PipelineStep,
    Services,
)
from commandbus.testing.process_behaviour.cancel import CancelBehaviour
from commandbus.testing.process_behaviour.edges import EdgeBehaviour
from commandbus.testing.process_behaviour.flows import FlowBehaviour
from commandbus.testing.process_behaviour.operators import TroubleshootingBehaviour
from commandbus.testing.process_behaviour.step_actions import StepActionBehaviour
from commandbus.testing.process_behaviour.timing import TimeoutBehaviour


class ProcessBehaviourContract(
    FlowBehaviour,
    TroubleshootingBehaviour,
    TimeoutBehaviour,
    EdgeBehaviour,
    CancelBehaviour,
    StepActionBehaviour,
):
    """Process manager behaviour on a backend (all of it)."""


__all__ = [
    "BehaviourBase",
    "CancelBehaviour",
    "EdgeBehaviour",
    "Env",
    "FlowBehaviour",
    "OtherProcess",
    "PipelineProcess",
    "PipelineState",
    "PipelineStep",
    "ProcessBehaviourContract",
    "Services",
    "StepActionBehaviour",
    "TimeoutBehaviour",
    "TroubleshootingBehaviour",
]
