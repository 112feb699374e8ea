"""``commandbus events tail|show`` and ``commandbus subscription list|parked|reset``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from commandbus.cli._common import (
    Column,
    compact_json,
    connect,
    console,
    fmt_short_time,
    json_option,
    listing,
    option,
    print_json,
    run,
    state,
    to_jsonable,
)
from commandbus.errors import SubscriptionNotFoundError
from commandbus.events import Checkpoint, EventStore, ParkedEvent, RecordedEvent, SubscriptionInfo

F = TypeVar("F", bound=Callable[..., Any])


def _limit_option(default: int | None, what: str) -> Callable[[F], F]:
    return option(
        "--limit",
        "-n",
        envvar="COMMANDBUS_LIMIT",
        type=click.IntRange(1, 10_000),
        default=default,
        show_default=default is not None,
        help=what,
    )


def _events_table(title: str, events: list[RecordedEvent], width: int) -> Any:
    return listing(
        title,
        [
            Column("position", [str(e.position) for e in events], justify="right"),
            Column("stream", [e.stream for e in events]),
            Column("version", [str(e.version) for e in events], 2, "right"),
            Column("type", [e.event_type for e in events]),
            Column("recorded", [fmt_short_time(e.recorded_at) for e in events], 4),
            Column("data", [compact_json(e.data, 60) for e in events], 3),
        ],
        width,
    )


@click.group("events")
def events_group() -> None:
    """Event streams: follow new events, or read one stream."""


@events_group.command("show")
@click.argument("stream")
@option(
    "--from-version",
    envvar="COMMANDBUS_FROM_VERSION",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="First version to show.",
)
@_limit_option(100, "Show at most this many.")
@json_option()
@click.pass_context
def events_show_cmd(
    ctx: click.Context, stream: str, from_version: int, limit: int, as_json: bool
) -> None:
    """Show the events of STREAM (e.g. order-42), oldest first."""
    url = state(ctx).database_url()

    async def fetch() -> list[RecordedEvent]:
        async with connect(url, max_size=1) as backend:
            return await EventStore(backend).read_stream(stream, from_version, limit)

    events = run(fetch())
    if as_json:
        print_json(events)
        return
    out = console()
    if not events:
        out.print(f"Stream {stream} has no events from version {from_version}.")
        return
    out.print(_events_table(f"Stream {stream} ({len(events)} shown)", events, out.width))


@events_group.command("tail")
@option(
    "--category",
    "-c",
    "categories",
    envvar="COMMANDBUS_CATEGORY",
    multiple=True,
    help="Only streams of this category (repeatable).",
)
@option(
    "--type",
    "-t",
    "event_types",
    envvar="COMMANDBUS_EVENT_TYPE",
    multiple=True,
    help="Only events of this type (repeatable).",
)
@option(
    "--from-start",
    envvar="COMMANDBUS_FROM_START",
    is_flag=True,
    help="Begin with the first event stored, not with the next one appended.",
)
@option(
    "--follow/--no-follow",
    envvar="COMMANDBUS_FOLLOW",
    default=True,
    show_default=True,
    help="Keep waiting for new events (stop with Ctrl-C).",
)
@_limit_option(None, "Stop after this many events.")
@option(
    "--poll-interval",
    envvar="COMMANDBUS_POLL_INTERVAL",
    type=click.FloatRange(0.05, 60),
    default=0.5,
    show_default=True,
    help="Seconds between reads while following.",
)
@json_option()
@click.pass_context
def events_tail_cmd(
    ctx: click.Context,
    categories: tuple[str, ...],
    event_types: tuple[str, ...],
    from_start: bool,
    follow: bool,
    limit: int | None,
    poll_interval: float,
    as_json: bool,
) -> None:
    """Print events of all streams as they are committed (JSON lines with --json)."""
    url = state(ctx).database_url()
    out = console()

    def show(event: RecordedEvent) -> None:
        if as_json:
            click.echo(json.dumps(to_jsonable(event), ensure_ascii=False))
        else:
            out.print(
                f"{event.position:>8}  {fmt_short_time(event.recorded_at)}  "
                f"{event.stream}#{event.version}  {event.event_type}  {compact_json(event.data)}",
                markup=False,
            )

    async def tail() -> None:
        async with connect(url, max_size=1) as backend:
            store = EventStore(backend)
            after = Checkpoint() if from_start else await store.backend.subscriptions.end()
            shown = 0
            while limit is None or shown < limit:
                page = await store.read_all(
                    after,
                    min(1000, limit - shown) if limit is not None else 1000,
                    categories=list(categories) or None,
                    event_types=list(event_types) or None,
                    # Without --follow: also what is committed but held back by an older
                    # transaction still open.
                    wait=0.0 if follow else 5.0,
                )
                for event in page:
                    show(event)
                shown += len(page)
                if page:
                    after = page[-1].checkpoint
                elif not follow:
                    return
                else:
                    await asyncio.sleep(poll_interval)

    run(tail())


@click.group("subscription")
def subscription_group() -> None:
    """Durable event subscriptions: where they stand, their parked events, resets."""


@subscription_group.command("list")
@json_option()
@click.pass_context
def subscription_list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List subscriptions with their checkpoint, lag and parked events."""
    url = state(ctx).database_url()

    async def fetch() -> list[SubscriptionInfo]:
        async with connect(url, max_size=1) as backend:
            return await EventStore(backend).subscriptions()

    found = run(fetch())
    if as_json:
        print_json(found)
        return
    out = console()
    if not found:
        out.print("No subscriptions yet.")
        return
    columns = [
        Column("name", [s.name for s in found]),
        Column("position", [str(s.checkpoint.position) for s in found], justify="right"),
        Column("handled", [str(s.handled) for s in found], 3, "right"),
        Column("lag", [str(s.lag) for s in found], justify="right"),
        Column("parked", [str(s.parked) for s in found], justify="right"),
        Column("failing", [_failing(s) for s in found], 2),
        Column("updated", [fmt_short_time(s.updated_at) for s in found], 4),
    ]
    out.print(listing(f"Subscriptions ({len(found)})", columns, out.width))


def _failing(info: SubscriptionInfo) -> str:
    if info.failing_position is None:
        return ""
    return f"event {info.failing_position}: {info.failures} tries, {info.last_error or ''}"


@subscription_group.command("parked")
@click.argument("name")
@_limit_option(100, "Show at most this many.")
@json_option()
@click.pass_context
def subscription_parked_cmd(ctx: click.Context, name: str, limit: int, as_json: bool) -> None:
    """List the events subscription NAME parked (its handler kept failing on them)."""
    url = state(ctx).database_url()

    async def fetch() -> list[ParkedEvent]:
        async with connect(url, max_size=1) as backend:
            store = EventStore(backend)
            if await store.subscription(name) is None:
                raise SubscriptionNotFoundError(name)
            return await store.parked_events(name, limit)

    parked = run(fetch())
    if as_json:
        print_json(parked)
        return
    out = console()
    if not parked:
        out.print(f"Subscription {name} has no parked events.")
        return
    columns = [
        Column("position", [str(p.event.position) for p in parked], justify="right"),
        Column("stream", [f"{p.event.stream}#{p.event.version}" for p in parked]),
        Column("type", [p.event.event_type for p in parked]),
        Column("tries", [str(p.attempts) for p in parked], 3, "right"),
        Column("parked", [fmt_short_time(p.parked_at) for p in parked], 4),
        Column("error", [p.error for p in parked], 2),
    ]
    out.print(listing(f"Parked events of {name} ({len(parked)})", columns, out.width))


@subscription_group.command("reset")
@click.argument("name")
@option(
    "--to-end",
    envvar="COMMANDBUS_TO_END",
    is_flag=True,
    help="Skip every event deliverable now, instead of going back to the first.",
)
@option("--yes", "-y", envvar="COMMANDBUS_YES", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def subscription_reset_cmd(ctx: click.Context, name: str, to_end: bool, yes: bool) -> None:
    """Move subscription NAME back to the first event (its handler sees every event
    again), or with --to-end past the last one."""
    what = "skip every event deliverable now" if to_end else "handle every event again"
    if not yes:
        click.confirm(f"Reset subscription {name}: it will {what}. Go on?", abort=True)
    url = state(ctx).database_url()

    async def reset() -> Checkpoint:
        async with connect(url, max_size=1) as backend:
            return await EventStore(backend).reset_subscription(name, to_end=to_end)

    to = run(reset())
    console().print(f"Subscription {name} reset to position {to.position}: it will {what}.")
