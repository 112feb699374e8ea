"""Retention: delete what is left of commands that finished long ago.

Finished commands (COMPLETED, FAILED, CANCELED) keep their row, their audit trail and
any archived message for as long as nobody deletes them, and that history grows with
every command sent. ``prune_history`` deletes those last changed more than
``older_than`` ago, in batches (each its own transaction, so a run never holds many
locks nor keeps a long snapshot open), oldest first. Commands that are waiting, running
or in the troubleshooting queue are never touched, nor is a finished command whose queue
message is still there. ``commandbus history prune --older-than 30d`` runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from commandbus.backends import BackendSource, backend_from
from commandbus.errors import ValidationError
from commandbus.models import PrunedHistory
from commandbus.validation import validate_count, validate_name

logger = logging.getLogger(__name__)

#: The most commands one batch deletes (one transaction).
MAX_PRUNE_BATCH = 100_000


async def prune_history(
    pool: BackendSource,
    older_than: timedelta,
    *,
    domain: str | None = None,
    batch_size: int = 5_000,
    on_batch: Callable[[PrunedHistory], None] | None = None,
) -> PrunedHistory:
    """Delete commands (of ``domain``, or of every domain) finished more than
    ``older_than`` ago, with their audit events and archived messages; returns what was
    deleted. ``on_batch`` is told what each batch deleted (for progress)."""
    if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
        raise ValidationError(f"older_than must be a positive timedelta, got {older_than!r}")
    if domain is not None:
        validate_name(domain)
    validate_count(batch_size, "batch_size", MAX_PRUNE_BATCH)
    backend = backend_from(pool)
    cutoff = backend.clock.now() - older_than
    pruned = await backend.commands.prune_finished(
        cutoff, domain=domain, batch_size=batch_size, on_batch=on_batch
    )
    logger.info(
        "pruned %d commands finished before %s (%d audit events, %d archived messages)",
        pruned.commands,
        cutoff.isoformat(),
        pruned.audit_events,
        pruned.archived_messages,
    )
    return pruned
