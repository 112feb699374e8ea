"""Event-driven process managers (seed 003): ``decide(state, event) -> Decision``, pure.

    @dataclass
    class Previews:
        deployed: list[str] = field(default_factory=list)

    class PullRequestPreviews(EventSourcedProcessManager[Previews]):
        process_type = "pr_previews"
        domain = "previews"
        starts_on = {"PullRequestOpened"}
        reacts_to = {"PullRequestUpdated", "PullRequestClosed"}
        locator = ProcessLocator.by_field("pr")

        def initial_state(self) -> Previews: ...
        def evolve(self, state: Previews, event: ProcessEvent) -> Previews: ...
        def decide(self, state: Previews, event: ProcessEvent) -> Decision: ...

``evolve`` folds every event of the process stream into the state (inputs and the
engine's records alike: ignore what you do not need); ``decide`` looks at the state and
one incoming event and returns a ``Decision``. Neither may do I/O, read the clock or draw
random numbers: the engine replays them. ``ProcessEngine`` (``commandbus.process_manager``)
runs a manager.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from commandbus.models import JsonObject
from commandbus.process_manager.decision import Decision
from commandbus.process_manager.events import ProcessEvent
from commandbus.process_manager.locator import ProcessLocator

__all__ = ["EventSourcedProcessManager", "ProcessManager"]

TState = TypeVar("TState")


class ProcessManager(Protocol[TState]):
    """Seed 003's decision logic: the pure part of a process."""

    def initial_state(self) -> TState: ...

    def evolve(self, state: TState, event: ProcessEvent) -> TState: ...

    def decide(self, state: TState, event: ProcessEvent) -> Decision: ...


class EventSourcedProcessManager(ABC, Generic[TState]):
    """Base class of event-driven process managers: the hooks and what the engine needs
    to know (see the module docstring)."""

    #: Names the process stream (``<process_type>-<id>``) and the read model's type.
    process_type: ClassVar[str]
    #: The read model's domain, the default domain of its tasks, and its reply queue
    #: (``<domain>__process_events``).
    domain: ClassVar[str]
    #: Event types that create the process (once per business key).
    starts_on: ClassVar[Collection[str]] = ()
    #: Event types it reacts to once started.
    reacts_to: ClassVar[Collection[str]] = ()
    #: Stream categories to listen to (None: all).
    categories: ClassVar[Collection[str] | None] = None
    locator: ClassVar[ProcessLocator]
    #: A snapshot every this many events: a load costs the snapshot and the events after it.
    snapshot_every: ClassVar[int] = 50

    @abstractmethod
    def initial_state(self) -> TState:
        """The state before the first event."""

    @abstractmethod
    def evolve(self, state: TState, event: ProcessEvent) -> TState:
        """The state after ``event`` (pure)."""

    @abstractmethod
    def decide(self, state: TState, event: ProcessEvent) -> Decision:
        """What to do about ``event`` (pure)."""

    # -- state as JSON (override for states that are not dataclasses or dicts) ---------

    def state_to_dict(self, state: TState) -> JsonObject:
        to_dict = getattr(state, "to_dict", None)
        if callable(to_dict):
            result: JsonObject = to_dict()
            return result
        if dataclasses.is_dataclass(state) and not isinstance(state, type):
            return dataclasses.asdict(state)
        if isinstance(state, dict):
            return state
        raise TypeError(
            f"cannot store a {type(state).__name__} state: use a dataclass or a dict, or "
            "override state_to_dict/state_from_dict"
        )

    def state_from_dict(self, data: JsonObject) -> TState:
        template: Any = self.initial_state()
        from_dict = getattr(type(template), "from_dict", None)
        if callable(from_dict):
            restored: TState = from_dict(data)
            return restored
        if dataclasses.is_dataclass(template) and not isinstance(template, type):
            rebuilt: Any = type(template)(**data)
            return rebuilt  # type: ignore[no-any-return]
        if isinstance(template, dict):
            return data  # type: ignore[return-value]
        raise TypeError(f"cannot load a {type(template).__name__} state: override state_from_dict")
