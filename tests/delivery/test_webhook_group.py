"""The generic webhook carries the group, as Alertmanager's does: each notification lists every alert of
the group with its current status (the ones it tells, then the group's other open alerts the receiver
was told of), with `groupLabels`, `commonLabels`, `truncatedAlerts` and Alertmanager's labels; the
top-level status is firing while any listed alert fires. Chat tools still get only what changed. Real
dispatcher, outbox and worker on SQLite, real local webhooks."""

from __future__ import annotations

from typing import Any

from sentinel.alerting import silences
from tests.delivery.builders import Alert, at, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import FakeSlack, FakeWebhook

LOGISTICS, BILLING, ATTITUDE = "物流配送延误", "账单争议", "服务态度"


def by_type(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["labels"]["type"], a["status"]) for a in body["alerts"]]


def test_a_resolution_lists_the_group_with_each_alert_current_status(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook, FakeSlack() as slack:
        p = pipeline(
            [hook.receiver(name="hook"), slack.receiver(name="chat")],
            [route(["hook", "chat"], group_by=["rule"])],
            external_url="https://sentinel.example",
        )
        logistics, billing = Alert(LOGISTICS, at(0)), Alert(BILLING, at(0))
        p.record(logistics.firing(), billing.firing())
        p.step()
        [first] = [r.json for r in hook.requests]
        assert sorted(by_type(first)) == sorted([(BILLING, "firing"), (LOGISTICS, "firing")])

        p.set_time(at(60))
        p.record(logistics.resolved(p.now))
        p.step()
        body = hook.requests[-1].json
        # the resolution, then the rest of the group, still firing
        assert by_type(body) == [(LOGISTICS, "resolved"), (BILLING, "firing")]
        assert body["status"] == "firing"  # Alertmanager's: an alert of the group still fires
        assert (body["version"], body["receiver"], body["truncatedAlerts"]) == ("4", "hook", 0)
        assert body["groupKey"] == first["groupKey"] and body["groupLabels"] == {"rule": "type-surge"}
        assert body["commonLabels"] == {
            "alertname": "type-surge",
            "severity": "light",
            "rule": "type-surge",
            "tier": "light",
        }
        assert body["externalURL"] == "https://sentinel.example"
        resolved, firing = body["alerts"]
        assert resolved["labels"] == {
            "alertname": "type-surge",
            "severity": "light",
            "type": LOGISTICS,
            "rule": "type-surge",
            "tier": "light",
        }
        assert resolved["endsAt"] != "0001-01-01T00:00:00Z" and firing["endsAt"] == "0001-01-01T00:00:00Z"
        assert firing["fingerprint"] == billing.fingerprint and resolved["fingerprint"] == logistics.fingerprint
        assert firing["generatorURL"] == f"https://sentinel.example/#alert-{billing.instance}"
        assert firing["startsAt"] == "2025-07-08T18:00:00+08:00"  # RFC 3339, in the configured zone
        assert body["deliveryId"] == hook.requests[-1].headers["x-sentinel-delivery"]  # kept for dedup
        assert body["tier"] == "light" and body["title"] and body["text"]  # Sentinel's own keys, kept

        # the chat tool hears only of the resolution, and its outbox rows carry no group copy
        assert LOGISTICS in slack.requests[-1].json["text"] and BILLING not in slack.requests[-1].json["text"]
        assert all("group_alerts" not in m.payload for m in p.messages("chat"))

        p.set_time(at(120))
        p.record(billing.resolved(p.now))
        p.step()
        last = hook.requests[-1].json
        assert by_type(last) == [(BILLING, "resolved")] and last["status"] == "resolved"


def test_a_silenced_alert_of_the_group_is_left_out(webhook: FakeWebhook, pipeline: MakePipeline) -> None:
    p = pipeline([webhook.receiver(name="hook")], [route(["hook"], group_by=["rule"])])
    logistics, billing, attitude = Alert(LOGISTICS, at(0)), Alert(BILLING, at(0)), Alert(ATTITUDE, at(0))
    p.record(logistics.firing(), billing.firing())
    p.step()
    ms, starts, ends, by, comment = silences.parse(
        {
            "matchers": [{"name": "type", "value": BILLING}],
            "endsAt": "2025-07-08T12:00:00+00:00",
            "createdBy": "ops",
            "comment": "known",
        },
        p.now,
    )
    with p.store.transaction() as conn:
        silences.add(conn, ms, starts, ends, by, comment, p.now)
    p.set_time(at(60))
    p.record(attitude.firing())
    p.step()
    assert by_type(webhook.requests[-1].json) == [(ATTITUDE, "firing"), (LOGISTICS, "firing")]
