"""Progress on a terminal: a bar for ``process replay``, the migrations of ``schema
apply`` as they run, live counters for ``worker run`` / ``router run`` / ``run``.

``--progress/--no-progress`` (``COMMANDBUS_PROGRESS``) forces it on or off; by default it
is shown when standard error is a terminal, so logs and pipes stay clean.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from commandbus.cli._common import err_console, option

F = TypeVar("F", bound=Callable[..., Any])


def progress_option() -> Callable[[F], F]:
    return option(
        "--progress/--no-progress",
        envvar="COMMANDBUS_PROGRESS",
        default=None,
        help="Show progress (default: when standard error is a terminal).",
    )


def progress_console(flag: bool | None) -> Console | None:
    """Where progress goes, or None when it is not shown."""
    console = err_console()
    return console if (console.is_terminal if flag is None else flag) else None


@contextlib.contextmanager
def progress_bar(console: Console | None, description: str) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback that draws a bar on ``console`` (a no-op without one)."""
    if console is None:
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextlib.asynccontextmanager
async def live_view(
    console: Console | None, render: Callable[[], RenderableType]
) -> AsyncIterator[None]:
    """Redraw ``render()`` on ``console`` once a second while the block runs."""
    if console is None:
        yield
        return
    # On a terminal the view goes away at the end (a summary follows); forced elsewhere it
    # is printed once, as it was last.
    transient = console.is_terminal
    with Live(render(), console=console, refresh_per_second=1, transient=transient) as live:

        async def refresh() -> None:
            while True:
                await asyncio.sleep(1)
                live.update(render())

        task = asyncio.create_task(refresh())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
