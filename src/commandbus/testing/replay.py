"""Replay lives in ``commandbus.process.replay`` (the CLI uses it, and the CLI never
imports the test toolkit); this module keeps the older import path."""

from commandbus.process.replay import (
    InitialDataSource,
    ReplayMismatch,
    ReplayResult,
    check_replay,
    replay_process,
)

__all__ = [
    "InitialDataSource",
    "ReplayMismatch",
    "ReplayResult",
    "check_replay",
    "replay_process",
]
