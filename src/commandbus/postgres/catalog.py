"""What the ``commandbus`` schema looks like in a live database, and what it should be.

``verify_schema`` does not trust the migration ledger alone: a table dropped by hand, a
column changed or an index missing is a problem the ledger cannot see. ``live_catalog``
reads the schema's tables, columns (type, nullability, default), indexes, constraints and
functions from ``pg_catalog``; ``EXPECTED_CATALOG`` (``sql/catalog.json``) is the same
description of a database the migrations just created. A test applies the migrations to a
fresh database and checks that the two are equal, so the file never drifts from the
migrations; ``python -m commandbus.postgres.catalog DSN`` rewrites it from such a database.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib import resources
from typing import Any

import psycopg

__all__ = ["catalog_differences", "expected_catalog", "live_catalog"]

Catalog = dict[str, dict[str, str]]

# Constant queries over pg_catalog, each returning (kind, name, definition). The weekly
# partitions of the audit trail (audit_YYYYMMDD, see 011_audit_partitions.sql) come and
# go with the calendar: they are not part of the expected schema.
WEEKLY_PARTITION = "^audit_[0-9]{8}$"
_CATALOG_SQL = """
SELECT 'table', c.relname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'commandbus' AND c.relkind IN ('r', 'p') AND c.relname !~ %(weekly)s
UNION ALL
SELECT 'column', c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'commandbus' AND c.relkind IN ('r', 'p') AND a.attnum > 0
  AND NOT a.attisdropped AND c.relname !~ %(weekly)s
UNION ALL
SELECT 'index', i.indexname, i.indexdef
FROM pg_indexes i WHERE i.schemaname = 'commandbus' AND i.tablename !~ %(weekly)s
UNION ALL
SELECT 'constraint', c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'commandbus' AND c.relname !~ %(weekly)s
UNION ALL
SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_function_result(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'commandbus'
"""

_KINDS = ("table", "column", "index", "constraint", "function")


async def live_catalog(conn: psycopg.AsyncConnection[Any]) -> Catalog:
    """The ``commandbus`` schema of the database ``conn`` is connected to."""
    cur = await conn.execute(_CATALOG_SQL, {"weekly": WEEKLY_PARTITION})
    catalog: Catalog = {kind: {} for kind in _KINDS}
    for kind, name, definition in await cur.fetchall():
        catalog[kind][name] = definition
    return catalog


def expected_catalog() -> Catalog:
    """The schema the migrations create (``sql/catalog.json``)."""
    text = resources.files("commandbus.postgres").joinpath("sql", "catalog.json").read_text()
    loaded: Catalog = json.loads(text)
    return loaded


#: Kinds whose definition is compared, not only their presence. The text PostgreSQL prints
#: for an index or a constraint varies a little between major versions; a column's type
#: and nullability does not.
_COMPARED = frozenset({"column", "function"})


def catalog_differences(live: Catalog, expected: Catalog) -> list[str]:
    """Each difference that matters, in words: an object the migrations create that is
    missing, or a column whose type or nullability changed. Objects of your own (an extra
    index) are not problems."""
    problems: list[str] = []
    for kind in _KINDS:
        have, want = live.get(kind, {}), expected.get(kind, {})
        for name in sorted(want):
            if name not in have:
                problems.append(f"{kind} commandbus.{name} is missing")
            elif kind in _COMPARED and have[name] != want[name]:
                problems.append(
                    f"{kind} commandbus.{name} is {have[name]!r}, expected {want[name]!r}"
                )
    return problems


async def _write(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        catalog = await live_catalog(conn)
    path = resources.files("commandbus.postgres").joinpath("sql", "catalog.json")
    text = json.dumps(catalog, indent=1, sort_keys=True) + "\n"
    with resources.as_file(path) as target:
        target.write_text(text)
    print(f"wrote {target} ({sum(len(v) for v in catalog.values())} objects)")


if __name__ == "__main__":  # python -m commandbus.postgres.catalog DSN_OF_A_FRESH_SCHEMA
    asyncio.run(_write(sys.argv[1]))
