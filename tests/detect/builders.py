"""Builders for rule tests: records from readable local times, rules from keyword arguments, and a
backtest-style run of the real engine. They build data; assertions stay in the tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from sentinel.config import StreakRuleConfig, ThresholdRuleConfig
from sentinel.days import Calendar
from sentinel.detect.base import RuleContext
from sentinel.detect.engine import Engine, sort_events
from sentinel.detect.workdays import Workdays
from sentinel.model import Batch, Event, Vocab, from_datetime

SH = "Asia/Shanghai"


def at(text: str, tz: str = SH) -> int:
    """'2025-07-08 10:00[:ss]' local time -> µs."""
    return from_datetime(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)))


@dataclass(frozen=True)
class Rec:
    ts: int
    type: str
    channel: str = "电话热线"
    customer: str | None = None
    id: int | None = None


def threshold(**kw: Any) -> ThresholdRuleConfig:
    kw.setdefault("name", "surge")
    return ThresholdRuleConfig(kind="threshold", **kw)


def streak(**kw: Any) -> StreakRuleConfig:
    kw.setdefault("name", "streak")
    return StreakRuleConfig(kind="streak", **kw)


def spread(
    day: date,
    n: int,
    type_: str,
    channel: str = "电话热线",
    tz: str = SH,
    start_h: int = 0,
    end_h: int = 24,
    customer: str | None = None,
) -> list[Rec]:
    """n records evenly spread over [start_h, end_h) local hours of `day`."""
    t0 = from_datetime(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)) + timedelta(hours=start_h))
    span = (end_h - start_h) * 3600 * 1_000_000
    return [Rec(t0 + (i * span) // max(n, 1), type_, channel, customer) for i in range(n)]


def days(start: date, count: int, per_day: dict[str, int], **kw: Any) -> list[Rec]:
    out: list[Rec] = []
    for d in range(count):
        for t, n in per_day.items():
            out += spread(start + timedelta(days=d), n, t, **kw)
    return out


def make_batch(records: Sequence[Rec], vocab: Vocab, first_id: int = 1) -> Batch:
    recs = sorted(enumerate(records), key=lambda x: (x[1].ts, x[1].id if x[1].id is not None else first_id + x[0]))
    ids = [r.id if r.id is not None else first_id + i for i, r in recs]
    custs = [r.customer for _, r in recs]
    customer = values = None
    if any(c is not None for c in custs):
        local: dict[str, int] = {}
        customer = np.asarray([-1 if c is None else local.setdefault(c, len(local)) for c in custs], dtype=np.int32)
        values = np.asarray(list(local), dtype=object)
    return Batch(
        np.asarray(ids, dtype=np.int64),
        np.asarray([r.ts for _, r in recs], dtype=np.int64),
        vocab.encode([r.type for _, r in recs]),
        vocab.encode([r.channel for _, r in recs]),
        customer,
        values,
    ).sorted()


def engine(rules: Iterable[Any], tz: str = SH, coverage: int | None = None, holidays: str | None = "CN") -> Engine:
    """An engine as the backtest builds it; `holidays` is the top-level key (China's calendar by default,
    so rules with `baseline_by = "day_kind"` see its holidays and adjusted working days)."""
    ctx = RuleContext(Calendar(tz), Vocab(), coverage, Workdays(holidays))
    return Engine(list(rules), ctx, tz)


def run(
    rules: Iterable[Any],
    records: Sequence[Rec],
    tz: str = SH,
    coverage: int | None = None,
    until: int | None = None,
    chunks: Sequence[int] = (),
    holidays: str | None = "CN",
) -> list[Event]:
    """Feed the records through a fresh engine (in chunks split at the given indexes), time moving to
    each chunk's last record, then to `until`."""
    eng = engine(rules, tz, coverage, holidays)
    batch = make_batch(records, eng.vocab)
    if eng.ctx.coverage_start_us is None and len(batch):
        eng.ctx.coverage_start_us = int(batch.ts[0])
    events: list[Event] = []
    bounds = [0, *sorted(set(chunks)), len(batch)]
    for a, b in itertools.pairwise(bounds):
        if b > a:
            part = batch.slice(a, b)
            events += eng.feed(part, int(part.ts[-1]))
    if until is not None:
        events += eng.feed(Batch.empty(), until)
    # events of different feed calls may share an instant; the canonical order merges them
    assert all(a.at <= b.at for a, b in itertools.pairwise(events)), "events out of time order"
    return sort_events(events, eng.order)


def states(events: Sequence[Event]) -> list[tuple[str, str, float]]:
    return [(e.state.value, e.tier.label, e.value) for e in events]
