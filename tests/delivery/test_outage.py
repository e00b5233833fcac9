"""A receiver that goes away loses nothing: while its URL refuses connections (or a gateway answers
503), alerts keep being dispatched into the outbox; when it comes back, every message is delivered,
once, in the order it was queued."""

from __future__ import annotations

import pytest

from sentinel.model import US
from tests.delivery.builders import Alert, at, delivery_ids, route
from tests.delivery.conftest import MakePipeline
from tests.delivery.relay import Relay
from tests.notify.vendors import FakeWebhook


@pytest.mark.parametrize("outage", ["connection refused", "HTTP 503"])
def test_nothing_is_lost_across_a_receiver_outage(outage: str, webhook: FakeWebhook, pipeline: MakePipeline) -> None:
    with Relay(webhook.port) as relay:
        p = pipeline([webhook.receiver(name="hook", url=relay.url(webhook.url))], [route(["hook"], group_by=["type"])])
        first = Alert("物流配送延误", p.now)
        p.record(first.firing())
        p.step()
        assert len(webhook.requests) == 1

        if outage == "connection refused":
            relay.refuse()
        else:
            relay.answer(503)
        later = [Alert(f"类型{i}", at(60 * i)) for i in range(1, 10)]
        for second in range(5, 601, 5):  # ten minutes: a new alert every minute, the first resolves at 5:30
            p.set_time(at(second))
            for a in later:
                if a.started == p.now:
                    p.record(a.firing())
            if second == 330:
                p.record(first.resolved(p.now))
            p.step()
        assert len(webhook.requests) == 1  # nothing got through
        during = p.messages("hook")
        assert len(during) == 11 and [m.status for m in during[1:]] == ["pending"] * 10
        assert outage in str(during[1].last_error) and during[1].attempts > 3
        if outage == "HTTP 503":
            assert relay.answered == during[1].attempts

        relay.up()
        steps = p.run_until_idle(seconds_per_step=5)
        assert steps * 5 <= 600 + 5  # back within the longest backoff
        after = p.messages("hook")
        assert [m.status for m in after] == ["delivered"] * 11
        assert delivery_ids(webhook.requests) == [m.delivery_id for m in after]  # each once, in queue order
        got = [(r.json["alerts"][0]["labels"]["type"], r.json["status"]) for r in webhook.requests]
        resolved_at = 1 + sum(1 for a in later if a.started <= at(330))
        expected = [(first.type, "firing")] + [(a.type, "firing") for a in later]
        expected.insert(resolved_at, (first.type, "resolved"))
        assert got == expected
        assert max(m.next_attempt_us for m in during) < at(600) + 600 * US
