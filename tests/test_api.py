"""The HTTP API and the CLI commands that use it: authentication, alerts, silences, acknowledgement
by API, CLI and signed link (valid, expired, forged, reused for another instance; GET never acks; how an
ack arrived is the server's record, never the client's)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from sentinel.alerting.ack import make_token
from sentinel.cli import main
from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.http import Server
from sentinel.service import build
from tests.test_daemon import NOW, Crm, history

TOKEN = "api-TOKEN-0c1d2e3f"
ACK_SECRET = "ack-SECRET-9a8b7c6d"


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Daemon, str, Path]]:
    monkeypatch.setenv("T_API_TOKEN", TOKEN)
    monkeypatch.setenv("T_ACK_SECRET", ACK_SECRET)
    crm = Crm(tmp_path / "crm.db")
    history(crm)
    crm.add(NOW - timedelta(hours=1), n=90, spacing=timedelta(seconds=20))  # a surge under way
    body = f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/state.db"
listen = "127.0.0.1:PORT"
external_url = "https://sentinel.example"
[api]
token = "${{T_API_TOKEN}}"
ack_secret = "${{T_ACK_SECRET}}"
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
url = "http://127.0.0.1:9/hook"
"""
    cfg_path = tmp_path / "sentinel.toml"
    cfg_path.write_text(body.replace("PORT", "0"), encoding="utf-8")
    daemon = build(load_config(cfg_path), config_path=str(cfg_path), clock=ManualClock(NOW))
    daemon.open()
    while daemon.cycle():
        pass
    server = Server(daemon.app, "127.0.0.1:0")
    server.start()
    cli_cfg = tmp_path / "cli.toml"
    cli_cfg.write_text(body.replace("PORT", str(server.port)), encoding="utf-8")
    try:
        yield daemon, server.url, cli_cfg
    finally:
        server.stop()
        daemon.stop()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_instance(url: str) -> str:
    alerts = requests.get(f"{url}/api/v1/alerts", timeout=5).json()
    return str(next(a for a in alerts if a["state"] == "open")["instance"])


def test_alerts_list_states(running: tuple[Daemon, str, Path]) -> None:
    _, url, _ = running
    alerts = requests.get(f"{url}/api/v1/alerts", timeout=5).json()
    a = alerts[0]
    assert a["rule"] == "type-surge" and a["labels"] == {"type": "物流配送延误"} and a["state"] == "open"
    for key in (
        "instance",
        "fingerprint",
        "tier",
        "startsAt",
        "endsAt",
        "value",
        "baseline",
        "silenced",
        "inhibited",
        "acknowledged",
        "muted",
    ):
        assert key in a
    assert a["silenced"] is False and a["acknowledged"] is False
    # the surge under way since 17:00 is projected to the day's end at its pace (day mode), beyond what it
    # counted when it last changed; a threshold alert carries no quiet-series expectation
    assert a["projected"] > a["valueAtLastChange"] and a["expected"] is None
    (v2,) = requests.get(f"{url}/api/v2/alerts", timeout=5).json()  # Alertmanager's shape carries it too
    assert float(v2["annotations"]["projected"]) == a["projected"]


@pytest.mark.parametrize("headers", [{}, auth("wrong"), {"Authorization": f"Basic {TOKEN}"}])
def test_writes_need_the_bearer_token(running: tuple[Daemon, str, Path], headers: dict[str, str]) -> None:
    _, url, _ = running
    inst = open_instance(url)
    r = requests.post(f"{url}/api/v1/ack", json={"instance": inst, "by": "x"}, headers=headers, timeout=5)
    assert r.status_code == 401
    r = requests.post(f"{url}/api/v1/silences", json={}, headers=headers, timeout=5)
    assert r.status_code == 401
    assert requests.get(f"{url}/api/v1/alerts", timeout=5).json()[0]["acknowledged"] is False


def test_ack_by_api(running: tuple[Daemon, str, Path]) -> None:
    _, url, _ = running
    inst = open_instance(url)
    r = requests.post(f"{url}/api/v1/ack", json={"instance": inst, "by": "zhangsan"}, headers=auth(), timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    again = requests.post(f"{url}/api/v1/ack", json={"instance": inst, "by": "x"}, headers=auth(), timeout=5)
    assert again.json()["status"] == "already"
    listed = {a["instance"]: a for a in requests.get(f"{url}/api/v1/alerts", timeout=5).json()}
    assert listed[inst]["acknowledged"] is True and listed[inst]["acknowledgedBy"] == "zhangsan"
    missing = requests.post(f"{url}/api/v1/ack", json={"instance": "nope"}, headers=auth(), timeout=5)
    assert missing.status_code == 404


def test_ack_by_cli(running: tuple[Daemon, str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, url, cli = running
    inst = open_instance(url)
    assert main(["ack", inst, "--config", str(cli), "--by", "lisi"]) == 0
    assert "acknowledged" in capsys.readouterr().out
    listed = {a["instance"]: a for a in requests.get(f"{url}/api/v1/alerts", timeout=5).json()}
    assert listed[inst]["acknowledgedBy"] == "lisi"


def stored_acks(daemon: Daemon) -> dict[str, tuple[str, str]]:
    """instance -> (by, via), as the acks table holds them."""
    from sqlalchemy import select

    from sentinel.store.schema import acks

    with daemon.store.reading() as conn:
        return {i: (b, v) for i, b, v in conn.execute(select(acks.c.instance, acks.c.by, acks.c.via))}


def test_ack_via_is_decided_by_the_server(
    running: tuple[Daemon, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, url, cli = running
    inst = open_instance(url)
    claimed = requests.post(
        f"{url}/api/v1/ack", json={"instance": inst, "by": "x", "via": "link"}, headers=auth(), timeout=5
    )
    assert claimed.status_code == 400 and "via" in claimed.json()["error"] and "server" in claimed.json()["error"]
    long = requests.post(f"{url}/api/v1/ack", json={"instance": inst, "via": "v" * 300}, headers=auth(), timeout=5)
    assert long.status_code == 400
    assert stored_acks(daemon) == {}  # neither was stored
    assert main(["ack", inst, "--config", str(cli), "--by", "lisi"]) == 0  # the CLI is an API client like any
    assert "acknowledged" in capsys.readouterr().out
    assert stored_acks(daemon) == {inst: ("lisi", "api")}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"by": "n" * 201}, "by: at most 200 characters"),
        ({"by": 7}, "by: must be a string"),
        ({"by": "a\x00b"}, "by: contains control characters"),
        ({"by": "x", "note": "hi"}, "unknown field 'note'"),
    ],
)
def test_ack_body_is_validated(running: tuple[Daemon, str, Path], body: dict[str, Any], error: str) -> None:
    daemon, url, _ = running
    inst = open_instance(url)
    r = requests.post(f"{url}/api/v1/ack", json={"instance": inst, **body}, headers=auth(), timeout=5)
    assert r.status_code == 400 and error in r.json()["error"]
    assert stored_acks(daemon) == {}


def test_ack_link_rejects_an_overlong_name(running: tuple[Daemon, str, Path]) -> None:
    daemon, url, _ = running
    inst = open_instance(url)
    link = _token_url(url, inst, int(NOW.timestamp()) + 3600)
    r = requests.post(link, data={"by": "n" * 300}, timeout=5)
    assert r.status_code == 400 and "at most 200 characters" in r.text
    assert stored_acks(daemon) == {}
    assert requests.post(link, data={"by": "  "}, timeout=5).status_code == 200  # blank: the default name
    assert stored_acks(daemon) == {inst: ("link", "link")}


def _token_url(url: str, instance: str, expiry: int, secret: str = ACK_SECRET) -> str:
    return f"{url}/ack/{make_token(secret, instance, expiry)}"


def test_ack_link_get_shows_a_page_and_only_post_acknowledges(running: tuple[Daemon, str, Path]) -> None:
    _daemon, url, _ = running
    inst = open_instance(url)
    expiry = int(NOW.timestamp()) + 3600
    link = _token_url(url, inst, expiry)
    page = requests.get(link, timeout=5)
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert requests.get(f"{url}/api/v1/alerts", timeout=5).json()[0]["acknowledged"] is False  # GET did not ack
    done = requests.post(link, data={"by": "王五"}, timeout=5)
    assert done.status_code == 200 and "Acknowledged" in done.text
    listed = {a["instance"]: a for a in requests.get(f"{url}/api/v1/alerts", timeout=5).json()}
    assert listed[inst]["acknowledged"] is True and listed[inst]["acknowledgedBy"] == "王五"


def test_ack_link_expired_forged_or_for_another_instance(running: tuple[Daemon, str, Path]) -> None:
    _daemon, url, _ = running
    inst = open_instance(url)
    now = int(NOW.timestamp())
    expired = requests.post(_token_url(url, inst, now - 1), timeout=5)
    assert expired.status_code == 403 and "expired" in expired.text
    forged = requests.post(_token_url(url, inst, now + 3600, secret="not-the-secret"), timeout=5)
    assert forged.status_code == 403 and "signature" in forged.text
    # a valid token for instance A, with its instance part swapped for B, no longer verifies
    import base64

    token = make_token(ACK_SECRET, inst, now + 3600)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    other = raw.replace(inst.encode(), b"0" * len(inst), 1)
    swapped = base64.urlsafe_b64encode(other).rstrip(b"=").decode()
    assert requests.post(f"{url}/ack/{swapped}", timeout=5).status_code == 403
    assert requests.post(f"{url}/ack/garbage!!", timeout=5).status_code == 403
    assert requests.get(f"{url}/api/v1/alerts", timeout=5).json()[0]["acknowledged"] is False


def test_messages_carry_a_working_ack_link(running: tuple[Daemon, str, Path]) -> None:
    daemon, url, _ = running
    daemon.pipeline.dispatch.dispatch()
    from sentinel.notify import outbox

    with daemon.store.reading() as conn:
        msg = next(iter(outbox.upcoming(conn, "cs-team", 1)), None)
    assert msg is not None
    link = msg.payload["views"][0]["ack_url"]
    assert link.startswith("https://sentinel.example/ack/")
    local = url + link.removeprefix("https://sentinel.example")
    assert requests.post(local, data={"by": "from-the-message"}, timeout=5).status_code == 200


def test_silences_by_cli_and_api(running: tuple[Daemon, str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, url, cli = running
    assert (
        main(
            [
                "silence",
                "add",
                "type=物流配送延误",
                "channel=~电话.*",
                "--config",
                str(cli),
                "--duration",
                "2h",
                "--comment",
                "known carrier outage",
                "--by",
                "ops",
            ]
        )
        == 0
    )
    sid = capsys.readouterr().out.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", sid)
    listed: list[dict[str, Any]] = requests.get(f"{url}/api/v1/silences", timeout=5).json()
    assert listed[0]["id"] == sid and listed[0]["status"]["state"] == "active"
    assert listed[0]["matchers"][1] == {"name": "channel", "value": "电话.*", "isRegex": True, "isEqual": True}
    assert main(["silence", "list", "--config", str(cli)]) == 0
    assert sid in capsys.readouterr().out
    assert main(["silence", "expire", sid, "--config", str(cli)]) == 0
    assert requests.get(f"{url}/api/v1/silences", timeout=5).json()[0]["status"]["state"] == "expired"
    assert main(["silence", "expire", sid, "--config", str(cli)]) == 1  # already ended


def test_a_silence_on_an_unknown_label_needs_force(
    running: tuple[Daemon, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, url, cli = running
    add = ["silence", "add", "tpye=物流配送延误", "--config", str(cli), "--comment", "carrier outage"]
    assert main(add) == 2
    assert "did you mean 'type'?" in capsys.readouterr().err
    assert requests.get(f"{url}/api/v1/silences", timeout=5).json() == []
    assert main([*add, "--force"]) == 0
    sid = capsys.readouterr().out.strip()
    assert [s["id"] for s in requests.get(f"{url}/api/v1/silences", timeout=5).json()] == [sid]
    assert (
        main(
            [
                "silence",
                "add",
                "alertname=type-surge",
                "severity=severe",
                "--config",
                str(cli),
                "--comment",
                "Alertmanager's names are labels too",
            ]
        )
        == 0
    )


def test_silence_validation_answers_400_with_the_field(running: tuple[Daemon, str, Path]) -> None:
    _, url, _ = running
    bad = requests.post(
        f"{url}/api/v1/silences",
        json={
            "matchers": [{"name": "type", "value": "(", "isRegex": True}],
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "a",
            "comment": "b",
        },
        headers=auth(),
        timeout=5,
    )
    assert bad.status_code == 400 and "matchers[0].value" in bad.json()["error"]
    no_comment = requests.post(
        f"{url}/api/v1/silences",
        json={"matchers": [{"name": "type", "value": "x"}], "endsAt": "2099-01-01T00:00:00Z", "createdBy": "a"},
        headers=auth(),
        timeout=5,
    )
    assert no_comment.status_code == 400 and "comment" in no_comment.json()["error"]


def test_status_command(running: tuple[Daemon, str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, _, cli = running
    assert main(["status", "--config", str(cli)]) == 0
    out = capsys.readouterr().out
    assert "cs-team" in out and "sqlite" in out and TOKEN not in out


def test_status_command_speaks_the_locale_in_the_timezone(
    running: tuple[Daemon, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """zh_CN by default; `locale = "en"` and another `timezone` in the CLI's file change the words and
    the clock the times are read on (the API's times carry their offset)."""
    _, url, cli = running
    newest = requests.get(f"{url}/api/v1/status", timeout=5).json()["source"]["newest_record"]
    assert main(["status", "--config", str(cli)]) == 0
    zh = capsys.readouterr().out
    shanghai = datetime.fromisoformat(newest).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M:%S")
    assert "数据源 sqlite" in zh and f"最新记录 {shanghai}" in zh and "接收方 (时间为 Asia/Shanghai)" in zh
    assert "未恢复告警：" in zh and "newest record" not in zh and "Receivers" not in zh
    en_cli = cli.with_name("cli-en.toml")
    en_cli.write_text(
        'locale = "en"\n'
        + cli.read_text(encoding="utf-8").replace('timezone = "Asia/Shanghai"', 'timezone = "America/New_York"', 1),
        encoding="utf-8",
    )
    assert main(["status", "--config", str(en_cli)]) == 0
    en = capsys.readouterr().out
    new_york = datetime.fromisoformat(newest).astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%d %H:%M:%S")
    assert new_york != shanghai and f"newest record {new_york}" in en
    assert "Receivers (times in America/New_York)" in en and "open alerts: " in en and "数据源" not in en


def test_cli_reports_an_unreachable_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('listen = "127.0.0.1:9"\n', encoding="utf-8")
    assert main(["status", "--config", str(cfg)]) == 1
    assert "cannot reach the daemon" in capsys.readouterr().err


def test_commands_that_never_send_do_not_need_receiver_secrets(
    running: tuple[Daemon, str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The person on call has the API token, not the chat robots' tokens: `status`, `ack` and `silence` work
    with a receiver's `${VAR}` unset and its `secret-file:` unreadable; `check` (and so `run`) still refuse."""
    _, url, cli = running
    text = cli.read_text(encoding="utf-8").replace(
        'url = "http://127.0.0.1:9/hook"', 'url = "${T_UNSET_ROBOT_URL}"\nhmac_secret = "secret-file:/no/such"'
    )
    oncall = cli.with_name("oncall.toml")
    oncall.write_text(text, encoding="utf-8")
    assert main(["status", "--config", str(oncall), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["receivers"][0]["name"] == "cs-team"
    assert main(["silence", "add", "type=物流配送延误", "--config", str(oncall), "--comment", "carrier"]) == 0
    assert main(["silence", "list", "--config", str(oncall)]) == 0
    assert main(["ack", open_instance(url), "--config", str(oncall), "--by", "ops"]) == 0
    capsys.readouterr()
    assert load_config(oncall, receiver_secrets=False).unread_receiver_secrets == (
        "receivers[0].url",
        "receivers[0].hmac_secret",
    )
    with pytest.raises(SystemExit) as refused:
        main(["check", "--config", str(oncall)])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "receivers[0].url: environment variable T_UNSET_ROBOT_URL is not set" in err
