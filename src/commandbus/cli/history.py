"""``commandbus history prune``: retention of finished commands."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from commandbus.cli._common import connect, console, json_option, option, print_json, run, state
from commandbus.models import PrunedHistory

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

if TYPE_CHECKING:  # click >= 8.2 types ParamType generically; older versions do not
    _DurationBase = click.ParamType[timedelta, Any]
else:
    _DurationBase = click.ParamType


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a ``timedelta``; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: use a whole number and a unit, e.g. 30d, 12h, 90m "
            "(units: s, m, h, d, w)"
        )
    amount = int(match.group(1))
    if amount == 0:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    try:
        return timedelta(**{_UNITS[match.group(2)]: amount})
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too long") from None


def describe_duration(duration: timedelta) -> str:
    """``timedelta(days=30)`` as ``30 days``, in the largest unit that divides it."""
    total = int(duration.total_seconds())
    for unit, seconds in (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if total % seconds == 0:
            count = total // seconds
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{total} second{'' if total == 1 else 's'}"


class DurationParam(_DurationBase):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group("history")
def history_group() -> None:
    """History of finished commands: retention."""


@history_group.command("prune")
@option(
    "--older-than",
    envvar="COMMANDBUS_PRUNE_OLDER_THAN",
    type=DurationParam(),
    required=True,
    help="Delete commands finished longer ago than this, e.g. 30d, 12h (s, m, h, d, w).",
)
@option(
    "--domain",
    "-d",
    envvar="COMMANDBUS_DOMAIN",
    help="Only this domain (default: every domain).",
)
@option(
    "--batch-size",
    envvar="COMMANDBUS_PRUNE_BATCH_SIZE",
    type=click.IntRange(1, 100_000),
    default=5_000,
    show_default=True,
    help="Commands deleted per transaction.",
)
@json_option()
@click.pass_context
def prune_cmd(
    ctx: click.Context,
    older_than: timedelta,
    domain: str | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Delete finished commands (COMPLETED, FAILED, CANCELED) last changed longer ago
    than --older-than, with their audit events and archived messages.

    Commands that are pending, running or in the troubleshooting queue are never
    deleted. Runs in batches, each its own transaction, oldest first: safe to run while
    workers run, and to interrupt (what was deleted stays deleted).
    """
    url = state(ctx).database_url()

    async def prune() -> PrunedHistory:
        from commandbus.ops.history import prune_history

        async with connect(url, max_size=1) as backend:
            return await prune_history(backend, older_than, domain=domain, batch_size=batch_size)

    pruned = run(prune())
    if as_json:
        print_json(pruned)
        return
    console().print(
        f"Pruned {pruned.commands:,} finished commands older than {describe_duration(older_than)} "
        f"({pruned.audit_events:,} audit events, {pruned.archived_messages:,} archived "
        "messages)."
    )
