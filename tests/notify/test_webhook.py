"""Generic webhook: Alertmanager v4 body, delivery id, HMAC signature at every attempt, status codes."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest
from freezegun import freeze_time

from sentinel.model import Tier
from sentinel.notify.base import Delivered, Failed, RetryAfter
from sentinel.notify.webhook import WebhookAdapter

from .builders import alert, message
from .vendors import Answer, FakeWebhook


def test_alertmanager_v4_body_with_delivery_id(webhook: FakeWebhook) -> None:
    msg = message(
        id="d-42",
        group_key='{}:{rule="type-surge"}',
        group_labels={"rule": "type-surge"},
        alerts=(alert(1, channel="电话"), alert(2, channel="电话")),
        external_url="https://s.example",
        tier=Tier.SEVERE,
    )
    assert isinstance(WebhookAdapter(webhook.receiver()).send(msg), Delivered)
    req = webhook.last
    body = req.json
    assert req.headers["x-sentinel-delivery"] == "d-42" == body["deliveryId"]
    assert body["version"] == "4"
    assert body["groupKey"] == '{}:{rule="type-surge"}'
    assert body["status"] == "firing" and body["receiver"] == "test-webhook" and body["tier"] == "severe"
    assert body["groupLabels"] == {"rule": "type-surge"}
    assert body["commonLabels"] == {"rule": "type-surge", "channel": "电话"}  # `type` differs
    assert body["commonAnnotations"] == {}
    assert body["externalURL"] == "https://s.example"
    assert body["truncatedAlerts"] == 0
    assert body["alerts"][0] == {
        "status": "firing",
        "labels": {"rule": "type-surge", "type": "t1", "channel": "电话"},
        "annotations": {"summary": "surge 1"},
        "startsAt": "2025-07-08T06:03:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "fp0001",
        "generatorURL": "",
    }


def test_signature_over_the_exact_body_at_every_attempt(webhook: FakeWebhook) -> None:
    adapter = WebhookAdapter(webhook.receiver())
    with freeze_time("2025-07-08 06:00:00") as clock:
        webhook.script(Answer(503))
        assert isinstance(adapter.send(message()), RetryAfter)
        clock.tick(timedelta(minutes=30))
        assert isinstance(adapter.send(message()), Delivered)  # the fake rejects stale or bad signatures
    first, second = webhook.requests
    assert (first.headers["x-sentinel-timestamp"], second.headers["x-sentinel-timestamp"]) == (
        "1751954400",
        "1751956200",
    )
    ts = second.headers["x-sentinel-timestamp"]
    expected = hmac.new(b"hmacSECRET-0123456789", ts.encode() + b"." + second.body, hashlib.sha256).hexdigest()
    assert second.headers["x-sentinel-signature"] == f"sha256={expected}"


def test_bad_secret_is_rejected_permanently(webhook: FakeWebhook) -> None:
    out = WebhookAdapter(webhook.receiver(hmac_secret="not-the-secret")).send(message())
    assert isinstance(out, Failed) and out.code == "HTTP 401"
    assert "not-the-secret" not in out.reason


def test_no_signature_without_secret() -> None:
    with FakeWebhook() as hook:
        WebhookAdapter(hook.receiver()).send(message())
        assert "x-sentinel-signature" not in hook.last.headers
        assert hook.last.headers["x-sentinel-delivery"] == "d-0001"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(204), Delivered()),
        (Answer(429, headers={"Retry-After": "11"}), RetryAfter(11.0, "HTTP 429: rate limited")),
        (Answer(500), RetryAfter(10.0, "HTTP 500: server error")),
        (Answer(503, headers={"Retry-After": "3"}), RetryAfter(3.0, "HTTP 503: server error")),
        (Answer(422, body=b"unprocessable"), Failed("HTTP 422", "rejected: unprocessable")),
        (Answer(404, body=b""), Failed("HTTP 404", "webhook not found")),
    ],
)
def test_status_classification(webhook: FakeWebhook, answer: Answer, expected: object) -> None:
    webhook.script(answer)
    assert WebhookAdapter(webhook.receiver()).send(message()) == expected


def test_huge_group_truncates_alerts_and_counts_them(webhook: FakeWebhook) -> None:
    alerts = tuple(alert(i, note="物流" * 300) for i in range(1000))  # ~2 MB of alerts
    assert isinstance(WebhookAdapter(webhook.receiver()).send(message(alerts=alerts)), Delivered)
    body = webhook.last.json
    assert len(webhook.last.body) <= 1024 * 1024
    assert body["truncatedAlerts"] > 0
    assert body["truncatedAlerts"] + len(body["alerts"]) == 1000
    assert body["alerts"][0]["fingerprint"] == "fp0000"
