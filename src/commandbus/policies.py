"""Retry policy: how many attempts a command gets and how long to wait between them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` deliveries in all; before attempt ``n + 1`` wait ``backoff_schedule[n-1]``
    seconds (the last value repeats when the schedule is shorter than the attempts),
    shortened by up to ``jitter`` of it (default 20 %) so that the retries of a burst of
    failures spread out instead of arriving together. The jitter is drawn from the
    command id and the attempt, not from a random generator: the same delivery always
    gets the same delay (settling stays a pure function), and it is never longer than the
    schedule says. ``jitter=0`` gives the schedule exactly."""

    max_attempts: int = 3
    backoff_schedule: Sequence[float] = field(default=(10.0, 60.0, 300.0))
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if any(delay < 0 for delay in self.backoff_schedule):
            raise ValueError("RetryPolicy.backoff_schedule must not contain negative delays")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy.jitter must be a fraction from 0 to less than 1")
        object.__setattr__(self, "backoff_schedule", tuple(self.backoff_schedule))

    def should_retry(self, attempt: int, max_attempts: int | None = None) -> bool:
        """Whether a failed delivery numbered ``attempt`` (1-based) gets another one."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        return attempt < limit

    def backoff(self, attempt: int, key: object = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one;
        with ``key`` (the command id) shortened by its deterministic jitter."""
        if not self.backoff_schedule:
            return 0.0
        index = min(max(attempt, 1), len(self.backoff_schedule)) - 1
        delay = float(self.backoff_schedule[index])
        if key is None or not self.jitter or not delay:
            return delay
        digest = hashlib.blake2b(f"{key}/{attempt}".encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64  # uniform in [0, 1)
        return delay * (1.0 - self.jitter * fraction)
