"""A Flask app that creates an order and sends its command in the request's transaction
(``commandbus.sync``): both commit together, or neither does."""

from examples.flask_orders.app import ORDERS_DDL, CouponExpired, create_app

__all__ = ["ORDERS_DDL", "CouponExpired", "create_app"]
