"""The Flask example: an order and its command commit together; a request that fails
after the send leaves neither (the command rolled back with the request's transaction)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from examples.flask_orders import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pg_dsn: str) -> Iterator[Any]:
    app = create_app(pg_dsn)
    app.testing = True
    try:
        yield app.test_client()
    finally:
        app.extensions["orders_pool"].close()


def committed(dsn: str, query: str) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def test_an_order_and_its_command_commit_together(client: Any, pg_dsn: str) -> None:
    response = client.post("/orders", json={"customer": "ada", "total": 30})
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    [(order_id, customer)] = committed(pg_dsn, "SELECT id, customer FROM shop_orders")
    assert (order_id, customer) == (body["order_id"], "ada")
    [(command_id, status, data)] = committed(
        pg_dsn,
        "SELECT c.command_id, c.status, m.message -> 'data' FROM commandbus.command c "
        "JOIN commandbus.queue_message m ON m.msg_id = c.msg_id",
    )
    assert (str(command_id), status) == (body["command_id"], "PENDING")
    assert data == {"order_id": order_id, "customer": "ada"}


def test_a_rolled_back_request_leaves_no_command(client: Any, pg_dsn: str) -> None:
    response = client.post("/orders", json={"customer": "bob", "total": 5, "coupon": "EXPIRED"})
    assert response.status_code == 422
    # The command was sent inside the request's transaction, before the check failed.
    assert committed(pg_dsn, "SELECT count(*) FROM commandbus.command") == [(0,)]
    assert committed(pg_dsn, "SELECT count(*) FROM commandbus.queue_message") == [(0,)]
    assert committed(pg_dsn, "SELECT count(*) FROM shop_orders") == [(0,)]
    ok = client.post("/orders", json={"customer": "bob", "total": 5})
    assert ok.status_code == 201
    assert committed(pg_dsn, "SELECT count(*) FROM commandbus.command") == [(1,)]
