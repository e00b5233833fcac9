"""A failing receiver looks failing everywhere an operator looks: while its webhook refuses connections,
the status page, `sentinel status`, `/api/v1/status` and `/metrics` say retrying, then failing, with
"connection refused", when it happened, the next attempt and the oldest message's age; after the webhook
comes back they say ok. `/readyz` stays about the daemon.

A real daemon (as `sentinel run` builds it) with a moved clock, its HTTP server on a real port, the CLI
talking to it, and a real webhook behind a TCP relay that refuses and then accepts connections."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from sentinel.cli import main
from sentinel.clock import ManualClock, now_us
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.http import Server
from sentinel.model import US, to_datetime
from sentinel.notify.health import FAILING_AFTER
from sentinel.service import build
from sentinel.web import status_page
from tests.crm import NOW, Crm
from tests.delivery.relay import Relay
from tests.notify.vendors import FakeWebhook
from tests.web.parse import by_id, parse
from tests.web.test_browser import CHROMIUM, chromium

REFUSED = "connection refused"


@dataclass
class Outage:
    daemon: Daemon
    clock: ManualClock
    url: str
    cli: Path
    relay: Relay
    hook: FakeWebhook

    def deliver(self) -> None:
        """The deliver job, on this thread: one drain of the receiver."""
        worker = self.daemon.pipeline.delivery.worker
        worker.drain(worker.runners["cs-team"])

    def advance_to(self, us: int) -> None:
        self.clock.set(to_datetime(us, self.daemon.cfg.tz))

    def receiver(self) -> dict[str, object]:
        data = requests.get(f"{self.url}/api/v1/status", timeout=5).json()
        [r] = data["receivers"]
        assert isinstance(r, dict)
        return r

    def metrics(self) -> dict[str, float]:
        text = requests.get(f"{self.url}/metrics", timeout=5).text
        return {
            m.group(1): float(m.group(2))
            for m in re.finditer(r"^(sentinel_receiver_\w+\{[^}]*\}) (\S+)$", text, re.MULTILINE)
        }

    def row(self) -> list[str]:
        root = parse(requests.get(self.url + "/", timeout=5).text)
        return [" ".join(td.all_text().split()) for td in by_id(root, "receiver-cs-team").find_all("td")]

    def banners(self) -> list[str]:
        root = parse(requests.get(self.url + "/", timeout=5).text)
        return [" ".join(b.all_text().split()) for b in root.find_all("div", "banner")]

    def readiness(self) -> list[str]:
        """The problems `/readyz` names."""
        text = requests.get(f"{self.url}/readyz", timeout=5).text.strip()
        return [] if text == "ready" else text.removeprefix("not ready: ").split("; ")

    def status_command(self, capsys: pytest.CaptureFixture[str]) -> str:
        assert main(["status", "--config", str(self.cli)]) == 0
        return capsys.readouterr().out


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    crm = Crm(tmp_path / "crm.db")
    crm.history()
    with FakeWebhook(path="/hook") as hook, Relay(hook.port) as relay:
        body = f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/state.db"
listen = "127.0.0.1:PORT"
locale = "en"
[source]
url = "sqlite:///{crm.path}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel" }}
timezone = "UTC"
[[rules]]
name = "type-surge"
kind = "threshold"
[[receivers]]
name = "cs-team"
kind = "webhook"
url = "{relay.url(hook.url)}"
[[routes]]
receivers = ["cs-team"]
group_wait = "0s"
group_interval = "0s"
"""
        cfg_path = tmp_path / "sentinel.toml"
        cfg_path.write_text(body.replace("PORT", "0"), encoding="utf-8")
        clock = ManualClock(NOW)
        daemon = build(load_config(cfg_path), config_path=str(cfg_path), clock=clock)
        status_page.register(daemon)
        daemon.open()
        while daemon.cycle():
            pass
        server = Server(daemon.app, "127.0.0.1:0")
        server.start()
        cli = tmp_path / "cli.toml"
        cli.write_text(body.replace("PORT", str(server.port)), encoding="utf-8")
        try:
            out = Outage(daemon, clock, server.url, cli, relay, hook)
            relay.refuse()
            crm.add(NOW - timedelta(minutes=20), n=61, spacing=timedelta(seconds=10))  # a surge
            clock.set(NOW + timedelta(seconds=2))
            daemon.cycle()
            assert daemon.pipeline.dispatch.dispatch() == 1
            yield out
        finally:
            server.stop()
            daemon.stop()


def test_a_refusing_webhook_shows_retrying_then_failing_then_ok(
    outage: Outage, capsys: pytest.CaptureFixture[str]
) -> None:
    o = outage
    before = o.receiver()
    assert (before["state"], before["consecutive_failures"], before["last_error"]) == ("ok", 0, None)

    # the first attempt is refused: retrying, with the error, its time and the next attempt
    o.deliver()
    first_failure = now_us(o.clock)
    r = o.receiver()
    assert (r["state"], r["consecutive_failures"], r["last_error"]) == ("retrying", 1, REFUSED)
    assert r["last_error_at"] == to_datetime(first_failure, o.daemon.cfg.tz).isoformat()
    assert r["pending"] == 1 and r["oldest_pending_age_seconds"] == 0.0 and r["last_delivered"] is None
    assert isinstance(r["next_attempt"], str)
    assert r["last"] == {"status": "retrying", "at": None, "error": REFUSED, "next_attempt": r["next_attempt"]}
    m = o.metrics()
    assert m['sentinel_receiver_state{receiver="cs-team",state="retrying"}'] == 1.0
    assert m['sentinel_receiver_state{receiver="cs-team",state="ok"}'] == 0.0
    assert m['sentinel_receiver_consecutive_failures{receiver="cs-team"}'] == 1.0
    row = o.row()
    assert row[2:4] == ["retrying", "1"] and row[6] == f"{REFUSED} 2025-07-08 18:00:02"
    assert row[5].startswith("in ") and row[7] == "nothing yet"
    out = o.status_command(capsys)
    assert re.search(r"cs-team\s*│\s*webhook\s*│\s*retrying\s*│\s*1\s*│\s*1 \(0s\)\s*│\s*in \d+s\s*│\s*-\s*│", out), out
    assert "cs-team: last error (07-08 18:00:02): connection refused" in out
    assert o.readiness() == ["scheduler not running"]  # about the daemon (driven by hand here), not receivers

    # each retry at its due time is refused too: failing after FAILING_AFTER attempts in a row
    for n in range(2, FAILING_AFTER + 1):
        nxt = o.receiver()["next_attempt"]
        assert isinstance(nxt, str)
        o.advance_to(int(to_us(nxt)))
        o.deliver()
        r = o.receiver()
        assert r["consecutive_failures"] == n
        assert r["state"] == ("failing" if n >= FAILING_AFTER else "retrying")
    assert len(o.hook.requests) == 0
    age = (now_us(o.clock) - first_failure) / US
    assert r["oldest_pending_age_seconds"] == pytest.approx(age, abs=0.1) and age > 5
    m = o.metrics()
    assert m['sentinel_receiver_state{receiver="cs-team",state="failing"}'] == 1.0
    assert m['sentinel_receiver_state{receiver="cs-team",state="retrying"}'] == 0.0
    assert m['sentinel_receiver_consecutive_failures{receiver="cs-team"}'] == FAILING_AFTER
    assert m['sentinel_receiver_oldest_pending_seconds{receiver="cs-team"}'] == pytest.approx(age, abs=0.1)
    assert "http" not in "".join(m)  # receiver names as labels, never the URL
    assert o.row()[2:4] == ["failing", str(FAILING_AFTER)]
    last = r["last_error_at"]
    assert isinstance(last, str) and last > str(before["last_error_at"] or "")
    assert o.banners() == [f"Receiver cs-team is failing: {REFUSED} — 1 message waiting, details"]
    out = o.status_command(capsys)
    assert re.search(rf"cs-team\s*│\s*webhook\s*│\s*failing\s*│\s*{FAILING_AFTER}\s*│", out), out
    assert f"cs-team: last error ({when(last)}): {REFUSED}" in out
    assert o.readiness() == ["scheduler not running"]

    # the webhook is back: the next attempt delivers and every view says ok, keeping the last error
    o.relay.up()
    nxt = o.receiver()["next_attempt"]
    assert isinstance(nxt, str)
    o.advance_to(int(to_us(nxt)))
    last_failure = o.receiver()["last_error_at"]
    o.deliver()
    assert len(o.hook.requests) == 1
    r = o.receiver()
    assert (r["state"], r["consecutive_failures"], r["pending"]) == ("ok", 0, 0)
    assert (r["next_attempt"], r["oldest_pending_age_seconds"]) == (None, None)
    assert (r["last_error"], r["last_error_at"]) == (REFUSED, last_failure)
    assert r["last_delivered"] == to_datetime(now_us(o.clock), o.daemon.cfg.tz).isoformat()
    m = o.metrics()
    assert m['sentinel_receiver_state{receiver="cs-team",state="ok"}'] == 1.0
    assert m['sentinel_receiver_state{receiver="cs-team",state="failing"}'] == 0.0
    assert m['sentinel_receiver_consecutive_failures{receiver="cs-team"}'] == 0.0
    assert m['sentinel_receiver_oldest_pending_seconds{receiver="cs-team"}'] == 0.0
    assert o.row()[2:6] == ["ok", "0", "0", "—"]
    assert o.banners() == []
    out = o.status_command(capsys)
    assert re.search(r"cs-team\s*│\s*webhook\s*│\s*ok\s*│\s*0\s*│", out), out


def to_us(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * US


def when(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%m-%d %H:%M:%S")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed at /usr/bin/chromium")
def test_the_status_page_in_a_browser_shows_the_outage_and_the_recovery(outage: Outage, tmp_path: Path) -> None:
    """The DOM a real headless browser builds from the page: the receiver's row and banner while its
    webhook refuses connections, and after it took the message."""
    o = outage

    def receiver_dom(profile: str) -> tuple[list[str], list[str]]:
        proc = chromium(tmp_path / profile, "--dump-dom", o.url + "/")
        assert proc.returncode == 0, proc.stderr[-3000:]
        root = parse(proc.stdout)
        row = [" ".join(td.all_text().split()) for td in by_id(root, "receiver-cs-team").find_all("td")]
        return row, [" ".join(b.all_text().split()) for b in root.find_all("div", "banner")]

    for _ in range(FAILING_AFTER):
        nxt = o.receiver()["next_attempt"]
        o.advance_to(max(now_us(o.clock), int(to_us(nxt))) if isinstance(nxt, str) else now_us(o.clock))
        o.deliver()
    row, banners = receiver_dom("during")
    assert row[:5] == ["cs-team", "webhook", "failing", str(FAILING_AFTER), row[4]] and row[4].startswith("1 (oldest")
    assert row[6].startswith(REFUSED) and row[7] == "nothing yet"
    assert banners == [f"Receiver cs-team is failing: {REFUSED} — 1 message waiting, details"]

    o.relay.up()
    nxt = o.receiver()["next_attempt"]
    assert isinstance(nxt, str)
    o.advance_to(int(to_us(nxt)))
    o.deliver()
    row, banners = receiver_dom("after")
    assert row[:6] == ["cs-team", "webhook", "ok", "0", "0", "—"] and row[6].startswith(REFUSED)
    assert banners == []
