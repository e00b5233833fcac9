"""The status page over a real daemon: a SQLite CRM and store, polled with a stepped clock, the page
read through the daemon's WSGI app (and once through its real HTTP server)."""

from __future__ import annotations

import io
import json
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from sentinel.clock import ManualClock
from sentinel.detect.threshold import ThresholdRule
from sentinel.http import App, Server
from sentinel.store.schema import alerts
from sentinel.web import status_page
from tests.web.builders import (
    IMG,
    NOW,
    OTHER,
    PHONE,
    SCRIPT,
    Crm,
    Scene,
    T,
    drain,
    open_daemon,
    open_instance,
    scene,
    write_config,
)
from tests.web.parse import Element, badges, by_id, parse

TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "header",
    "h1",
    "h2",
    "h3",
    "span",
    "div",
    "main",
    "section",
    "p",
    "article",
    "a",
    "b",
    "code",
    "table",
    "tr",
    "th",
    "td",
    "svg",
    "line",
    "text",
    "rect",
    "path",
    "g",
    "form",
    "label",
    "select",
    "option",
    "button",
}


def call(app: App, path: str = "/", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(status.split(maxsplit=1)[0]), dict(headers)

    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "wsgi.input": io.BytesIO(b"")}
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def page(world: Scene, path: str = "/") -> str:
    status, headers, body = call(world.daemon.app, path)
    assert status == 200, body[:500]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    return body.decode("utf-8")


def open_rows(world: Scene) -> list[dict[str, Any]]:
    with world.daemon.store.reading() as conn:
        return [dict(r) for r in conn.execute(select(alerts).where(alerts.c.status == "open")).mappings()]


def article(root: Element, rule: str, type_: str, channel: str | None = None, *, world: Scene) -> Element:
    return by_id(root, "alert-" + open_instance(world.daemon, rule, type_, channel))


# --- safety ------------------------------------------------------------------------------------------


def test_no_script_can_run_and_the_browser_is_told_so(world: Scene) -> None:
    status, headers, body = call(world.daemon.app)
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # scripts fall back to 'none'
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    html = body.decode("utf-8")
    assert '<meta http-equiv="refresh" content="30">' in html
    for el in parse(html).walk()[1:]:
        assert el.tag in TAGS, f"unexpected element <{el.tag}>"
        assert not any(a.startswith("on") for a in el.attrs), f"event handler on <{el.tag}>: {el.attrs}"
        assert not el.attrs.get("href", "#").lower().lstrip().startswith("javascript")


def test_hostile_type_names_and_texts_stay_text(world: Scene) -> None:
    html = page(world)
    for raw in (SCRIPT, IMG, "<img src=y>", "<i>ops</i>", "<b>Li</b>", "<img src=x onerror=alert(2)>"):
        assert raw not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    root = parse(html)
    texts = {e.all_text() for e in root.find_all("b", "lv")}
    assert {SCRIPT, IMG, T} <= texts  # what people read is the type name, exactly
    titles = [e.all_text() for e in root.find_all("title")]
    assert any(SCRIPT in t for t in titles)  # the chart titles too, as text
    assert not root.find_all("img") and not root.find_all("script")


# --- open alerts -------------------------------------------------------------------------------------


def test_open_alerts_by_tier_most_severe_first(world: Scene) -> None:
    root = parse(page(world))
    heads = [next(iter(h.classes)) for h in root.find_all("h3")]
    assert heads == ["tier-severe", "tier-moderate", "tier-light"]
    order = {"severe": 3, "moderate": 2, "light": 1}
    tiers = [order[next(c for c in a.classes if c.startswith("tier-"))[5:]] for a in root.find_all("article")]
    assert tiers == sorted(tiers, reverse=True) and len(tiers) == len(open_rows(world)) == 9
    header = root.find_all("header")[0].all_text()
    assert "9 open alerts: 5 severe, 2 moderate, 2 light" in " ".join(header.split())


def test_every_open_alert_has_its_anchor(world: Scene) -> None:
    html = page(world)
    for row in open_rows(world):
        assert html.count(f'id="alert-{row["instance"]}"') == 1
        assert f'href="#alert-{row["instance"]}"' in html  # a permalink people can paste


def test_badges_tell_what_holds_each_alert_back(world: Scene) -> None:
    root = parse(page(world))

    def held(rule: str, type_: str, channel: str | None = None) -> set[str]:
        return badges(article(root, rule, type_, channel, world=world))

    assert held("type-surge", T) == {"acknowledged"}
    assert held("type-channel-surge", T, PHONE) == {"inhibited"}
    assert held("type-surge", IMG) == {"silenced"}
    assert held("type-channel-surge", IMG) == {"silenced", "inhibited"}
    assert held("type-surge", SCRIPT) == set()
    assert held("streak", T) == {"muted"}
    assert held("streak", IMG) == {"silenced", "muted"}
    ack = article(root, "type-surge", T, world=world).all_text()
    assert "acknowledged by 值班 <b>Li</b>" in ack  # who, shown as text
    inhibited = article(root, "type-channel-surge", T, PHONE, world=world)
    link = next(b for b in inhibited.find_all(cls="badge-inhibited"))
    assert link.attrs["href"] == "#alert-" + open_instance(world.daemon, "type-surge", T)


def test_badges_agree_with_the_alerts_api(world: Scene) -> None:
    status, _h, body = call(world.daemon.app, "/api/v1/alerts")
    assert status == 200
    flags = {
        a["instance"]: {k for k in ("silenced", "inhibited", "acknowledged", "muted") if a[k]}
        for a in json.loads(body)
        if a["state"] == "open"
    }
    assert len(flags) == 9
    root = parse(page(world))
    assert {inst: badges(by_id(root, "alert-" + inst)) for inst in flags} == flags


def test_value_against_baseline(world: Scene) -> None:
    root = parse(page(world))
    facts = " ".join(article(root, "type-surge", T, world=world).find_all("p", "facts")[0].all_text().split())
    assert facts.startswith("61 vs baseline 40 (× 1.52) at its last change")
    assert facts.endswith("69 today so far")  # 61 new + 8 of the last history day after local midnight
    new = " ".join(article(root, "type-surge", SCRIPT, world=world).find_all("p", "facts")[0].all_text().split())
    assert new.startswith("15 vs baseline 0 (new: no history)")
    streak = " ".join(article(root, "streak", T, world=world).find_all("p", "facts")[0].all_text().split())
    assert streak.startswith("run of 12 in a row")


def test_chart_of_an_alerted_threshold_series_matches_the_rule(world: Scene) -> None:
    root = parse(page(world))
    svg = article(root, "type-surge", T, world=world).find_all("svg")
    assert len(svg) == 1
    bars = [r for r in svg[0].find_all("rect") if r.find_all("title")]
    # the backfill read 8 days before today: the chart has those and today, no zeros for days never read
    coverage = world.daemon.state.coverage_start_us if world.daemon.state is not None else None
    assert coverage is not None
    first = world.daemon.calendar.date_of(world.daemon.calendar.day_of(coverage))
    assert len(bars) == (NOW.date() - first).days + 1 < status_page.CHART_DAYS
    tips = [r.find_all("title")[0].all_text() for r in bars]
    # the detector's own view of the series today: the chart's last day must say the same
    engine = world.daemon.pipeline.detection.detector.engine
    rule = next(r for r in engine.rules if r.name == "type-surge")
    assert isinstance(rule, ThresholdRule)
    view = {
        json.dumps(lab, sort_keys=True): (cur, base)
        for lab, cur, base, _thr, _r in rule.series_view(engine.states[rule.name])
    }
    cur, base = view[json.dumps({"type": T})]
    assert tips[-1] == f"2025-07-08 (today so far): {int(cur)}, baseline {base:g}, threshold {1.5 * base:g}"
    assert tips[-2] == "2025-07-07: 40, baseline 40, threshold 60"
    assert tips[0].startswith(first.isoformat()) and tips[0].endswith("no baseline yet")  # the first day read
    assert all(not t.split(": ")[1].startswith("0,") for t in tips)
    paths = svg[0].find_all("path")
    assert len(paths) == 2 and {p.attrs.get("stroke-dasharray") for p in paths} == {"4 3", None}
    for rule_name, type_ in (("streak", T), ("streak", SCRIPT)):
        assert not article(root, rule_name, type_, world=world).find_all("svg")  # streaks have no chart


def test_charts_use_the_series_labels(world: Scene) -> None:
    root = parse(page(world))
    bars = [
        r
        for r in article(root, "type-channel-surge", SCRIPT, "官网客服", world=world).find_all("rect")
        if r.find_all("title")
    ]
    assert bars[-1].find_all("title")[0].all_text().startswith("2025-07-08 (today so far): 16,")
    assert all(b.find_all("title")[0].all_text().split(": ")[1].startswith("0") for b in bars[:-1])


# --- the other sections ------------------------------------------------------------------------------


def test_silences_receivers_and_source(world: Scene) -> None:
    root = parse(page(world))
    sil = root.find_all("section")[2]
    assert sil.attrs["id"] == "silences"
    row = sil.find_all("tr")[1]
    cells = [" ".join(td.all_text().split()) for td in row.find_all("td")]
    assert cells[0] == "type=" + json.dumps(IMG, ensure_ascii=False)
    assert cells[1] == "active" and cells[3] == "2025-07-08 19:00:02"
    assert cells[4:] == ["<i>ops</i>", 'known noise "><img src=y>']

    ops = [" ".join(td.all_text().split()) for td in by_id(root, "receiver-ops").find_all("td")]
    crisis = [" ".join(td.all_text().split()) for td in by_id(root, "receiver-crisis").find_all("td")]
    # receiver, kind, state, failures in a row, pending (oldest), next attempt, last error, last delivered,
    # recent permanent failures
    assert ops == ["ops", "webhook", "ok", "0", "1 (oldest 0 s)", "due now", "none", "2025-07-08 18:00:02", "none"]
    assert crisis[:6] == ["crisis", "webhook", "set aside", "1", "1 (oldest 0 s)", "due now"]
    assert crisis[6] == "HTTP 400: <img src=x onerror=alert(2)> rejected 2025-07-08 18:00:02"  # escaped: text
    assert crisis[7] == "nothing yet"
    assert "HTTP 400: <img src=x onerror=alert(2)> rejected" in crisis[8]
    banners = [" ".join(b.all_text().split()) for b in root.find_all("div", "banner")]
    assert banners == [
        "Receiver crisis is set aside: HTTP 400: <img src=x onerror=alert(2)> rejected — 1 message waiting, details"
    ]

    src = {
        tr.find_all("th")[0].all_text(): " ".join(tr.find_all("td")[0].all_text().split())
        for tr in by_id(root, "source").find_all("tr")
    }
    assert src["state"] == "up" and src["lag"] == "14 min (now − newest record)" and src["backfill"] == "done"
    assert src["source"].startswith("sqlite ") and src["source"].endswith("crm.db table complaints")
    assert "Dry run" not in page(world)


def test_source_down_is_a_banner(world: Scene) -> None:
    world.daemon.health.up = False
    world.daemon.health.last_error = "connection refused <b>db</b>"
    html = page(world)
    root = parse(html)
    banners = [" ".join(b.all_text().split()) for b in root.find_all("div", "banner")]
    assert banners[-1] == "Source down: connection refused <b>db</b>"
    assert [b for b in banners if b.startswith("Receiver ")] == banners[:-1]  # crisis, set aside


def test_recently_resolved(world: Scene) -> None:
    # July 9 never met the condition: day-mode alerts resolve at the 00:00 that ends it; the last run of
    # July 8 already ended by its pause (max_gap, 2 h by default), its streak alert an hour later
    world.crm.add(NOW + timedelta(hours=20), type_=OTHER, channel="微信公众号")  # 12:00 on July 9
    world.clock.set(NOW + timedelta(days=1, hours=7))  # 01:00 on July 10 in Shanghai
    world.daemon.cycle()
    root = parse(page(world))
    assert not root.find_all("article")
    rows = by_id(root, "resolved").find_all("tr")[1:]
    with world.daemon.store.reading() as conn:
        recent = conn.execute(
            select(alerts.c.instance, alerts.c.resolved_us)
            .where(alerts.c.status == "resolved")
            .order_by(alerts.c.resolved_us.desc())
        ).all()
    day_ago = int((NOW + timedelta(hours=7)).timestamp()) * 1_000_000
    # the streaks were broken (or paused past max_gap) on July 8 and resolved an hour later: more than 24 h ago
    assert len(recent) == 9 and len([r for r in recent if r[1] >= day_ago]) == 6
    assert [r.attrs["id"] for r in rows] == ["alert-" + r[0] for r in recent if r[1] >= day_ago]
    surge = by_id(root, "alert-" + _instance(world, "type-surge", T))
    cells = [" ".join(td.all_text().split()) for td in surge.find_all("td")]
    assert cells[0] == f"type {T}" and cells[1] == "type-surge" and cells[4] == "2025-07-10 00:00:00"
    assert cells[6] == "69"  # its peak: the day ended at 69


def _instance(world: Scene, rule: str, type_: str) -> str:
    with world.daemon.store.reading() as conn:
        for inst, labels in conn.execute(select(alerts.c.instance, alerts.c.labels).where(alerts.c.rule == rule)):
            if json.loads(labels) == {"type": type_}:
                return str(inst)
    raise AssertionError(rule)


def test_dry_run_banner_and_an_empty_page(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    daemon = open_daemon(write_config(tmp_path, crm), ManualClock(NOW), dry_run=True)
    try:
        drain(daemon)
        html = call(daemon.app)[2].decode("utf-8")
        root = parse(html)
        assert "nothing is sent" in by_id(root, "dry-run").all_text()
        assert "No open alerts." in html and "No active silences." in html
        assert "None in the last 24 hours." in html
    finally:
        daemon.stop()


def test_store_failure_is_shown_not_raised(world: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise OperationalError("SELECT 1", {}, Exception("disk I/O error"))

    monkeypatch.setattr(world.daemon.store, "reading", broken)
    status, _h, body = call(world.daemon.app)
    assert status == 200
    assert "state store unreachable: OperationalError" in body.decode("utf-8")


def test_head_and_a_second_register(world: Scene) -> None:
    status_page.register(world.daemon)  # already registered by the builder: no second route
    assert sum(1 for _m, rx, *_rest in world.daemon.app._routes if rx.pattern == "^/$") == 1
    status, headers, body = call(world.daemon.app, method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    assert call(world.daemon.app, method="POST")[0] == 405


def test_served_by_the_daemons_http_server(world: Scene) -> None:
    server = Server(world.daemon.app, "127.0.0.1:0")
    server.start()
    try:
        with urllib.request.urlopen(server.url + "/", timeout=10) as resp:
            assert resp.status == 200
            html = resp.read().decode("utf-8")
    finally:
        server.stop()
    inst = open_instance(world.daemon, "type-surge", T)
    assert f'id="alert-{inst}"' in html and OTHER not in parse(html).find_all("section")[0].all_text()


def test_many_alerts_cap_the_charts(world: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_page, "MAX_CHARTS", 2)
    root = parse(page(world))
    assert len(root.find_all("svg")) == 2
    charted = [a for a in root.find_all("article") if a.find_all("svg")]
    assert all("tier-severe" in a.classes for a in charted)  # most severe first
    assert "4 more alerted series without a chart" in " ".join(root.all_text().split())


def test_the_api_value_agrees_with_today_so_far(world: Scene) -> None:
    """The alert fired at 61 and the day went on to 69 without a new event: the API reports the series'
    count now, as the page's "today so far" and the detector do, and keeps the value of the last change."""
    status, _h, body = call(world.daemon.app, "/api/v1/alerts")
    assert status == 200
    listed = {a["instance"]: a for a in json.loads(body)}
    surge = listed[open_instance(world.daemon, "type-surge", T)]
    root = parse(page(world))
    facts = " ".join(article(root, "type-surge", T, world=world).find_all("p", "facts")[0].all_text().split())
    assert facts.endswith("69 today so far")
    assert surge["value"] == 69 and surge["valueAtLastChange"] == 61 and surge["peak"] == 69
    new = listed[open_instance(world.daemon, "type-surge", SCRIPT)]
    assert new["value"] == 16 and new["valueAtLastChange"] == 15
    streak = listed[open_instance(world.daemon, "streak", T)]
    assert streak["value"] == streak["valueAtLastChange"] == 12  # a run's length, not a count of the day
    status, _h, body = call(world.daemon.app, "/api/v2/alerts")
    assert status == 200
    v2 = {a["annotations"]["instance"]: a["annotations"] for a in json.loads(body)}
    assert v2[surge["instance"]]["value"] == "69" and v2[surge["instance"]]["peak"] == "69"


# --- filters -----------------------------------------------------------------------------------------


def shown(root: Element) -> list[tuple[str, str, str]]:
    """(tier, rule, type) of each open alert on the page."""
    out = []
    for a in root.find_all("article"):
        tier = next(c for c in a.classes if c.startswith("tier-"))[5:]
        rule = next(x.all_text() for x in a.find_all("a", "f") if x.all_text().startswith("rule "))
        types = [x.all_text() for x in a.find_all("b", "lv")]
        out.append((tier, rule.removeprefix("rule "), types[0]))
    return out


def test_filter_by_tier_rule_and_type_on_the_server(world: Scene) -> None:
    everything = shown(parse(page(world)))
    assert len(everything) == 9
    severe = parse(page(world, "/?tier=severe"))
    assert [x for x in everything if x[0] == "severe"] == shown(severe) and len(shown(severe)) == 5
    note = " ".join(by_id(severe, "filter-note").all_text().split())
    assert note == "showing 5 of 9 open alerts · show all"
    header = " ".join(severe.find_all("header")[0].all_text().split())
    assert "9 open alerts: 5 severe, 2 moderate, 2 light" in header  # the header still counts them all
    by_rule_type = parse(page(world, "/?" + urlencode({"rule": "streak", "type": T})))
    assert shown(by_rule_type) == [x for x in everything if x[1] == "streak" and x[2] == T] and shown(by_rule_type)
    # the type filter matches exactly, hostile names included, and what was asked is shown escaped
    hostile = page(world, "/?" + urlencode({"type": SCRIPT}))
    assert SCRIPT not in hostile
    assert {x[2] for x in shown(parse(hostile))} == {SCRIPT} and len(shown(parse(hostile))) == 3
    assert shown(parse(page(world, "/?tier=severe&rule=no-such-rule"))) == []
    assert "No open alerts." in page(world, "/?tier=severe&rule=no-such-rule")
    charts = parse(page(world, "/?rule=streak")).find_all("svg")
    assert charts == []  # streaks have no chart: the filter decides what is charted too


def test_filters_are_a_form_and_links(world: Scene) -> None:
    root = parse(page(world, "/?tier=light"))
    (form,) = root.find_all("form")
    assert form.attrs["method"] == "get" and form.attrs["action"] == "/"
    selects = {s.attrs["name"]: s for s in form.find_all("select")}
    assert set(selects) == {"tier", "rule", "type"}
    chosen = [o.attrs["value"] for o in selects["tier"].find_all("option") if "selected" in o.attrs]
    assert chosen == ["light"]
    rules = [o.attrs["value"] for o in selects["rule"].find_all("option")]
    assert rules == ["", "streak", "type-channel-surge", "type-surge"]
    assert {SCRIPT, IMG, T} <= {o.attrs["value"] for o in selects["type"].find_all("option")}
    links = {a.attrs["href"] for a in root.find_all("a")}
    assert "/?tier=light&rule=type-surge" in links  # a rule link narrows the current view
    assert "/?tier=light&type=" + quote(T) in links
    assert "/" in links  # show all


# --- language ----------------------------------------------------------------------------------------


def test_the_page_speaks_chinese_by_default(tmp_path: Path) -> None:
    world = scene(tmp_path, locale=None)
    try:
        html = page(world)
    finally:
        world.daemon.stop()
    root = parse(html)
    assert root.find_all("html")[0].attrs["lang"] == "zh-CN"
    header = " ".join(root.find_all("header")[0].all_text().split())
    assert "9 条未恢复告警：重度 5，中度 2，轻度 2" in header and "数据源 正常" in header
    assert "(Asia/Shanghai)" in header  # times in the configured zone
    surge = by_id(root, "alert-" + open_instance(world.daemon, "type-surge", T))
    assert badges(surge) == {"已确认"}
    facts = " ".join(surge.find_all("p", "facts")[0].all_text().split())
    assert facts.startswith("61 对比基线 40 (× 1.52) 最近变化于") and facts.endswith("69 今日累计")
    svg = surge.find_all("svg")[0]
    assert [t.all_text() for t in svg.find_all("text")][-3:] == ["每日数量", "基线", "阈值"]
    drawn = len([r for r in svg.find_all("rect") if r.find_all("title")])
    assert drawn < status_page.CHART_DAYS and svg.find_all("title")[0].all_text().endswith(f"近 {drawn} 天每日投诉")
    assert "今天" in [t.all_text() for t in svg.find_all("text")]
    ths = [th.all_text() for th in by_id(root, "receivers").find_all("th")]
    assert ths[:3] == ["接收方", "类型", "状态"]
    words = root.find_all("body")[0].all_text()
    for english in (
        "Open alerts",
        "baseline",
        "today so far",
        "Receivers",
        "No active",
        "acknowledged",
        "refreshes",
        "rule",
        "started",
    ):
        assert english not in words, english
