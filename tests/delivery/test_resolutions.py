"""A resolution goes to every receiver that was told of the alert: through the group that told them,
or straight to those no current route reaches (escalation receivers, a route a reload removed)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sentinel.config import RouteConfig
from sentinel.model import Tier
from tests.delivery.builders import Alert, make_config, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import FakeWebhook, FakeWeCom


def told(p: object, receiver: str) -> list[tuple[str, str]]:
    return [(m.kind, str(m.payload.get("status"))) for m in p.messages(receiver)]  # type: ignore[attr-defined]


def test_an_escalation_receiver_hears_the_resolution(
    wecom: FakeWeCom, webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    p = pipeline(
        [wecom.receiver(name="ops"), webhook.receiver(name="boss")],
        [route(["ops"], escalate_to=["boss"], escalate_after=timedelta(minutes=10))],
    )
    a = Alert("物流配送延误", p.now, tier=Tier.MODERATE)
    p.record(a.firing())
    p.step()
    p.advance(601)  # not acknowledged within escalate_after
    p.step()
    p.advance(60)
    p.record(a.resolved(p.now))
    p.step()
    assert told(p, "ops") == [("alert", "firing"), ("alert", "resolved")]
    assert told(p, "boss") == [("escalation", "firing"), ("alert", "resolved")]
    assert [r.json["status"] for r in webhook.requests] == ["firing", "resolved"]
    p.advance(3600)
    p.step()
    assert len(p.messages()) == 4  # told once each, nothing more


def test_a_receiver_whose_route_a_reload_removed_hears_the_resolution(
    tmp_path: Path, wecom: FakeWeCom, webhook: FakeWebhook, pipeline: MakePipeline
) -> None:
    receivers = [wecom.receiver(name="ops"), webhook.receiver(name="night")]
    routes = [route(["night"], match={"type": "物流配送延误"}), route(["ops"])]
    p = pipeline(receivers, routes)
    a = Alert("物流配送延误", p.now)
    p.record(a.firing())
    p.step()
    assert told(p, "night") == [("alert", "firing")]
    new: list[RouteConfig] = [route(["ops"])]  # SIGHUP: the "night" route is gone
    p.dispatcher.reload(make_config(tmp_path, receivers, new))
    p.advance(60)
    p.record(a.resolved(p.now))
    p.step()
    assert told(p, "night") == [("alert", "firing"), ("alert", "resolved")]
    assert told(p, "ops") == []  # never told of it, so no resolution either
