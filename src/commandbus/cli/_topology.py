"""``--topology FILE``: the file that maps domains to their clusters' DSNs."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path

import click

from commandbus.clusters.topology import Topology
from commandbus.errors import CommandBusError

__all__ = ["check_on_cluster", "load_topology"]


def load_topology(path: str) -> Topology:
    """The ``commandbus.clusters.Topology`` of a topology file: TOML (or JSON, for a
    ``.json`` file) with a ``domains`` table mapping each domain to its cluster's DSN::

        [domains]
        reporting = "postgresql://app@cluster-a/shop"
        billing = "postgresql://app@cluster-b/shop"
    """
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--topology"
        ) from None
    try:
        parsed = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"{path} is not valid: {exc}", param_hint="--topology") from None
    domains = parsed.get("domains") if isinstance(parsed, dict) else None
    if not isinstance(domains, dict):
        raise click.BadParameter(
            f"{path} needs a 'domains' table mapping each domain to a DSN", param_hint="--topology"
        )
    try:
        return Topology(domains)
    except CommandBusError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--topology") from None


def check_on_cluster(
    topology: Topology | None, topology_file: str | None, domains: Sequence[str], url: str
) -> None:
    """Refuse to serve ``domains`` from ``url`` when the topology puts one of them on
    another cluster (its replies and commands are there, not here)."""
    if topology is None:
        return
    elsewhere = sorted(d for d in domains if d in topology.domains and topology.dsn_of(d) != url)
    if elsewhere:
        raise click.UsageError(
            f"{', '.join(elsewhere)} live(s) on another cluster of {topology_file}: "
            f"run one per cluster (--domain {elsewhere[0]})"
        )
