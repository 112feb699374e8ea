"""Contract: a process cancels while its awaited command is on its way to, or waiting on,
another cluster.

The process (``Shipment``, domain ``reporting``) reserves locally, then charges in
``billing``, which lives on the other cluster; its reserve step is compensated by a
release. Canceled while the charge waits in the outbox, the charge is withdrawn there
and never reaches billing; canceled once relayed, the process waits for the charge's
outcome and billing's cluster withdraws it (it had not started), answering CANCELED.
Either way the charge never runs and the reserve is released. Provide the ``clusters``
fixture as for ``ClusterContract``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import pytest

from commandbus.bus import CommandBus
from commandbus.clusters.backends import ClusterBackends
from commandbus.handler import HandlerRegistry
from commandbus.models import AuditEventType, CommandStatus, Reply
from commandbus.process.base import BaseProcessManager
from commandbus.process.models import ProcessCommand, ProcessStatus, StepDefinition
from commandbus.process.router import ProcessReplyRouter
from commandbus.testing.contracts.clusters import HOME, REMOTE
from commandbus.worker import Worker

__all__ = ["ClusterWithdrawalContract"]


class Step(StrEnum):
    RESERVE = "reserve"
    CHARGE = "charge"
    RELEASE = "release"


@dataclass
class ShipmentState:
    done: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShipmentState:
        return cls(list(data["done"]))


class Shipment(BaseProcessManager[ShipmentState, Step]):
    process_type = "Shipment"
    domain = HOME
    steps: ClassVar = (
        StepDefinition(Step.RESERVE, "Reserve", compensation_step=Step.RELEASE),
        StepDefinition(Step.CHARGE, "Charge"),
    )

    def create_initial_state(self, initial_data: dict[str, Any]) -> ShipmentState:
        return ShipmentState([])

    def get_first_step(self, state: ShipmentState) -> Step:
        return Step.RESERVE

    async def build_command(self, step: Step, state: ShipmentState) -> ProcessCommand[Any]:
        if step is Step.CHARGE:
            return ProcessCommand("Charge", {"n": 1}, domain=REMOTE)
        return ProcessCommand(step.value.capitalize(), {})

    def update_state(self, state: ShipmentState, step: Step, reply: Reply) -> None:
        state.done.append(step.value)

    def get_next_step(self, current_step: Step, reply: Reply, state: ShipmentState) -> Step | None:
        return Step.CHARGE if current_step is Step.RESERVE else None


@dataclass
class Deployment:
    clusters: ClusterBackends
    manager: Shipment
    router: ProcessReplyRouter
    home_worker: Worker
    remote_worker: Worker
    charged: list[str]

    async def relay(self, domain: str) -> int:
        relay = self.clusters.relay(self.clusters.topology.dsn_of(domain))
        return await relay.relay_once()


class ClusterWithdrawalContract:
    """Withdrawing a process's command across clusters (see the module doc)."""

    @pytest.fixture
    async def clusters(self) -> AsyncIterator[ClusterBackends]:
        raise NotImplementedError("provide the `clusters` fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def deployment(self, clusters: ClusterBackends) -> Deployment:
        home, remote = clusters.backend_for(HOME), clusters.backend_for(REMOTE)
        charged: list[str] = []
        local, billing = HandlerRegistry(), HandlerRegistry()

        async def ok(command: Any, context: Any) -> dict[str, Any]:
            return {}

        async def charge(command: Any, context: Any) -> dict[str, Any]:
            charged.append(str(command.command_id))
            return {}

        local.register(HOME, "Reserve", ok)
        local.register(HOME, "Release", ok)
        billing.register(REMOTE, "Charge", charge)
        manager = Shipment(CommandBus(home))
        return Deployment(
            clusters,
            manager,
            ProcessReplyRouter(home, managers=[manager]),
            Worker(home, HOME, local),
            Worker(remote, REMOTE, billing),
            charged,
        )

    async def awaiting_charge(self, d: Deployment) -> Any:
        pid = await d.manager.start({})
        assert await d.home_worker.process_once() == 1  # reserve
        assert await d.router.process_once() == 1  # -> charge, into the outbox
        process = await d.manager.get(pid)
        assert process is not None and process.current_step is Step.CHARGE
        return process

    async def finish(self, d: Deployment, pid: Any) -> Any:
        assert await d.home_worker.process_once() == 1  # release
        assert await d.router.process_once() == 1
        process = await d.manager.get(pid)
        assert process is not None
        return process

    async def test_cancel_withdraws_a_command_still_in_the_outbox(
        self, deployment: Deployment
    ) -> None:
        d = deployment
        process = await self.awaiting_charge(d)
        charge_id = process.awaiting_command_id
        canceled = await d.manager.cancel(process.process_id, "customer withdrew")
        assert canceled.status is ProcessStatus.COMPENSATING  # releasing, not waiting
        assert await d.relay(HOME) == 0  # the charge left the outbox with the cancel
        remote = d.clusters.backend_for(REMOTE)
        assert await remote.commands.get(REMOTE, charge_id) is None  # never reached billing
        done = await self.finish(d, process.process_id)
        assert done.status is ProcessStatus.CANCELED
        assert done.state.done == ["reserve", "release"]
        assert d.charged == []

    async def test_cancel_after_the_relay_withdraws_it_on_its_cluster(
        self, deployment: Deployment
    ) -> None:
        d = deployment
        process = await self.awaiting_charge(d)
        charge_id = process.awaiting_command_id
        assert await d.relay(HOME) == 1  # the charge is on billing's cluster now
        canceled = await d.manager.cancel(process.process_id, "customer withdrew")
        # Whether it started is known there only: wait for its outcome, ask to withdraw.
        assert canceled.status is ProcessStatus.COMPENSATING
        assert canceled.compensation is not None
        assert canceled.compensation.waiting_for == Step.CHARGE
        assert await d.relay(HOME) == 1  # the withdrawal
        remote = d.clusters.backend_for(REMOTE)
        row = await remote.commands.get(REMOTE, charge_id)
        assert row is not None and row.status is CommandStatus.CANCELED
        trail = [e.event_type for e in await remote.commands.audit_trail(charge_id, REMOTE)]
        assert trail == [AuditEventType.SENT, AuditEventType.WITHDRAWN]
        assert await d.remote_worker.process_once() == 0  # nothing to run
        assert await d.relay(REMOTE) == 1  # its CANCELED reply, back to the process
        assert await d.router.process_once() == 1  # -> release
        done = await self.finish(d, process.process_id)
        assert done.status is ProcessStatus.CANCELED
        assert done.state.done == ["reserve", "release"]
        assert d.charged == []
        assert await d.relay(HOME) == 0 and await d.relay(REMOTE) == 0
