"""``commandbus worker run --tracing``: a real worker process records its spans through
the global tracer provider its --app module set up, as children of the spans that sent
the commands in another process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
import time
from pathlib import Path
from uuid import uuid4

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.cli_support import cli_environment

from commandbus import CommandBus
from commandbus.cli.main import cli
from commandbus.postgres import PostgresBackend
from commandbus.tracing import OpenTelemetryTracing

#: The application: handlers, and an SDK whose spans go to spans.jsonl, one a line.
APP = textwrap.dedent(
    """
    import json

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    from commandbus import HandlerRegistry


    def line(span):
        parent = span.parent.span_id if span.parent is not None else None
        context = span.get_span_context()
        record = {"name": span.name, "trace": context.trace_id, "parent": parent}
        return json.dumps(record) + "\\n"


    provider = TracerProvider()
    exporter = ConsoleSpanExporter(out=open("spans.jsonl", "a"), formatter=line)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    registry = HandlerRegistry()


    @registry.handler("shop", "Pay")
    async def pay(command, ctx):
        return {"paid": True}
    """
)


def recorded(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_worker_run_with_tracing_continues_the_senders_trace(
    pg_dsn: str, tmp_path: Path
) -> None:
    (tmp_path / "tracedapp.py").write_text(APP)
    environ = cli_environment()
    environ["DATABASE_URL"] = pg_dsn
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    backend = await PostgresBackend.connect(pg_dsn, min_size=1, max_size=2)
    try:
        bus = CommandBus(backend, telemetry=OpenTelemetryTracing(provider))
        for _ in range(2):
            await bus.send("shop", "Pay", uuid4(), {})
    finally:
        await backend.close()
    sends = {
        s.context.span_id: s.context.trace_id
        for s in exporter.get_finished_spans()
        if s.name == "commandbus.send"
    }
    assert len(sends) == 2
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "commandbus",
        "worker",
        "run",
        "--app",
        "tracedapp:registry",
        "--poll-interval",
        "0.2",
        "--tracing",
        "--no-progress",
        cwd=tmp_path,
        env=environ,
        stderr=asyncio.subprocess.PIPE,
    )
    spans_file = tmp_path / "spans.jsonl"
    try:
        deadline = time.monotonic() + 30
        while len([s for s in recorded(spans_file) if s["name"] == "commandbus.handle"]) < 2:
            assert proc.returncode is None, "the worker exited early"
            assert time.monotonic() < deadline, recorded(spans_file)
            await asyncio.sleep(0.2)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    handles = [s for s in recorded(spans_file) if s["name"] == "commandbus.handle"]
    # Each handler span is the child of one of the sends, in the send's trace.
    assert {(s["parent"], s["trace"]) for s in handles} == set(sends.items())
    assert any(s["name"] == "commandbus.claim" for s in recorded(spans_file))


@pytest.mark.parametrize("command", [["worker", "run"], ["router", "run"], ["run"]])
def test_tracing_is_an_option_of_the_running_commands_and_off_by_default(
    command: list[str],
) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--tracing / --no-tracing" in result.output
    assert "COMMANDBUS_TRACING" in result.output
    assert "default: no-tracing" in result.output
