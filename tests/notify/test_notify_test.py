"""`sentinel notify-test` says what happened at each URL, in the words the daemon's status uses: connection
refused, host name not found, a timeout, a TLS error, an HTTP status or a vendor's code with its meaning,
and whether the daemon would retry; exit 1 unless every URL took the message. The generic webhook gets
the sample alert in its Alertmanager-format `alerts`, not `"alerts": []`. Real local HTTP servers; the
command runs as `sentinel` does (`main`), from a configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.cli import main
from tests.notify.vendors import Answer, FakeDingTalk, FakeWebhook, FakeWeCom, closed_port_url

SECRET = "closed-port-secret-123"


def notify_test(tmp_path: Path, capsys: pytest.CaptureFixture[str], receiver: str) -> tuple[int, str]:
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(
        f'state_url = "sqlite:///{tmp_path}/state.db"\nlocale = "en"\n'
        f'external_url = "https://sentinel.example"\n[[receivers]]\nname = "hook"\n{receiver}\n',
        encoding="utf-8",
    )
    code = main(["notify-test", "--config", str(cfg), "--receiver", "hook"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out


def test_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = notify_test(tmp_path, capsys, f'kind = "webhook"\nurl = "{closed_port_url()}"')
    assert (code, out) == (1, "hook url #1: not delivered: connection refused (the daemon would retry in 5 s)\n")
    assert SECRET not in out


def test_host_name_not_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = notify_test(tmp_path, capsys, 'kind = "webhook"\nurl = "http://no-such-host.invalid/hook"')
    assert (code, out) == (1, "hook url #1: not delivered: host name not found (DNS) (the daemon would retry in 5 s)\n")


def test_timeout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWebhook() as hook:
        hook.script(Answer(delay=5.0))
        code, out = notify_test(tmp_path, capsys, f'kind = "webhook"\nurl = "{hook.url}"\ntimeout = "1s"')
    assert code == 1
    assert out == (
        "hook url #1: not delivered: timed out after 1 s while waiting for the answer (the message may "
        "have been delivered) (the daemon would retry in 5 s)\n"
    )


def test_tls_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWebhook(path="/hook") as hook:  # plain HTTP where the URL says https
        code, out = notify_test(tmp_path, capsys, f'kind = "webhook"\nurl = "https://127.0.0.1:{hook.port}/hook"')
    assert code == 1
    assert out.startswith("hook url #1: not delivered: TLS error (handshake or certificate verification failed)")


def test_http_status_is_permanent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWebhook() as hook:
        hook.script(Answer(404, body=b"no such hook"))
        code, out = notify_test(tmp_path, capsys, f'kind = "webhook"\nurl = "{hook.url}"')
    assert (code, out) == (
        1,
        "hook url #1: failed: HTTP 404: webhook not found: no such hook (permanent: the daemon would not retry)\n",
    )


def test_vendor_code_with_its_meaning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWeCom() as robot:
        code, out = notify_test(
            tmp_path, capsys, f'kind = "wecom"\nurl = "{robot.url.replace(robot.key, "wrong-key-123")}"'
        )
    assert (code, out) == (
        1,
        "hook url #1: failed: wecom 93000: invalid webhook key (invalid webhook url) "
        "(permanent: the daemon would not retry)\n",
    )
    assert "wrong-key-123" not in out


def test_vendor_retry_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeDingTalk(secret=None) as robot:
        robot.script(robot.error(130101))
        code, out = notify_test(tmp_path, capsys, f'kind = "dingtalk"\nurl = "{robot.url}"')
    assert code == 1
    assert out.startswith("hook url #1: not delivered: dingtalk 130101: ")
    assert out.endswith("(the daemon would retry in 600 s)\n")


def test_each_url_gets_its_line_and_success_is_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWebhook() as hook:
        code, out = notify_test(tmp_path, capsys, f'kind = "webhook"\nurl = "{hook.url}"')
        assert (code, out) == (0, "hook url #1: delivered (ok)\n")
        code, out = notify_test(tmp_path, capsys, f'kind = "webhook"\nurls = ["{hook.url}", "{closed_port_url()}"]')
    assert code == 1
    assert out.splitlines() == [
        "hook url #1: delivered (ok)",
        "hook url #2: not delivered: connection refused (the daemon would retry in 5 s)",
    ]


def test_the_generic_webhook_carries_the_sample_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeWebhook() as hook:
        code, _ = notify_test(tmp_path, capsys, f'kind = "webhook"\nurl = "{hook.url}"')
        [req] = hook.requests
    assert code == 0
    body = req.json
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hook"
    assert body["groupKey"] and body["truncatedAlerts"] == 0
    assert body["externalURL"] == "https://sentinel.example"
    [alert] = body["alerts"]
    assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert {k: alert["labels"][k] for k in ("alertname", "severity", "type", "channel")} == {
        "alertname": "type-surge",
        "severity": "light",
        "type": "物流配送延误",
        "channel": "电话热线",
    }
    assert alert["generatorURL"].startswith("https://sentinel.example/#alert-")
    assert alert["fingerprint"] and alert["startsAt"] and alert["annotations"]["summary"]
    assert body["commonLabels"] == alert["labels"] and body["groupLabels"] == {"rule": "type-surge"}
    assert body["deliveryId"] == req.headers["x-sentinel-delivery"]
