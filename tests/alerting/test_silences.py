"""Silences under Alertmanager's names and its update rules, through the real dispatcher and store with a
moved clock: `alertname` and `severity` hold like `rule` and `tier`; an update changes a silence in place
or replaces it as Alertmanager does; expiring a pending silence leaves no end before its start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.alerting import silences
from sentinel.alerting.silences import SilenceMatcher
from sentinel.model import US, from_datetime
from sentinel.store import Store
from tests.alerting.builders import RECEIVERS, T0, Alerts, config, dispatcher, messages, open_test_store, seconds, step

L = "物流配送延误"
NOW = from_datetime(T0)
HOUR = 3600 * US


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_test_store(tmp_path)
    yield s
    s.close()


@pytest.mark.parametrize(("matcher", "held"), [
    (SilenceMatcher("alertname", "surge"), True),
    (SilenceMatcher("alertname", "surge", is_equal=False), False),
    (SilenceMatcher("alertname", "su.*", is_regex=True), True),
    (SilenceMatcher("severity", "light"), True),
    (SilenceMatcher("severity", "moderate|severe", is_regex=True), False),
    (SilenceMatcher("severity", "severe", is_equal=False), True),
])
def test_alertmanager_names_hold_like_sentinels(tmp_path: Path, store: Store, matcher: SilenceMatcher,
                                                held: bool) -> None:
    cfg = config(tmp_path, RECEIVERS)
    d = dispatcher(cfg)
    with store.transaction() as conn:
        silences.add(conn, [matcher], NOW, NOW + HOUR, "ops", "amtool", NOW)
    Alerts(store, cfg.tz).event("firing", "surge", L, "light", T0)
    step(d, store, T0 + seconds(3))
    assert (messages(store) == []) is held


def test_an_own_label_named_like_an_alias_wins() -> None:
    assert silences.matchable({"rule": "surge", "tier": "light"}) == {"rule": "surge", "tier": "light",
                                                                      "alertname": "surge", "severity": "light"}
    assert silences.matchable({"alertname": "mine", "rule": "surge"})["alertname"] == "mine"


def test_update_in_place_or_replaced_as_alertmanager_does(store: Store) -> None:
    by_type = (SilenceMatcher("type", L),)
    with store.transaction() as conn:
        active = silences.add(conn, by_type, NOW, NOW + HOUR, "ops", "first", NOW)
        later = NOW + 60 * US
        # active, same matchers and start (as sent back in milliseconds): changed in place
        assert silences.update(conn, active, by_type, NOW + 400, NOW + 2 * HOUR, "ops", "longer", later) == active
        s = silences.get(conn, active)
        assert s is not None and (s.starts_us, s.ends_us, s.comment, s.updated_us) == (NOW, NOW + 2 * HOUR,
                                                                                       "longer", later)
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
