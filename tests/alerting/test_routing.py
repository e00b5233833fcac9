"""Routes as units: matchers (exact, fully matched regular expressions, lists), the order of routes and
`continue`, the implicit route, and group keys."""

from __future__ import annotations

from pathlib import Path

from sentinel.alerting.routing import IMPLICIT, Router, alert_labels, compile_matchers, labels_of, matches
from sentinel.model import Tier
from tests.alerting.builders import RECEIVERS, config, stored

L = "物流配送延误"


def test_matchers_exact_regex_and_lists() -> None:
    ms = compile_matchers({"type": ["服务态度", "~物流.*"], "tier": "severe"})
    assert matches(ms, {"type": L, "tier": "severe"})
    assert matches(ms, {"type": "服务态度", "tier": "severe"})
    assert not matches(ms, {"type": L, "tier": "light"})
    assert not matches(ms, {"type": "快递" + L, "tier": "severe"})  # a pattern matches the whole value
    assert not matches(ms, {"tier": "severe"})  # a missing label is empty
    assert matches(compile_matchers({"channel": "~"}), {"type": L})  # "" fully matches the empty pattern
    assert matches((), {"type": L})  # no matchers: everything


def test_an_alert_is_routed_on_its_series_labels_rule_kind_and_tier() -> None:
    a = stored("type-surge", {"type": L, "channel": "电话"}, Tier.MODERATE, kind="streak")
    assert labels_of(a) == {"type": L, "channel": "电话", "rule": "type-surge", "kind": "streak", "tier": "moderate"}
    # the alert's own facts win over series labels of the same name
    assert alert_labels("r", "threshold", "light", {"rule": "x", "type": L})["rule"] == "r"


ROUTES = (
    RECEIVERS
    + """
[[routes]]
match = { tier = "severe" }
receivers = ["crisis"]
continue = true

[[routes]]
match = { type = "~物流.*" }
receivers = ["cs-team"]
group_by = ["rule", "type"]

[[routes]]
receivers = ["cs-team", "crisis"]
"""
)


def test_the_first_matching_route_wins_unless_it_continues(tmp_path: Path) -> None:
    router = Router(config(tmp_path, ROUTES))

    def indexes(**labels: str) -> list[int]:
        return [r.index for r in router.route({"rule": "surge", **labels})]

    assert indexes(type=L, tier="light") == [1]
    assert indexes(type=L, tier="severe") == [0, 1]  # continue = true, then the next match stops
    assert indexes(type="服务态度", tier="severe") == [0, 2]
    assert indexes(type="服务态度", tier="light") == [2]
    assert router.get(1) is router.routes[1] and router.get(7) is None


def test_without_routes_one_implicit_route_tells_every_receiver(tmp_path: Path) -> None:
    router = Router(config(tmp_path, RECEIVERS))
    [only] = router.route({"type": L})
    assert only.index == IMPLICIT and only.cfg.receivers == ["cs-team", "crisis"]
    assert router.get(IMPLICIT) is only


def test_group_keys_follow_group_by_and_the_route(tmp_path: Path) -> None:
    router = Router(config(tmp_path, ROUTES))
    by_type, last = router.routes[1], router.routes[2]
    key, glabels = by_type.group_key({"rule": "surge", "type": L, "channel": "电话"})
    assert glabels == {"rule": "surge", "type": L}
    assert key == by_type.group_key({"type": L, "rule": "surge", "channel": "网站"})[0]  # other labels don't count
    assert key != by_type.group_key({"rule": "surge", "type": "物流"})[0]
    # the same labels under another route are another group; a missing group_by label groups as empty
    assert last.group_key({"rule": "surge", "type": L})[0] != by_type.group_key({"rule": "surge", "type": L})[0]
    assert by_type.group_key({"rule": "surge"})[1] == {"rule": "surge", "type": ""}
    assert len(key) == 24
