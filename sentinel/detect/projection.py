"""Where a day is heading: today's count so far projected to the day's end at the current pace.

A day-mode surge says "at this pace about 412 today, 3.1x the daily mean". The pace is judged by the
same-time-of-day profile the `pace` mode uses: the baseline days' cumulative count by local wall-clock
hour, linear inside the hour. By time of day w a normal day has done the share F(w) of its volume, so
today's final count is expected near `count / F(w)`.

A small series' own profile is noisy (two complaints a day say little about the shape of a day), so its
shape is shrunk toward the shape of the rule's whole stream, which is worth `SHAPE_PRIOR` records:

    F(w) = (S(w) + SHAPE_PRIOR x A(w) / A(24h)) / (S(24h) + SHAPE_PRIOR)

with S the series' cumulative baseline counts and A those of every series of the rule. A new type (no
history of its own) takes the stream's shape; with no history at all there is nothing to project.

Pure integer inputs and one float formula: the daemon and the backtest, fed the same records in any split,
give the same figure.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sentinel.days import HOUR_US
from sentinel.model import US, IntArray

SHAPE_PRIOR = 30
"""Weight of the whole stream's shape in a series' profile, in records."""


def cumulative(hourly: Iterable[IntArray]) -> IntArray:
    """[.., 24] hourly counts of the baseline days -> their sum as a cumulative [.., 25] profile (0 first)."""
    total: IntArray | None = None
    for h in hourly:
        total = h.astype(np.int64) if total is None else total + h
    if total is None:
        return np.zeros(25, dtype=np.int64)
    zero = np.zeros((*total.shape[:-1], 1), dtype=np.int64)
    return np.concatenate([zero, np.cumsum(total, axis=-1)], axis=-1)


def _at(cum: IntArray, wall_us: int) -> float:
    """The cumulative profile at a wall-clock time of day, linear inside the hour (whole seconds)."""
    h = min(wall_us // HOUR_US, 23)
    sec = (wall_us - h * HOUR_US) // US
    return (int(cum[h]) * 3600 + sec * (int(cum[h + 1]) - int(cum[h]))) / 3600


def fraction_done(series: IntArray, stream: IntArray, wall_us: int) -> float | None:
    """F(w): the share of a normal day's volume done by this time of day (None: no history to tell)."""
    all_day = int(stream[24])
    if all_day <= 0:
        return None
    own_day = int(series[24])
    f = (_at(series, wall_us) + SHAPE_PRIOR * _at(stream, wall_us) / all_day) / (own_day + SHAPE_PRIOR)
    return f if f > 0 else None


def projected(count: int, series: IntArray, stream: IntArray, wall_us: int) -> float | None:
    """Today's expected final count at the current pace, in whole complaints (never below `count`)."""
    f = fraction_done(series, stream, wall_us)
    if f is None:
        return None
    return float(max(count, round(count / f)))
