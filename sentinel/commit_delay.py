"""Commit delay: how long after its `created_at` a complaint first becomes visible to a poll.

`[source] lateness` is a promise the operator makes about their CRM ("no row is committed more than
this long after its creation time"); it decides how long time stays open for out-of-order rows and when
a day closes. A wrong promise is silent: rows arriving later count into their day but can no longer
alert for it. This stage makes the real figure visible: every accepted record's delay (first read time
minus `created_at`) goes into `sentinel_source_commit_delay_seconds`, and when more than 1 % of the last
1,000 records came later than `lateness`, a warning names the value to set (in the log at most once an
hour, and in `sentinel status` while it lasts).

Records that waited because Sentinel or the source was down (or because they are the first start's
backfill) are not commit delay: only records created after the daemon last (re)gained its source are
measured, so a restart after an hour's outage does not advise an hour of lateness.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from sentinel.logs import fields
from sentinel.metrics import Metrics
from sentinel.model import US, IntArray, JsonOutObject
from sentinel.units import format_duration

log = logging.getLogger("sentinel.source")

WINDOW = 1000
"""How many of the most recent records the late share is computed over."""
LATE_SHARE = 0.01
"""More than this share of the window later than `lateness` gives the warning."""
MIN_RECORDS = 100
"""Fewer records than this say too little (one late row of five is not 20 % of a CRM's commits)."""
LOG_EVERY_US = 3600 * US


@dataclass(frozen=True, slots=True)
class DelayReport:
    """The window's figures, for the status API."""

    records: int
    late: int
    late_share: float
    p99_s: float | None
    max_s: float | None
    lateness_s: float
    warning: str | None

    def as_json(self) -> JsonOutObject:
        return {
            "records": self.records,
            "late": self.late,
            "late_share": round(self.late_share, 4),
            "p99_seconds": None if self.p99_s is None else round(self.p99_s, 3),
            "max_seconds": None if self.max_s is None else round(self.max_s, 3),
            "lateness_seconds": self.lateness_s,
            "warning": self.warning,
        }


class CommitDelay:
    """Observes each accepted record's commit delay once, keeps the last `WINDOW` of them."""

    def __init__(self, metrics: Metrics, lateness_us: int, window: int = WINDOW) -> None:
        self.metrics = metrics
        self.lateness_us = lateness_us
        self._window: deque[float] = deque(maxlen=window)  # the most recent delays, in seconds
        self.horizon_us: int | None = None
        self._last_log_us: int | None = None
        self.warning: str | None = None

    def restart_at(self, now_us: int) -> None:
        """Only records created from `now_us` on are measured: what was created before waited for us (a
        start, an outage of the source or of the state store), not for the CRM's commit."""
        self.horizon_us = now_us

    def observe(self, created_us: IntArray, now_us: int) -> None:
        """The records a poll accepted (each is read for the first time), read at `now_us`."""
        if self.horizon_us is None or len(created_us) == 0:
            return
        created = np.asarray(created_us, dtype=np.int64)
        measured = created[created >= self.horizon_us]
        if len(measured) == 0:
            return
        delays = np.maximum(now_us - measured, 0) / US
        histogram = self.metrics.source_commit_delay
        for d in delays.tolist():
            histogram.observe(d)
        self._window.extend(delays.tolist())
        self._judge(now_us)

    def report(self) -> DelayReport:
        window = np.fromiter(self._window, dtype=np.float64, count=len(self._window))
        lateness_s = self.lateness_us / US
        if len(window) == 0:
            return DelayReport(0, 0, 0.0, None, None, lateness_s, None)
        late = int(np.count_nonzero(window > lateness_s))
        return DelayReport(
            len(window),
            late,
            late / len(window),
            float(np.quantile(window, 0.99)),
            float(window.max()),
            lateness_s,
            self.warning,
        )

    def _judge(self, now_us: int) -> None:
        r = self.report()
        if r.records < MIN_RECORDS or r.late_share <= LATE_SHARE or r.p99_s is None:
            self.warning = None
            return
        # the p99 can sit at or below lateness when just over 1 % are late: advise past the latest of them
        needed = max(r.p99_s, self._latest_late_quantile())
        self.warning = (
            f"{percent(r.late_share)} of records were committed more than "
            f"{format_duration(timedelta(microseconds=self.lateness_us))} after their created_at "
            f"(p99 {format_duration(timedelta(seconds=r.p99_s))}): set [source] lateness to at "
            f"least {format_duration(timedelta(seconds=suggest(needed)))}"
        )
        if self._last_log_us is None or now_us - self._last_log_us >= LOG_EVERY_US:
            self._last_log_us = now_us
            log.warning(
                self.warning,
                extra=fields(
                    late_share=round(r.late_share, 4),
                    records=r.records,
                    p99_s=round(r.p99_s, 1),
                    lateness_s=r.lateness_s,
                ),
            )

    def _latest_late_quantile(self) -> float:
        """The delay that at most 1 % of the window exceeds (the figure that brings the share under 1 %)."""
        window = np.sort(np.fromiter(self._window, dtype=np.float64, count=len(self._window)))
        allowed = math.floor(len(window) * LATE_SHARE)
        return float(window[len(window) - 1 - allowed])


def percent(share: float) -> str:
    """0.12 -> "12 %", 0.015 -> "1.5 %" (a share just over the limit should not read as "2 %")."""
    value = share * 100
    return f"{value:.0f} %" if value >= 10 else f"{value:.1f} %"


def suggest(seconds: float) -> float:
    """A round figure at or above `seconds`: whole 10 s under a minute, whole minutes under an hour, then
    whole hours (7m40s -> 8m), so the advice reads like a value someone would write in a config."""
    for step, below in ((10, 60), (60, 3600)):
        if seconds < below:
            return max(step, math.ceil(seconds / step) * step)
    return math.ceil(seconds / 3600) * 3600
