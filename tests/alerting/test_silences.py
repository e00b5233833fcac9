"""Silences: what a silence body must say (parsed as Alertmanager's JSON), when a silence is active and what
it matches, as units; and through the real dispatcher and store with a moved clock: `alertname` and
`severity` hold like `rule` and `tier`; an update changes a silence in place or replaces it as
Alertmanager does; expiring a pending silence leaves no end before its start."""

from __future__ import annotations

import pytest

from sentinel.alerting import silences
from sentinel.alerting.silences import SilenceError, SilenceMatcher
from sentinel.model import US, from_datetime
from sentinel.store import Store
from tests.alerting.builders import RECEIVERS, T0, seconds
from tests.alerting.conftest import MakeDesk

L = "物流配送延误"
NOW = from_datetime(T0)
HOUR = 3600 * US


@pytest.mark.parametrize(
    ("matcher", "held"),
    [
        (SilenceMatcher("alertname", "surge"), True),
        (SilenceMatcher("alertname", "surge", is_equal=False), False),
        (SilenceMatcher("alertname", "su.*", is_regex=True), True),
        (SilenceMatcher("severity", "light"), True),
        (SilenceMatcher("severity", "moderate|severe", is_regex=True), False),
        (SilenceMatcher("severity", "severe", is_equal=False), True),
    ],
)
def test_alertmanager_names_hold_like_sentinels(desk: MakeDesk, matcher: SilenceMatcher, held: bool) -> None:
    d = desk(RECEIVERS)
    with d.store.transaction() as conn:
        silences.add(conn, [matcher], NOW, NOW + HOUR, "ops", "amtool", NOW)
    d.event("firing", "surge", L, "light", T0)
    d.step(T0 + seconds(3))
    assert (d.messages() == []) is held


def test_an_own_label_named_like_an_alias_wins() -> None:
    assert silences.matchable({"rule": "surge", "tier": "light"}) == {
        "rule": "surge",
        "tier": "light",
        "alertname": "surge",
        "severity": "light",
    }
    assert silences.matchable({"alertname": "mine", "rule": "surge"})["alertname"] == "mine"


def test_update_in_place_or_replaced_as_alertmanager_does(store: Store) -> None:
    by_type = (SilenceMatcher("type", L),)
    with store.transaction() as conn:
        active = silences.add(conn, by_type, NOW, NOW + HOUR, "ops", "first", NOW)
        later = NOW + 60 * US
        # active, same matchers and start (as sent back in milliseconds): changed in place
        assert silences.update(conn, active, by_type, NOW + 400, NOW + 2 * HOUR, "ops", "longer", later) == active
        s = silences.get(conn, active)
        assert s is not None and (s.starts_us, s.ends_us, s.comment, s.updated_us) == (
            NOW,
            NOW + 2 * HOUR,
            "longer",
            later,
        )
        # active, other matchers: the old one expires now, a new one carries on
        other = (SilenceMatcher("type", "服务态度"),)
        new = silences.update(conn, active, other, NOW, NOW + 2 * HOUR, "ops", "other type", later)
        assert new != active
        old = silences.get(conn, active)
        assert old is not None and old.state(later) == "expired" and old.ends_us == later
        replacement = silences.get(conn, new)
        assert replacement is not None and replacement.matchers == other and replacement.starts_us == later
        # pending: a new start and end in place; other matchers replace it
        pending = silences.add(conn, by_type, NOW + HOUR, NOW + 2 * HOUR, "ops", "tonight", later)
        assert silences.update(conn, pending, by_type, NOW + 3 * HOUR, NOW + 4 * HOUR, "ops", "later", later) == pending
        p = silences.get(conn, pending)
        assert p is not None and (p.starts_us, p.ends_us, p.state(later)) == (NOW + 3 * HOUR, NOW + 4 * HOUR, "pending")
        moved = silences.update(conn, pending, other, NOW + 3 * HOUR, NOW + 4 * HOUR, "ops", "other", later)
        assert moved != pending
        gone = silences.get(conn, pending)
        assert gone is not None and gone.state(later) == "expired" and gone.starts_us <= gone.ends_us
        # expired: never revived; a new silence instead
        again = silences.update(conn, active, by_type, later, NOW + HOUR, "ops", "again", later)
        assert again not in (active, new)
        with pytest.raises(KeyError):
            silences.update(conn, "no-such-id", by_type, later, NOW + HOUR, "ops", "x", later)


def test_expiring_a_pending_silence_starts_and_ends_it_now(store: Store) -> None:
    with store.transaction() as conn:
        sid = silences.add(conn, (SilenceMatcher("type", L),), NOW + HOUR, NOW + 2 * HOUR, "ops", "tonight", NOW)
        assert silences.expire(conn, sid, NOW + 60 * US)
        s = silences.get(conn, sid)
        assert s is not None and s.starts_us == s.ends_us == NOW + 60 * US and s.state(NOW + 60 * US) == "expired"
        assert not silences.expire(conn, sid, NOW + 61 * US)  # already ended


# --- units: the body, the state, the match ------------------------------------------------------------


def body(**kw: object) -> dict[str, object]:
    """A valid silence body, with `kw` replacing (None: removing) its fields."""
    out: dict[str, object] = {
        "matchers": [{"name": "type", "value": L}],
        "startsAt": "2025-07-08T02:00:00Z",
        "endsAt": "2025-07-08T03:00:00+00:00",
        "createdBy": "ops",
        "comment": "deploy",
    }
    for k, v in kw.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


def test_a_valid_body_parses_to_its_matchers_window_and_authorship() -> None:
    ms, starts, ends, by, comment = silences.parse(
        body(
            matchers=[
                {"name": "type", "value": "物流.*", "isRegex": True},
                {"name": "tier", "value": "light", "isEqual": False},
            ]
        ),
        NOW,
    )
    assert ms == (SilenceMatcher("type", "物流.*", True, True), SilenceMatcher("tier", "light", False, False))
    assert (starts, ends, by, comment) == (NOW, NOW + HOUR, "ops", "deploy")
    # no start: it starts now
    assert silences.parse(body(startsAt=None), NOW + 60 * US)[1] == NOW + 60 * US


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"matchers": []}, "matchers: at least one matcher is required"),
        ({"matchers": [{"name": "type"}]}, "matchers[0]: needs string name and value"),
        ({"matchers": [{"name": "type", "value": "(", "isRegex": True}]}, "matchers[0].value: bad regular expression"),
        ({"endsAt": None}, "endsAt is required"),
        ({"endsAt": "tomorrow"}, "endsAt: 'tomorrow' is not an RFC 3339 time"),
        ({"endsAt": "2025-07-08T03:00:00"}, "endsAt needs a time zone offset"),
        ({"endsAt": "2025-07-08T02:00:00Z"}, "endsAt must be after startsAt"),
        ({"startsAt": "2025-07-08T00:00:00Z", "endsAt": "2025-07-08T01:00:00Z"}, "endsAt is in the past"),
        ({"createdBy": " "}, "createdBy is required"),
        ({"comment": None}, "comment is required"),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SilenceError) as err:
        silences.parse(body(**fields), NOW)
    assert str(err.value).startswith(message)


def test_not_an_object_is_refused() -> None:
    with pytest.raises(SilenceError, match="expected a JSON object"):
        silences.parse([], NOW)


def test_a_silence_is_pending_then_active_then_expired_at_its_bounds() -> None:
    s = silences.Silence("id", (SilenceMatcher("type", L),), NOW, NOW + HOUR, "ops", "deploy", NOW)
    assert [s.state(t) for t in (NOW - 1, NOW, NOW + HOUR - 1, NOW + HOUR)] == [
        "pending",
        "active",
        "active",
        "expired",
    ]


def test_matchers_all_hold_regexes_match_whole_values_and_a_missing_label_is_empty() -> None:
    both = silences.Silence(
        "id",
        (SilenceMatcher("type", "物流.*", is_regex=True), SilenceMatcher("channel", "电话")),
        NOW,
        NOW + HOUR,
        "ops",
        "x",
        NOW,
    )
    assert both.matches({"type": L, "channel": "电话"})
    assert not both.matches({"type": L, "channel": "网站"})
    assert not both.matches({"type": "x" + L, "channel": "电话"})  # fully matched, not searched
    absent = silences.Silence("id", (SilenceMatcher("channel", ""),), NOW, NOW + HOUR, "ops", "x", NOW)
    assert absent.matches({"type": L}) and not absent.matches({"channel": "电话"})


def test_a_stored_silence_reads_back_as_written(store: Store) -> None:
    ms = (SilenceMatcher("type", L), SilenceMatcher("tier", "severe", is_equal=False))
    with store.transaction() as conn:
        sid = silences.add(conn, ms, NOW, NOW + HOUR, "ops", "夜间维护", NOW)
        later = silences.add(conn, ms[:1], NOW + HOUR, NOW + 2 * HOUR, "ops", "later", NOW + 1)
        gone = silences.add(conn, ms[:1], NOW, NOW + 60 * US, "ops", "short", NOW + 2)
    with store.reading() as conn:
        s = silences.get(conn, sid)
        assert s == silences.Silence(sid, ms, NOW, NOW + HOUR, "ops", "夜间维护", NOW)
        assert [x.id for x in silences.load(conn)] == [sid, later, gone]  # oldest first
        assert [x.id for x in silences.load(conn, include_expired_after_us=NOW + 60 * US)] == [sid, later]
        assert silences.get(conn, "no-such-id") is None
