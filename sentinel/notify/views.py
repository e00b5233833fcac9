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


@dataclass(frozen=True, slots=True)
class AlertView:
    rule: str
    kind: str  # "threshold" | "streak"
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
    extra: Mapping[str, object] = field(default_factory=dict)


MESSAGE_KINDS = ("alert", "digest", "repeat", "escalation", "test")
