"""Synthetic complaint streams shaped like the seeds' operation, for the demo and the benchmark.

Seed 003: about 1,258 complaints a month (系统操作错误 30.7 %, 服务态度 312, 物流配送延误 275, 产品相关,
其他), channels 官网客服, 微信公众号, 电话热线, 其他渠道, 42 % repeat customers; more by day than at night.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sentinel.model import US, from_datetime

TYPES = ("系统操作错误", "服务态度", "物流配送延误", "产品相关", "其他")
TYPE_SHARE = (0.307, 0.248, 0.219, 0.146, 0.080)
CHANNELS = ("官网客服", "微信公众号", "电话热线", "其他渠道")
CHANNEL_SHARE = (0.30, 0.35, 0.25, 0.10)
# relative volume per local hour (quiet at night, busy in office hours)
HOURLY = np.asarray([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 4, 6, 7, 7, 6, 6, 7, 7, 6, 5, 4, 4, 3, 3, 2, 1.5])


@dataclass(frozen=True)
class Stream:
    """Complaints as columns, sorted by time."""

    ids: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    type: npt.NDArray[np.int64]  # index into `types`
    channel: npt.NDArray[np.int64]  # index into CHANNELS
    customer: npt.NDArray[np.int64]
    types: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ts)

    def rows(self, tz: ZoneInfo) -> Iterator[tuple[int, str, str, str, str]]:
        for i in range(len(self.ts)):
            yield (
                int(self.ids[i]),
                datetime.fromtimestamp(int(self.ts[i]) / US, tz).isoformat(),
                self.types[int(self.type[i])],
                CHANNELS[int(self.channel[i])],
                f"C{int(self.customer[i]):06d}",
            )


def day_times(rng: np.random.Generator, start_us: int, n: int) -> npt.NDArray[np.int64]:
    """n instants in one day, following the hourly profile."""
    p = HOURLY / HOURLY.sum()
    hours = rng.choice(24, size=n, p=p)
    return np.asarray(start_us + hours * 3600 * US + rng.integers(0, 3600 * US, size=n), dtype=np.int64)


def generate(
    start: date,
    days: int,
    per_day: float,
    tz: ZoneInfo,
    seed: int = 7,
    rare_types: int = 0,
    rare_share: float = 0.0,
    customers: int = 20_000,
) -> Stream:
    """`days` days of normal traffic (Poisson daily totals around `per_day`)."""
    rng = np.random.default_rng(seed)
    types = TYPES + tuple(f"罕见问题-{i:04d}" for i in range(rare_types))
    share = np.asarray(TYPE_SHARE) * (1 - rare_share)
    if rare_types:
        share = np.concatenate([share, np.full(rare_types, rare_share / rare_types)])
    share = share / share.sum()
    ts_parts = []
    for d in range(days):
        day0 = from_datetime(datetime(start.year, start.month, start.day, tzinfo=tz)) + d * 86400 * US
        n = int(rng.poisson(per_day))
        ts_parts.append(day_times(rng, day0, n))
    ts = np.sort(np.concatenate(ts_parts)) if ts_parts else np.zeros(0, dtype=np.int64)
    n = len(ts)
    return Stream(
        np.arange(1, n + 1, dtype=np.int64),
        ts,
        rng.choice(len(types), size=n, p=share),
        rng.choice(len(CHANNELS), size=n, p=CHANNEL_SHARE),
        rng.integers(0, customers, size=n),
        types,
    )


def write_csv(stream: Stream, path: Path, tz: ZoneInfo) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "created_at", "type", "channel", "customer"])
        w.writerows(stream.rows(tz))
