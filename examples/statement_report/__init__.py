"""The StatementReport process of the design document: QUERY -> AGGREGATE -> RENDER.

- ``models``: the typed state, steps and request/response types (as in the seed);
- ``process``: ``StatementReportProcess``, a ``BaseProcessManager``;
- ``handlers``: the three services (and their clean-up commands) simulated, with
  configurable failure rates;
- ``run``: starts processes, runs a worker and a router, prints the outcome
  (``python -m examples.statement_report.run --help``).
"""

from examples.statement_report.models import (
    OutputType,
    StatementReportState,
    StatementReportStep,
)
from examples.statement_report.process import StatementReportProcess

__all__ = [
    "OutputType",
    "StatementReportProcess",
    "StatementReportState",
    "StatementReportStep",
]
