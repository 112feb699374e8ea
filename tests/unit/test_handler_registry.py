import pytest

from commandbus import (
    HandlerAlreadyRegisteredError,
    HandlerNotFoundError,
    HandlerRegistry,
    ValidationError,
    handler,
)


async def noop(command, context):
    return None


def test_register_and_find():
    registry = HandlerRegistry()
    registry.register("payments", "Debit", noop)
    assert registry.get("payments", "Debit").fn is noop
    assert registry.find("payments", "Credit") is None
    assert registry.domains() == {"payments"}
    with pytest.raises(HandlerNotFoundError, match="'Credit' in domain 'payments'"):
        registry.get("payments", "Credit")


def test_duplicate_registration_is_refused():
    registry = HandlerRegistry()
    registry.register("payments", "Debit", noop)
    with pytest.raises(HandlerAlreadyRegisteredError):
        registry.register("payments", "Debit", noop)


def test_decorator_and_validation():
    registry = HandlerRegistry()

    @registry.handler("payments", "Refund", transactional=True)
    async def refund(command, context):
        return {"refunded": True}

    registered = registry.get("payments", "Refund")
    assert registered.fn is refund and registered.transactional
    with pytest.raises(ValidationError):
        registry.register("Bad Domain", "X", noop)
    # A plain function is run in a thread (tests/integration/test_sync_handlers.py); a
    # transactional one must be async, since it writes through an async connection.
    registry.register("payments", "Sync", lambda c, ctx: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an async function"):
        registry.register(
            "payments",
            "SyncTx",
            lambda c, ctx: None,  # type: ignore[arg-type]
            transactional=True,
        )
    with pytest.raises(TypeError, match="must be a function"):
        registry.register("payments", "NotCallable", 42)  # type: ignore[arg-type]


def test_register_instance_picks_up_marked_methods_bound_to_the_object():
    class Handlers:
        def __init__(self):
            self.calls = 0

        @handler("orders", "Ship")
        async def ship(self, command, context):
            self.calls += 1
            return {"shipped": True}

        async def helper(self):  # not a handler
            return None

    obj = Handlers()
    registry = HandlerRegistry()
    assert registry.register_instance(obj) == [("orders", "Ship")]
    assert registry.get("orders", "Ship").fn == obj.ship
    assert len(registry) == 1
