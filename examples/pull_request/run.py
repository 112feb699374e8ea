"""Run the pull-request previews demo on its own.

python -m examples.pull_request.run             # PostgreSQL (DATABASE_URL, or embedded)
python -m examples.pull_request.run --memory    # in memory, no database
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from examples.pull_request.demo import run_process_demo
from rich.console import Console


async def open_backend(memory: bool) -> Any:
    if memory:
        from commandbus.memory import InMemoryBackend

        return InMemoryBackend()
    from commandbus.embedded import database_url
    from commandbus.postgres import PostgresBackend, apply_schema

    url = database_url()
    await apply_schema(url)
    return await PostgresBackend.connect(url, min_size=2, max_size=8)


async def run(memory: bool) -> None:
    backend = await open_backend(memory)
    try:
        await run_process_demo(backend, Console(highlight=False))
    finally:
        await backend.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", action="store_true", help="in memory, no database")
    asyncio.run(run(parser.parse_args(argv).memory))


if __name__ == "__main__":
    main()
