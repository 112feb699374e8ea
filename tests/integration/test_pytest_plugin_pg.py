"""The plugin's PostgreSQL fixture: a fresh database with the schema applied."""

from uuid import uuid4

from commandbus import CommandBus
from commandbus.postgres import PostgresBackend, verify_schema


async def test_commandbus_postgres_is_a_fresh_migrated_database(commandbus_postgres):
    assert isinstance(commandbus_postgres, PostgresBackend)
    assert await verify_schema(commandbus_postgres.pool) == []
    bus = CommandBus(commandbus_postgres)
    assert await bus.query_commands() == []
    await bus.send("orders", "Ship", uuid4(), {})
    assert len(await bus.query_commands()) == 1
