"""State versions: long-lived process states that survive a deploy (seed 002).

A state class declares its version and how to upgrade older stored states, one version at
a time, as eventsourcing's upcasters do::

    @dataclass
    class OrderState:
        state_version = 2  # v2 added `currency`

        order_id: str
        amount: int
        currency: str = "EUR"

        @staticmethod
        def upcast_v1_v2(data: dict) -> None:  # change data in place, or return a new dict
            data["currency"] = "EUR"

The version is stored in the state JSON under ``__state_version__`` (only for classes that
declare one; a state without the key is version 1). On load, the stored data goes through
``upcast_v1_v2``, ``upcast_v2_v3``… up to the class's version before ``from_dict``; the
next write stores the upgraded state with the new version, and the engine records the
upgrade in the process's audit trail (an entry of kind ``STATE_UPGRADE``). A state stored
by a *newer* version than the code's, or a missing upcaster, is a ``StateLoadError``: the
message is parked and the process flagged until the code is fixed.
"""

from __future__ import annotations

from typing import Any

from commandbus.models import JsonObject

__all__ = [
    "STATE_VERSION_KEY",
    "declared_version",
    "stamped",
    "stored_version",
    "upgraded",
]

#: Where the version of a stored state is kept, inside the state JSON.
STATE_VERSION_KEY = "__state_version__"


def declared_version(state_class: object) -> int | None:
    """The ``state_version`` a state class declares, or None (unversioned)."""
    version = getattr(state_class, "state_version", None)
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TypeError(f"{state_class!r}.state_version must be an int >= 1, got {version!r}")
    return version


def stored_version(data: JsonObject) -> int:
    """The version of a stored state (1 when it carries none)."""
    version = data.get(STATE_VERSION_KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"the stored {STATE_VERSION_KEY} is not a version: {version!r}")
    return version


def stamped(state: object, data: JsonObject) -> JsonObject:
    """``data`` (the state's ``to_dict()``) with its class's version, when it declares one."""
    version = declared_version(type(state))
    if version is None or data.get(STATE_VERSION_KEY) == version:
        return data
    return {**data, STATE_VERSION_KEY: version}


def upgraded(state_class: Any, data: JsonObject) -> tuple[JsonObject, int, int]:
    """The stored ``data`` upgraded to the class's version, without the version key, for
    ``from_dict``; also the stored and the current version. Raises ``ValueError`` for a
    newer stored version or a missing upcaster (the caller makes it a ``StateLoadError``)."""
    target = declared_version(state_class) or 1
    version = stored_version(data)
    body = {k: v for k, v in data.items() if k != STATE_VERSION_KEY}
    if version > target:
        raise ValueError(
            f"the state was stored by version {version} of {state_class.__name__}, "
            f"newer than this code's version {target} (a rollback after a deploy?)"
        )
    for step in range(version, target):
        name = f"upcast_v{step}_v{step + 1}"
        upcast = getattr(state_class, name, None)
        if upcast is None:
            raise ValueError(
                f"{state_class.__name__} is at version {target} but has no {name} to "
                f"upgrade a version {step} state"
            )
        result = upcast(body)
        if result is not None:
            body = result
    return body, version, target
