"""Alertmanager's API v2: the real amtool (Debian's prometheus-alertmanager) against a daemon serving on a
real port — alert query, silence add / query / update / expire, writes refused without the bearer token
and accepted with it — and every endpoint's JSON checked against Alertmanager's OpenAPI spec (0.25, what
this amtool speaks, and 0.34, what current Grafana and karma read), vendored in tests/fixtures."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from sentinel.api_v2 import filter_matches, parse_matcher
from sentinel.clock import SystemClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.http import Server
from sentinel.service import build
from sentinel.store.schema import silences
from tests.crm import OTHER, PHONE, T, Crm, write_config

TOKEN = "api-TOKEN-5e6f7a8b"
AMTOOL = shutil.which("amtool")
FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Running:
    daemon: Daemon
    url: str
    config: Path
    tmp: Path


def _config(tmp_path: Path, crm: Crm) -> Path:
    """Two rolling rules (so the surge is one whatever the hour), routes to two receivers and an inhibition:
    the type × channel alert is held while its type's surge is open."""
    return write_config(tmp_path, crm, f"""
[api]
token = "${{T_API_TOKEN}}"

[[rules]]
name = "type-surge"
kind = "threshold"
mode = "rolling"

[[rules]]
name = "channel-surge"
kind = "threshold"
mode = "rolling"
group_by = ["type", "channel"]

[[receivers]]
name = "cs-team"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[receivers]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/ops"

[[routes]]
match = {{ rule = "channel-surge" }}
receivers = ["ops"]
group_by = ["rule", "type"]

[[routes]]
receivers = ["cs-team"]
group_by = ["rule"]

[[inhibit]]
source = {{ rule = "type-surge" }}
target = {{ rule = "channel-surge" }}
equal = ["type"]
""")


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    """A daemon on the wall clock (amtool stamps silences with the real time) over a surge of T by phone in
    the last hour, its alerts detected and dispatched, its HTTP app on a real port."""
    monkeypatch.setenv("T_API_TOKEN", TOKEN)
    now = datetime.now(UTC)
    crm = Crm(tmp_path / "crm.db")
    crm.history(now=now)
    crm.add(now - timedelta(hours=1), n=90, spacing=timedelta(seconds=30))
    cfg_path = _config(tmp_path, crm)
    daemon = build(load_config(cfg_path), config_path=str(cfg_path), clock=SystemClock())
    daemon.open()
    while daemon.cycle():
        pass
    daemon.extras["delivery"].dispatch()  # the dispatcher has taken every event: no alert is "unprocessed"
    server = Server(daemon.app, "127.0.0.1:0")
    server.start()
    try:
        yield Running(daemon, server.url, cfg_path, tmp_path)
    finally:
        server.stop()
        daemon.stop()


def amtool(r: Running, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """The real amtool against the running daemon; with `token`, through an `--http.config.file` that sends
    it as a bearer token (the way the README documents)."""
    assert AMTOOL is not None
    cmd = [AMTOOL, f"--alertmanager.url={r.url}", "--no-version-check"]
    if token is not None:
        http_config = r.tmp / f"amtool-http-{len(token)}.yml"
        http_config.write_text(f"authorization:\n  type: Bearer\n  credentials: {token}\n", encoding="utf-8")
        cmd.append(f"--http.config.file={http_config}")
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30, check=False)


def amtool_json(r: Running, *args: str) -> Any:
    done = amtool(r, *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed (Debian package "
                                                          "prometheus-alertmanager; .ci/run installs it)")


def v2(r: Running, path: str, **params: Any) -> Any:
    resp = requests.get(f"{r.url}/api/v2{path}", params=params, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def by_name(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["alertname"]: a for a in alerts}


@needs_amtool
def test_amtool_alert_query_lists_the_open_alerts_with_their_labels(running: Running) -> None:
    shown = amtool(running, "alert", "query")
    assert shown.returncode == 0, shown.stderr
    assert "type-surge" in shown.stdout and "channel-surge" not in shown.stdout  # held by the inhibition
    active = by_name(amtool_json(running, "alert", "query"))
    assert set(active) == {"type-surge"}
    surge = active["type-surge"]
    assert surge["labels"] == {"alertname": "type-surge", "severity": surge["labels"]["severity"], "type": T}
    assert surge["labels"]["severity"] in ("light", "moderate", "severe")
    assert surge["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
    assert surge["receivers"] == [{"name": "cs-team"}] and "summary" in surge["annotations"]
    held = by_name(amtool_json(running, "alert", "query", "--inhibited"))
    channel = held["channel-surge"]
    assert channel["labels"]["channel"] == PHONE and channel["status"]["state"] == "suppressed"
    assert channel["status"]["inhibitedBy"] == [surge["fingerprint"]]
    assert channel["receivers"] == [{"name": "ops"}]
    # matchers: a regex, a negative one, and a bare first argument taken as the alertname
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "alertname=~.*-surge"))) == \
        {"type-surge", "channel-surge"}
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "alertname!=type-surge"))) == \
        {"channel-surge"}
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "channel-surge"))) == {"channel-surge"}
    assert amtool_json(running, "alert", "query", "-i", "-a", f'type="{OTHER}"') == []
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "--receiver=o.s"))) == {"channel-surge"}


@needs_amtool
def test_amtool_silences_need_the_token_and_hold_the_alert(running: Running) -> None:
    add = ("silence", "add", "alertname=type-surge", f"type={T}", "--comment=carrier outage, known",
           "--duration=1h", "--author=zhangsan")
    for token in (None, "wrong-token"):
        refused = amtool(running, *add, token=token)
        assert refused.returncode != 0 and "401" in refused.stderr
    with running.daemon.store.reading() as conn:
        assert conn.execute(select(silences)).first() is None

    made = amtool(running, *add)
    assert made.returncode == 0, made.stderr
    sid = made.stdout.strip()
    surge = by_name(v2(running, "/alerts"))["type-surge"]
    assert surge["status"] == {"state": "suppressed", "silencedBy": [sid], "inhibitedBy": [], "mutedBy": []}
    # held where it counts: the dispatcher's policy (the same as /api/v1's "silenced") and amtool's view
    v1 = {a["rule"]: a for a in requests.get(f"{running.url}/api/v1/alerts", timeout=5).json()}
    assert v1["type-surge"]["silenced"] is True and v1["type-surge"]["silencedBy"] == sid
    assert amtool_json(running, "alert", "query") == []
    assert set(by_name(amtool_json(running, "alert", "query", "--silenced"))) == {"type-surge"}

    listed = amtool_json(running, "silence", "query")
    assert [s["id"] for s in listed] == [sid]
    assert listed[0]["matchers"] == [{"name": "alertname", "value": "type-surge", "isRegex": False, "isEqual": True},
                                     {"name": "type", "value": T, "isRegex": False, "isEqual": True}]
    assert listed[0]["createdBy"] == "zhangsan" and listed[0]["comment"] == "carrier outage, known"
    assert listed[0]["status"] == {"state": "active"}
    assert sid in amtool(running, "silence", "query", "-q").stdout

    refused = amtool(running, "silence", "expire", sid, token=None)
    assert refused.returncode != 0 and "401" in refused.stderr
    assert v2(running, f"/silence/{sid}")["status"]["state"] == "active"
    expired = amtool(running, "silence", "expire", sid)
    assert expired.returncode == 0, expired.stderr
    assert amtool_json(running, "silence", "query") == []
    assert [s["id"] for s in amtool_json(running, "silence", "query", "--expired")] == [sid]
    assert v2(running, f"/silence/{sid}")["status"]["state"] == "expired"
    assert by_name(v2(running, "/alerts"))["type-surge"]["status"]["state"] == "active"
    again = amtool(running, "silence", "expire", sid)
    assert again.returncode != 0 and "404" in again.stderr


@needs_amtool
def test_amtool_silence_update_and_negative_regex_matchers(running: Running) -> None:
    made = amtool(running, "silence", "add", "alertname=~.*-surge", f"type!~{OTHER}|x", "--comment=c", "--duration=1h")
    assert made.returncode == 0, made.stderr
    sid = made.stdout.strip()
    (s,) = amtool_json(running, "silence", "query")
    assert s["matchers"] == [{"name": "alertname", "value": ".*-surge", "isRegex": True, "isEqual": True},
                             {"name": "type", "value": f"{OTHER}|x", "isRegex": True, "isEqual": False}]
    held = by_name(v2(running, "/alerts"))
    assert held["type-surge"]["status"]["silencedBy"] == [sid] and held["channel-surge"]["status"]["silencedBy"] == [sid]
    # a longer end and a new comment: the same silence, changed in place (as Alertmanager does)
    longer = amtool(running, "silence", "update", sid, "--duration=3h", "--comment=longer")
    assert longer.returncode == 0, longer.stderr
    (s,) = amtool_json(running, "silence", "query")
    assert s["id"] == sid and s["comment"] == "longer"
    ends = datetime.fromisoformat(s["endsAt"].replace("Z", "+00:00"))
    assert timedelta(hours=2, minutes=50) < ends - datetime.now(UTC) <= timedelta(hours=3)
    # a new start for an active silence: the old one is expired and a new, pending one replaces it
    moved = amtool(running, "silence", "update", sid, "--start=2099-01-01T00:00:00Z", "--end=2099-01-02T00:00:00Z")
    assert moved.returncode == 0, moved.stderr
    (new,) = amtool_json(running, "silence", "query")
    assert new["id"] != sid and new["status"]["state"] == "pending" and new["startsAt"].startswith("2099-01-01")
    assert v2(running, f"/silence/{sid}")["status"]["state"] == "expired"
    assert by_name(v2(running, "/alerts"))["type-surge"]["status"]["silencedBy"] == []
