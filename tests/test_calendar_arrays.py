"""The vectorised calendar and ordering helpers the rules use per batch agree with their plain forms:
`Calendar.days_of` (which answers a batch inside one day without a per-instant search) with `day_of`, and
`stable_order` (radix sort for small codes) with numpy's stable argsort."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.days import Calendar
from sentinel.detect.base import stable_order
from sentinel.model import US, from_datetime

HOUR = 3600 * US


@pytest.mark.parametrize(
    ("zone", "start", "hours"),
    [
        ("Asia/Shanghai", datetime(2025, 6, 1, 0, 0), 23.99),  # inside one day: the short cut
        ("Asia/Shanghai", datetime(2025, 6, 1, 22, 0), 5),  # across midnight
        ("America/New_York", datetime(2025, 3, 8, 20, 0), 30),  # across a spring-forward day
        ("America/New_York", datetime(2025, 11, 2, 0, 0), 24.5),  # the 25-hour day
        ("America/Santiago", datetime(2025, 9, 6, 20, 0), 8),  # a zone that skips midnight
    ],
)
def test_days_of_a_batch_is_day_of_each_instant(zone: str, start: datetime, hours: float) -> None:
    tz = ZoneInfo(zone)
    cal = Calendar(tz)
    t0 = from_datetime(start.replace(tzinfo=tz))
    ts = np.sort(t0 + np.random.default_rng(1).integers(0, int(hours * HOUR), size=500)).astype(np.int64)
    for part in (ts, ts[:1], ts[-3:]):
        assert cal.days_of(part).tolist() == [cal.day_of(int(t)) for t in part]
    assert cal.days_of(ts).dtype == np.int64


@given(st.lists(st.integers(-5, 40_000), max_size=300))
def test_stable_order_is_a_stable_argsort(keys: list[int]) -> None:
    arr = np.asarray(keys, dtype=np.int64)
    assert stable_order(arr).tolist() == np.argsort(arr, kind="stable").tolist()


def test_stable_order_keeps_record_order_among_equal_small_codes() -> None:
    codes = np.asarray([3, 1, 3, 0, 1, 3], dtype=np.int64)
    assert stable_order(codes).tolist() == [3, 1, 4, 0, 2, 5]
