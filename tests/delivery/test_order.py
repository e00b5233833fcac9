"""Order per alert: a receiver's messages leave in queue order, so a firing that has to be retried is
still delivered before its upgrade and its resolution, even when those are due earlier."""

from __future__ import annotations

from sentinel.model import Tier
from tests.delivery.builders import Alert, route
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import Answer, FakeWebhook, FakeWeCom


def test_a_retried_firing_is_delivered_before_its_resolution(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    p = pipeline([wecom.receiver(name="ops")], [route(["ops"])])
    a = Alert("物流配送延误", p.now)
    p.record(a.firing())
    p.dispatch()
    wecom.script(wecom.error(45009))
    assert p.deliver() == 0
    [firing] = p.messages("ops")
    assert firing.status == "pending"

    p.advance(5)
    p.record(a.upgraded(p.now, Tier.MODERATE, 85))
    p.dispatch()
    p.advance(5)
    p.record(a.resolved(p.now))
    p.dispatch()
    _, upgrade, resolution = p.messages("ops")
    assert max(upgrade.next_attempt_us, resolution.next_attempt_us) < firing.next_attempt_us  # due earlier ...
    for _ in range(5):  # up to 55 s after the first attempt
        p.advance(9)
        assert p.deliver() == 0  # ... yet held behind the firing
    assert len(wecom.requests) == 1

    p.set_time(firing.next_attempt_us)
    assert p.deliver() == 3
    texts = [r.json["markdown"]["content"] for r in wecom.requests[1:]]
    assert [t.split("\n", 1)[0] for t in texts] == [
        "**Light alert: 物流配送延误 surge**",
        "**Moderate alert: 物流配送延误 surge （upgraded）**",
        "**Resolved: 物流配送延误 surge （moderate）**",
    ]
    assert [m.status for m in p.messages("ops")] == ["delivered"] * 3


def test_order_holds_per_receiver_not_across_receivers(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    """A retrying receiver holds only its own queue: another receiver of the same alert goes on."""
    with FakeWebhook() as hook:
        hook.script(Answer(503), Answer(503))
        p = pipeline([hook.receiver(name="hook"), wecom.receiver(name="ops")], [route(["hook", "ops"])])
        a = Alert("物流配送延误", p.now)
        p.record(a.firing())
        p.step()
        p.advance(1)
        p.record(a.resolved(p.now))
        p.step()
        assert [m.status for m in p.messages("ops")] == ["delivered", "delivered"]
        assert [m.status for m in p.messages("hook")] == ["pending", "pending"]
        p.run_until_idle(seconds_per_step=5)
        assert [r.json["status"] for r in hook.requests if r.json is not None][-2:] == ["firing", "resolved"]
        assert len(hook.requests) == 4  # two 503s, then each message once
