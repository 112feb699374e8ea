"""Simulated preview infrastructure: ``DeployPreview`` and ``TearDownPreview`` in the
``previews`` domain. ``failing`` makes deploys of some environments fail for good."""

from __future__ import annotations

from typing import Any

from commandbus.errors import BusinessRuleException
from commandbus.handler import HandlerContext, HandlerRegistry
from commandbus.models import Command

DOMAIN = "previews"


class PreviewCloud:
    """What the simulated infrastructure did, to check in tests."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.failing = set(failing or ())
        self.deployed: list[tuple[str, str, str]] = []
        self.torn_down: list[tuple[str, str, str]] = []

    def register(self, registry: HandlerRegistry) -> HandlerRegistry:
        registry.register(DOMAIN, "DeployPreview", self.deploy)
        registry.register(DOMAIN, "TearDownPreview", self.tear_down)
        return registry

    async def deploy(self, command: Command, context: HandlerContext) -> dict[str, Any]:
        pr, env, commit = command.data["pr"], command.data["env"], command.data["commit"]
        if env in self.failing:
            raise BusinessRuleException("QUOTA", f"no capacity left in {env}")
        self.deployed.append((pr, env, commit))
        return {"url": f"https://{env}.previews.example/{pr.replace('#', '-')}"}

    async def tear_down(self, command: Command, context: HandlerContext) -> dict[str, Any]:
        data = command.data
        self.torn_down.append((data["pr"], data["env"], data["commit"]))
        return {}
