"""A complaint table in SQLite, the way a CRM keeps one (naive UTC timestamps, indexed on
(created_at, id)), for tests that run the daemon over a real source."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

T = "物流配送延误"
OTHER = "服务态度"
PHONE = "电话热线"
NOW = datetime(2025, 7, 8, 10, 0, tzinfo=UTC)  # 18:00 in Shanghai


class Crm:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.next_id = 1
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
                "category TEXT, channel TEXT, customer_id TEXT)"
            )
            db.execute("CREATE INDEX ix_complaints_created ON complaints (created_at, id)")

    def add(
        self,
        when: datetime,
        type_: str = T,
        channel: str = PHONE,
        n: int = 1,
        spacing: timedelta = timedelta(seconds=1),
    ) -> None:
        self.add_rows([(when + i * spacing, type_, channel) for i in range(n)])

    def add_rows(self, rows: Sequence[tuple[datetime, str, str]]) -> None:
        """(created_at, type, channel) rows, in one transaction, with the next ids in order."""
        values = []
        for when, type_, channel in rows:
            t = when.astimezone(UTC).replace(tzinfo=None)
            values.append(
                (self.next_id, t.isoformat(sep=" ", timespec="microseconds"), type_, channel, f"c{self.next_id}")
            )
            self.next_id += 1
        with sqlite3.connect(self.path, timeout=30) as db:  # a running daemon may be reading it
            db.executemany("INSERT INTO complaints VALUES (?, ?, ?, ?, ?)", values)

    def history(self, days: int = 8, per_day: int = 40, now: datetime = NOW) -> None:
        """`per_day` of T (phone) and of OTHER (WeChat) on each of the last `days` days, interleaved."""
        for d in range(days, 0, -1):
            day = (now - timedelta(days=d)).replace(hour=0)
            self.add(day, n=per_day, spacing=timedelta(minutes=30))
            self.add(day, type_=OTHER, channel="微信公众号", n=per_day, spacing=timedelta(minutes=30))


def write_config(tmp_path: Path, crm: Crm, body: str) -> Path:
    """A `sentinel run` configuration reading this CRM (state next to it, any free port); `body` holds
    the rules, receivers and the rest as TOML."""
    p = tmp_path / "sentinel.toml"
    p.write_text(
        f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/state.db"
listen = "127.0.0.1:0"

[source]
url = "sqlite:///{crm.path}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel", customer = "customer_id" }}
timezone = "UTC"
lateness = "5m"
{body}""",
        encoding="utf-8",
    )
    return p
