"""``Topology``: which PostgreSQL cluster (DSN) holds each domain. Pure and validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from commandbus.errors import ValidationError
from commandbus.validation import validate_name

__all__ = ["Topology"]


@dataclass(frozen=True)
class Topology:
    """Domains mapped to the DSN of the cluster that holds them::

        Topology({"orders": "postgresql://a/shop", "billing": "postgresql://b/shop"})

    Every cluster carries the whole schema; a domain's commands, queues, processes and
    batches live on its cluster only. What one cluster sends to a domain of another goes
    through its outbox (``commandbus.postgres.outbox``)."""

    domains: Mapping[str, str]
    _order: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.domains, Mapping) or not self.domains:
            raise ValidationError("a topology maps at least one domain to a DSN")
        checked: dict[str, str] = {}
        for domain, dsn in self.domains.items():
            if not isinstance(dsn, str) or not dsn.strip():
                raise ValidationError(f"domain {domain!r} needs a DSN (a non-empty string)")
            checked[validate_name(domain)] = dsn
        object.__setattr__(self, "domains", dict(checked))
        object.__setattr__(self, "_order", tuple(dict.fromkeys(checked.values())))

    @property
    def clusters(self) -> tuple[str, ...]:
        """The distinct DSNs, in the order their first domain was given."""
        return self._order

    def dsn_of(self, domain: str) -> str:
        try:
            return self.domains[domain]
        except KeyError:
            raise ValidationError(
                f"domain {domain!r} is on no cluster of the topology "
                f"(known: {sorted(self.domains)})"
            ) from None

    def domains_on(self, dsn: str) -> list[str]:
        return [d for d, at in self.domains.items() if at == dsn]

    def remote_domains(self, dsn: str) -> list[str]:
        """Domains held by other clusters than ``dsn``."""
        return [d for d, at in self.domains.items() if at != dsn]

    def is_remote(self, domain: str, dsn: str) -> bool:
        """Whether ``domain`` lives on another cluster than ``dsn``; a domain the
        topology does not name is local (it stays wherever it is sent)."""
        at = self.domains.get(domain)
        return at is not None and at != dsn
