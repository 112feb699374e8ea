"""The sync API is the async one run on a sync connection: its methods mirror the async
methods they run (same parameters, defaults and types, without ``conn``), and the driver
refuses to hide a real wait."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from commandbus import CommandBus, TroubleshootingQueue
from commandbus.process.base import BaseProcessManager
from commandbus.sync import (
    SyncBridgeError,
    SyncCommandBus,
    SyncProcesses,
    SyncTroubleshootingQueue,
    run_sync,
)

PAIRS = [
    (SyncCommandBus, CommandBus),
    (SyncTroubleshootingQueue, TroubleshootingQueue),
    (SyncProcesses, BaseProcessManager),
]


def public_methods(cls: type) -> list[str]:
    return [n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")]


def without_conn(sig: inspect.Signature) -> list[tuple[str, Any, Any, Any]]:
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in sig.parameters.values()
        if p.name not in ("self", "conn")
    ]


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS)
def test_every_sync_method_mirrors_its_async_method(sync_cls: type, async_cls: type) -> None:
    for name in public_methods(sync_cls):
        sync_method = getattr(sync_cls, name)
        async_method = getattr(async_cls, name)
        assert inspect.iscoroutinefunction(async_method), name
        sync_sig, async_sig = inspect.signature(sync_method), inspect.signature(async_method)
        # Names in order, defaults and types alike (how they are passed may differ:
        # a parameter after the async ``conn`` is keyword-only there).
        assert [p[0] for p in without_conn(sync_sig)] == [p[0] for p in without_conn(async_sig)]
        for mine, theirs in zip(without_conn(sync_sig), without_conn(async_sig), strict=True):
            assert mine[2:] == theirs[2:], (name, mine, theirs)
        assert sync_sig.return_annotation == async_sig.return_annotation, name


def test_the_whole_async_surface_for_senders_is_covered() -> None:
    wanted = {
        "send",
        "send_batch",
        "create_batch",
        "close_batch",
        "get_batch",
        "list_batches",
        "get_command",
        "query_commands",
        "get_audit_trail",
    }
    assert wanted <= set(public_methods(SyncCommandBus))
    assert {"operator_retry", "operator_cancel", "operator_complete"} <= set(
        public_methods(SyncTroubleshootingQueue)
    )


def test_run_sync_returns_what_a_coroutine_returns_and_raises_what_it_raises() -> None:
    async def answer() -> int:
        return 42

    async def refuse() -> None:
        raise ValueError("no")

    assert run_sync(answer()) == 42
    with pytest.raises(ValueError, match="no"):
        run_sync(refuse())


def test_run_sync_refuses_a_coroutine_that_waits() -> None:
    unwound: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(0)
        finally:
            unwound.append("finally ran")

    with pytest.raises(SyncBridgeError, match="tried to wait"):
        run_sync(waits())
    assert unwound == ["finally ran"]


def test_only_a_psycopg_connection_is_accepted() -> None:
    with pytest.raises(TypeError, match=r"psycopg\.Connection"):
        SyncCommandBus(object())  # type: ignore[arg-type]
