"""A threshold rule's state and the pure helpers every mode shares.

`ThresholdState` holds everything one rule knows between batches: daily (and, for `day` and `pace`,
hourly) counts per series, the current day's baselines and integer thresholds, the open alerts. The
helpers grow per-series arrays as series appear and group a batch's records by series; they never
change their arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from sentinel.config import QuietRuleConfig, ThresholdRuleConfig
from sentinel.detect.base import OpenAlert, stable_order
from sentinel.detect.baseline import Baselines
from sentinel.detect.series import SeriesIndex
from sentinel.model import Batch, IntArray


def lookback_days(cfg: ThresholdRuleConfig | QuietRuleConfig) -> int:
    """Days of daily counts a rule keeps: enough to find its baseline days of the right kind."""
    if cfg.baseline_by == "weekday":
        return 7 * cfg.baseline_weeks
    if cfg.baseline_by == "day_kind":
        # rest days are about 2 in 7 (more around long holidays): five times as many days finds them
        return min(366, 5 * cfg.baseline_days)
    return cfg.baseline_days


def baseline_days_of(
    cfg: ThresholdRuleConfig | QuietRuleConfig, day_kind: Callable[[int], str], day: int, available: int
) -> list[int]:
    """The full days whose counts make `day`'s baseline, oldest first (`baseline_by`): the last
    `baseline_days`, those of the same kind of day, or the same weekday of the last `baseline_weeks`."""
    n = min(available, lookback_days(cfg))
    if cfg.baseline_by == "weekday":
        return [day - 7 * k for k in range(cfg.baseline_weeks, 0, -1) if 7 * k <= n]
    if cfg.baseline_by == "day_kind":
        kind = day_kind(day)
        same = [d for d in range(day - n, day) if day_kind(d) == kind]
        return same[-cfg.baseline_days :]
    return list(range(day - n, day))


_N = TypeVar("_N", bound=np.generic)


@dataclass(eq=False)
class ThresholdState:
    series: SeriesIndex
    clock: int | None = None
    pending: Batch = field(default_factory=Batch.empty)
    day: int | None = None
    counts: dict[int, IntArray] = field(default_factory=dict)  # day -> count per series
    # pace, day: day -> [series (with room to grow), 24 wall hours]; int32 (an hour's count of one series)
    hourly: dict[int, npt.NDArray[np.int32]] = field(default_factory=dict)
    shared_hourly: set[int] = field(default_factory=set)  # days whose hourly array a fork shares: copy first
    hour_totals: dict[int, IntArray] = field(default_factory=dict)  # day: every series' count by wall hour
    hours: dict[int, IntArray] = field(default_factory=dict)  # rolling: hour start -> count per series
    window: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # rolling: last 24 h
    base: Baselines = field(default_factory=lambda: Baselines(np.zeros(0, dtype=np.int64), 1))
    fire_at: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    mod_at: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sev_at: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    p_done: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    profile: IntArray = field(default_factory=lambda: np.zeros((0, 25), dtype=np.int64))  # pace, x profile_den
    profile_den: int = 1
    shape: IntArray = field(default_factory=lambda: np.zeros(25, dtype=np.int64))  # day: all series, cumulative
    warm: bool = False  # enough history to alert today
    alerts: dict[int, OpenAlert] = field(default_factory=dict)
    t_unmet: dict[int, int] = field(default_factory=dict)  # pace: open & met alert turns unmet by time here
    late: int = 0


def by_series(s: IntArray, before: IntArray) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_], IntArray, IntArray]:
    """Records grouped by series, time order kept inside each group: (order, series in that order,
    first-of-group flags, each record's group start, the series' count once that record is counted)."""
    order = stable_order(s)
    ss = s[order]
    first = np.ones(len(ss), dtype=bool)
    first[1:] = ss[1:] != ss[:-1]
    starts = np.flatnonzero(first)
    group_start = np.repeat(starts, np.diff(np.append(starts, len(ss))))
    count = before[ss] + (np.arange(len(ss)) - group_start) + 1
    return order, ss, first, group_start, count


def grow(arr: IntArray, n: int) -> IntArray:
    """`arr` with zeros appended up to `n` entries (itself when it is long enough)."""
    if len(arr) >= n:
        return arr
    return np.concatenate([arr, np.zeros(n - len(arr), dtype=arr.dtype)])


def grow2(arr: npt.NDArray[_N], n: int) -> npt.NDArray[_N]:
    """`grow` for a [series, columns] array: rows of zeros appended up to `n` rows."""
    if arr.shape[0] >= n:
        return arr
    return np.concatenate([arr, np.zeros((n - arr.shape[0], arr.shape[1]), dtype=arr.dtype)])


def round4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
