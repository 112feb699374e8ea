"""Batches in a ``ProcessSimulation``: processes started as batches, standalone commands
sent as batches, and the batch invariants checked at the end (``batch_invariants``)."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from commandbus.batches.models import BatchCommand, BatchKind, BatchNotice, ProcessBatch
from commandbus.bus import CommandBus
from commandbus.process.models import ProcessMetadata
from commandbus.testing.batch_invariants import check_batches
from commandbus.testing.invariants import InvariantViolation
from commandbus.testing.simulation_config import SimulationConfig

#: The command type of the standalone batched commands.
WORK = "SimulatedWork"


class SimulatedBatches:
    """The batches of one simulation, their ids drawn from ``rng`` (seeded)."""

    def __init__(
        self, bus: CommandBus, domain: str, config: SimulationConfig, rng: random.Random
    ) -> None:
        self.bus = bus
        self.domain = domain
        self.config = config
        self.rng = rng
        self.batch_ids: list[UUID] = []
        #: Where every batch's completion notice goes.
        self.notices = f"{domain}__batches"

    def _new_id(self) -> UUID:
        return UUID(int=self.rng.getrandbits(128), version=4)

    def process_batch(self, first: int) -> ProcessBatch | None:
        """The batch of the processes started from index ``first`` (None: no batches)."""
        if not self.config.process_batches:
            return None
        batch = ProcessBatch(f"start-{first}", self.notices, self._new_id())
        self.batch_ids.append(UUID(str(batch.batch_id)))
        return batch

    async def send_command_batches(self) -> list[tuple[UUID, int]]:
        """Send the configured standalone commands in batches; each batch id and size."""
        total, size = self.config.batched_commands, self.config.command_batch
        sent: list[tuple[UUID, int]] = []
        for first in range(0, total, size):
            commands = [
                BatchCommand(WORK, {"n": n}, command_id=self._new_id())
                for n in range(first, min(first + size, total))
            ]
            batch_id = self._new_id()
            await self.bus.create_batch(
                self.domain,
                commands,
                name=f"work-{first}",
                reply_to=self.notices,
                batch_id=batch_id,
            )
            self.batch_ids.append(batch_id)
            sent.append((batch_id, len(commands)))
        return sent

    async def check(
        self, processes: Sequence[ProcessMetadata[Any, Any]], violations: list[InvariantViolation]
    ) -> tuple[dict[str, int], list[str]]:
        """Check the batch invariants (adding to ``violations``); the batches by final
        status, and a history line per batch."""
        if not self.batch_ids:
            return {}, []
        members: dict[UUID, list[str]] = {}
        for process in processes:
            if process.batch_id is not None:
                members.setdefault(process.batch_id, []).append(process.status.value)
        found = []
        lines = []
        for batch_id in self.batch_ids:
            batch = await self.bus.get_batch(self.domain, batch_id)
            assert batch is not None
            found.append(batch)
            if batch.kind is BatchKind.COMMANDS:
                rows = await self.bus.query_commands(batch_id=batch_id, limit=10_000)
                members[batch_id] = [row.status.value for row in rows]
            counts = [batch.total, batch.completed, batch.failed, batch.canceled]
            record = ["batch", str(batch_id), batch.status.value, *counts]
            lines.append(json.dumps(record, separators=(",", ":")))
        messages = await self.bus.backend.queue.read(self.notices, 10_000, 3600)
        notices = [BatchNotice.from_message(m.message) for m in messages]
        violations.extend(check_batches(found, members, notices))
        return dict(sorted(Counter(b.status.value for b in found).items())), lines
