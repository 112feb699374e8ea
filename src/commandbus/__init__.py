"""commandbus: reliable commands and long-running business processes on PostgreSQL."""

# The composition root first: it registers the PostgreSQL and memory adapters, so that the
# core can take a pool (``CommandBus(pool)``) without importing an adapter itself.
import commandbus.wiring  # noqa: F401  (isort: keep first)
from commandbus.batches import (
    BatchCommand,
    BatchMetadata,
    BatchNotice,
    BatchStatus,
    CreateBatchResult,
)
from commandbus.bus import CommandBus
from commandbus.errors import (
    BatchNotFoundError,
    BusinessRuleException,
    CommandBusError,
    CommandNotFoundError,
    DatabaseUnavailableError,
    DuplicateBatchError,
    DuplicateCommandError,
    HandlerAlreadyRegisteredError,
    HandlerNotFoundError,
    InvalidOperationError,
    PayloadTooLargeError,
    PermanentCommandError,
    ProcessNotFoundError,
    SchemaError,
    StorageError,
    TransientCommandError,
    ValidationError,
)
from commandbus.handler import HandlerContext, HandlerRegistry, handler
from commandbus.models import (
    AuditEvent,
    AuditEventType,
    Command,
    CommandMetadata,
    CommandStatus,
    ReceivedReply,
    Reply,
    ReplyOutcome,
    SendRequest,
    SendResult,
    TroubleshootingItem,
)
from commandbus.ops.troubleshooting import TroubleshootingQueue
from commandbus.policies import RetryPolicy
from commandbus.ports import Backend, Clock, SystemClock
from commandbus.process import (
    BaseProcessManager,
    ProcessAuditEntry,
    ProcessCommand,
    ProcessMetadata,
    ProcessReplyRouter,
    ProcessResponse,
    ProcessState,
    ProcessStatus,
    StepDefinition,
    TimeoutAction,
)
from commandbus.validation import register_json_encoder
from commandbus.worker import Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "AuditEvent",
    "AuditEventType",
    "Backend",
    "BaseProcessManager",
    "BatchCommand",
    "BatchMetadata",
    "BatchNotFoundError",
    "BatchNotice",
    "BatchStatus",
    "BusinessRuleException",
    "Clock",
    "Command",
    "CommandBus",
    "CommandBusError",
    "CommandMetadata",
    "CommandNotFoundError",
    "CommandStatus",
    "CreateBatchResult",
    "DatabaseUnavailableError",
    "DuplicateBatchError",
    "DuplicateCommandError",
    "HandlerAlreadyRegisteredError",
    "HandlerContext",
    "HandlerNotFoundError",
    "HandlerRegistry",
    "InvalidOperationError",
    "PayloadTooLargeError",
    "PermanentCommandError",
    "ProcessAuditEntry",
    "ProcessCommand",
    "ProcessMetadata",
    "ProcessNotFoundError",
    "ProcessReplyRouter",
    "ProcessResponse",
    "ProcessState",
    "ProcessStatus",
    "ReceivedReply",
    "Reply",
    "ReplyOutcome",
    "RetryPolicy",
    "SchemaError",
    "SendRequest",
    "SendResult",
    "StepDefinition",
    "StorageError",
    "SystemClock",
    "TimeoutAction",
    "TransientCommandError",
    "TroubleshootingItem",
    "TroubleshootingQueue",
    "ValidationError",
    "Worker",
    "WorkerStats",
    "__version__",
    "handler",
    "register_json_encoder",
]
