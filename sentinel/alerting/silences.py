"""Silences: label matchers with a time window, in Alertmanager's JSON so people's habits carry over.

A silenced alert is still detected, recorded and shown; it is only not sent (nor repeated or
escalated) while an active silence matches it. `Silencer` is the mute stage: the silences active at
one moment, asked of each alert (a pending silence holds nothing yet, an expired one nothing any more).

A silence is matched against the alert's labels (its series labels plus `rule`, `kind` and `tier`) and
against Alertmanager's names for two of them, `alertname` (the rule) and `severity` (the tier), so a
silence written with amtool or Grafana (`alertname=type-surge`) holds the same alerts as one written
with Sentinel's names (`rule=type-surge`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, RowMapping, insert, select
from sqlalchemy import update as update_

from sentinel.alerting.routing import labels_of
from sentinel.model import JsonObject, from_datetime, to_datetime
from sentinel.store.alerts import StoredAlert
from sentinel.store.schema import silences


@dataclass(frozen=True, slots=True)
class SilenceMatcher:
    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def __call__(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        hit = bool(re.fullmatch(self.value, v)) if self.is_regex else v == self.value
        return hit if self.is_equal else not hit

    def to_json(self) -> JsonObject:
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[SilenceMatcher, ...]
    starts_us: int
    ends_us: int
    created_by: str
    comment: str
    updated_us: int

    def state(self, now_us: int) -> str:
        if now_us >= self.ends_us:
            return "expired"
        return "pending" if now_us < self.starts_us else "active"

    def matches(self, labels: Mapping[str, str]) -> bool:
        seen = matchable(labels)
        return all(m(seen) for m in self.matchers)

    def to_api(self, tz: ZoneInfo, now_us: int) -> JsonObject:
        return {
            "id": self.id,
            "matchers": [m.to_json() for m in self.matchers],
            "startsAt": to_datetime(self.starts_us, tz).isoformat(),
            "endsAt": to_datetime(self.ends_us, tz).isoformat(),
            "updatedAt": to_datetime(self.updated_us, tz).isoformat(),
            "createdBy": self.created_by,
            "comment": self.comment,
            "status": {"state": self.state(now_us)},
        }


class SilenceError(ValueError):
    pass


ALIASES = {"alertname": "rule", "severity": "tier"}
"""Alertmanager's label name -> Sentinel's, for the same fact about an alert."""


def matchable(labels: Mapping[str, str]) -> Mapping[str, str]:
    """`labels` plus the Alertmanager names of its rule and tier (see the module's docstring)."""
    extra = {am: labels[own] for am, own in ALIASES.items() if own in labels and am not in labels}
    return {**labels, **extra} if extra else labels


def _time(value: object, what: str) -> int:
    if not isinstance(value, str):
        raise SilenceError(f"{what} must be an RFC 3339 time")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SilenceError(f"{what}: {value[:40]!r} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise SilenceError(f"{what} needs a time zone offset")
    return from_datetime(dt)


def parse(body: object, now_us: int) -> tuple[tuple[SilenceMatcher, ...], int, int, str, str]:
    """Validate Alertmanager's silence JSON; errors say which field and why."""
    if not isinstance(body, dict):
        raise SilenceError("expected a JSON object")
    raw = body.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise SilenceError("matchers: at least one matcher is required")
    matchers = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("value"), str):
            raise SilenceError(f"matchers[{i}]: needs string name and value")
        is_regex = bool(m.get("isRegex", False))
        if is_regex:
            try:
                re.compile(m["value"])
            except re.error as exc:
                raise SilenceError(f"matchers[{i}].value: bad regular expression: {exc}") from None
        matchers.append(SilenceMatcher(m["name"], m["value"], is_regex, bool(m.get("isEqual", True))))
    starts = _time(body["startsAt"], "startsAt") if body.get("startsAt") else now_us
    if "endsAt" not in body:
        raise SilenceError("endsAt is required")
    ends = _time(body["endsAt"], "endsAt")
    if ends <= starts:
        raise SilenceError("endsAt must be after startsAt")
    if ends <= now_us:
        raise SilenceError("endsAt is in the past")
    created_by = str(body.get("createdBy") or "").strip()
    comment = str(body.get("comment") or "").strip()
    if not created_by:
        raise SilenceError("createdBy is required")
    if not comment:
        raise SilenceError("comment is required (say why, for the next person on call)")
    return tuple(matchers), starts, ends, created_by[:200], comment[:2000]


def add(
    conn: Connection,
    matchers: Sequence[SilenceMatcher],
    starts_us: int,
    ends_us: int,
    created_by: str,
    comment: str,
    now_us: int,
) -> str:
    sid = str(uuid.uuid4())
    conn.execute(
        insert(silences).values(
            id=sid,
            matchers=_matchers_json(matchers),
            starts_us=starts_us,
            ends_us=ends_us,
            created_by=created_by,
            comment=comment,
            created_us=now_us,
            updated_us=now_us,
        )
    )
    return sid


def expire(conn: Connection, sid: str, now_us: int) -> bool:
    """Ends a silence now; False when there is no such silence or it has already ended. A pending one
    starts now too, so it never shows an end before its start."""
    row = conn.execute(select(silences.c.starts_us, silences.c.ends_us).where(silences.c.id == sid)).first()
    if row is None or row[1] <= now_us:
        return False
    conn.execute(
        update_(silences)
        .where(silences.c.id == sid)
        .values(starts_us=min(row[0], now_us), ends_us=now_us, updated_us=now_us)
    )
    return True


def update(
    conn: Connection,
    sid: str,
    matchers: Sequence[SilenceMatcher],
    starts_us: int,
    ends_us: int,
    created_by: str,
    comment: str,
    now_us: int,
) -> str:
    """Change silence `sid` as Alertmanager does, returning the id that now carries it. With the same
    matchers it changes in place while pending (a new start, not in the past, and end) or while active
    with the same start (a longer or shorter end, a new comment); otherwise the old one is expired (if it
    has not ended) and a new silence with a new id is made, so what a silence held stays on record as it
    was. Raises KeyError for an unknown id."""
    prev = get(conn, sid)
    if prev is None:
        raise KeyError(sid)
    state = prev.state(now_us)
    same = tuple(matchers) == prev.matchers
    in_place = same and (
        (state == "pending" and starts_us >= now_us)
        or (state == "active" and abs(starts_us - prev.starts_us) < 1000 and ends_us > now_us)
    )  # ms on the wire
    if in_place:
        conn.execute(
            update_(silences)
            .where(silences.c.id == sid)
            .values(
                matchers=_matchers_json(matchers),
                starts_us=prev.starts_us if state == "active" else starts_us,
                ends_us=ends_us,
                created_by=created_by,
                comment=comment,
                updated_us=now_us,
            )
        )
        return sid
    if state != "expired":
        expire(conn, sid, now_us)
    return add(conn, matchers, max(starts_us, now_us), ends_us, created_by, comment, now_us)


def get(conn: Connection, sid: str) -> Silence | None:
    row = conn.execute(select(silences).where(silences.c.id == sid)).mappings().first()
    return None if row is None else _silence(row)


def load(conn: Connection, *, include_expired_after_us: int | None = None) -> list[Silence]:
    q = select(silences)
    if include_expired_after_us is not None:
        q = q.where(silences.c.ends_us > include_expired_after_us)
    return [_silence(r) for r in conn.execute(q.order_by(silences.c.created_us)).mappings()]


def _silence(r: RowMapping) -> Silence:
    ms = tuple(
        SilenceMatcher(m["name"], m["value"], bool(m.get("isRegex")), bool(m.get("isEqual", True)))
        for m in json.loads(r["matchers"])
    )
    return Silence(r["id"], ms, r["starts_us"], r["ends_us"], r["created_by"], r["comment"], r["updated_us"])


def _matchers_json(matchers: Sequence[SilenceMatcher]) -> str:
    return json.dumps([m.to_json() for m in matchers], ensure_ascii=False)


def silenced_by(active: Sequence[Silence], labels: Mapping[str, str], now_us: int) -> Silence | None:
    for s in active:
        if s.state(now_us) == "active" and s.matches(labels):
            return s
    return None


class Silencer:
    """A Muter: the silences at `now_us`; `mutes` names the first active one (oldest first) that matches."""

    def __init__(self, loaded: Iterable[Silence], now_us: int) -> None:
        self.now_us = now_us
        self.active = [s for s in loaded if s.state(now_us) == "active"]

    @classmethod
    def load(cls, conn: Connection, now_us: int) -> Silencer:
        return cls(load(conn, include_expired_after_us=now_us), now_us)

    def mutes(self, alert: StoredAlert) -> str | None:
        s = silenced_by(self.active, labels_of(alert), self.now_us)
        return None if s is None else s.id

    def all_muting(self, alert: StoredAlert) -> tuple[str, ...]:
        """Every active silence that matches (Alertmanager's `silencedBy` lists them all)."""
        labels = labels_of(alert)
        return tuple(s.id for s in self.active if s.matches(labels))
