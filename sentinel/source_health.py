"""The source's health as the poll cycle sees it: up or down, the last error, when to try again.

Guarantees: a failing source is retried with exponential backoff (2, 4, ... 60 s), logged once per
outage and again only when the error changes, and `sentinel_source_up` follows every change; the
newest record seen gives `sentinel_source_lag_seconds`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sentinel.logs import fields
from sentinel.metrics import Metrics

log = logging.getLogger("sentinel.daemon")

BACKOFF_MAX_S = 60.0


def backoff_s(failures: int) -> float:
    """Seconds to wait after `failures` failures in a row."""
    return min(BACKOFF_MAX_S, 2.0 ** min(failures, 6))


@dataclass
class SourceHealth:
    metrics: Metrics = field(repr=False)
    up: bool = False
    last_error: str | None = None
    failures: int = 0
    next_try_monotonic: float = 0.0
    newest_us: int | None = None

    def mark(self, up: bool, error: str | None) -> None:
        """The source answered (`up`) or failed with `error`."""
        if up:
            if not self.up and self.failures:
                log.info("source is back", extra=fields(after_failures=self.failures))
            self.up, self.failures, self.last_error = True, 0, None
            self.next_try_monotonic = 0.0
        else:
            self.failures += 1
            delay = backoff_s(self.failures)
            self.next_try_monotonic = time.monotonic() + delay
            if self.up or self.failures == 1 or error != self.last_error:
                log.error("source unavailable", extra=fields(error=error, retry_in_s=delay))
            self.up, self.last_error = False, error
            self.metrics.source_errors.inc()
        self.metrics.source_up.set(1 if up else 0)

    @property
    def backing_off(self) -> bool:
        return time.monotonic() < self.next_try_monotonic
