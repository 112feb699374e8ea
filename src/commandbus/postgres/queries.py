"""Load named SQL blocks from the ``.sql`` files shipped in ``commandbus.postgres.sql``.

A file holds blocks that each start with a ``-- name: <name>`` line; everything up to
the next such line is the query, less its comment lines (they are for readers of the
file: psycopg caches its parse of a query's placeholders only up to 4 KB, and the claim
and the settle, comments included, are longer, so each execute parsed them again).
Queries are returned as ``bytes`` (psycopg accepts them as-is), so no query text is ever
assembled from input at run time.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
#: A line holding only a comment (a comment after code on its line stays: telling it from
#: "--" inside a string literal would take a SQL lexer).
_COMMENT_LINE = re.compile(r"^[ \t]*--[^\n]*\n?", re.MULTILINE)


def read_sql_file(filename: str) -> str:
    """The text of ``commandbus/postgres/sql/<filename>``."""
    return resources.files("commandbus.postgres").joinpath("sql", filename).read_text("utf-8")


def parse_named_queries(text: str) -> dict[str, bytes]:
    """Split ``text`` into its ``-- name:`` blocks (text before the first one is ignored),
    each without its comment lines."""
    queries: dict[str, bytes] = {}
    matches = list(_NAME_LINE.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = _COMMENT_LINE.sub("", text[match.end() : end]).strip()
        name = match.group(1)
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        if not body:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = body.encode("utf-8")
    return queries


@cache
def load_queries(filename: str = "queries.sql") -> dict[str, bytes]:
    """Named queries of one file under ``commandbus/postgres/sql`` (cached)."""
    return parse_named_queries(read_sql_file(filename))


class Queries:
    """Attribute-style access to the named queries of one file: ``Q.claim_commands``."""

    def __init__(self, filename: str = "queries.sql") -> None:
        self._queries = load_queries(filename)

    def __getattr__(self, name: str) -> bytes:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._queries
