"""What the library logs, and how: state changes, failures, outages, JSON lines.

- Every state change of a command or process is one DEBUG record (``state_change``),
  every failed attempt one WARNING naming the command id, type and attempt. The fields
  travel as ``extra`` attributes of the record (``domain``, ``command_id``,
  ``command_type``, ``attempt``, ``status``, ``process_id``, …), so a JSON formatter or a
  log shipper can index them without parsing the message.
- ``JsonLogFormatter`` writes one JSON object per line (``commandbus --log-format json``).
- ``OutageReporter``: while the database is unreachable a consumer retries every poll
  interval; a traceback per attempt would bury everything else (a router wrote ~180
  lines in 15 s), so the reporter writes one line when the outage starts, one per
  ``interval`` while it lasts, and one when the database answers again.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from commandbus.ports import Clock

__all__ = [
    "CONTEXT_FIELDS",
    "OUTAGE_REPORT_SECONDS",
    "JsonLogFormatter",
    "OutageReporter",
    "failure_fields",
    "state_change",
]

#: The ``extra`` attributes the library sets on its records (and the JSON lines carry).
CONTEXT_FIELDS = (
    "domain",
    "command_id",
    "command_type",
    "attempt",
    "status",
    "previous_status",
    "process_id",
    "process_type",
    "queue",
    "operator",
    "error_code",
    "trace_id",
)

#: Seconds between two "still unavailable" lines during an outage.
OUTAGE_REPORT_SECONDS = 10.0


def state_change(logger: logging.Logger, message: str, *args: object, **fields: Any) -> None:
    """One DEBUG record for a state change (``message % args``), with ``fields`` as record
    attributes. Costs one level check when DEBUG is off."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(message, *args, extra=_extra(fields))


def failure_fields(domain: str, command_id: object, command_type: str, attempt: int) -> Any:
    """The ``extra`` of a failure WARNING about one command."""
    return {
        "domain": domain,
        "command_id": str(command_id),
        "command_type": command_type,
        "attempt": attempt,
    }


def _extra(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    context fields the record carries, and the traceback as text if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class OutageReporter:
    """Reports a consumer's database outage in a few lines (see the module docstring).

    ``failed`` is called on every failed attempt, ``succeeded`` after every successful
    one; only the first failure, one failure per ``interval`` seconds of ``clock`` time
    and the recovery are logged.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        clock: Clock,
        interval: float = OUTAGE_REPORT_SECONDS,
    ) -> None:
        self._logger = logger
        self._what = what
        self._clock = clock
        self._interval = interval
        self._since: datetime | None = None
        self._last_report: datetime | None = None
        self.failures = 0

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, retry_in: float) -> None:
        now = self._clock.now()
        self.failures += 1
        if self._since is None or self._last_report is None:
            self._since = self._last_report = now
            self._logger.warning(
                "%s: the database is unavailable (%s); reconnecting every %gs",
                self._what,
                exc,
                retry_in,
                extra={"queue": self._what},
            )
            return
        if (now - self._last_report).total_seconds() >= self._interval:
            self._last_report = now
            self._logger.warning(
                "%s: the database is still unavailable after %.0fs (%d failed attempts): "
                "%s; reconnecting",
                self._what,
                (now - self._since).total_seconds(),
                self.failures,
                exc,
                extra={"queue": self._what},
            )

    def succeeded(self) -> None:
        if self._since is None:
            return
        lasted = (self._clock.now() - self._since).total_seconds()
        self._logger.warning(
            "%s: the database is reachable again after %.0fs (%d failed attempts)",
            self._what,
            lasted,
            self.failures,
            extra={"queue": self._what},
        )
        self._since = self._last_report = None
        self.failures = 0
