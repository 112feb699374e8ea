"""Event-driven process managers over an event-sourced process stream (seed 003).

A manager listens to events, keeps state per process instance folded from that
instance's own stream, and issues commands: ``decide(state, event) -> Decision(events,
commands)``, pure. ``ProcessEngine`` runs it: a ``Subscription`` feeds it external events
(``engine.subscription()``), a ``ProcessEventRouter(engine)`` feeds it its commands'
replies and its timers. The reply-driven ``commandbus.process.BaseProcessManager`` (seed
004) is the other way to write a process; ``docs/events.md`` says when to use which.
"""

from commandbus.process_manager.decision import Compensation, Decision, Fact, Task, Timer
from commandbus.process_manager.engine import ProcessEngine
from commandbus.process_manager.events import ProcessEvent
from commandbus.process_manager.instance import Book, ProcessInstance, TaskState
from commandbus.process_manager.locator import ProcessLocator, process_id_for
from commandbus.process_manager.manager import EventSourcedProcessManager, ProcessManager
from commandbus.process_manager.router import ProcessEventRouter

__all__ = [
    "Book",
    "Compensation",
    "Decision",
    "EventSourcedProcessManager",
    "Fact",
    "ProcessEngine",
    "ProcessEvent",
    "ProcessEventRouter",
    "ProcessInstance",
    "ProcessLocator",
    "ProcessManager",
    "Task",
    "TaskState",
    "Timer",
    "process_id_for",
]
