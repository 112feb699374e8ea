"""Parameters of the send statements that are not batches (see ``insert_command``)."""

from __future__ import annotations

from typing import Any

from commandbus.models import SendRequest
from commandbus.postgres.queue import dumps
from commandbus.validation import command_queue


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
