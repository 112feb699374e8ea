"""Sending: the statements that write new commands (``insert_command`` for one,
``insert_commands`` for a batch) and their parameters. ``CommandInserts`` is the sending
part of ``PostgresCommandStore``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from commandbus.errors import DuplicateCommandError, StorageError
from commandbus.models import SendRequest, SendResult
from commandbus.postgres.connections import (
    statement_conn,
    transaction_conn,
    violates_unique,
)
from commandbus.postgres.queries import Queries
from commandbus.postgres.queue import dumps
from commandbus.validation import command_queue

Q = Queries()

#: The most commands one INSERT statement writes; a larger ``insert`` is several
#: statements in one transaction, pipelined, the first of them FIRST_INSERT_CHUNK long
#: (measured, 20,000 commands: 1,000 a statement after a first of 250 overlaps the
#: validation and encoding with the server's work best, about 1.5x the sends per second
#: of validating everything first and then writing 5,000 a statement).
INSERT_CHUNK = 1_000
FIRST_INSERT_CHUNK = 250


def repeated_ids(requests: Sequence[SendRequest]) -> tuple[str, list[UUID]] | None:
    """The first domain with a command id repeated within one call, and those ids."""
    seen: set[tuple[str, UUID]] = set()
    repeated: dict[str, list[UUID]] = {}
    for request in requests:
        key = (request.domain, request.command_id)
        if key in seen:
            repeated.setdefault(request.domain, []).append(request.command_id)
        seen.add(key)
    if not repeated:
        return None
    domain = next(iter(repeated))
    return domain, repeated[domain]


def insert_one_params(request: SendRequest, default_max_attempts: int) -> dict[str, Any]:
    """``insert_command``'s parameters for one request (the bus hands over the encoding of
    the data its validation made; encoded here only otherwise)."""
    return {
        "domain": request.domain,
        "command_id": request.command_id,
        "command_type": request.command_type,
        "data": request.encoded_data if request.encoded_data is not None else dumps(request.data),
        "correlation_id": request.correlation_id,
        "reply_to": request.reply_to,
        "max_attempts": (
            request.max_attempts if request.max_attempts is not None else default_max_attempts
        ),
        "delay": float(request.delay or 0.0),
        "headers": None if request.headers is None else dumps(request.headers),
        "batch_id": request.batch_id,
        "queue": command_queue(request.domain),
    }


class CommandInserts:
    """``insert``: one statement for up to FIRST_INSERT_CHUNK commands, pipelined parts in
    one transaction for more."""

    _pool: AsyncConnectionPool[Any]

    async def insert(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        *,
        conn: Any | None = None,
        prepare: Callable[[SendRequest], SendRequest] | None = None,
    ) -> list[SendResult]:
        if not requests:
            return []
        if len(requests) <= FIRST_INSERT_CHUNK:  # one statement
            prepared = list(requests) if prepare is None else [prepare(r) for r in requests]
            repeated = repeated_ids(prepared)
            if repeated is not None:
                raise DuplicateCommandError(*repeated)
            if len(prepared) == 1:  # one-at-a-time sends: scalar parameters, no arrays
                params = insert_one_params(prepared[0], default_max_attempts)
                rows = await self._write([params], Q.insert_command, prepared, conn, single=True)
            else:
                params = self._insert_params(prepared, default_max_attempts)
                rows = await self._write([params], Q.insert_commands, prepared, conn, single=True)
        else:
            prepared = []
            chunks = self._prepared_chunks(requests, default_max_attempts, prepare, prepared)
            rows = await self._write(chunks, Q.insert_commands, prepared, conn)
        msg_ids = [msg_id for row in rows for msg_id in row[0]]
        return [
            SendResult(command_id=r.command_id, msg_id=msg_id)
            for r, msg_id in zip(prepared, msg_ids, strict=True)
        ]

    def _prepared_chunks(
        self,
        requests: Sequence[SendRequest],
        default_max_attempts: int,
        prepare: Callable[[SendRequest], SendRequest] | None,
        prepared: list[SendRequest],
    ) -> Iterator[dict[str, Any]]:
        """The parameters of each statement of a large insert, prepared part by part (a
        small part first, so that the server starts early): the next part is prepared and
        encoded while the server writes the ones before. ``prepared`` collects what was
        written; a repeated id raises ``DuplicateCommandError`` once every request is
        prepared (the error names them all)."""
        seen: set[tuple[str, UUID]] = set()
        start, size = 0, FIRST_INSERT_CHUNK
        while start < len(requests):
            part = requests[start : start + size]
            if prepare is not None:
                part = [prepare(r) for r in part]
            prepared.extend(part)
            for r in part:
                key = (r.domain, r.command_id)
                if key in seen:
                    rest = requests[start + size :]
                    prepared.extend(rest if prepare is None else [prepare(r) for r in rest])
                    repeated = repeated_ids(prepared)
                    assert repeated is not None  # key is one of them
                    raise DuplicateCommandError(*repeated)
                seen.add(key)
            yield self._insert_params(part, default_max_attempts)
            start, size = start + size, INSERT_CHUNK

    async def _write(
        self,
        chunks: Iterable[dict[str, Any]],
        statement: Any,
        requests: Sequence[SendRequest],
        conn: Any | None,
        *,
        single: bool = False,
    ) -> list[Any]:
        """Run ``statement`` once per parameter set, atomically: one statement (``single``)
        runs in autocommit mode (one round trip); several, or a call inside the caller's
        transaction, run in a transaction or a savepoint, so that a duplicate (or an
        error preparing a later part) undoes this call only and leaves the caller's
        transaction usable. The statements are pipelined: the next one's parameters are
        made while the server runs the previous ones."""
        rows: list[Any] = []
        try:
            if conn is None and single:
                async with statement_conn(self._pool, None) as c:
                    cur = await c.execute(statement, next(iter(chunks)))
                    rows.append(await cur.fetchone())
            else:
                async with transaction_conn(self._pool, conn) as c, c.pipeline():
                    cursors = [await c.execute(statement, p) for p in chunks]
                    for cur in cursors:
                        rows.append(await cur.fetchone())
        except StorageError as exc:
            if not violates_unique(exc, "command_pkey"):
                raise
            raise await self._duplicate_error(requests, conn) from None
        return rows

    @staticmethod
    def _insert_params(
        requests: Sequence[SendRequest], default_max_attempts: int
    ) -> dict[str, Any]:
        return {
            "domains": [r.domain for r in requests],
            "command_ids": [r.command_id for r in requests],
            "command_types": [r.command_type for r in requests],
            # The bus hands over the encoding its validation made; encode only otherwise.
            "data": [
                r.encoded_data if r.encoded_data is not None else dumps(r.data) for r in requests
            ],
            "correlation_ids": [r.correlation_id for r in requests],
            "reply_tos": [r.reply_to for r in requests],
            "max_attempts": [
                r.max_attempts if r.max_attempts is not None else default_max_attempts
                for r in requests
            ],
            "delays": [float(r.delay or 0.0) for r in requests],
            "headers": [None if r.headers is None else dumps(r.headers) for r in requests],
            "batch_ids": [r.batch_id for r in requests],
            "queues": sorted({command_queue(r.domain) for r in requests}),
        }

    async def _duplicate_error(
        self, requests: Sequence[SendRequest], conn: Any | None
    ) -> DuplicateCommandError:
        """The error naming the requested ids that exist (the insert wrote nothing)."""
        keys = {
            "domains": [r.domain for r in requests],
            "command_ids": [r.command_id for r in requests],
        }
        async with statement_conn(self._pool, conn) as c:
            cur = await c.execute(Q.existing_commands, keys)
            found = await cur.fetchall()
        if not found:
            # Only when the caller's snapshot cannot see the committed duplicate
            # (REPEATABLE READ): name every requested id of the first domain.
            found = [(r.domain, r.command_id) for r in requests]
        domain = found[0][0]
        return DuplicateCommandError(domain, [cid for d, cid in found if d == domain])
