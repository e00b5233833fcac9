"""`sentinel demo`: the whole product on one machine with nothing configured.

A temporary directory holds an SQLite "CRM" seeded with a week of complaints shaped like the seeds'
operation; a feeder thread writes a live stream into it (ordinary traffic, a five-in-a-row streak of
服务态度, then a surge of 物流配送延误); the real daemon runs the seeds' rule files (`rules/seeds`, shipped
in the package), polls the CRM, detects both within seconds and delivers each alert through the real
outbox to a local chat sink that prints the message as the chat tool would show it, with a line above it
saying what it is and why it fired. The surge's own run of one type is held under the surge by the rule
files' inhibition, and the demo says so at the end. The status page and `/metrics` are served on
`--listen` (default a free port), the sink on `--sink-listen`.
"""

from __future__ import annotations

import json
import math
import random
import re
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING
from zoneinfo import ZoneInfo

from sentinel.config import QuietRuleConfig, StreakRuleConfig, ThresholdRuleConfig
from sentinel.simulate import CHANNELS, TYPES, generate

if TYPE_CHECKING:
    from sentinel.config import Config

TZ = ZoneInfo("Asia/Shanghai")
SURGE_TYPE = "物流配送延误"
STREAK_TYPE = "服务态度"
PER_DAY = 400
SEED = 143
"""The seeded week: no alert is open, nor opening, when the live stream starts, whatever the date and time
of day the demo runs (the week is the same relative to local midnight on every date; Asia/Shanghai has no
DST): "today" stays within 1.05 x the daily average for every type (the surge rule fires at 1.5 x), and no
run of one type ending after 21:00 yesterday reaches the streak rule's 5, nor three 产品相关 (the feeder's
first two ordinary complaints are 产品相关). With seed 40 a run of 系统操作错误 was still going at 19:30
and another opened at 09:30, each then told as an alert of the seeded history (tests/test_demo.py runs the
seeded week through the engine at a start every 10 minutes of the day)."""
SURGE_PER_TICK = 10  # 20 a second after the opening burst (see Feeder)
SURGE_MARGIN = 3  # the burst goes this many complaints past 1.5 x the daily average
NORMAL_EVERY_TICKS = 4  # one ordinary complaint every 2 s: a live stream that does not itself make surges


class DemoCrm:
    """The demo's complaint table (SQLite, naive UTC timestamps, indexed as the docs ask)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.next_id = 1
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, "
                "type TEXT NOT NULL, channel TEXT NOT NULL, customer TEXT)"
            )
            db.execute("CREATE INDEX ix_complaints_created_at_id ON complaints (created_at, id)")

    def insert(self, rows: list[tuple[datetime, str, str, str]]) -> None:
        with self.lock, sqlite3.connect(self.path) as db:
            out = []
            for when, type_, channel, customer in rows:
                out.append(
                    (
                        self.next_id,
                        when.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" "),
                        type_,
                        channel,
                        customer,
                    )
                )
                self.next_id += 1
            db.executemany("INSERT INTO complaints VALUES (?, ?, ?, ?, ?)", out)

    def seed(self, now: datetime, days: int = 7) -> int:
        """A week of history plus today up to now."""
        rows = seeded_rows(now, days)
        self.insert(rows)
        return len(rows)

    def counts(self, type_: str, now: datetime, days: int = 7) -> tuple[float, int]:
        """The type's daily average as the threshold rule computes it (the previous `days` full local days,
        a day counting only when the CRM's first complaint came before it began) and its count today."""
        today = now.astimezone(TZ).date()
        per_day: dict[date, int] = {}
        with self.lock, sqlite3.connect(self.path) as db:
            (first,) = db.execute("SELECT MIN(created_at) FROM complaints").fetchone()
            for (created,) in db.execute("SELECT created_at FROM complaints WHERE type = ?", (type_,)):
                day = datetime.fromisoformat(created).replace(tzinfo=UTC).astimezone(TZ).date()
                per_day[day] = per_day.get(day, 0) + 1
        first_full = datetime.fromisoformat(first).replace(tzinfo=UTC).astimezone(TZ).date() + timedelta(days=1)
        n = max(1, min(days, (today - first_full).days))
        return sum(per_day.get(today - timedelta(days=d), 0) for d in range(1, n + 1)) / n, per_day.get(today, 0)


def seeded_rows(now: datetime, days: int = 7) -> list[tuple[datetime, str, str, str]]:
    """The seeded history (`SEED`): `days` whole local days, then today up to a minute before `now`."""
    start = (now.astimezone(TZ) - timedelta(days=days)).date()
    stream = generate(start, days + 1, PER_DAY, TZ, seed=SEED)
    now_us = int(now.timestamp() * 1_000_000)
    rows = []
    for i in range(len(stream)):
        ts = int(stream.ts[i])
        if ts >= now_us - 60_000_000:
            break
        rows.append(
            (
                datetime.fromtimestamp(ts / 1e6, UTC),
                stream.types[int(stream.type[i])],
                CHANNELS[int(stream.channel[i])],
                f"C{int(stream.customer[i]):06d}",
            )
        )
    return rows


def rules_dir() -> Path:
    """The seeds' rules as the package ships them (`sentinel/rules` is the top-level `rules/` folder: a
    link in a checkout, files in a wheel), so the demo runs the same rule files a user starts from."""
    return Path(__file__).parent / "rules" / "seeds"


def demo_config(tmp: Path, crm: Path, sink_url: str, listen: str) -> str:
    return f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp}/state.db"
listen = "{listen}"
locale = "zh_CN"
rules_dir = {json.dumps(str(rules_dir()))}   # type-surge, same-type-streak, the streak held under its surge

[source]
url = "sqlite:///{crm}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "type", channel = "channel", customer = "customer" }}
timezone = "UTC"
poll_interval = "1s"
record_url = "https://crm.example.internal/complaints/{{id}}"

[[receivers]]
name = "demo-chat"
kind = "wecom"
url = "{sink_url}"
rate_limit = "20/min"

"""


class Feeder(threading.Thread):
    """Writes the live stream: an ordinary complaint every 2 s, five 服务态度 in a row at ~6 s, and from
    ~10 s a surge of 物流配送延误.

    The surge opens with a burst that passes 1.5 × the type's daily average at once (a day-mode rule
    compares today so far with whole days, so at 01:00 that takes more complaints than at 21:00), then 20
    a second. The burst is also a run of one type, so the streak rule sees it in the same poll; the seed
    rules hold a type's streak under its open surge, so that crisis is told once, as the surge.
    """

    def __init__(self, crm: DemoCrm, out: IO[str], stop: threading.Event) -> None:
        super().__init__(name="demo-feeder", daemon=True)
        self.crm, self.out, self.stop_event = crm, out, stop
        self.rng = random.Random(7)

    def normal(self) -> tuple[datetime, str, str, str]:
        t = self.rng.choices(TYPES, weights=(30, 25, 22, 15, 8))[0]
        while t in (STREAK_TYPE, SURGE_TYPE):  # keep the two crises' types out of the ordinary traffic
            t = self.rng.choice(TYPES)
        return datetime.now(UTC), t, self.rng.choice(CHANNELS), f"C{self.rng.randrange(20000):06d}"

    def say(self, text: str) -> None:
        """One write per line, so the chat sink's panels (another thread) never split it."""
        self.out.write(text + "\n")
        self.out.flush()

    def surge(self, n: int) -> list[tuple[datetime, str, str, str]]:
        now = datetime.now(UTC)
        return [
            (
                now + timedelta(microseconds=i),
                SURGE_TYPE,
                self.rng.choice(CHANNELS),
                f"C{self.rng.randrange(20000):06d}",
            )
            for i in range(n)
        ]

    def run(self) -> None:
        start = time.monotonic()
        streak_done = surge_started = False
        tick = 0
        while not self.stop_event.wait(0.5):
            elapsed = time.monotonic() - start
            tick += 1
            rows = [self.normal()] if tick % NORMAL_EVERY_TICKS == 0 else []
            if elapsed > 6 and not streak_done:
                now = datetime.now(UTC)
                rows += [(now + timedelta(milliseconds=i), STREAK_TYPE, "电话热线", f"C9{i:05d}") for i in range(5)]
                streak_done = True
                self.say(f"demo: five {STREAK_TYPE} complaints in a row just arrived")
            if elapsed > 10:
                if not surge_started:
                    baseline, today = self.crm.counts(SURGE_TYPE, datetime.now(UTC))
                    burst = max(SURGE_PER_TICK, math.floor(1.5 * baseline) - today + 1 + SURGE_MARGIN)
                    self.say(
                        f"demo: a surge of {SURGE_TYPE} starts now: {burst} at once ({today} so far today, "
                        f"daily average {baseline:.1f}), then {2 * SURGE_PER_TICK} a second"
                    )
                    rows += self.surge(burst)
                    surge_started = True
                else:
                    rows += self.surge(SURGE_PER_TICK)
            if rows:
                self.crm.insert(rows)


TIERS = {"轻度": "light", "中度": "moderate", "重度": "severe"}
WHAT = (
    ("Sentinel 启动前已开始", "an alert already open in the seeded history when the daemon started, told once"),
    ("提醒：仍未恢复", "a reminder"),
    ("超过时限未确认", "an escalation"),
    ("已升级", "an upgrade"),
    ("【已恢复】", "a resolution"),
    ("新预警", "a new alert"),
)


def explain(n: int, content: str, cfg: Config) -> str:
    """The line above message `n`'s panel: what the message is and why its rule fired, in the terms of
    the rule's own settings (the demo's messages are zh_CN, its narration English)."""
    title = content.split("\n", 1)[0]
    if "预警汇总" in title:
        entries = re.findall(r"【(轻度|中度|重度)】\*\* (.+?) · ([\w.:-]+)：", content)
        listed = "; ".join(f"{rule}: {series} ({TIERS[tier]})" for tier, series, rule in entries)
        return f"▶ message {n}: one message for {len(entries)} alerts of one group ({listed})"
    what = next((w for key, w in WHAT if key in content), "a message")
    rule_name = _find(r"规则：(\S+)", content)
    series = (_find(r"序列：(?:类型 )?(.+)", content) or "?").strip()
    tier = TIERS.get(_find(r"【(?:已恢复 · )?(轻度|中度|重度)", title) or "", "?")
    rule = next((r for r in cfg.rules if r.name == rule_name), None)
    head = f"▶ message {n}: {what} · {rule_name} · {tier}"
    if rule is None:
        return head
    if "【已恢复】" in content:
        return f"{head}: {series} is back to normal ({_find(r'原因：(.+)', content) or 'resolved'})"
    if isinstance(rule, StreakRuleConfig):
        length = _find(r"连续 (\d+) 条同类投诉", content) or "?"
        steps = {"light": rule.length, "moderate": rule.tiers.moderate, "severe": rule.tiers.severe}
        why = f"; {tier} from {steps[tier]}" if tier in ("moderate", "severe") else ""
        return f"{head}: {length} {series} complaints in a row (the rule fires at {rule.length}{why})"
    facts = re.search(r"今日 ([\d,]+) 件，基线 ([\d.,]+)，([\d.]+) 倍", content)
    if facts is None:
        count = _find(r"今日 ([\d,]+) 件", content) or "?"
        return f"{head}: {series} has {count} complaints today and no history (a new type arriving in numbers)"
    value, baseline, ratio = facts.groups()
    assert isinstance(rule, ThresholdRuleConfig)
    steps_x = {"light": rule.factor, "moderate": rule.tiers.moderate, "severe": rule.tiers.severe}
    why = f"; {tier} from {steps_x[tier]:g} ×" if tier in ("moderate", "severe") else ""
    return (
        f"{head}: {series} has {value} complaints today, above {rule.factor:g} × its daily average of "
        f"{baseline} ({ratio} ×{why})"
    )


def held_under_surges(state: Path, cfg: Config) -> list[str]:
    """Alerts nobody was told of because an inhibition held them under another open alert (a type's
    streak under its surge), each with the alert that told the crisis instead."""
    from sqlalchemy import create_engine, select

    from sentinel.alerting.routing import compile_matchers, labels_of, matches
    from sentinel.store import alerts as alert_store
    from sentinel.store.schema import notify_log

    engine = create_engine(f"sqlite:///{state}")
    try:
        with engine.connect() as conn:
            stored = alert_store.alerts_in_order(conn, replay=False)
            told = set(conn.execute(select(notify_log.c.instance).distinct()).scalars())
    finally:
        engine.dispose()
    alerts = [(a.instance, labels_of(a), a.peak) for a in stored]
    lines = []
    for inst, labels, peak in alerts:
        if inst in told:
            continue
        for inh in cfg.inhibit:
            source, target = compile_matchers(inh.source), compile_matchers(inh.target)
            if not matches(target, labels):
                continue
            by = next(
                (
                    other
                    for i, other, _ in alerts
                    if i != inst
                    and i in told
                    and matches(source, other)
                    and all(other.get(k, "") == labels.get(k, "") for k in inh.equal)
                ),
                None,
            )
            if by is not None:
                size = f"a run of {peak:g}" if labels["kind"] == "streak" else f"peak {peak:g}"
                lines.append(
                    f"{labels['rule']} {labels.get('type', '')} ({size}) was held under "
                    f"{by['rule']} {by.get('type', '')}: the same crisis, told once"
                )
                break
    return lines


def _find(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    return m.group(1) if m else None


def free_port() -> int:
    """A port nothing listens on now, so links in messages can name it (port 0 could not)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo(
    duration: float | None,
    out: IO[str] = sys.stdout,
    keep: bool = False,
    listen: str | None = None,
    sink_listen: str = "127.0.0.1:0",
) -> int:
    """Run the demo; `listen` is the daemon's status page, API and /metrics (default a free local port),
    `sink_listen` the chat sink's (port 0: any free one). Returns the exit status (2: a port is taken)."""
    from sentinel.http import ListenError
    from sentinel.loader import ConfigError, load
    from sentinel.logs import setup_logging
    from sentinel.service import build
    from sentinel.sink import ChatSink

    setup_logging("WARNING", json_logs=False)
    cfg_holder: list[Config] = []
    try:
        sink = ChatSink(out, listen=sink_listen, explain=lambda n, content: explain(n, content, cfg_holder[0]))
    except ListenError as exc:
        print(f"demo: error: --sink-listen {sink_listen}: cannot listen there: {exc.reason}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"demo: error: --sink-listen {sink_listen}: cannot listen there: {exc.strerror or exc}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
    try:
        crm = DemoCrm(tmp / "crm.db")
        now = datetime.now(UTC)
        n = crm.seed(now)
        sink.start()
        cfg_path = tmp / "sentinel.toml"
        cfg_path.write_text(
            demo_config(tmp, crm.path, sink.url, listen or f"127.0.0.1:{free_port()}"), encoding="utf-8"
        )
        try:
            cfg = load(cfg_path)
        except ConfigError as exc:  # e.g. an installation whose packaged rules/seeds were edited
            print(f"demo: error: {exc}", file=sys.stderr)
            return 2
        cfg_holder.append(cfg)
        daemon = build(cfg, config_path=str(cfg_path))
        print(f"demo: working directory {tmp}", file=out)
        print(f"demo: seeded {n:,} complaints (a week of history, about {PER_DAY} a day)", file=out)
        print(f"demo: rules from {rules_dir()}: " + "; ".join(_describe(r) for r in cfg.rules), file=out)
        try:
            daemon.start()
        except (ListenError, OSError) as exc:
            why = exc.reason if isinstance(exc, ListenError) else exc.strerror or exc
            print(f"demo: error: --listen {cfg.listen}: cannot listen there: {why}", file=sys.stderr)
            daemon.stop()
            return 2
        assert daemon.server is not None
        print(
            f"demo: metrics at {daemon.server.url}/metrics, status at {daemon.server.url}/, "
            f"chat sink at {sink.server.url}",
            file=out,
        )
        print("demo: watching the live stream (Ctrl-C to stop)", file=out, flush=True)
        stop = threading.Event()
        feeder = Feeder(crm, out, stop)
        feeder.start()
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            feeder.join(timeout=2)
            daemon.stop()
        print(f"demo: {sink.count} message(s) delivered to the chat sink", file=out)
        for line in held_under_surges(tmp / "state.db", cfg):
            print(f"demo: not told: {line}", file=out)
        return 0
    finally:
        sink.stop()
        if not keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _describe(rule: ThresholdRuleConfig | StreakRuleConfig | QuietRuleConfig) -> str:
    if isinstance(rule, StreakRuleConfig):
        return f"{rule.name} fires at {rule.length} of one {rule.field} in a row"
    if isinstance(rule, QuietRuleConfig):
        series = "/".join(rule.group_by) or "stream"
        return f"{rule.name} fires when a {series} goes quiet for longer than chance explains"
    return f"{rule.name} fires above {rule.factor:g} × the daily average (at least {rule.min_count})"
