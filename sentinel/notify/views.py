"""What a message template sees: one `AlertView` per alert, already in the reader's time zone.

The dispatcher builds views from stored alert events; the renderer turns them into a title and a body
in a receiver's syntax. Views carry data only: every string in them is untrusted and is escaped by the
renderer for the target syntax.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from sentinel.model import JsonObject, JsonValue, Tier, json_int, json_list, json_str, to_datetime
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


# --- the one codec: views in the outbox are JSON, read back as they were written ----------------------

_TIMES = frozenset({"started", "at"})


def view_to_json(v: AlertView) -> JsonObject:
    """Every field of the view, times as ISO 8601 in the view's zone, the tier by its label."""
    out: JsonObject = {}
    for f in fields(AlertView):
        value = getattr(v, f.name)
        if f.name in _TIMES:
            value = value.isoformat()
        elif f.name == "tier":
            value = value.label
        elif f.name == "samples":
            value = [list(s) for s in value]
        elif isinstance(value, Mapping):
            value = dict(value)
        out[f.name] = value
    return out


def view_from_json(d: JsonValue, tz: ZoneInfo) -> AlertView:
    """The view `view_to_json` wrote, in the reader's zone `tz` (keys it lacks take their defaults)."""
    if not isinstance(d, dict):
        raise TypeError(f"a view is a JSON object, not {type(d).__name__}")
    times = {k: datetime.fromisoformat(json_str(d[k])).astimezone(tz) for k in _TIMES}
    return _view({**d, **times})  # `_view` makes each sample the (id, link) pair it was


def views_of(payload: JsonObject, key: str, tz: ZoneInfo) -> list[AlertView]:
    """The views an outbox payload lists under `key` (`views`, `group_alerts`; none without it)."""
    return [view_from_json(v, tz) for v in json_list(payload.get(key, []))]


def view_from_event(payload: JsonObject, tz: ZoneInfo, *, record_url: str | None, ack_url: str | None) -> AlertView:
    """A view of a stored event's payload (as `Event.to_json` wrote it, with `at_us` and `started_us`),
    each sample linked to the CRM when `record_url` is set."""
    samples = [
        (str(i), record_url.replace("{id}", quote(str(i), safe="")) if record_url else None)
        for i in json_list(payload.get("samples", []))
    ]
    return _view(
        {
            **payload,
            "started": to_datetime(json_int(payload["started_us"]), tz),
            "at": to_datetime(json_int(payload["at_us"]), tz),
            "samples": samples,
            "ack_url": ack_url,
        }
    )


def _view(d: Mapping[str, object]) -> AlertView:
    """An AlertView of the keys of `d` that name its fields; a missing field without a default is a KeyError."""
    # Any: each value goes to the AlertView field of its name, so the dataclass is the schema of `d`
    values: dict[str, Any] = {}
    for f in fields(AlertView):
        if f.name in d:
            values[f.name] = d[f.name]
        elif f.default is MISSING and f.default_factory is MISSING:
            raise KeyError(f.name)
    values["tier"] = Tier.parse(values["tier"])
    values["labels"] = dict(values["labels"])
    values["samples"] = tuple((str(a), b) for a, b in values.get("samples", ()))
    values["handover"] = bool(values.get("handover"))
    if "extra" in values:
        values["extra"] = dict(values["extra"] or {})
    return AlertView(**values)


def alert_payload(v: AlertView, base_url: str) -> AlertPayload:
    """One alert in Alertmanager's webhook shape: labels `alertname` (the rule), `severity` (the tier)
    and the series labels (`type`, `channel`), plus Sentinel's `rule` and `tier`; `endsAt` is Alertmanager's
    zero time while the alert fires."""
    labels: Mapping[str, str] = {
        "alertname": v.rule,
        "severity": v.tier.label,
        **v.labels,
        "rule": v.rule,
        "tier": v.tier.label,
    }
    annotations = {
        "summary": f"{v.rule} {' '.join(f'{k}={x}' for k, x in v.labels.items())}",
        "value": str(v.value),
        "baseline": "" if v.baseline is None else str(v.baseline),
        "instance": v.instance,
    }
    if v.projected is not None:  # the day's expected final count at this pace (threshold, day mode)
        annotations["projected"] = str(v.projected)
    if v.expected is not None:  # quiet: the complaints normally seen in the silence
        annotations["expected"] = str(v.expected)
    resolved = v.state == "resolved"
    return AlertPayload(
        status="resolved" if resolved else "firing",
        labels=dict(labels),
        annotations=annotations,
        starts_at=v.started.isoformat(),
        ends_at=v.at.isoformat() if resolved else "0001-01-01T00:00:00Z",
        fingerprint=v.fingerprint,
        generator_url=f"{base_url}/#alert-{v.instance}",
    )
