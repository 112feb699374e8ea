"""``POST /orders`` writes the order row and sends ``ShipOrder`` on the same connection,
in one transaction: a request that fails after the send (here: an expired coupon,
checked last on purpose) leaves neither the order nor the command behind.

Run it (after ``commandbus schema apply``)::

    DATABASE_URL=postgresql://... flask --app "examples.flask_orders:create_app()" run
    curl -X POST localhost:5000/orders -H 'content-type: application/json' \\
         -d '{"customer": "ada", "total": 30}'

A worker (``commandbus worker run --domain shop ...``) then ships the order.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request
from psycopg_pool import ConnectionPool

from commandbus import ValidationError
from commandbus.sync import SyncCommandBus

#: The application's own table (not the library's).
ORDERS_DDL = """
CREATE TABLE IF NOT EXISTS shop_orders (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text    NOT NULL,
    total    numeric NOT NULL
)
"""


class CouponExpired(Exception):
    """The business check that runs after the command was sent."""


def create_app(dsn: str | None = None) -> Flask:
    app = Flask(__name__)
    pool = ConnectionPool(dsn or os.environ["DATABASE_URL"], min_size=1, max_size=4, open=True)
    app.extensions["orders_pool"] = pool
    with pool.connection() as conn:
        conn.execute(ORDERS_DDL)

    @app.post("/orders")
    def create_order() -> tuple[dict[str, Any], int]:
        body = request.get_json(force=True)
        # One connection, one transaction: the order, the command, and the check after.
        with pool.connection() as conn, conn.transaction():
            order_id = conn.execute(
                "INSERT INTO shop_orders (customer, total) VALUES (%s, %s) RETURNING id",
                (body["customer"], body["total"]),
            ).fetchone()[0]
            sent = SyncCommandBus(conn).send(
                "shop",
                "ShipOrder",
                data={"order_id": order_id, "customer": body["customer"]},
            )
            if body.get("coupon") == "EXPIRED":
                raise CouponExpired(body["coupon"])
        return {"order_id": order_id, "command_id": str(sent.command_id)}, 201

    @app.errorhandler(CouponExpired)
    def coupon_expired(exc: CouponExpired) -> tuple[dict[str, Any], int]:
        return {"error": "the coupon has expired; nothing was ordered"}, 422

    @app.errorhandler(ValidationError)
    def invalid(exc: ValidationError) -> tuple[dict[str, Any], int]:
        return {"error": str(exc)}, 400

    return app
