"""What a message template sees: one `AlertView` per alert, already in the reader's time zone.

The dispatcher builds views from stored alert events; the renderer turns them into a title and a body
in a receiver's syntax. Views carry data only: every string in them is untrusted and is escaped by the
renderer for the target syntax.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sentinel.model import Tier
from sentinel.notify.base import AlertPayload


@dataclass(frozen=True, slots=True)
class AlertView:
    rule: str
    kind: str  # "threshold" | "streak" | "quiet"
    state: str  # "firing" | "upgraded" | "resolved"
    tier: Tier
    labels: Mapping[str, str]
    value: float
    baseline: float | None  # threshold: the baseline compared with (None for streaks)
    ratio: float | None  # None when the baseline is 0 ("new: no history")
    started: datetime  # when the alert instance opened
    at: datetime  # when this event happened
    instance: str
    fingerprint: str
    p: float | None = None
    mode: str | None = None  # threshold mode: "day" | "pace" | "rolling"
    length: int | None = None  # streak: run length
    chance: float | None = None  # streak: share ** length
    expected_per_day: float | None = None  # streak: how many such runs a normal day has
    peak: float | None = None
    duration_s: int | None = None  # resolved: how long it lasted
    reason: str | None = None  # resolved: why
    samples: tuple[tuple[str, str | None], ...] = ()  # (complaint id, link to the CRM or None), at most 5
    ack_url: str | None = None
    handover: bool = False  # open when Sentinel started: "open since <started>"
    open_s: int | None = None  # handover: how long it had been open when Sentinel started
    run_length: int | None = None  # handover of a streak: the run still going, so far
    projected: float | None = None  # threshold, day mode: the day's expected final count at this pace
    expected: float | None = None  # quiet: complaints the series normally has in the silence so far
    silent_s: int | None = None  # quiet: how long the series has had nothing
    extra: Mapping[str, object] = field(default_factory=dict)


MESSAGE_KINDS = ("alert", "digest", "repeat", "escalation", "test")


def alert_payload(v: AlertView, base_url: str) -> AlertPayload:
    """One alert in Alertmanager's webhook shape: labels `alertname` (the rule), `severity` (the tier)
    and the series labels (`type`, `channel`), plus Sentinel's `rule` and `tier`; `endsAt` is Alertmanager's
    zero time while the alert fires."""
    labels: Mapping[str, str] = {"alertname": v.rule, "severity": v.tier.label, **v.labels, "rule": v.rule,
                                 "tier": v.tier.label}
    annotations = {"summary": f"{v.rule} {' '.join(f'{k}={x}' for k, x in v.labels.items())}",
                   "value": str(v.value), "baseline": "" if v.baseline is None else str(v.baseline),
                   "instance": v.instance}
    if v.projected is not None:  # the day's expected final count at this pace (threshold, day mode)
        annotations["projected"] = str(v.projected)
    if v.expected is not None:  # quiet: the complaints normally seen in the silence
        annotations["expected"] = str(v.expected)
    resolved = v.state == "resolved"
    return AlertPayload(status="resolved" if resolved else "firing", labels=dict(labels), annotations=annotations,
                        starts_at=v.started.isoformat(),
                        ends_at=v.at.isoformat() if resolved else "0001-01-01T00:00:00Z",
                        fingerprint=v.fingerprint, generator_url=f"{base_url}/#alert-{v.instance}")
