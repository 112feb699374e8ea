"""Schema migrations: apply (idempotent, concurrent), verify, schema_sql."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg._queries
import pytest
import pytest_asyncio

import commandbus.postgres
from commandbus.errors import SchemaError
from commandbus.postgres import PostgresBackend, apply_schema, migrations, schema_sql, verify_schema
from commandbus.postgres.catalog import expected_catalog, live_catalog
from commandbus.postgres.queries import load_queries, parse_named_queries
from commandbus.testing.pg import TemplateDatabase


@pytest_asyncio.fixture
async def empty_dsn(pg_template: TemplateDatabase) -> AsyncIterator[str]:
    dsn = await pg_template.create_empty()
    try:
        yield dsn
    finally:
        await pg_template.drop(dsn)


async def _fetch(dsn: str, query: bytes, params: dict[str, Any] | None = None) -> list[Any]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall()


async def _structure(dsn: str) -> dict[str, list[Any]]:
    """Columns, indexes, constraints and table options of the commandbus schema."""
    columns = await _fetch(
        dsn,
        b"SELECT table_name, column_name, data_type, is_nullable, column_default,"
        b" generation_expression FROM information_schema.columns"
        b" WHERE table_schema = 'commandbus' ORDER BY table_name, ordinal_position",
    )
    indexes = await _fetch(
        dsn,
        b"SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'commandbus'"
        b" ORDER BY indexname",
    )
    constraints = await _fetch(
        dsn,
        b"SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
        b" JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'commandbus'"
        b" ORDER BY conname",
    )
    options = await _fetch(
        dsn,
        b"SELECT c.relname, c.reloptions FROM pg_class c"
        b" JOIN pg_namespace n ON n.oid = c.relnamespace"
        b" WHERE n.nspname = 'commandbus' AND c.relkind = 'r' ORDER BY c.relname",
    )
    return {"columns": columns, "indexes": indexes, "constraints": constraints, "opts": options}


async def test_apply_twice_is_idempotent(empty_dsn: str) -> None:
    first = await apply_schema(empty_dsn)
    assert first == [m.filename for m in migrations()]
    assert "001_commands.sql" in first
    assert await apply_schema(empty_dsn) == []
    assert await verify_schema(empty_dsn) == []
    ledger = await _fetch(empty_dsn, b"SELECT version, checksum FROM commandbus.schema_migrations")
    assert sorted(ledger) == sorted((m.version, m.checksum) for m in migrations())


async def test_concurrent_apply_serialises_on_the_advisory_lock(empty_dsn: str) -> None:
    results = await asyncio.gather(*(apply_schema(empty_dsn) for _ in range(4)))
    applied = [r for r in results if r]
    # exactly one caller applied the migrations; the others found them recorded
    assert len(applied) == 1
    assert applied[0] == [m.filename for m in migrations()]
    assert await verify_schema(empty_dsn) == []


async def test_apply_accepts_a_connection_and_a_pool(empty_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(empty_dsn) as conn:
        assert await apply_schema(conn) != []
    backend = await PostgresBackend.connect(empty_dsn, min_size=1, max_size=2)
    try:
        assert await apply_schema(backend.pool) == []
        assert await verify_schema(backend.pool) == []
    finally:
        await backend.close()


async def test_verify_reports_a_database_without_the_schema(empty_dsn: str) -> None:
    problems = await verify_schema(empty_dsn)
    assert len(problems) == 1
    assert "not installed" in problems[0]


async def test_verify_detects_a_missing_migration(pg_dsn: str) -> None:
    assert await verify_schema(pg_dsn) == []
    await _fetch(pg_dsn, b"DELETE FROM commandbus.schema_migrations WHERE version = 1 RETURNING 1")
    problems = await verify_schema(pg_dsn)
    assert problems == ["migration 001_commands.sql has not been applied"]


async def test_verify_detects_checksum_mismatch_and_unknown_versions(pg_dsn: str) -> None:
    await _fetch(
        pg_dsn,
        b"UPDATE commandbus.schema_migrations SET checksum = 'x' WHERE version = 1 RETURNING 1",
    )
    await _fetch(
        pg_dsn,
        b"INSERT INTO commandbus.schema_migrations (version, name, checksum)"
        b" VALUES (999, 'from_the_future', 'y') RETURNING 1",
    )
    problems = await verify_schema(pg_dsn)
    assert any("001_commands.sql" in p and "checksum mismatch" in p for p in problems)
    assert any("999_from_the_future" in p for p in problems)
    assert len(problems) == 2
    # and apply refuses to run on top of a changed migration
    with pytest.raises(SchemaError, match="checksum mismatch"):
        await apply_schema(pg_dsn)


async def test_the_expected_catalog_is_what_the_migrations_create(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        live = await live_catalog(conn)
    expected = expected_catalog()
    # Exact for tables, columns and functions; by name for indexes and constraints (their
    # printed definitions vary between PostgreSQL versions). After a new migration:
    # python -m commandbus.postgres.catalog DSN_OF_A_FRESHLY_MIGRATED_DATABASE
    for kind in ("table", "column", "function"):
        assert live[kind] == expected[kind], kind
    for kind in ("index", "constraint"):
        assert set(live[kind]) == set(expected[kind]), kind


async def test_verify_checks_the_objects_not_only_the_ledger(pg_dsn: str) -> None:
    assert await verify_schema(pg_dsn) == []
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute("DROP TABLE commandbus.audit")
        await conn.execute("DROP INDEX commandbus.queue_message_claim_idx")
        await conn.execute("ALTER TABLE commandbus.command ALTER COLUMN reply_to TYPE varchar(10)")
        await conn.execute("CREATE INDEX my_own_idx ON commandbus.command (batch_id)")
    problems = await verify_schema(pg_dsn)
    assert "table commandbus.audit is missing" in problems
    assert "column commandbus.audit.event_type is missing" in problems
    assert "index commandbus.queue_message_claim_idx is missing" in problems
    assert (
        "column commandbus.command.reply_to is 'character varying(10)', expected 'text'" in problems
    )
    assert not any("my_own_idx" in p for p in problems)  # your own objects are fine


async def test_schema_sql_builds_the_same_schema_as_the_migrations(
    empty_dsn: str, pg_dsn: str
) -> None:
    script = schema_sql()
    assert "CREATE TABLE commandbus.queue_message" in script
    async with await psycopg.AsyncConnection.connect(empty_dsn, autocommit=True) as conn:
        await conn.execute(script.encode())
    assert await verify_schema(empty_dsn) == []
    assert await _structure(empty_dsn) == await _structure(pg_dsn)
    # applying the migrations on top of the script is a no-op
    assert await apply_schema(empty_dsn) == []
    # and so is the script itself, run again (idempotent like apply)
    async with await psycopg.AsyncConnection.connect(empty_dsn, autocommit=True) as conn:
        await conn.execute(script.encode())
    assert await verify_schema(empty_dsn) == []
    # a ledger that records other content stops the script, and nothing changes
    async with await psycopg.AsyncConnection.connect(empty_dsn, autocommit=True) as conn:
        await conn.execute(
            "UPDATE commandbus.schema_migrations SET checksum = 'x' WHERE version = 2"
        )
        with pytest.raises(psycopg.errors.RaiseException, match=r"002_process\.sql"):
            await conn.execute(script.encode())


async def test_missing_schema_is_reported_as_schema_error(empty_dsn: str) -> None:
    backend = await PostgresBackend.connect(empty_dsn, min_size=1, max_size=2)
    try:
        with pytest.raises(SchemaError, match="commandbus schema apply"):
            await backend.queue.depth("pay__commands")
    finally:
        await backend.close()


def test_named_queries_have_no_stray_percent_signs() -> None:
    queries = load_queries()
    assert {"insert_commands", "claim_commands", "settle", "enqueue", "read"} <= set(queries)
    for name, text in queries.items():
        stripped = re.sub(rb"%\([a-z_]+\)[sb]", b"", text)
        assert b"%" not in stripped, name


def test_parse_named_queries_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse_named_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    assert parse_named_queries("header\n-- name: a\nSELECT 1;\n") == {"a": b"SELECT 1;"}


SQL_FILES = sorted(
    p.name
    for p in (Path(commandbus.postgres.__file__).parent / "sql").iterdir()
    if p.name.endswith("queries.sql") or p.name == "ledger.sql"
)


@pytest.mark.parametrize("filename", SQL_FILES)
def test_named_queries_fit_psycopgs_query_cache(filename: str) -> None:
    # psycopg parses the placeholders of a query longer than this on every execute (it
    # caches only shorter ones): the claim and the settle ran that parse per batch.
    limit = getattr(psycopg._queries, "MAX_CACHED_STATEMENT_LENGTH", 4096)
    for name, text in load_queries(filename).items():
        assert len(text) <= limit, (name, len(text))


def test_named_queries_drop_comment_lines_only() -> None:
    text = "-- name: a\n-- why\nSELECT '--' AS x, -- kept: after code\n   -- indented\n  1;\n"
    assert parse_named_queries(text) == {"a": b"SELECT '--' AS x, -- kept: after code\n  1;"}


def test_migration_files_are_numbered_in_order() -> None:
    found = migrations()
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[0].filename == "001_commands.sql"
