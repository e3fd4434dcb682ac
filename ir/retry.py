"""The one back-off policy: capped exponential back-off with jitter.

Every retry loop (S3 requests, Lambda throttling, the scheduler's infrastructure
retries) waits ``backoff_delay(attempt, initial, cap)`` before attempt ``attempt + 1``:
the ceiling doubles from ``initial`` up to ``cap``, and the wait is drawn from the upper
half of it, so many clients that failed together spread out (jitter) but none retries
at once against a struggling service.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    ceiling = min(cap, initial * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)
