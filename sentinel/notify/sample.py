"""`sentinel notify-test`: a sample alert rendered and sent to every URL of one receiver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

from sentinel.config import Config, ReceiverConfig
from sentinel.model import Tier
from sentinel.notify import create
from sentinel.notify.base import Delivered, Failed, Message, RetryAfter


def send_test(cfg: Config, receiver: ReceiverConfig) -> Iterator[tuple[int, str]]:
    """(url index, outcome line) for every robot URL of the receiver."""
    from sentinel.notify.render import body_budget, render, sample_view

    adapter = create(receiver)
    try:
        view = sample_view(datetime.now(cfg.tz), Tier.LIGHT)
        max_bytes, max_chars = body_budget(adapter, receiver, view.tier)
        title, body = render([view], syntax=adapter.syntax, locale=receiver.locale or cfg.locale,
                             max_bytes=max_bytes, max_chars=max_chars,
                             status_url=cfg.base_url + "/", kind="test", templates_dir=cfg.templates_dir)
        message = Message(id=f"test-{uuid.uuid4().hex}", title=title, body=body, tier=Tier.LIGHT, status="firing",
                          external_url=cfg.base_url, mention=False)
        for index in range(len(receiver.all_urls())):
            match adapter.send(message, index):
                case Delivered(detail=detail):
                    yield index, f"delivered ({detail})"
                case RetryAfter(seconds=seconds, reason=reason):
                    # a vendor's retry code, a 5xx, or the network (refused, "timed out after 10 s while ...")
                    yield index, f"not delivered: {reason} (the daemon would retry in {seconds:.0f} s)"
                case Failed(code=code, reason=reason):
                    yield index, f"failed: {code}: {reason}"
    finally:
        adapter.close()
