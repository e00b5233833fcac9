"""The shared HTTP call: timeouts, redirects, size cap, network errors, Retry-After, secret scrubbing."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.utils import formatdate
from pathlib import Path

import pytest
import requests
from freezegun import freeze_time

from sentinel.notify import answers, transport
from sentinel.notify.adapter import with_query
from sentinel.notify.answers import Reply, classify_status, parse_retry_after
from sentinel.notify.base import Failed, RetryAfter
from sentinel.notify.redact import Scrubber, webhook_url_secrets
from sentinel.notify.transport import MAX_ANSWER_BYTES, HttpClient

from .vendors import Answer, FakeWebhook, closed_port_url


@pytest.fixture
def server() -> Iterator[FakeWebhook]:
    with FakeWebhook(path="/hook?token=tokSECRET123") as s:
        yield s


def reply(status: int, body: bytes = b"", **headers: str) -> Reply:
    return Reply(status, requests.structures.CaseInsensitiveDict(headers), body)


# --- Retry-After -----------------------------------------------------------------------------------


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("999999999") == answers.MAX_RETRY_AFTER
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    with freeze_time("2025-07-08 06:00:00"):
        later = formatdate(time.time() + 120, usegmt=True)
        assert parse_retry_after(later) == pytest.approx(120, abs=1)
        assert parse_retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0


# --- status classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "seconds"),
    [
        (200, None, None),
        (202, None, None),
        (204, None, None),
        (301, RetryAfter, answers.REDIRECT_DELAY),
        (302, RetryAfter, answers.REDIRECT_DELAY),
        (408, RetryAfter, answers.SERVER_ERROR_DELAY),
        (429, RetryAfter, answers.RATE_LIMIT_DELAY),
        (500, RetryAfter, answers.SERVER_ERROR_DELAY),
        (503, RetryAfter, answers.SERVER_ERROR_DELAY),
        (400, Failed, None),
        (401, Failed, None),
        (403, Failed, None),
        (404, Failed, None),
        (410, Failed, None),
    ],
)
def test_classify_status(status: int, kind: type | None, seconds: float | None) -> None:
    out = classify_status(reply(status, b"nope"), Scrubber([]))
    if kind is None:
        assert out is None
        return
    assert isinstance(out, kind)
    if isinstance(out, RetryAfter):
        assert out.seconds == seconds
    else:
        assert isinstance(out, Failed)
        assert out.code == f"HTTP {status}"
        assert "nope" in out.reason


def test_retry_after_header_wins_over_defaults() -> None:
    for status in (302, 429, 503):
        out = classify_status(Reply(status, {"Retry-After": "17"}, b""), Scrubber([]))
        assert out == RetryAfter(17.0, out.reason)  # type: ignore[union-attr]


def test_vendor_messages_are_scrubbed_of_secrets() -> None:
    scrub = Scrubber(webhook_url_secrets("https://x.example/hook/abc123DEF456?key=KEY-99&v=1"))
    out = classify_status(reply(403, b"bad key KEY-99 for /hook/abc123DEF456\n\x1b[31m"), scrub)
    assert isinstance(out, Failed)
    assert "KEY-99" not in out.reason and "abc123DEF456" not in out.reason
    assert "\n" not in out.reason and "\x1b" not in out.reason


def test_webhook_url_secrets() -> None:
    found = webhook_url_secrets("https://u:pw12@h.example/api/webhooks/1234567890/tokABC123xyz?wait=true&key=K123")
    assert {"pw12", "1234567890", "tokABC123xyz", "K123", "true"} <= set(found)
    assert "webhooks" not in found and "api" not in found


def test_with_query_builds_a_new_url_encoded_once() -> None:
    base = "https://oapi.example/robot/send?access_token=T1"
    signed = with_query(base, {"timestamp": "1", "sign": "a+b/c="})
    assert signed == "https://oapi.example/robot/send?access_token=T1&timestamp=1&sign=a%2Bb%2Fc%3D"
    again = with_query(signed, {"timestamp": "2", "sign": "x"})
    assert again == "https://oapi.example/robot/send?access_token=T1&timestamp=2&sign=x"
    assert base == "https://oapi.example/robot/send?access_token=T1"


# --- the call --------------------------------------------------------------------------------------


def test_redirects_are_not_followed(server: FakeWebhook) -> None:
    server.script(Answer(302, headers={"Location": f"{server.base}/followed?token=tokSECRET123"}))
    out = HttpClient("r", timedelta(seconds=5)).post(server.url, b"{}", {})
    assert isinstance(out, Reply)
    assert out.status == 302
    assert [r.path for r in server.requests] == ["/hook"]  # nothing went to /followed


def test_timeout_from_config_on_every_call(server: FakeWebhook) -> None:
    client = HttpClient("r", timedelta(seconds=0.3))
    assert client.timeout == (0.3, 0.3)
    assert HttpClient("r", timedelta(seconds=30)).timeout == (transport.CONNECT_TIMEOUT_CAP, 30.0)
    server.script(Answer(delay=3))
    started = time.monotonic()
    out = client.post(server.url, b"{}", {})
    assert time.monotonic() - started < 2.5
    assert isinstance(out, RetryAfter)
    assert out.seconds == answers.NETWORK_DELAY
    assert out.reason.startswith("timed out after 0.3 s while waiting for the answer")
    assert "tokSECRET123" not in out.reason and "127.0.0.1" not in out.reason


@pytest.mark.parametrize(("drip_head", "phase"), [(False, "reading the answer"), (True, "waiting for the answer")])
def test_an_answer_that_drips_ends_at_the_deadline(server: FakeWebhook, drip_head: bool, phase: str) -> None:
    """A byte a second restarts every socket timeout; the attempt still ends at its 1 s deadline (the old
    code read on until the 8 KB chunk or the body was complete: 30 s here)."""
    server.script(Answer(body=b'{"ok":true}'.ljust(30), drip=1.0, drip_head=drip_head), Answer())
    client = HttpClient("r", timedelta(seconds=1))
    started = time.monotonic()
    out = client.post(server.url, b"{}", {})
    elapsed = time.monotonic() - started
    assert out == RetryAfter(
        answers.NETWORK_DELAY, f"timed out after 1 s while {phase} (the message may have been delivered)"
    )
    assert elapsed < 5.0, elapsed  # the deadline plus a slow CI's margin, far from the dripped 30 s
    assert isinstance(client.post(server.url, b"{}", {}), Reply)  # the cut connection is not reused
    assert len(server.requests) == 2


def test_close_abandons_the_attempt_in_flight(server: FakeWebhook) -> None:
    """SIGTERM: closing the client from another thread ends a send that would last a minute, at once."""
    server.script(Answer(body=b"x" * 60, drip=1.0))
    client = HttpClient("r", timedelta(seconds=60))
    result: list[object] = []
    sender = threading.Thread(target=lambda: result.append(client.post(server.url, b"{}", {})))
    sender.start()
    deadline = time.monotonic() + 10
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the head has arrived: the sender reads the dripping body
    started = time.monotonic()
    client.close()
    sender.join(10)
    assert not sender.is_alive() and time.monotonic() - started < 3.0
    assert result == [
        RetryAfter(
            answers.NETWORK_DELAY,
            "abandoned while reading the answer: the daemon is stopping (the message may have been delivered)",
        )
    ]
    out = client.post(server.url, b"{}", {})  # a closed client sends nothing more
    assert isinstance(out, RetryAfter) and out.reason.startswith("abandoned")
    assert len(server.requests) == 1


def test_connection_refused() -> None:
    url = closed_port_url("/hook?key=refusedSECRET1")
    out = HttpClient("r", timedelta(seconds=2)).post(url, b"{}", {})
    assert out == RetryAfter(answers.NETWORK_DELAY, "connection refused")


def test_connection_closed_without_answer(server: FakeWebhook) -> None:
    server.script(Answer(drop=True))
    out = HttpClient("r", timedelta(seconds=2)).post(server.url, b"{}", {})
    assert isinstance(out, RetryAfter)
    assert out.reason in ("connection closed by the server without an answer", "connection reset by the server")


def test_answer_is_read_up_to_the_cap(server: FakeWebhook) -> None:
    server.script(Answer(200, body=b"x" * (MAX_ANSWER_BYTES * 4)))
    out = HttpClient("r", timedelta(seconds=5)).post(server.url, b"{}", {})
    assert isinstance(out, Reply)
    assert len(out.body) == MAX_ANSWER_BYTES


def test_invalid_url_is_a_config_failure() -> None:
    out = HttpClient("r", timedelta(seconds=1)).post("http://[::1/x?key=SECRETkey1", b"{}", {})
    assert isinstance(out, Failed)
    assert out.code == "config"
    assert "SECRETkey1" not in out.reason


def test_one_connection_per_client_reused(server: FakeWebhook) -> None:
    client = HttpClient("r", timedelta(seconds=5))
    for _ in range(3):
        assert isinstance(client.post(server.url, b"{}", {}), Reply)
    assert len(server.requests) == 3
    assert len({r.peer for r in server.requests}) == 1  # kept alive: one TCP connection for the three
    assert server.requests[0].headers["user-agent"].startswith("sentinel/")
    client.close()


def test_urllib3_debug_lines_do_not_carry_the_url(server: FakeWebhook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    HttpClient("r", timedelta(seconds=5)).post(server.url, b"{}", {})
    assert any(r.name.startswith("urllib3") for r in caplog.records)  # the filter had something to do
    assert "tokSECRET123" not in caplog.text
    assert "/hook" not in caplog.text


# --- the environment: proxies and netrc, read as requests reads them --------------------------------


def test_an_http_proxy_from_the_environment_carries_the_request(
    server: FakeWebhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", server.base)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    out = HttpClient("r", timedelta(seconds=5)).post("http://robot.example.invalid/hook?k=1", b"{}", {})
    assert isinstance(out, Reply)
    # A proxy is asked for the absolute URL; the name is never resolved here.
    assert server.last.headers["host"] == "robot.example.invalid"


def test_no_proxy_bypasses_the_proxy(server: FakeWebhook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", closed_port_url(""))  # would refuse if it were used
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    out = HttpClient("r", timedelta(seconds=5)).post(server.url, b"{}", {})
    assert isinstance(out, Reply)
    assert len(server.requests) == 1


def test_netrc_credentials_are_sent_for_their_host(
    server: FakeWebhook, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rc = tmp_path / "netrc"
    rc.write_text("machine 127.0.0.1 login robot password s3cret\n")
    monkeypatch.setenv("NETRC", str(rc))
    HttpClient("r", timedelta(seconds=5)).post(server.url, b"{}", {})
    assert server.last.headers["authorization"] == "Basic " + base64.b64encode(b"robot:s3cret").decode()
    rc.write_text("machine elsewhere.example login robot password s3cret\n")
    HttpClient("r", timedelta(seconds=5)).post(server.url, b"{}", {})
    assert "authorization" not in server.last.headers
