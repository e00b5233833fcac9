"""Daily history of threshold series, rebuilt from the raw hourly buckets: the status page's charts and
the APIs' "value now" of an open alert (`counts_today`), below both.

A series' daily count is its buckets (local hour x type x channel) summed per local day, for the
series' labels and after the rule's `where` / `where_not`. Each day's baseline is what the rule
computes at that day's midnight: the mean (or median) of the previous `min(available, baseline_days)`
full days, where "available" counts full days since the source's coverage began, and none until
`min_history_days` are available. The line drawn as the threshold is max(factor x baseline,
`min_count`). Reads only; nothing here changes the store or the detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import Connection

from sentinel.config import ThresholdRuleConfig
from sentinel.days import Calendar
from sentinel.detect import RecordFilter, RuleContext, baselines
from sentinel.model import OTHER, Vocab
from sentinel.store.alerts import StoredAlert
from sentinel.store.records import read_buckets


@dataclass(frozen=True, slots=True)
class DayPoint:
    day: date
    count: int
    baseline: float | None  # None: the rule had too little history that day
    threshold: float | None
    partial: bool  # the day in progress


class DailyCounts:
    """The raw buckets summed per (local day, type, channel): read once, shared by every chart."""

    def __init__(self, rows: Iterable[tuple[int, str, str, int]], calendar: Calendar) -> None:
        self.calendar = calendar
        self.by_day: dict[int, dict[tuple[str, str], int]] = {}
        day_of_hour: dict[int, int] = {}
        for hour_us, type_, channel, count in rows:
            day = day_of_hour.get(hour_us)
            if day is None:
                day = day_of_hour[hour_us] = calendar.day_of(hour_us)
            cell = self.by_day.setdefault(day, {})
            cell[(type_, channel)] = cell.get((type_, channel), 0) + count

    @staticmethod
    def read(conn: Connection, calendar: Calendar, first_day: int) -> DailyCounts:
        return DailyCounts(read_buckets(conn, calendar.day_start(first_day)), calendar)

    def series(self, cfg: ThresholdRuleConfig, labels: Mapping[str, str], days: range) -> list[int]:
        """Daily counts of one series of `cfg` (labels as the rule's events carry them)."""
        keep = RecordFilter(cfg.where, cfg.where_not, Vocab())
        out = []
        for day in days:
            total = 0
            for (type_, channel), n in self.by_day.get(day, {}).items():
                fields = {"type": type_, "channel": channel}
                if all(fields[g] == labels.get(g) for g in cfg.group_by) and keep.admits(type_, channel):
                    total += n
            out.append(total)
        return out


def chartable(cfg: ThresholdRuleConfig, labels: Mapping[str, str]) -> bool:
    """A series the buckets can rebuild: labelled by every group_by field, not the folded remainder."""
    return all(g in labels and labels[g] != OTHER for g in cfg.group_by)


def series_history(
    daily: DailyCounts,
    cfg: ThresholdRuleConfig,
    labels: Mapping[str, str],
    *,
    today: int,
    coverage_start_us: int | None,
    days: int,
) -> list[DayPoint]:
    """The last `days` local days up to `today` (inclusive) that were read: count, baseline and threshold
    of each. Days before the source's coverage began (the backfill window) were never read, so they are
    left out rather than drawn as zeros; with no coverage recorded, the days before the first bucket."""
    if coverage_start_us is not None:
        read_from = daily.calendar.day_of(coverage_start_us)
    else:
        read_from = min(daily.by_day, default=today)
    first = min(today, max(today - days + 1, read_from))
    counts = daily.series(cfg, labels, range(first - cfg.baseline_days, today + 1))
    count_of = dict(zip(range(first - cfg.baseline_days, today + 1), counts, strict=True))
    ctx = RuleContext(daily.calendar, Vocab(), coverage_start_us)
    out = []
    for day in range(first, today + 1):
        baseline = threshold = None
        available = ctx.full_days_before(day)
        n = min(available, cfg.baseline_days)
        if available >= cfg.min_history_days:  # as the rule: with no full day yet the baseline is 0
            window = np.asarray([[count_of[d] for d in range(day - n, day)]], dtype=np.int64).reshape(1, n)
            baseline = baselines(window, cfg.baseline).value(0)
            threshold = max(cfg.factor * baseline, float(cfg.min_count))
        out.append(DayPoint(daily.calendar.date_of(day), count_of[day], baseline, threshold, day == today))
    return out


def counts_today(
    conn: Connection,
    rules: Mapping[str, ThresholdRuleConfig],
    calendar: Calendar,
    rows: Iterable[StoredAlert],
    now_us: int,
) -> dict[str, int]:
    """Instance -> its series' count today so far, for the open threshold alerts whose rule measures the
    day (`day` and `pace` modes) and whose series the buckets can rebuild. An alert's stored value is the
    count at its last event; the day goes on without one until the next tier, so this is what the API
    reports as the value now, the same figure as the status page's "today so far"."""
    wanted = []
    for r in rows:
        rule = rules.get(r.rule)
        if not r.is_open or r.kind != "threshold" or rule is None or rule.mode == "rolling":
            continue
        if chartable(rule, r.labels):
            wanted.append((r.instance, rule, r.labels))
    if not wanted:
        return {}
    today = calendar.day_of(now_us)
    daily = DailyCounts.read(conn, calendar, today)
    return {inst: daily.series(rule, labels, range(today, today + 1))[0] for inst, rule, labels in wanted}
