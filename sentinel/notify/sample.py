"""`sentinel notify-test`: a sample alert rendered and sent to every URL of one receiver.

Each URL gets one line saying what happened, in the words the daemon's logs and status use: "delivered",
"not delivered: connection refused / host name not found (DNS) / timed out after 10 s while … / TLS
error (…) / HTTP 503: server error / wecom 45009: rate limited (the daemon would retry in N s)", or
"failed: wecom 93000: invalid webhook key / HTTP 404: webhook not found: … (permanent: the daemon would
not retry)". The generic webhook gets the sample alert in its Alertmanager-format `alerts`, as a real
notification carries it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

from sentinel.config import Config, ReceiverConfig
from sentinel.model import Tier
from sentinel.notify import create
from sentinel.notify.base import Delivered, Failed, Message, RetryAfter
from sentinel.notify.views import alert_payload


def send_test(cfg: Config, receiver: ReceiverConfig) -> Iterator[tuple[int, str]]:
    """(url index, outcome line) for every robot URL of the receiver."""
    from sentinel.notify.render import body_budget, render
    from sentinel.notify.template_check import sample_view

    adapter = create(receiver)
    try:
        view = sample_view(datetime.now(cfg.tz), Tier.LIGHT)
        max_bytes, max_chars = body_budget(adapter, receiver, view.tier)
        title, body = render(
            [view],
            syntax=adapter.syntax,
            locale=receiver.locale or cfg.locale,
            max_bytes=max_bytes,
            max_chars=max_chars,
            status_url=cfg.base_url + "/",
            kind="test",
            templates_dir=cfg.templates_dir,
        )
        message = Message(
            id=f"test-{uuid.uuid4().hex}",
            title=title,
            body=body,
            tier=Tier.LIGHT,
            status="firing",
            group_key=f"test/{view.fingerprint}",
            group_labels={"rule": view.rule},
            alerts=(alert_payload(view, cfg.base_url),),
            external_url=cfg.base_url,
            mention=False,
        )
        for index in range(len(receiver.all_urls())):
            match adapter.send(message, index):
                case Delivered(detail=detail):
                    yield index, f"delivered ({detail})"
                case RetryAfter(seconds=seconds, reason=reason):
                    yield index, f"not delivered: {reason} (the daemon would retry in {seconds:.0f} s)"
                case Failed() as failed:
                    yield index, f"failed: {failed.text} (permanent: the daemon would not retry)"
    finally:
        adapter.close()
