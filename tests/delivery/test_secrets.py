"""Secrets never reach the store or the logs: receivers configured through `${ENV}` with URL keys and
tokens and signing secrets, a run that delivers, retries and fails (a vendor even echoing the URL
back), then the raw bytes of the SQLite file and its WAL, every log record captured at DEBUG
(urllib3's included) and the metrics contain none of them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sentinel.config import load_config
from sentinel.logs import JsonFormatter
from tests.delivery.builders import Alert, Pipeline, open_store
from tests.notify.vendors import (
    Answer,
    FakeDingTalk,
    FakeDiscord,
    FakeFeishu,
    FakeSlack,
    FakeWebhook,
    FakeWeCom,
    closed_port_url,
)

SECRETS = {
    "wecom_key": "wecomKEY-5e3f1a9b7c2d",
    "wecom_bad_key": "wecomKEY-revoked-0a1b2c",
    "ding_token": "dingTOKEN-8c7b6a5f4e3d",
    "ding_secret": "SECdingSECRET9f8e7d6c5b4a3928",
    "feishu_token": "feishuHOOK-1b2c3d4e5f60",
    "feishu_secret": "SECfeishuSECRET77aa88bb99",
    "slack_token": "slackTOKEN0123456789abcdef",
    "discord_token": "discordTOKEN-zz99yy88xx77",
    "hook_token": "hookTOKEN-55aa66bb77cc",
    "hook_hmac": "hmacSECRET-aabbccddeeff0011",
    "down_key": "downKEY-0f9e8d7c6b5a",
}


def test_secrets_are_absent_from_the_store_and_the_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    s = SECRETS
    with (
        FakeWeCom(key=s["wecom_key"]) as wecom,
        FakeDingTalk(token=s["ding_token"], secret=s["ding_secret"]) as ding,
        FakeFeishu(token=s["feishu_token"], secret=s["feishu_secret"]) as feishu,
        FakeSlack(path=f"/services/T0AAA/B0BBB/{s['slack_token']}") as slack,
        FakeDiscord(token=s["discord_token"]) as discord,
        FakeWebhook(hmac_secret=s["hook_hmac"], path=f"/alerts?token={s['hook_token']}") as hook,
    ):
        env = {
            "WECOM_URL": wecom.url,
            "WECOM_BAD_URL": wecom.url.replace(s["wecom_key"], s["wecom_bad_key"]),
            "DING_URL": ding.url,
            "DING_SECRET": s["ding_secret"],
            "FEISHU_URL": feishu.url,
            "FEISHU_SECRET": s["feishu_secret"],
            "SLACK_URL": slack.url,
            "DISCORD_URL": discord.url,
            "HOOK_URL": hook.url,
            "HOOK_HMAC": s["hook_hmac"],
            "DOWN_URL": closed_port_url(f"/cgi-bin/webhook/send?key={s['down_key']}"),
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        cfg_path = tmp_path / "sentinel.toml"
        cfg_path.write_text(
            f"""
state_url = "sqlite:///{tmp_path}/state.db"
locale = "en"
fallback_receiver = "hook"

[[receivers]]
name = "wecom"
kind = "wecom"
url = "${{WECOM_URL}}"

[[receivers]]
name = "wecom-revoked"
kind = "wecom"
url = "${{WECOM_BAD_URL}}"

[[receivers]]
name = "wecom-down"
kind = "wecom"
url = "${{DOWN_URL}}"
timeout = "1s"

[[receivers]]
name = "ding"
kind = "dingtalk"
url = "${{DING_URL}}"
secret = "${{DING_SECRET}}"

[[receivers]]
name = "feishu"
kind = "feishu"
url = "${{FEISHU_URL}}"
secret = "${{FEISHU_SECRET}}"

[[receivers]]
name = "slack"
kind = "slack"
url = "${{SLACK_URL}}"

[[receivers]]
name = "discord"
kind = "discord"
url = "${{DISCORD_URL}}"

[[receivers]]
name = "hook"
kind = "webhook"
url = "${{HOOK_URL}}"
hmac_secret = "${{HOOK_HMAC}}"

[[routes]]
receivers = ["wecom", "wecom-revoked", "wecom-down", "ding", "feishu", "slack", "discord", "hook"]
group_by = ["rule", "type"]
group_wait = "0s"
group_interval = "0s"
""",
            encoding="utf-8",
        )
        cfg = load_config(cfg_path)
        # a vendor that echoes the full URL (key and all) in its error message
        wecom.script(
            Answer(200, {"errcode": 93000, "errmsg": f"invalid webhook url {wecom.url}, hint: key={s['wecom_key']}"})
        )
        store = open_store(cfg)
        p = Pipeline(cfg, store)
        try:
            a, b = Alert("物流配送延误", p.now), Alert("服务态度", p.now)
            p.record(a.firing(), b.firing())
            for _ in range(5):
                p.step()
                p.advance(2)
            p.record(a.resolved(p.now))
            for _ in range(5):
                p.step()
                p.advance(2)
            by_status: dict[str, set[str]] = {}
            for m in p.messages():
                by_status.setdefault(m.status, set()).add(m.receiver)
            assert {"wecom", "ding", "feishu", "slack", "discord", "hook"} <= by_status["delivered"]
            assert {"wecom", "wecom-revoked"} <= by_status["failed"]
            assert "wecom-down" in by_status["pending"]
            assert store.sqlite_path is not None
            files = [f for f in store.sqlite_path.parent.iterdir() if f.name.startswith("state.db")]
            assert any(f.name == "state.db-wal" for f in files)
            raw = b"".join(f.read_bytes() for f in files)
            assert b"invalid webhook key" in raw and b"connection refused" in raw  # errors are kept ...
            metrics = p.metrics.render()
        finally:
            p.close()
            store.close()

    fmt = JsonFormatter()
    logged = "\n".join(fmt.format(r) + repr(r.__dict__) for r in caplog.records)
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # urllib3's DEBUG lines were captured
    assert "receiver wecom-revoked" in logged
    for name, secret in SECRETS.items():
        assert secret.encode() not in raw, name  # ... without any secret
        assert secret not in logged, name
        assert secret.encode() not in metrics, name
    for url in env.values():
        assert url.encode() not in raw and url not in logged
