"""Time-ordered UUIDs (version 7, RFC 9562) for the command ids the library generates.

A command's id is the first column of the command table's primary key and of the audit
trail's index. Random ids (version 4) put each new entry on a random page of those
indexes: once the index of a long history outgrows the buffer cache, nearly every send
reads a page, and after each checkpoint writes it whole to the WAL (measured with
1,000,000 commands stored: 5.4 KB of WAL per command sent instead of 1.1 KB, see
docs/performance.md). Ids that grow with time are appended at the end of the indexes,
on the few pages that are already in memory, however long the history. Pass such ids
(``uuid7()``) as your own command ids too, where your idempotency keys allow it.
"""

from __future__ import annotations

import os
import time
from uuid import UUID

__all__ = ["uuid7"]


def uuid7() -> UUID:
    """A version 7 UUID: 48 bits of Unix time in milliseconds, then 74 random bits, so
    ids sort by the millisecond they were made in (and are as unguessable as ``uuid4``
    within it)."""
    milliseconds = time.time_ns() // 1_000_000
    value = (milliseconds & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    # version 7 in bits 48-51, the RFC 4122 variant (0b10) in bits 64-65
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return UUID(int=value)
