"""Time-ordered command ids (``commandbus.ids.uuid7``)."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from commandbus import CommandBus
from commandbus.ids import uuid7


def test_uuid7_is_version_7_and_grows_with_time() -> None:
    ids = [uuid7()]
    for _ in range(3):
        time.sleep(0.002)
        ids.append(uuid7())
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in ids)
    assert ids == sorted(ids)
    assert len({uuid7() for _ in range(10_000)}) == 10_000
    # the first 48 bits are the Unix time in milliseconds
    milliseconds = ids[-1].int >> 80
    assert abs(milliseconds - time.time_ns() // 1_000_000) < 1_000


async def test_send_generates_time_ordered_ids() -> None:
    bus = CommandBus.in_memory()
    first = await bus.send("billing", "Charge", data={"n": 1})
    await asyncio.sleep(0.002)
    second = await bus.send("billing", "Charge", data={"n": 2})
    assert isinstance(first.command_id, UUID) and first.command_id.version == 7
    assert second.command_id > first.command_id
