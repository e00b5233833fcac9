"""Builders for the status page tests: a CRM table in real SQLite, a configuration, and a daemon that has
polled it with a stepped clock, so the page reads a real store (alerts, silences, acks, outbox, buckets).

The scene at NOW (18:00 in Shanghai, 8 days of history at 40 a day for two types):
- `物流配送延误` surges to 61 today: a light `type-surge` alert (acknowledged in `scene`), and a
  `type-channel-surge` alert for its phone channel that the inhibit rule holds back;
- two new types named like HTML injections arrive: 16 of SCRIPT (severe, floor-decided) and 12 of IMG
  (moderate, silenced in `scene`);
- the runs of the same type make `streak` alerts, whose route is muted at this hour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from sentinel.alerting import silences as silence_store
from sentinel.alerting.ack import acknowledge
from sentinel.clock import ManualClock, now_us
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.model import US, Tier
from sentinel.notify import outbox
from sentinel.service import build
from sentinel.store.schema import alerts
from sentinel.web import status_page
from tests.crm import NOW, OTHER, PHONE, Crm, T  # noqa: F401 - re-exported for the web tests
from tests.crm import write_config as crm_config

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def write_config(tmp_path: Path, crm: Crm, extra: str = "", *, locale: str | None = "en") -> Path:
    """The scene's configuration; the page's words in `locale` (the tests read English unless they test
    the language, which is zh_CN by default for users)."""
    path = crm_config(
        tmp_path,
        crm,
        f"""
[[rules]]
name = "type-surge"
kind = "threshold"
min_count = 10

[[rules]]
name = "type-channel-surge"
kind = "threshold"
group_by = ["type", "channel"]
min_count = 10

[[rules]]
name = "streak"
kind = "streak"
length = 5

[[receivers]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[receivers]]
name = "crisis"
kind = "webhook"
url = "http://127.0.0.1:9/crisis"

[[routes]]
match = {{ rule = "streak" }}
receivers = ["ops"]
mute = ["17:00-19:00"]

[[routes]]
receivers = ["ops", "crisis"]

[[inhibit]]
source = {{ rule = "type-surge" }}
target = {{ rule = "type-channel-surge" }}
equal = ["type"]
{extra}
""",
    )
    if locale is not None:  # None: the default
        path.write_text(f'locale = "{locale}"\n' + path.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def open_daemon(cfg_path: Path, clock: ManualClock, *, dry_run: bool = False) -> Daemon:
    """Built as `sentinel run` builds it, the status page registered, the store open; no threads."""
    daemon = build(load_config(cfg_path), config_path=str(cfg_path), clock=clock, dry_run=dry_run)
    status_page.register(daemon)
    daemon.open()
    return daemon


def drain(daemon: Daemon) -> None:
    while daemon.cycle():
        pass


@dataclass
class Scene:
    daemon: Daemon
    clock: ManualClock
    crm: Crm


def surge(crm: Crm) -> None:
    crm.add(NOW - timedelta(minutes=40), n=61, spacing=timedelta(seconds=10))
    crm.add(NOW - timedelta(minutes=20), type_=SCRIPT, channel="官网客服", n=16, spacing=timedelta(seconds=5))
    crm.add(NOW - timedelta(minutes=15), type_=IMG, channel="官网客服", n=12, spacing=timedelta(seconds=5))


def scene(tmp_path: Path, *, dry_run: bool = False, locale: str | None = "en") -> Scene:
    """The daemon after the backfill and one live poll with the surge; acks, a silence, outbox rows."""
    crm = Crm(tmp_path / "crm.db")
    crm.history()
    clock = ManualClock(NOW)
    daemon = open_daemon(write_config(tmp_path, crm, locale=locale), clock, dry_run=dry_run)
    drain(daemon)
    surge(crm)
    clock.set(NOW + timedelta(seconds=2))
    daemon.cycle()
    now = now_us(clock)
    with daemon.store.transaction() as conn:
        inst = open_instance(daemon, "type-surge", T)
        acknowledge(conn, inst, "值班 <b>Li</b>", "api", now)
        matchers = (silence_store.SilenceMatcher("type", IMG),)
        silence_store.add(conn, matchers, now, now + 3600 * US, "<i>ops</i>", 'known noise "><img src=y>', now)
        msg = outbox.enqueue(conn, "crisis", "alert", Tier.SEVERE, [], event_at_us=now, now_us=now)
        outbox.mark_failed(conn, msg, now, "HTTP 400: <img src=x onerror=alert(2)> rejected")
        done = outbox.enqueue(conn, "ops", "alert", Tier.LIGHT, [], event_at_us=now, now_us=now)
        outbox.mark_delivered(conn, done, now)
    clock.set(NOW + timedelta(seconds=10))  # past group_wait: the dispatcher writes real pending messages
    daemon.pipeline.dispatch.dispatch()
    return Scene(daemon, clock, crm)


def open_instance(daemon: Daemon, rule: str, type_: str, channel: str | None = None) -> str:
    with daemon.store.reading() as conn:
        rows = conn.execute(
            select(alerts.c.instance, alerts.c.labels).where(alerts.c.rule == rule, alerts.c.status == "open")
        ).all()
    for inst, labels in rows:
        lab = json.loads(labels)
        if lab.get("type") == type_ and (channel is None or lab.get("channel") == channel):
            return str(inst)
    raise AssertionError(f"no open {rule} alert for {type_!r} {channel or ''}")
