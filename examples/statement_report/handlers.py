"""Simulated services of the StatementReport process, with configurable failure rates.

``register_statement_handlers(registry, config)`` registers handlers for the three step
commands and the two clean-up commands in the ``reporting`` domain. Each step handler
fails at the configured rates (drawn from ``config.seed``'d random generator, so a run is
reproducible): transiently (retried by the worker), permanently (to the troubleshooting
queue) or for a business reason (the process compensates).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from commandbus.errors import BusinessRuleException, PermanentCommandError, TransientCommandError
from commandbus.handler import HandlerContext, HandlerRegistry
from commandbus.models import Command

DOMAIN = "reporting"
STEP_COMMANDS = ("StatementQuery", "StatementDataAggregation", "StatementRender")
CLEANUP_COMMANDS = ("DeleteQueryResult", "DeleteAggregatedData")


@dataclass
class FailureRates:
    transient: float = 0.0
    permanent: float = 0.0
    business: float = 0.0


@dataclass
class ServiceConfig:
    """Failure rates per command type (missing: no failures) and the random seed."""

    rates: dict[str, FailureRates] = field(default_factory=dict)
    seed: int = 0
    calls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def maybe_fail(self, command_type: str) -> None:
        self.calls[command_type] = self.calls.get(command_type, 0) + 1
        rates = self.rates.get(command_type)
        if rates is None:
            return
        roll = self._random.random()
        if roll < rates.business:
            raise BusinessRuleException("REPORT_REFUSED", f"{command_type} refused the request")
        if roll < rates.business + rates.permanent:
            raise PermanentCommandError("SERVICE_BROKEN", f"{command_type} cannot do this")
        if roll < rates.business + rates.permanent + rates.transient:
            raise TransientCommandError("SERVICE_BUSY", f"{command_type} is busy, try again")


def register_statement_handlers(
    registry: HandlerRegistry, config: ServiceConfig | None = None
) -> ServiceConfig:
    """Register the simulated services; returns the config (its ``calls`` count calls)."""
    cfg = config or ServiceConfig()

    async def query(command: Command, context: HandlerContext) -> dict[str, Any]:
        cfg.maybe_fail(command.command_type)
        accounts = "-".join(command.data["account_list"])
        return {"result_path": f"s3://statements/query/{command.command_id}/{accounts}.json"}

    async def aggregate(command: Command, context: HandlerContext) -> dict[str, Any]:
        cfg.maybe_fail(command.command_type)
        return {"result_path": command.data["data_path"].replace("/query/", "/aggregated/")}

    async def render(command: Command, context: HandlerContext) -> dict[str, Any]:
        cfg.maybe_fail(command.command_type)
        source = command.data["aggregated_data_path"]
        return {"result_path": f"{source.rsplit('.', 1)[0]}.{command.data['output_type']}"}

    async def delete(command: Command, context: HandlerContext) -> dict[str, Any]:
        cfg.maybe_fail(command.command_type)
        return {"deleted": command.data["path"]}

    registry.register(DOMAIN, "StatementQuery", query)
    registry.register(DOMAIN, "StatementDataAggregation", aggregate)
    registry.register(DOMAIN, "StatementRender", render)
    for command_type in CLEANUP_COMMANDS:
        registry.register(DOMAIN, command_type, delete)
    return cfg
