"""Retry policy: how many attempts a command gets and how long to wait between them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` deliveries in all; before attempt ``n + 1`` wait ``backoff_schedule[n-1]``
    seconds (the last value repeats when the schedule is shorter than the attempts)."""

    max_attempts: int = 3
    backoff_schedule: Sequence[float] = field(default=(10.0, 60.0, 300.0))

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if any(delay < 0 for delay in self.backoff_schedule):
            raise ValueError("RetryPolicy.backoff_schedule must not contain negative delays")
        object.__setattr__(self, "backoff_schedule", tuple(self.backoff_schedule))

    def should_retry(self, attempt: int, max_attempts: int | None = None) -> bool:
        """Whether a failed delivery numbered ``attempt`` (1-based) gets another one."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        return attempt < limit

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        if not self.backoff_schedule:
            return 0.0
        index = min(max(attempt, 1), len(self.backoff_schedule)) - 1
        return float(self.backoff_schedule[index])
