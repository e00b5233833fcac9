"""Generic webhook in Alertmanager's format (version 4), so existing receivers work unchanged.

Body: `version`, `groupKey`, `truncatedAlerts`, `status`, `receiver`, `groupLabels`, `commonLabels`,
`commonAnnotations`, `externalURL` and `alerts`, plus Sentinel's own keys `deliveryId`, `tier`, `title`
and `text` (the rendered message).

- `alerts` lists every alert of the group with its current status, as Alertmanager's does: first those
  this message tells (new, upgraded, repeated or resolved), then the group's other open alerts this
  receiver was told of earlier (still firing; silenced or inhibited ones left out). Each has `status`,
  `labels` (`alertname` = the rule, `severity` = the tier, the series labels `type` / `channel`, and
  Sentinel's `rule` and `tier`), `annotations` (`summary`, `value`, `baseline`, `instance`), `startsAt`,
  `endsAt` (`0001-01-01T00:00:00Z` while firing), `generatorURL` (the alert on the status page) and
  `fingerprint`.
- `status` is `firing` while any listed alert fires, else `resolved`.
- `commonLabels` / `commonAnnotations` are those every listed alert shares.
- A body over 1 MiB drops alerts from the end and counts them in `truncatedAlerts`, as Alertmanager does.

Headers:
- `X-Sentinel-Delivery: <id>` - the same value as `deliveryId`; stable across retries, so a receiver
  drops a message it has already seen (delivery is at least once).
- with `hmac_secret` configured, at every attempt:
  `X-Sentinel-Timestamp: <unix seconds>` and
  `X-Sentinel-Signature: sha256=<hex HMAC-SHA256(key=hmac_secret, msg=timestamp + "." + body)>`,
  over the exact body bytes sent. A receiver verifies it like this, and should reject timestamps
  more than a few minutes old (replays):

      expected = hmac.new(secret, ts.encode() + b"." + raw_body, hashlib.sha256).hexdigest()
      ok = hmac.compare_digest("sha256=" + expected, request.headers["X-Sentinel-Signature"])

2xx is delivered; 429 and 5xx are retried (honouring Retry-After); other 4xx are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from typing import ClassVar

from sentinel.model import JsonOutObject
from sentinel.notify.adapter import HttpAdapter, dump
from sentinel.notify.answers import Reply
from sentinel.notify.base import AlertPayload, Delivered, Message, Outcome, Syntax, register
from sentinel.notify.escape import truncate_bytes, truncate_chars
from sentinel.units import Rate

DELIVERY_HEADER = "X-Sentinel-Delivery"
TIMESTAMP_HEADER = "X-Sentinel-Timestamp"
SIGNATURE_HEADER = "X-Sentinel-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def _alert(a: AlertPayload) -> JsonOutObject:
    return {
        "status": a.status,
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": a.starts_at,
        "endsAt": a.ends_at,
        "fingerprint": a.fingerprint,
        "generatorURL": a.generator_url,
    }


def _status(message: Message) -> str:
    if not message.alerts:
        return message.status
    return "firing" if any(a.status == "firing" for a in message.alerts) else "resolved"


@register
class WebhookAdapter(HttpAdapter):
    kind: ClassVar[str] = "webhook"
    syntax: ClassVar[Syntax] = Syntax.TEXT
    max_bytes: ClassVar[int] = 64 * 1024  # the `text` key; the whole body may reach `max_body_bytes`
    max_body_bytes: ClassVar[int] = 1024 * 1024
    default_limits: ClassVar[tuple[Rate, ...]] = ()  # a receiver of our own: no vendor limit
    accepts: ClassVar[frozenset[str]] = frozenset({"hmac_secret"})
    lists_group: ClassVar[bool] = True  # every alert of the group, as Alertmanager's webhook

    def payload(self, message: Message, keep: int | None = None) -> JsonOutObject:
        alerts = message.alerts if keep is None else message.alerts[:keep]
        return {
            "version": "4",
            "groupKey": message.group_key,
            "truncatedAlerts": len(message.alerts) - len(alerts),
            # Alertmanager's: firing while any alert of the group fires (a message telling only a
            # resolution still lists the group's open alerts); the message's own status without alerts
            "status": _status(message),
            "receiver": self.name,
            "groupLabels": dict(message.group_labels),
            "commonLabels": _common([a.labels for a in message.alerts]) or dict(message.group_labels),
            "commonAnnotations": _common([a.annotations for a in message.alerts]),
            "externalURL": message.external_url,
            "alerts": [_alert(a) for a in alerts],
            "deliveryId": message.id,
            "tier": message.tier.label,
            "title": truncate_chars(message.title, 1024),  # raw data (JSON needs no escaping), bounded
            "text": truncate_bytes(message.body, self.max_bytes, self.truncated_marker),
        }

    def body(self, message: Message) -> bytes:
        data = dump(self.payload(message))
        keep = len(message.alerts)
        while len(data) > self.max_body_bytes and keep > 0:
            # Drop alerts in proportion to the overflow (at least one), then measure again.
            keep = min(keep - 1, int(keep * self.max_body_bytes / len(data)))
            data = dump(self.payload(message, keep))
        return data

    def headers(self, body: bytes, delivery: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8", DELIVERY_HEADER: delivery}
        if self.config.hmac_secret is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self.config.hmac_secret.get(), timestamp, body)
        return headers

    def attempt(self, message: Message, url: str) -> Outcome:
        body = self.body(message)
        reply = self.http.post(url, body, self.headers(body, message.id))
        if not isinstance(reply, Reply):
            return reply
        return self.status_outcome(reply) or Delivered()
