"""``ProcessLocator``: which process instance(s) an external event concerns (seed 003)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from commandbus.events.models import RecordedEvent

__all__ = ["ProcessLocator", "process_id_for"]

#: The namespace of process ids derived from business keys.
PROCESS_KEY_NAMESPACE = uuid5(NAMESPACE_URL, "commandbus:process-key")

KeyFunction = Callable[[RecordedEvent], "str | Sequence[str] | None"]


def process_id_for(process_type: str, key: str) -> UUID:
    """The id of the ``process_type`` instance for business ``key``: the same key always
    gives the same process, whoever starts it first."""
    return uuid5(PROCESS_KEY_NAMESPACE, f"{process_type}:{key}")


class ProcessLocator:
    """Maps an event to the business key(s) of the process(es) it concerns; the engine
    turns a key into a process id (``process_id_for``). Build one from a function of the
    event, or with ``by_field`` / ``by_correlation_id``."""

    def __init__(self, key: KeyFunction, description: str = "a key function") -> None:
        self._key = key
        self.description = description

    @classmethod
    def by_field(cls, *path: str) -> ProcessLocator:
        """The key is the event's ``data[path[0]][path[1]]...`` (as text)."""
        if not path:
            raise ValueError("by_field needs the name of at least one field")

        def key(event: RecordedEvent) -> str | None:
            value: Any = event.data
            for name in path:
                if not isinstance(value, dict) or name not in value:
                    return None
                value = value[name]
            if value is None or isinstance(value, dict | list):
                return None
            return str(value)

        return cls(key, f"data.{'.'.join(path)}")

    @classmethod
    def by_correlation_id(cls) -> ProcessLocator:
        """The key is the event's correlation id."""
        return cls(
            lambda e: None if e.correlation_id is None else str(e.correlation_id),
            "the correlation id",
        )

    def keys(self, event: RecordedEvent) -> list[str]:
        """The keys of the processes ``event`` concerns (none: it concerns no process)."""
        found = self._key(event)
        if found is None:
            return []
        if isinstance(found, str):
            return [found] if found else []
        return [k for k in dict.fromkeys(found) if isinstance(k, str) and k]
