"""The process repository port (seed story S058).

``ProcessRepository`` is what the process engine needs from storage. Two adapters implement
it: ``commandbus.postgres.process_repository.PostgresProcessRepository`` (tables
``commandbus.process``, ``commandbus.process_audit`` and ``commandbus.process_message_log``)
and ``commandbus.memory.process_repository.InMemoryProcessRepository``. The contract suite
``commandbus.testing.process_contracts`` runs against both.

Like every port, each method takes ``conn``: an open transaction of the backend, or None to
run in a transaction of its own. The seed's methods (``save`` … ``get_completed_steps``)
read and write one process at a time; the engine uses the batch methods (``insert_new``,
``lock``, ``apply``) so that a router handles a whole batch of replies in a few round
trips.

Repositories store and return the state as a plain JSON object (``dict``): they do not know
the state classes. ``save``/``update`` accept a typed state (anything with ``to_dict()``) or
a dict; ``BaseProcessManager.get`` returns processes with typed state.
"""

from __future__ import annotations

import json

from commandbus.models import JsonObject

# The protocol lives with the other ports (``Backend.processes`` is one); this module keeps
# the seed's import path for it.
from commandbus.ports import JsonText, ProcessRepository, ProcessWrites
from commandbus.process.models import completed_steps
from commandbus.process.versions import stamped
from commandbus.validation import json_text

__all__ = [
    "JsonText",
    "ProcessRepository",
    "ProcessWrites",
    "completed_steps",
    "state_to_dict",
    "state_to_json",
]


def state_to_json(state: object) -> str:
    """The JSON text stored for a state."""
    if isinstance(state, JsonText):
        return str(state)
    return json_text(state_to_dict(state))


def state_to_dict(state: object) -> JsonObject:
    """The JSON object stored for a state: ``state.to_dict()`` (with its class's
    ``state_version``, see ``commandbus.process.versions``), or the dict itself."""
    if state is None:
        return {}
    if isinstance(state, JsonText):
        decoded: JsonObject = json.loads(state)
        return decoded
    to_dict = getattr(state, "to_dict", None)
    if callable(to_dict):
        result = to_dict()
        if not isinstance(result, dict):
            raise TypeError(f"{type(state).__name__}.to_dict() must return a dict")
        return stamped(state, result)  # with the class's state_version, if it has one
    if isinstance(state, dict):
        return state
    raise TypeError(f"process state of type {type(state).__name__} has no to_dict()")
