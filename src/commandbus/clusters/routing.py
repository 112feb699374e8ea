"""What a cluster's command store does with a send of several domains: the requests for
its own domains are sent as always, those for domains of other clusters go to its outbox,
in the same transaction. Pure helpers both adapters' routing stores share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from commandbus.clusters.topology import Topology
from commandbus.errors import ValidationError
from commandbus.models import JsonObject, SendRequest, SendResult

__all__ = [
    "REMOTE_BATCH_REFUSAL",
    "RoutedSends",
    "outbox_payload",
    "received_request",
    "refuse_remote_batch",
    "route_sends",
]

#: Why a batch cannot take a command of another cluster (docs/batches.md says more).
REMOTE_BATCH_REFUSAL = (
    "a batch's commands live on its cluster: a command for domain {domain!r}, which is on "
    "another cluster, cannot join batch {batch_id} (send it outside the batch, or create "
    "the batch on the cluster of {domain!r})"
)


@dataclass(frozen=True)
class RoutedSends:
    """The requests of one send, split by where they go (each in request order)."""

    local: list[SendRequest]
    remote: list[SendRequest]

    def results(
        self,
        requests: Sequence[SendRequest],
        sent: Sequence[SendResult],
        outbox_ids: Sequence[int],
    ) -> list[SendResult]:
        """The results in request order: a local command's from its insert, a remote
        one's with its outbox row's id as ``msg_id`` (it has no queue message here)."""
        by_id = {s.command_id: s for s in sent}
        remote: dict[tuple[str, UUID], int] = {
            (r.domain, r.command_id): i for r, i in zip(self.remote, outbox_ids, strict=True)
        }
        results = []
        for r in requests:
            outbox_id = remote.get((r.domain, r.command_id))
            if outbox_id is not None:
                results.append(SendResult(command_id=r.command_id, msg_id=outbox_id))
            else:
                results.append(by_id[r.command_id])
        return results


def route_sends(topology: Topology, dsn: str, requests: Sequence[SendRequest]) -> RoutedSends:
    """Split ``requests`` for the cluster at ``dsn``; a remote one with a ``batch_id`` is
    refused (``ValidationError``: nothing is sent)."""
    local: list[SendRequest] = []
    remote: list[SendRequest] = []
    for r in requests:
        if topology.is_remote(r.domain, dsn):
            if r.batch_id is not None:
                refuse_remote_batch(topology, dsn, r.domain, r.batch_id)
            remote.append(r)
        else:
            local.append(r)
    return RoutedSends(local, remote)


def refuse_remote_batch(topology: Topology, dsn: str, domain: str, batch_id: object) -> None:
    """``ValidationError`` if a batch of ``domain`` is asked of the cluster at ``dsn``
    while ``domain`` lives on another one (its counters could not see its members)."""
    if topology.is_remote(domain, dsn):
        raise ValidationError(REMOTE_BATCH_REFUSAL.format(domain=domain, batch_id=batch_id))


def outbox_payload(request: SendRequest, default_max_attempts: int) -> JsonObject:
    """A remote send request as its outbox row keeps it (and its cluster receives it)."""
    return {
        "domain": request.domain,
        "command_type": request.command_type,
        "command_id": str(request.command_id),
        "data": request.data,
        "correlation_id": str(request.correlation_id) if request.correlation_id else None,
        "reply_to": request.reply_to,
        "max_attempts": request.max_attempts or default_max_attempts,
        "delay": request.delay or 0.0,
        "headers": request.headers,
    }


def received_request(payload: JsonObject) -> SendRequest:
    """The send request an outbox payload describes (on the receiving cluster)."""
    correlation = payload.get("correlation_id")
    return SendRequest(
        domain=str(payload["domain"]),
        command_type=str(payload["command_type"]),
        command_id=UUID(str(payload["command_id"])),
        data=payload["data"],
        correlation_id=UUID(str(correlation)) if correlation else None,
        reply_to=payload.get("reply_to"),
        max_attempts=int(payload["max_attempts"]),
        delay=float(payload.get("delay") or 0.0) or None,
        headers=payload.get("headers"),
    )
