"""An outbox row made into the `Message` one receiver's adapter sends.

Guarantees:
- the body is rendered in the adapter's syntax, in the receiver's locale (else the configuration's),
  within the adapter's budget for the message's tier (`render.body_budget`), so the adapter never has
  to cut the body;
- a template that fails at send time (edited after the reload check) never stops an alert: the
  message goes with the built-in templates and the failure is logged;
- a digest and a fallback message are rendered as alerts; a resolution mentions no one;
- the structured alerts (the generic webhook's payload) are the message's own plus the rest of its
  group as they were when the message was queued.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sentinel.config import Config
from sentinel.logs import fields
from sentinel.model import JsonValue, Tier
from sentinel.notify.base import Message
from sentinel.notify.outbox import OutboxMessage
from sentinel.notify.robots import ReceiverRunner
from sentinel.notify.views import alert_payload, views_of

log = logging.getLogger("sentinel.deliver")


def compose(cfg: Config, runner: ReceiverRunner, msg: OutboxMessage) -> Message:
    """The message `runner`'s adapter sends for the outbox row `msg`, under the configuration `cfg`."""
    from sentinel.notify.render import TemplateError, body_budget, render

    views = views_of(msg.payload, "views", cfg.tz)
    adapter = runner.adapter
    kind = {"digest": "alert", "fallback": "alert"}.get(msg.kind, msg.kind)
    max_bytes, max_chars = body_budget(adapter, runner.cfg, Tier.parse(msg.tier))

    note = msg.payload.get("note")

    def build(templates_dir: Path | None) -> tuple[str, str]:
        return render(
            views,
            syntax=adapter.syntax,
            locale=runner.cfg.locale or cfg.locale,
            max_bytes=max_bytes,
            max_chars=max_chars,
            status_url=cfg.base_url + "/",
            kind=kind,
            note=None if note is None else str(note),
            templates_dir=templates_dir,
        )

    try:
        title, body = build(cfg.templates_dir)
    except TemplateError as exc:  # edited after the reload check: an alert must still go out
        log.error(
            "template failed; sending with the built-in templates",
            extra=fields(receiver=runner.cfg.name, error=str(exc)),
        )
        title, body = build(None)
    status = str(msg.payload.get("status", "firing"))
    # the rest of the group (the generic webhook's payload lists every alert of it, as Alertmanager's
    # does): its other open alerts these people were told of, as they were when the message was queued
    rest = views_of(msg.payload, "group_alerts", cfg.tz)
    return Message(
        id=msg.delivery_id,
        title=title,
        body=body,
        tier=Tier.parse(msg.tier),
        status=status,
        group_key=str(msg.payload.get("group_key", "")),
        group_labels=_labels(msg.payload.get("group_labels", {})),
        alerts=tuple(alert_payload(v, cfg.base_url) for v in [*views, *rest]),
        external_url=cfg.base_url,
        mention=status != "resolved",
    )


def _labels(value: JsonValue) -> dict[str, str]:
    """The group's labels as the dispatcher wrote them (a JSON object of strings)."""
    if not isinstance(value, dict):
        raise TypeError(f"group_labels: expected an object, got {type(value).__name__}")
    return {k: str(v) for k, v in value.items()}
