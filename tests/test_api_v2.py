"""Alertmanager's API v2: the real amtool (Debian's prometheus-alertmanager) against a daemon serving on a
real port — alert query, silence add / query / update / expire, writes refused without the bearer token
and accepted with it — and every endpoint's JSON checked against Alertmanager's OpenAPI spec (0.25, what
this amtool speaks, and 0.34, what current Grafana and karma read), vendored in tests/fixtures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import requests
import yaml
from sqlalchemy import select

from sentinel import __version__
from sentinel.alerting.dispatch import CURSOR
from sentinel.api_v2.codec import filter_matches, parse_matcher
from sentinel.clock import SystemClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.http import Server
from sentinel.notify import outbox
from sentinel.service import build
from sentinel.store.schema import silences
from tests.crm import OTHER, PHONE, Crm, T, write_config

TOKEN = "api-TOKEN-5e6f7a8b"
AMTOOL = shutil.which("amtool")
FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Endpoint:
    """Where a daemon serves, and a folder for amtool's files."""

    url: str
    tmp: Path


@dataclass
class Running(Endpoint):
    daemon: Daemon
    config: Path


def _config(tmp_path: Path, crm: Crm) -> Path:
    """Two rolling rules (so the surge is one whatever the hour), routes to two receivers and an inhibition:
    the type × channel alert is held while its type's surge is open."""
    return write_config(
        tmp_path,
        crm,
        """
[api]
token = "${T_API_TOKEN}"

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
match = { rule = "channel-surge" }
receivers = ["ops"]
group_by = ["rule", "type"]

[[routes]]
receivers = ["cs-team"]
group_by = ["rule"]

[[inhibit]]
source = { rule = "type-surge" }
target = { rule = "channel-surge" }
equal = ["type"]
""",
    )


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
    daemon.pipeline.dispatch.dispatch()  # the dispatcher has taken every event: no alert is "unprocessed"
    server = Server(daemon.app, "127.0.0.1:0")
    server.start()
    try:
        yield Running(server.url, tmp_path, daemon, cfg_path)
    finally:
        server.stop()
        daemon.stop()


def amtool(r: Endpoint, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    """The real amtool against the running daemon; with `token`, through an `--http.config.file` that sends
    it as a bearer token (the way the README documents)."""
    assert AMTOOL is not None
    cmd = [AMTOOL, f"--alertmanager.url={r.url}", "--no-version-check"]
    if token is not None:
        http_config = r.tmp / f"amtool-http-{len(token)}.yml"
        http_config.write_text(f"authorization:\n  type: Bearer\n  credentials: {token}\n", encoding="utf-8")
        cmd.append(f"--http.config.file={http_config}")
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=30, check=False)


def amtool_json(r: Endpoint, *args: str) -> Any:
    done = amtool(r, *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not installed (Debian package prometheus-alertmanager; .ci/run installs it)"
)


def v2(r: Endpoint, path: str, **params: Any) -> Any:
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
    assert surge["labels"] == {
        "alertname": "type-surge",
        "severity": surge["labels"]["severity"],
        "type": T,
        "kind": "threshold",
    }
    assert surge["labels"]["severity"] in ("light", "moderate", "severe")
    assert surge["status"] == {"state": "active", "silencedBy": [], "inhibitedBy": []}
    assert surge["receivers"] == [{"name": "cs-team"}] and "summary" in surge["annotations"]
    held = by_name(amtool_json(running, "alert", "query", "--inhibited"))
    channel = held["channel-surge"]
    assert channel["labels"]["channel"] == PHONE and channel["status"]["state"] == "suppressed"
    assert channel["status"]["inhibitedBy"] == [surge["fingerprint"]]
    assert channel["receivers"] == [{"name": "ops"}]
    # matchers: a regex, a negative one, and a bare first argument taken as the alertname
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "alertname=~.*-surge"))) == {
        "type-surge",
        "channel-surge",
    }
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "alertname!=type-surge"))) == {
        "channel-surge"
    }
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "channel-surge"))) == {"channel-surge"}
    assert amtool_json(running, "alert", "query", "-i", "-a", f'type="{OTHER}"') == []
    assert set(by_name(amtool_json(running, "alert", "query", "-i", "-a", "--receiver=o.s"))) == {"channel-surge"}


@needs_amtool
def test_amtool_silences_need_the_token_and_hold_the_alert(running: Running) -> None:
    add = (
        "silence",
        "add",
        "alertname=type-surge",
        f"type={T}",
        "--comment=carrier outage, known",
        "--duration=1h",
        "--author=zhangsan",
    )
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
    assert listed[0]["matchers"] == [
        {"name": "alertname", "value": "type-surge", "isRegex": False, "isEqual": True},
        {"name": "type", "value": T, "isRegex": False, "isEqual": True},
    ]
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
    assert s["matchers"] == [
        {"name": "alertname", "value": ".*-surge", "isRegex": True, "isEqual": True},
        {"name": "type", "value": f"{OTHER}|x", "isRegex": True, "isEqual": False},
    ]
    held = by_name(v2(running, "/alerts"))
    assert held["type-surge"]["status"]["silencedBy"] == [sid]
    assert held["channel-surge"]["status"]["silencedBy"] == [sid]
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


# --- the JSON against Alertmanager's OpenAPI spec --------------------------------------------------------

SPECS = sorted(FIXTURES.glob("alertmanager-openapi-v*.yaml"))


def _date_time(value: object) -> bool:
    """RFC 3339 as Go's strfmt parses it: a date, "T", a time and a zone."""
    if not isinstance(value, str) or "T" not in value or not (value.endswith("Z") or value[-6] in "+-"):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00"))  # raises for anything else
    return True


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time", raises=ValueError)(_date_time)
FORMATS.checks("uri", raises=ValueError)(lambda v: not isinstance(v, str) or bool(urlsplit(v).scheme))


def check(spec_path: Path, path: str, method: str, body: Any, status: str = "200") -> None:
    """`body` against the response schema the spec gives `method path` for `status` (unknown keys are
    allowed by the spec, as Alertmanager's clients accept them)."""
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    response = spec["paths"][path][method]["responses"][status]
    if "$ref" in response:  # '#/responses/BadRequest'
        response = spec["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["schema"]
    validator = jsonschema.Draft4Validator(
        {"definitions": spec["definitions"], "allOf": [schema]}, format_checker=FORMATS
    )
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, f"{spec_path.name} {method.upper()} {path}: {errors}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem.rsplit("-", 1)[1])
def test_every_endpoint_answers_in_the_specs_shapes(running: Running, spec: Path) -> None:
    made = requests.post(
        f"{running.url}/api/v2/silences",
        json={
            "matchers": [{"name": "alertname", "value": "type-surge", "isRegex": False, "isEqual": True}],
            "startsAt": "2000-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "ops",
            "comment": "shape",
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )
    assert made.status_code == 200, made.text
    check(spec, "/silences", "post", made.json())
    sid = made.json()["silenceID"]
    assert (
        requests.delete(
            f"{running.url}/api/v2/silence/{sid}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        ).status_code
        == 200
    )
    requests.post(
        f"{running.url}/api/v2/silences",
        json={
            "matchers": [{"name": "type", "value": "服.*", "isRegex": True, "isEqual": False}],
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "ops",
            "comment": "still on",
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    ).raise_for_status()

    status = v2(running, "/status")
    check(spec, "/status", "get", status)
    assert status["cluster"] == {"status": "disabled", "peers": []}
    check(spec, "/receivers", "get", v2(running, "/receivers"))
    alerts = v2(running, "/alerts")
    assert len(alerts) == 2
    check(spec, "/alerts", "get", alerts)
    groups = v2(running, "/alerts/groups")
    assert len(groups) == 2
    check(spec, "/alerts/groups", "get", groups)
    listed = v2(running, "/silences")
    assert [s["status"]["state"] for s in listed] == ["active", "expired"]
    check(spec, "/silences", "get", listed)
    check(spec, "/silence/{silenceID}", "get", v2(running, f"/silence/{sid}"))
    bad = requests.get(f"{running.url}/api/v2/alerts", params={"filter": "type=~("}, timeout=5)
    assert bad.status_code == 400
    check(spec, "/alerts", "get", bad.json(), "400")


def test_status_config_is_the_routing_in_alertmanagers_form(running: Running) -> None:
    status = v2(running, "/status")
    original = status["config"]["original"]
    assert TOKEN not in original and "127.0.0.1:9/hook" not in original  # neither the token nor a receiver's URL
    assert "# rules: 2 (2 threshold): type-surge, channel-surge" in original
    doc = yaml.safe_load(original)
    assert doc["receivers"] == [{"name": "cs-team"}, {"name": "ops"}, {"name": "sentinel-unrouted"}]
    assert [r.get("matchers") for r in doc["route"]["routes"]] == [['alertname="channel-surge"'], None]
    assert doc["inhibit_rules"] == [
        {
            "source_matchers": ['alertname="type-surge"'],
            "target_matchers": ['alertname="channel-surge"'],
            "equal": ["type"],
        }
    ]
    assert status["versionInfo"]["version"] == __version__
    uptime = datetime.fromisoformat(status["uptime"].replace("Z", "+00:00"))
    assert timedelta(0) <= datetime.now(UTC) - uptime < timedelta(minutes=5)


@needs_amtool
def test_amtool_reads_the_routing_tree(running: Running) -> None:
    tree = amtool(running, "config", "routes")
    assert tree.returncode == 0, tree.stderr
    assert '{alertname="channel-surge"}  receiver: ops' in tree.stdout and "receiver: cs-team" in tree.stdout
    for labels, receiver in [(["alertname=channel-surge", f"type={T}"], "ops"), (["alertname=type-surge"], "cs-team")]:
        tested = amtool(running, "config", "routes", "test", *labels)
        assert tested.returncode == 0 and tested.stdout.split() == [receiver], tested.stdout + tested.stderr


@needs_amtool
def test_every_kind_of_route_is_a_valid_alertmanager_configuration(tmp_path: Path) -> None:
    """`amtool check-config` (Alertmanager's own loader) accepts what `config.original` says for several
    receivers on a route, lists, regexes, tiers, mute windows, escalation, continue, and no routes at all."""
    from sentinel.api_v2.codec import original
    from tests.alerting.builders import RECEIVERS, config

    cases = {
        "none": RECEIVERS,
        "routes": RECEIVERS
        + """
[[rules]]
name = "a.b"
kind = "threshold"

[[routes]]
match = { tier = ["moderate", "severe"], type = "~物流.*", rule = ["a.b", "~c-.*"] }
receivers = ["cs-team", "crisis"]
continue = true
mute = ["22:00-08:00"]
escalate_to = ["crisis"]
escalate_after = "30m"
group_by = ["rule", "tier", "type"]
group_interval = "1h30m"

[[routes]]
match = { kind = "streak" }
receivers = ["cs-team"]
repeat_interval = "1d"

[[inhibit]]
source = { tier = "severe" }
target = { tier = ["light", "moderate"] }
equal = ["type"]
""",
    }
    for name, body in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        text = original(config(folder, body))
        (folder / "am.yml").write_text(text, encoding="utf-8")
        assert AMTOOL is not None
        checked = subprocess.run(
            [AMTOOL, "check-config", str(folder / "am.yml")], capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0 and "SUCCESS" in checked.stdout, text + checked.stdout + checked.stderr
    doc = yaml.safe_load(text)
    first, second = doc["route"]["routes"]
    assert first["matchers"] == ['severity=~"(?:moderate|severe)"', 'type=~"物流.*"', 'alertname=~"(?:a\\\\.b|c-.*)"']
    assert first["routes"] == [{"receiver": "cs-team", "continue": True}, {"receiver": "crisis", "continue": False}]
    assert first["continue"] is True and first["group_by"] == ["alertname", "severity", "type"]
    assert second == {
        "matchers": ['kind="streak"'],
        "receiver": "cs-team",
        "group_by": ["alertname"],
        "group_wait": "1s",
        "group_interval": "1m",
        "repeat_interval": "1d",
        "continue": False,
    }
    assert "# route 1: muted 22:00-08:00 (Asia/Shanghai)" in text
    assert "# route 1: escalates to crisis after 30m unacknowledged" in text


def test_receivers_and_groups_follow_the_routes(running: Running) -> None:
    assert v2(running, "/receivers") == [{"name": "cs-team"}, {"name": "ops"}]
    groups = {g["receiver"]["name"]: g for g in v2(running, "/alerts/groups")}
    assert groups["cs-team"]["labels"] == {"alertname": "type-surge"}  # group_by = ["rule"], shown as alertname
    assert groups["ops"]["labels"] == {"alertname": "channel-surge", "type": T}
    assert [a["labels"]["alertname"] for a in groups["ops"]["alerts"]] == ["channel-surge"]
    assert [g["receiver"]["name"] for g in v2(running, "/alerts/groups", receiver="cs-.*")] == ["cs-team"]
    only_active = v2(running, "/alerts/groups", inhibited="false")
    assert [g["receiver"]["name"] for g in only_active] == ["cs-team"]


def test_alert_filters_by_state_and_matchers(running: Running) -> None:
    assert set(by_name(v2(running, "/alerts"))) == {"type-surge", "channel-surge"}
    # only a day-mode surge projects its day (these rules are rolling; test_api.py has a day-mode one)
    assert all("projected" not in a["annotations"] and "summary" in a["annotations"] for a in v2(running, "/alerts"))
    assert set(by_name(v2(running, "/alerts", active="false"))) == {"channel-surge"}
    assert set(by_name(v2(running, "/alerts", inhibited="false"))) == {"type-surge"}
    assert set(by_name(v2(running, "/alerts", filter=[f'type="{T}"', 'channel=~"电话.*"']))) == {"channel-surge"}
    assert set(by_name(v2(running, "/alerts", filter='channel=""'))) == {"type-surge"}  # "" = without channel
    assert set(by_name(v2(running, "/alerts", filter='channel!=""'))) == {"channel-surge"}
    assert v2(running, "/alerts", receiver="nobody") == []
    assert v2(running, "/alerts", receiver_matchers="team=a") == []  # Sentinel's receivers carry no labels
    assert len(v2(running, "/alerts", receiver_matchers='team=""')) == 2
    for params, error in [
        ({"active": "maybe"}, "active: 'maybe' is not a boolean"),
        ({"filter": "type"}, "filter: bad matcher 'type'"),
        ({"filter": 'type="open'}, "quoted value is not closed"),
        ({"receiver": "("}, "failed to parse receiver param"),
    ]:
        bad = requests.get(f"{running.url}/api/v2/alerts", params=params, timeout=5)
        assert bad.status_code == 400 and isinstance(bad.json(), str) and error in bad.json(), bad.text


def test_alerts_are_unprocessed_until_the_dispatcher_takes_their_events(running: Running) -> None:
    with running.daemon.store.transaction() as conn:
        outbox.set_cursor(conn, CURSOR, 0)
    assert {a["status"]["state"] for a in v2(running, "/alerts")} == {"unprocessed"}
    assert v2(running, "/alerts", unprocessed="false") == []
    running.daemon.pipeline.dispatch.dispatch()
    assert {a["status"]["state"] for a in v2(running, "/alerts")} == {"active", "suppressed"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=物流", ("type", "物流", False, True)),
        ('type = "a \\"quoted\\" \\\\ value"', ("type", 'a "quoted" \\ value', False, True)),
        ("channel!=电话", ("channel", "电话", False, False)),
        ('alertname=~"type-.*"', ("alertname", "type-.*", True, True)),
        ("alertname!~x|y", ("alertname", "x|y", True, False)),
        ('type=""', ("type", "", False, True)),
        ("type==x", ("type", "=x", False, True)),
    ],
)
def test_matcher_text(text: str, expected: tuple[str, str, bool, bool]) -> None:
    m = parse_matcher(text)
    assert (m.name, m.value, m.is_regex, m.is_equal) == expected


@pytest.mark.parametrize("text", ["type", "=x", 'type="x', "type=~(", 'type="\\q"'])
def test_bad_matcher_text(text: str) -> None:
    with pytest.raises(ValueError, match="bad matcher"):
        parse_matcher(text)


def test_filter_semantics_of_an_empty_value() -> None:
    with_channel, without = {"alertname": "a", "channel": "电话"}, {"alertname": "a"}
    assert filter_matches([parse_matcher('channel=""')], without)
    assert not filter_matches([parse_matcher('channel=""')], with_channel)
    assert filter_matches([parse_matcher('channel!=""')], with_channel)
    assert not filter_matches([parse_matcher('channel!=""')], without)
    assert filter_matches([parse_matcher("channel=~电.*"), parse_matcher("alertname=a")], with_channel)
    assert not filter_matches([parse_matcher("channel!~电.*")], with_channel)


# --- silences over plain HTTP ------------------------------------------------------------------------


def post_silence(r: Running, body: dict[str, Any], token: str | None = TOKEN) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.post(f"{r.url}/api/v2/silences", json=body, headers=headers, timeout=5)


SILENCE = {
    "matchers": [{"name": "severity", "value": "light|moderate|severe", "isRegex": True}],
    "endsAt": "2099-01-01T00:00:00Z",
    "createdBy": "ops",
    "comment": "maintenance",
}


def test_silence_writes_refused_without_the_token(running: Running) -> None:
    for token in (None, "wrong"):
        assert post_silence(running, SILENCE, token).status_code == 401
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        assert requests.delete(f"{running.url}/api/v2/silence/x", headers=headers, timeout=5).status_code == 401
        assert requests.post(f"{running.url}/-/reload", headers=headers, timeout=5).status_code == 401
    assert v2(running, "/silences") == []


def test_silence_by_severity_holds_like_sentinels_tier(running: Running) -> None:
    made = post_silence(running, SILENCE)
    assert made.status_code == 200
    sid = made.json()["silenceID"]
    assert all(a["status"]["silencedBy"] == [sid] for a in v2(running, "/alerts"))
    v1 = requests.get(f"{running.url}/api/v1/silences", timeout=5).json()  # /api/v1 keeps its shape
    assert v1[0]["id"] == sid and v1[0]["matchers"][0] == {
        "name": "severity",
        "value": "light|moderate|severe",
        "isRegex": True,
        "isEqual": True,
    }
    assert all(a["silenced"] for a in requests.get(f"{running.url}/api/v1/alerts", timeout=5).json())


def test_silence_errors_answer_with_the_reason(running: Running) -> None:
    for body, status, error in [
        ({**SILENCE, "matchers": []}, 400, "matchers: at least one matcher"),
        ({**SILENCE, "endsAt": "2001-01-01T00:00:00Z"}, 400, "endsAt"),
        ({**SILENCE, "comment": ""}, 400, "comment is required"),
        ({**SILENCE, "id": "no-such-id"}, 404, "silence 'no-such-id' not found"),
    ]:
        resp = post_silence(running, body)
        assert resp.status_code == status and error in resp.json(), resp.text
    missing = requests.get(f"{running.url}/api/v2/silence/no-such-id", timeout=5)
    assert missing.status_code == 404 and "not found" in missing.json()
    gone = requests.delete(
        f"{running.url}/api/v2/silence/no-such-id", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert gone.status_code == 404


def test_expired_silences_are_listed_for_five_days(running: Running) -> None:
    sid = post_silence(running, SILENCE).json()["silenceID"]
    old = post_silence(running, SILENCE).json()["silenceID"]
    requests.delete(
        f"{running.url}/api/v2/silence/{old}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ).raise_for_status()
    assert [s["id"] for s in v2(running, "/silences")] == [sid, old]
    with running.daemon.store.transaction() as conn:  # ended six days ago
        conn.execute(
            silences.update().where(silences.c.id == old).values(ends_us=silences.c.ends_us - 6 * 86_400 * 1_000_000)
        )
    assert [s["id"] for s in v2(running, "/silences")] == [sid]
    assert v2(running, f"/silence/{old}")["status"]["state"] == "expired"  # still there by its id
    filtered = v2(running, "/silences", filter='severity=~"light|moderate|severe"')
    assert [s["id"] for s in filtered] == [sid]
    assert v2(running, "/silences", filter="severity=light") == []
    assert [s["id"] for s in v2(running, "/silences", expired="false")] == [sid]
    assert v2(running, "/silences", active="false", expired="false") == []


# --- health, readiness, reload -----------------------------------------------------------------------


def test_healthy_and_ready(running: Running) -> None:
    assert requests.get(f"{running.url}/-/healthy", timeout=5).status_code == 200
    ready = requests.get(f"{running.url}/-/ready", timeout=5)  # the fixture never started the scheduler
    assert ready.status_code == 503 and "scheduler not running" in ready.text
    assert requests.get(f"{running.url}/readyz", timeout=5).status_code == 503  # the same judgement


def test_reload_with_the_token_reads_the_configuration_again(running: Running) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    text = running.config.read_text(encoding="utf-8")
    running.config.write_text(
        text + '\n[[receivers]]\nname = "night-desk"\nkind = "webhook"\nurl = "http://127.0.0.1:9/night"\n',
        encoding="utf-8",
    )
    done = requests.post(f"{running.url}/-/reload", headers=auth, timeout=10)
    assert done.status_code == 200, done.text
    assert {"name": "night-desk"} in v2(running, "/receivers")
    running.config.write_text(text + '\n[[rules]]\nname = "bad"\nkind = "threshold"\nfactor = -1\n', encoding="utf-8")
    refused = requests.post(f"{running.url}/-/reload", headers=auth, timeout=10)
    assert refused.status_code == 500 and "reload refused" in refused.json() and "rules[2].factor" in refused.json()
    assert {"name": "night-desk"} in v2(running, "/receivers")  # the previous configuration keeps running
    assert running.daemon.metrics.config_reload_ok._value.get() == 0


def test_a_mute_window_shows_as_muted_by_the_route(running: Running) -> None:
    text = running.config.read_text(encoding="utf-8")
    windows = 'mute = ["00:00-12:00", "12:00-24:00"]\n'
    running.config.write_text(
        text.replace('receivers = ["cs-team"]\n', f'receivers = ["cs-team"]\n{windows}'), encoding="utf-8"
    )
    assert (
        requests.post(f"{running.url}/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code
        == 200
    )
    surge = by_name(v2(running, "/alerts"))["type-surge"]
    assert surge["status"]["state"] == "suppressed"
    # only the window holding it now (which half of the day, in Shanghai, depends on when the test runs)
    assert surge["status"]["mutedBy"] in (["route 2 mute 00:00-12:00"], ["route 2 mute 12:00-00:00"])
    assert surge["status"]["silencedBy"] == [] and surge["status"]["inhibitedBy"] == []


@needs_amtool
def test_amtool_configured_as_the_readme_says(running: Running) -> None:
    """amtool's own config file names the URL and an http_config whose bearer token is read from a file."""
    token_file = running.tmp / "api-token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    http_config = running.tmp / "amtool-http.yml"
    http_config.write_text(f"authorization:\n  type: Bearer\n  credentials_file: {token_file}\n", encoding="utf-8")
    home = running.tmp / "home"
    (home / ".config" / "prometheus").mkdir(parents=True)
    (home / ".config" / "prometheus" / "amtool.yml").write_text(
        f"alertmanager.url: {running.url}\nhttp.config.file: {http_config}\nversion-check: false\n", encoding="utf-8"
    )
    assert AMTOOL is not None

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AMTOOL, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )

    made = run("silence", "add", "alertname=type-surge", "--comment=from the config file", "--duration=30m")
    assert made.returncode == 0 and made.stderr == "", made.stderr  # no version warning either
    assert made.stdout.strip() in run("silence", "query", "-q").stdout


@needs_amtool
@pytest.mark.slow
def test_a_real_daemon_with_amtool_and_reload(tmp_path: Path) -> None:
    """`sentinel run` as a real process: its dispatcher runs, so alerts turn from unprocessed to active by
    themselves; amtool queries and silences them; `POST /-/reload` reloads as SIGHUP does."""
    from tests.test_process import Daemon as Process
    from tests.test_process import wait_until

    now = datetime.now(UTC)
    crm = Crm(tmp_path / "crm.db")
    crm.history(now=now)
    crm.add(now - timedelta(hours=1), n=90, spacing=timedelta(seconds=30))
    cfg = _config(tmp_path, crm)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    d = Process(["run", "--config", str(cfg)], {**env, "T_API_TOKEN": TOKEN})
    try:
        r = Endpoint(d.wait_for("listening")["url"], tmp_path)
        wait_until(lambda: requests.get(f"{r.url}/-/ready", timeout=5).status_code == 200)
        wait_until(lambda: "type-surge" in amtool(r, "alert", "query").stdout)
        made = amtool(r, "silence", "add", "alertname=type-surge", "--comment=real process", "--duration=1h")
        assert made.returncode == 0, made.stderr
        assert set(by_name(amtool_json(r, "alert", "query", "--silenced"))) == {"type-surge"}
        assert amtool_json(r, "alert", "query") == []
        assert requests.post(f"{r.url}/-/reload", timeout=5).status_code == 401
        assert (
            requests.post(f"{r.url}/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code
            == 200
        )
        d.wait_for("configuration reloaded")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
    finally:
        d.stop()


@needs_amtool
def test_without_a_configured_token_writes_are_disabled(running: Running) -> None:
    text = running.config.read_text(encoding="utf-8")
    running.config.write_text(text.replace('[api]\ntoken = "${T_API_TOKEN}"\n', ""), encoding="utf-8")
    assert (
        requests.post(f"{running.url}/-/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).status_code
        == 200
    )
    refused = amtool(running, "silence", "add", "alertname=type-surge", "--comment=c", "--duration=1h")
    assert refused.returncode != 0 and "403" in refused.stderr
    resp = post_silence(running, SILENCE)
    assert resp.status_code == 403 and "set [api] token" in resp.json()["error"]
    assert amtool_json(running, "alert", "query") != []  # reads go on


@pytest.mark.parametrize("path", ["/api/v2/silences", "/-/reload"])
def test_an_unauthenticated_v2_write_is_refused_before_its_body(running: Running, path: str) -> None:
    """The same guard as `/api/v1`: judged from the head, so a client that asks first is told no at once."""
    host, port = urlsplit(running.url).hostname, urlsplit(running.url).port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nExpect: 100-continue\r\n"
            "Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n".encode()
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401 "), answer
