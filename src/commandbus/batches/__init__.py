"""Batches: commands (or processes) of one domain counted together.

``CommandBus.create_batch`` sends the commands and the batch row in one transaction;
``BaseProcessManager.start_many(..., batch=...)`` starts processes as a batch. The
statements that change a member's status move it between the batch's counters (total,
completed, failed, canceled, in the troubleshooting queue), and the transaction that
ends the last member finishes the batch and writes its completion notice to the batch's
``reply_to`` queue, once. See ``docs/batches.md``.
"""

from commandbus.batches.models import (
    BatchCommand,
    BatchKind,
    BatchMetadata,
    BatchNotice,
    BatchQuery,
    BatchStatus,
    CreateBatchResult,
    NewBatch,
    ProcessBatch,
    ReceivedBatchNotice,
)

__all__ = [
    "BatchCommand",
    "BatchKind",
    "BatchMetadata",
    "BatchNotice",
    "BatchQuery",
    "BatchStatus",
    "CreateBatchResult",
    "NewBatch",
    "ProcessBatch",
    "ReceivedBatchNotice",
]
