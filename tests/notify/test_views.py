"""Views round-trip through their one codec: what the dispatcher queues is what the worker renders, every
field of `AlertView` included, in the reader's zone; a stored event's payload reads into the same view."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from sentinel.model import Event, EventState, Tier, from_datetime
from sentinel.notify.views import AlertView, view_from_event, view_from_json, view_to_json

SH = ZoneInfo("Asia/Shanghai")
text = st.text(min_size=1, max_size=12)
maybe_float = st.none() | st.floats(allow_nan=False, allow_infinity=False)
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))

views = st.builds(
    AlertView,
    rule=text,
    kind=st.sampled_from(["threshold", "streak"]),
    state=st.sampled_from(["firing", "upgraded", "resolved"]),
    tier=st.sampled_from(list(Tier)),
    labels=st.dictionaries(st.sampled_from(["type", "channel"]), text),
    value=st.floats(0, 1e6),
    baseline=maybe_float,
    ratio=maybe_float,
    started=instants,
    at=instants,
    instance=text,
    fingerprint=text,
    p=maybe_float,
    mode=st.none() | st.sampled_from(["day", "pace", "rolling"]),
    length=st.none() | st.integers(1, 50),
    chance=maybe_float,
    expected_per_day=maybe_float,
    peak=maybe_float,
    duration_s=st.none() | st.integers(0, 10**6),
    reason=st.none() | text,
    samples=st.lists(st.tuples(text, st.none() | text), max_size=5).map(tuple),
    ack_url=st.none() | text,
    handover=st.booleans(),
    extra=st.dictionaries(text, st.integers() | text, max_size=3),
)


@given(views)
def test_every_field_of_a_view_round_trips_through_json(v: AlertView) -> None:
    back = view_from_json(json.loads(json.dumps(view_to_json(v))), SH)
    assert back == v
    assert back.started.tzinfo == SH and back.at.tzinfo == SH  # in the reader's zone
    assert set(view_to_json(v)) == {f.name for f in fields(AlertView)}


def test_a_view_written_before_a_field_existed_reads_with_its_default() -> None:
    now = datetime(2025, 7, 8, 14, 3, tzinfo=SH)
    v = AlertView(
        rule="r",
        kind="streak",
        state="firing",
        tier=Tier.LIGHT,
        labels={"type": "服务态度"},
        value=5.0,
        baseline=None,
        ratio=None,
        started=now,
        at=now,
        instance="i",
        fingerprint="f",
        length=5,
    )
    old = {k: x for k, x in view_to_json(v).items() if k not in ("handover", "extra", "expected_per_day")}
    assert view_from_json(old, SH) == v


def test_a_stored_event_reads_into_the_view_it_describes() -> None:
    started = datetime(2025, 7, 8, 13, 40, tzinfo=SH)
    e = Event(
        at=from_datetime(started + timedelta(minutes=23)),
        rule="type-surge",
        kind="threshold",
        state=EventState.UPGRADED,
        tier=Tier.SEVERE,
        labels={"type": "物流配送延误"},
        value=312.0,
        baseline=100.0,
        ratio=3.12,
        fingerprint="fp",
        instance="inst",
        started=from_datetime(started),
        p=1e-9,
        extra={"mode": "day", "samples": ["a/1", 7], "peak": 312.0, "runs_observed": 3},
    )
    payload = {**e.to_json(SH), "at_us": e.at, "started_us": e.started}
    v = view_from_event(json.loads(json.dumps(payload)), UTC, record_url="https://crm/{id}", ack_url="https://ack")
    assert v == AlertView(
        rule="type-surge",
        kind="threshold",
        state="upgraded",
        tier=Tier.SEVERE,
        labels={"type": "物流配送延误"},
        value=312.0,
        baseline=100.0,
        ratio=3.12,
        started=started,
        at=started + timedelta(minutes=23),
        instance="inst",
        fingerprint="fp",
        p=1e-9,
        mode="day",
        peak=312.0,
        ack_url="https://ack",
        samples=(("a/1", "https://crm/a%2F1"), ("7", "https://crm/7")),
    )
    assert v.at.tzinfo == UTC
    assert view_from_json(view_to_json(v), SH) == v
