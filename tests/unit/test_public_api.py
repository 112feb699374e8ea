"""The public surface is deliberate: this pins what ``import commandbus`` offers."""

import commandbus

EXPECTED = {
    # command bus
    "CommandBus",
    "register_json_encoder",
    "SendRequest",
    "SendResult",
    "Command",
    "CommandMetadata",
    "CommandStatus",
    "AuditEvent",
    "AuditEventType",
    "Reply",
    "ReplyOutcome",
    "ReceivedReply",
    "HandlerRegistry",
    "HandlerContext",
    "handler",
    "Worker",
    "WorkerStats",
    "RetryPolicy",
    "TroubleshootingQueue",
    "TroubleshootingItem",
    "Backend",
    "Clock",
    "SystemClock",
    # batches
    "BatchCommand",
    "BatchMetadata",
    "BatchNotice",
    "BatchStatus",
    "CreateBatchResult",
    "BatchNotFoundError",
    "DuplicateBatchError",
    # errors
    "CommandBusError",
    "ValidationError",
    "PayloadTooLargeError",
    "DuplicateCommandError",
    "CommandNotFoundError",
    "InvalidOperationError",
    "HandlerNotFoundError",
    "HandlerAlreadyRegisteredError",
    "TransientCommandError",
    "PermanentCommandError",
    "BusinessRuleException",
    "ProcessNotFoundError",
    "SchemaError",
    "StorageError",
    "DatabaseUnavailableError",
    # process manager
    "BaseProcessManager",
    "ProcessReplyRouter",
    "ProcessStatus",
    "ProcessMetadata",
    "ProcessAuditEntry",
    "ProcessState",
    "ProcessCommand",
    "ProcessResponse",
    "StepDefinition",
    "TimeoutAction",
    "__version__",
}


def test_exported_names_are_exactly_the_public_api():
    assert set(commandbus.__all__) == EXPECTED


def test_every_exported_name_resolves():
    for name in commandbus.__all__:
        assert getattr(commandbus, name) is not None, name


def test_errors_share_one_base_class():
    for name in EXPECTED:
        obj = getattr(commandbus, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, commandbus.CommandBusError), name
