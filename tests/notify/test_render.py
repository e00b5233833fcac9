"""Rendering: the right facts in every syntax and locale, inert data, budgets on whole entries, overrides.

Assertions look for facts (numbers, tier words, link forms) rather than whole strings, so wording can
change without rewriting tests, while a dropped fact, a live link from data or a blown budget fails.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.model import Tier
from sentinel.notify import ADAPTERS
from sentinel.notify.base import Delivered, Message, Syntax
from sentinel.notify.escape import utf8_len
from sentinel.notify.render import (
    TemplateError,
    body_budget,
    environment,
    human_duration,
    num,
    render,
    safe_url,
    sci,
    sig,
)
from sentinel.notify.template_check import check_templates, sample_view
from sentinel.notify.views import AlertView

from .builders import HOSTILE
from .test_adapters import KINDS, make_fake, received_text

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2025, 7, 8, 14, 3, tzinfo=TZ)
STATUS = "https://sentinel.example.internal/status"
ACK = "https://sentinel.example.internal/ack/tok-123"
CRM = "https://crm.example.internal/complaints/{}"
LOCALES = ["zh_CN", "en"]

W: dict[str, dict[str, str]] = {
    "zh_CN": {
        "light": "轻度预警",
        "moderate": "中度预警",
        "severe": "重度预警",
        "III": "三级响应",
        "II": "二级响应",
        "I": "一级响应",
        "status": "状态页",
        "ack": "确认收到",
        "upgraded": "已升级",
        "resolved": "已恢复",
        "reason": "已连续一整天低于阈值",
        "zero": "新出现：无历史",
        "handover": "Sentinel 启动前已开始",
        "streak": "连续 5 条",
        "type": "类型",
        "channel": "渠道",
        "more": r"还有 (\d+) 条预警",
        "repeat": "提醒",
        "escalation": "超过时限未确认",
        "test": "测试",
        "title_digest": "500 条预警",
    },
    "en": {
        "light": "Light alert",
        "moderate": "Moderate alert",
        "severe": "Severe alert",
        "III": "Level III response",
        "II": "Level II response",
        "I": "Level I response",
        "status": "Status page",
        "ack": "Acknowledge",
        "upgraded": "upgraded",
        "resolved": "Resolved",
        "reason": "a full day below the threshold",
        "zero": "new: no history",
        "handover": "before Sentinel started",
        "streak": "5 complaints of the same kind in a row",
        "type": "type",
        "channel": "channel",
        "more": r"… (\d+) more alerts?",
        "repeat": "reminder: still open",
        "escalation": "not acknowledged in time",
        "test": "Test message",
        "title_digest": "500 alerts",
    },
}


def threshold(**kw: Any) -> AlertView:
    values: dict[str, Any] = {
        "rule": "type-surge",
        "kind": "threshold",
        "state": "firing",
        "tier": Tier.MODERATE,
        "labels": {"type": "物流配送延误", "channel": "电话热线"},
        "value": 151.0,
        "baseline": 100.0,
        "ratio": 1.51,
        "started": NOW - timedelta(minutes=20),
        "at": NOW,
        "instance": "inst-1",
        "fingerprint": "fp-1",
        "p": 2.1e-06,
        "mode": "day",
        "samples": (("10231", CRM.format(10231)), ("10232", None)),
        "ack_url": ACK,
    }
    values.update(kw)
    return AlertView(**values)


def streak(**kw: Any) -> AlertView:
    values: dict[str, Any] = {
        "rule": "same-type-streak",
        "kind": "streak",
        "state": "firing",
        "tier": Tier.LIGHT,
        "labels": {"type": "服务态度"},
        "value": 5.0,
        "baseline": None,
        "ratio": None,
        "started": NOW - timedelta(minutes=3),
        "at": NOW,
        "instance": "inst-2",
        "fingerprint": "fp-2",
        "length": 5,
        "chance": 3.2e-04,
        "expected_per_day": 0.031,
        "samples": (("20001", CRM.format(20001)),),
        "ack_url": ACK,
    }
    values.update(kw)
    return AlertView(**values)


def run(views: list[AlertView], syntax: Syntax, locale: str = "zh_CN", **kw: Any) -> tuple[str, str]:
    kw.setdefault("max_bytes", 4096)
    return render(views, syntax=syntax, locale=locale, status_url=STATUS, **kw)


def link_of(syntax: Syntax, text: str, url: str) -> str:
    forms = {Syntax.MARKDOWN: f"[{text}]({url})", Syntax.SLACK: f"<{url}|{text}>", Syntax.TEXT: f"{text} ({url})"}
    return forms[syntax]


def assert_plain_title(title: str) -> None:
    assert 0 < len(title) < 100, title
    assert "\n" not in title and "://" not in title, title
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in title), title
    assert "**" not in title and "](" not in title and "<http" not in title, title


TIER_WORDS = {"zh_CN": ("轻度", "中度", "重度"), "en": ("light", "moderate", "severe")}


def assert_tier_named_once(title: str, body: str, tier: Tier, locale: str) -> None:
    """Every chat tool shows the title above the body: the tier is said once, in the title, not again
    below it (not as "【中度预警】… 【中度预警 · 二级响应】" nor "Severe alert: … up to severe")."""
    word = TIER_WORDS[locale][tier.value - 1]
    assert title.lower().count(word) == 1, title
    assert word not in body.lower(), body


def assert_layout(syntax: Syntax, body: str) -> None:
    """Markdown separates lines with a blank line (DingTalk, Teams); the others with one newline."""
    if syntax is Syntax.MARKDOWN:
        assert re.search(r"[^\n]\n[^\n]", body) is None, body
        assert "**" in body
    else:
        assert "\n\n" not in body, body
    if syntax is Syntax.TEXT:
        assert not re.search(r"[*\[\]<>]", body), body  # no markup at all (a backtick is inert in text)
    if syntax is Syntax.SLACK:
        assert "**" not in body and re.search(r"(^|\n)\*[^*\n]+\*( |\n|$)", body), body


# --- the facts of each message shape ---------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_firing_threshold_alert_has_every_fact(syntax: Syntax, locale: str) -> None:
    w = W[locale]
    title, body = run([threshold()], syntax, locale)
    for fact in (
        w["II"],
        "type-surge",
        w["type"],
        "物流配送延误",
        w["channel"],
        "电话热线",
        "151",
        "100.0",
        "1.51",
        "2.1e-06",
        "2025-07-08 13:43",
    ):
        assert fact in body, (fact, body)
    assert link_of(syntax, "10231", CRM.format(10231)) in body
    assert "10232" in body and CRM.format(10232) not in body  # no URL: listed, not linked
    assert link_of(syntax, w["status"], STATUS) in body
    assert link_of(syntax, w["ack"], ACK) in body
    assert "物流配送延误" in title and w["moderate"] in title
    assert_tier_named_once(title, body, Tier.MODERATE, locale)
    assert_plain_title(title)
    assert_layout(syntax, body)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_upgrade_says_it_went_up_a_tier(syntax: Syntax, locale: str) -> None:
    w = W[locale]
    title, body = run([threshold(state="upgraded", tier=Tier.SEVERE, value=301.0, ratio=3.01)], syntax, locale)
    assert w["severe"] in title and w["I"] in body and w["upgraded"] in body
    assert "301" in body and "3.01" in body
    assert ("（已升级）" if locale == "zh_CN" else "(upgraded)") in title
    assert_tier_named_once(title, body, Tier.SEVERE, locale)
    firing_title, firing = run([threshold(tier=Tier.SEVERE)], syntax, locale)
    assert w["upgraded"] not in firing and w["upgraded"] not in firing_title


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_resolution_says_how_long_the_peak_and_why(syntax: Syntax, locale: str) -> None:
    w = W[locale]
    view = threshold(
        state="resolved",
        duration_s=8100,
        peak=180.0,
        reason="a full day below the threshold",
        started=NOW - timedelta(hours=2, minutes=15),
    )
    title, body = run([view], syntax, locale)
    assert w["resolved"] in body and w["resolved"] in title
    assert_tier_named_once(title, body, Tier.MODERATE, locale)
    assert human_duration(8100, locale) in body and ("2小时15分" if locale == "zh_CN" else "2h15m") in body
    assert "180" in body and w["reason"] in body
    assert ACK not in body  # nothing left to acknowledge
    assert link_of(syntax, w["status"], STATUS) in body
    assert_plain_title(title)
    assert_layout(syntax, body)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_streak_says_run_length_expected_runs_and_start(syntax: Syntax, locale: str) -> None:
    w = W[locale]
    title, body = run([streak()], syntax, locale)
    assert w["streak"] in body and w["light"] in title and w["III"] in body
    assert_tier_named_once(title, body, Tier.LIGHT, locale)
    assert "0.031" in body and "3.2e-04" in body and "2025-07-08 14:00" in body
    assert link_of(syntax, "20001", CRM.format(20001)) in body
    assert "服务态度" in title and "5" in title
    assert "100.0" not in body and "2.1e-06" not in body  # no threshold facts leak into a streak


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_zero_baseline_says_new_without_a_ratio(syntax: Syntax, locale: str) -> None:
    _, body = run([threshold(baseline=0.0, ratio=None, value=12.0)], syntax, locale)
    assert W[locale]["zero"] in body and "12" in body
    assert "倍" not in body and "×" not in body


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_handover_says_open_since_started(syntax: Syntax, locale: str) -> None:
    view = threshold(handover=True, started=NOW - timedelta(hours=3))
    _, body = run([view], syntax, locale)
    assert W[locale]["handover"] in body and "2025-07-08 11:03" in body
    assert human_duration(3 * 3600, locale) in body
    _, fresh = run([threshold()], syntax, locale)
    assert W[locale]["handover"] not in fresh


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
def test_kinds_change_the_heading_and_note_is_shown(syntax: Syntax, locale: str) -> None:
    w = W[locale]
    bodies = {k: run([threshold()], syntax, locale, kind=k)[1] for k in ("alert", "repeat", "escalation", "test")}
    titles = {k: run([threshold()], syntax, locale, kind=k)[0] for k in ("alert", "repeat", "escalation", "test")}
    for k in ("repeat", "escalation", "test"):
        assert w[k] in bodies[k] and w[k] not in bodies["alert"], k
    assert len(set(titles.values())) == 4
    assert "notify-test" in bodies["test"]
    note = "receiver cs-team failed permanently: 93000 invalid webhook key"
    _, noted = run([threshold()], syntax, locale, note=note)
    assert "93000 invalid webhook key" in noted and "93000" not in bodies["alert"]


@pytest.mark.parametrize("locale", LOCALES)
def test_sample_for_notify_test_renders(locale: str) -> None:
    title, body = run([sample_view(NOW)], Syntax.MARKDOWN, locale, kind="test")
    assert W[locale]["test"] in body and "物流配送延误" in title


# --- hostile data ------------------------------------------------------------------------------------

HOSTILE_IDS = [h[:16] for h in HOSTILE]
MENTIONS = ["@all", "@everyone", "@here", "<!channel>", "<!here", "<@", "<at ", "<at>", "&lt;@"]


def shapes(text: str) -> list[list[AlertView]]:
    """A firing threshold, a resolved streak and a digest, with `text` in every data-derived field."""
    samples = ((text, CRM.format(1)), (text, None))
    fire = threshold(labels={"type": text, "channel": text}, rule=text, samples=samples)
    done = streak(labels={"type": text}, state="resolved", reason=text, duration_s=60, peak=6.0, samples=samples)
    return [[fire], [done], [fire, done, threshold(labels={"type": text}, tier=Tier.SEVERE)]]


def skeleton(syntax: Syntax, body: str) -> tuple[int, ...]:
    """What only the template may produce: lines, emphasis, link brackets, angle brackets, link targets.

    `|` is left out: it is inert outside `<…>`, and `<` itself can only come from a template."""
    return tuple(body.count(t) for t in ("\n", "*", "[", "](", "<", ">", "(http://", "(https://", "<http"))


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
@pytest.mark.parametrize("hostile", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_data_never_makes_markup_mentions_or_links(syntax: Syntax, locale: str, hostile: str) -> None:
    note = hostile
    for views, benign in zip(shapes(hostile), shapes("正常类型"), strict=True):
        title, body = run(views, syntax, locale, note=note)
        _, plain = run(benign, syntax, locale, note="正常备注")
        for bad in MENTIONS:
            assert bad not in body, (bad, body[:300])
        assert "evil" not in body or "http://evil" not in body
        assert "](http://evil" not in body and "|click>" not in body
        # Every "://" belongs to a URL we put there: status, ack or the CRM sample.
        ours = sum(body.count(u) for u in (STATUS, ACK, CRM.format(1)))
        assert body.count("://") == ours, body[:400]
        # Data adds no line, no emphasis, no link, no tag: the markup skeleton equals the benign one.
        assert skeleton(syntax, body) == skeleton(syntax, plain), (body[:400], plain[:400])
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in body.replace("\n", ""))
        assert utf8_len(body) <= 4096
        assert_plain_title(title)
        assert_layout(syntax, body)


def test_a_10000_character_type_is_capped_in_body_and_title() -> None:
    for syntax in Syntax:
        title, body = run([threshold(labels={"type": "N" * 10_000})], syntax)
        assert max(len(run_) for run_ in re.findall(r"N+", body)) <= 100
        assert len(title) < 100
        assert "151" in body and STATUS in body  # the facts after it are still there


def test_override_cannot_switch_escaping_off_with_the_safe_filter(tmp_path: Path) -> None:
    (tmp_path / "zh_CN").mkdir()
    (tmp_path / "zh_CN" / "alert.j2").write_text("{{ a.rule | safe }} {{ a.labels['type'] }}\n", encoding="utf-8")
    for syntax in Syntax:
        _, body = run(
            [threshold(rule="[x](http://evil.example)", labels={"type": "@all"})], syntax, templates_dir=tmp_path
        )
        assert "](http" not in body and "@all" not in body and "://" not in body, body


# --- digests and budgets --------------------------------------------------------------------------


def crisis(n: int = 500) -> list[AlertView]:
    """`n` alerts: every 25th severe, every 5th (other) moderate, the rest light; distinct times."""
    out = []
    for i in range(n):
        tier = Tier.SEVERE if i % 25 == 0 else Tier.MODERATE if i % 5 == 0 else Tier.LIGHT
        out.append(
            threshold(
                labels={"type": f"类型{i:03d}", "channel": "电话热线"},
                tier=tier,
                instance=f"i{i}",
                fingerprint=f"f{i}",
                at=NOW - timedelta(minutes=(i * 7) % 500),
                ack_url=f"{ACK}-{i}",
            )
        )
    return out


def listed_ids(body: str) -> list[str]:
    return re.findall(r"类型(\d{3})", body)


def expected_order(views: list[AlertView]) -> list[str]:
    ordered = sorted(views, key=lambda a: (-int(a.tier), -a.at.timestamp()))
    return [a.labels["type"][2:] for a in ordered]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("syntax", list(Syntax))
@pytest.mark.parametrize(("max_bytes", "max_chars"), [(4096, None), (10**6, 2000), (2000, 2000)])
def test_500_alerts_fit_listing_the_most_severe_and_counting_the_rest(
    syntax: Syntax, locale: str, max_bytes: int, max_chars: int | None
) -> None:
    views = crisis()
    title, body = run(views, syntax, locale, max_bytes=max_bytes, max_chars=max_chars)
    assert utf8_len(body) <= max_bytes and (max_chars is None or len(body) <= max_chars)
    listed = listed_ids(body)
    more = re.search(W[locale]["more"], body)
    assert more is not None, body[-300:]
    assert len(listed) + int(more.group(1)) == 500
    assert listed == expected_order(views)[: len(listed)]  # most severe first, then most recent
    assert len(listed) >= 5
    # The count line is last, whole, and carries the status link: nothing was cut mid-entry.
    last = body.rsplit("\n", 1)[-1]
    assert more.group(0) in last and STATUS in last
    # Whole entries fill the budget: what is left is less than one more entry.
    entry_lines = [line for line in body.split("\n") if re.search(r"类型\d{3}", line)]
    # The binding measure: characters when the byte budget is huge, else bytes (>= characters).
    size, limit = (len, max_chars) if max_chars is not None and max_bytes >= 10**6 else (utf8_len, max_bytes)
    assert limit - size(body) < max(size(line) for line in entry_lines) + 4
    counts = "重度 20 · 中度 80 · 轻度 400" if locale == "zh_CN" else "20 severe · 80 moderate · 400 light"
    assert counts in body
    assert W[locale]["title_digest"] in title and ("20 重度" in title or "20 severe" in title)
    assert_plain_title(title)
    assert_layout(syntax, body)


@pytest.mark.parametrize("syntax", list(Syntax))
def test_small_digest_lists_everything_with_the_status_link(syntax: Syntax) -> None:
    views = crisis(6)
    _, body = run(views, syntax)
    assert listed_ids(body) == expected_order(views)
    assert re.search(W["zh_CN"]["more"], body) is None
    assert link_of(syntax, "状态页", STATUS) in body


def test_digest_order_severity_then_open_before_resolved_then_recent() -> None:
    views = [
        threshold(labels={"type": "类型001"}, tier=Tier.LIGHT, at=NOW),
        threshold(labels={"type": "类型002"}, tier=Tier.SEVERE, at=NOW - timedelta(hours=2)),
        threshold(labels={"type": "类型003"}, tier=Tier.SEVERE, at=NOW, state="resolved", duration_s=60),
        threshold(labels={"type": "类型004"}, tier=Tier.SEVERE, at=NOW - timedelta(hours=1)),
        threshold(labels={"type": "类型005"}, tier=Tier.MODERATE, at=NOW - timedelta(hours=5)),
    ]
    _, body = run(views, Syntax.TEXT)
    assert listed_ids(body) == ["004", "002", "003", "005", "001"]


@pytest.mark.parametrize("syntax", list(Syntax))
@settings(max_examples=40, deadline=None)
@given(budget=st.integers(min_value=1, max_value=5000), n=st.sampled_from([1, 3, 40]))
def test_byte_budget_holds_with_chinese_text(syntax: Syntax, budget: int, n: int) -> None:
    views = [
        threshold(labels={"type": "物流配送延误" * 5, "channel": f"电话热线{i}"}, instance=f"i{i}") for i in range(n)
    ]
    _, body = run(views, syntax, max_bytes=budget)
    assert utf8_len(body) <= budget
    assert "\ufffd" not in body  # never half a character
    _, chars = run(views, syntax, max_bytes=10**6, max_chars=budget)
    assert len(chars) <= budget


@pytest.mark.parametrize("syntax", list(Syntax))
def test_digest_is_cut_only_on_whole_entries_when_the_header_fits(syntax: Syntax) -> None:
    views = crisis(40)
    for budget in (600, 900, 1500, 2500):
        _, body = run(views, syntax, max_bytes=budget)
        assert utf8_len(body) <= budget
        assert not body.endswith("…"), budget  # no hard cut
        assert body.rsplit("\n", 1)[-1].endswith(link_of(syntax, "状态页", STATUS))


def test_hard_cap_is_the_last_resort_and_says_so() -> None:
    _, body = run(crisis(40), Syntax.MARKDOWN, max_bytes=60)
    assert utf8_len(body) <= 60 and body.endswith("…")


@pytest.mark.parametrize("tier", [Tier.LIGHT, Tier.SEVERE])
@pytest.mark.parametrize("kind", KINDS)
def test_through_each_adapter_the_count_line_survives(kind: str, tier: Tier) -> None:
    """Rendered within `body_budget`, a 500-alert digest reaches each fake vendor whole: the adapter adds
    title, mentions and keyword without cutting the body, so the count and status link arrive."""
    severe: dict[str, Any] = {"users": ["zhangsan", "lisi"], "all": True}
    if kind in ("wecom", "dingtalk"):
        severe["mobiles"] = ["13800138000"]
    views = [
        threshold(
            labels={"type": f"类型{i:03d}" + "&" * 40, "channel": "电话热线"},
            tier=tier,
            instance=f"i{i}",
            fingerprint=f"f{i}",
            ack_url=f"{ACK}-{i}",
        )
        for i in range(500)
    ]
    with make_fake(kind) as fake:
        receiver = fake.receiver(mention={"severe": severe, "light": {"users": ["wangwu"]}})
        adapter = ADAPTERS[kind](receiver)
        try:
            max_bytes, max_chars = body_budget(adapter, receiver, tier)
            title, body = render(
                views, syntax=adapter.syntax, max_bytes=max_bytes, max_chars=max_chars, status_url=STATUS, kind="alert"
            )
            title = "&" * 99  # the worst title for escaping (5 bytes in Slack)
            out = adapter.send(Message(id="d-1", title=title, body=body, tier=tier, status="firing"))
            assert isinstance(out, Delivered), out
            text = received_text(kind, fake.last)
        finally:
            adapter.close()
    more = re.search(r"还有 (\d+) 条预警", text)
    assert more is not None and "截断" not in text and "truncated" not in text, text[-300:]
    assert STATUS in text.rsplit("还有", 1)[1]
    assert len(set(listed_ids(text))) + int(more.group(1)) == 500


# --- overrides and errors ------------------------------------------------------------------------


def test_override_replaces_one_template_and_keeps_the_others(tmp_path: Path) -> None:
    (tmp_path / "zh_CN").mkdir()
    (tmp_path / "zh_CN" / "alert.j2").write_text(
        "自定义：{{ bold(a.rule) }} {{ series(a) }}\n{{ link('看板', status_url) }}\n", encoding="utf-8"
    )
    for syntax in Syntax:
        title, body = run([threshold()], syntax, templates_dir=tmp_path)
        assert body.startswith("自定义：") and link_of(syntax, "看板", STATUS) in body
        assert "中度预警" in title  # title.j2 still comes from the package
        _, digest = run(crisis(3), syntax, templates_dir=tmp_path)
        assert "预警汇总" in digest and "自定义" not in digest
        _, english = run([threshold()], syntax, "en", templates_dir=tmp_path)
        assert "Level II response" in english and "自定义" not in english
    check_templates(tmp_path)  # a good override passes the reload check


def test_an_overridden_title_is_still_one_short_line(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "title.j2").write_text(
        "{% for i in range(40) %}{{ a.rule }}\n{% endfor %}{{ status_url }}", encoding="utf-8"
    )
    title, _ = run([threshold()], Syntax.MARKDOWN, "en", templates_dir=tmp_path)
    assert title.startswith("type-surge type-surge")
    assert_plain_title(title)


def test_override_data_is_escaped_too(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "entry.j2").write_text("{{ a.labels['type'] }} {{ a.rule }}\n", encoding="utf-8")
    _, body = run(
        [*crisis(2), threshold(labels={"type": "<!channel> @everyone"})], Syntax.SLACK, "en", templates_dir=tmp_path
    )
    assert "<!channel>" not in body and "@everyone" not in body and "&lt;!channel&gt;" in body


def test_broken_override_raises_template_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "zh_CN").mkdir()
    bad = tmp_path / "zh_CN" / "entry.j2"
    bad.write_text("ok\n{% if %}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=re.escape(str(bad))) as err:
        run(crisis(3), Syntax.MARKDOWN, templates_dir=tmp_path)
    assert isinstance(err.value, ValueError) and "line 2" in str(err.value)
    with pytest.raises(TemplateError, match=r"entry\.j2"):
        check_templates(tmp_path)  # rejected at reload even though single alerts do not use it


def test_runtime_error_in_override_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "zh_CN").mkdir()
    bad = tmp_path / "zh_CN" / "alert.j2"
    bad.write_text("第一行\n{{ no_such_name }}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=re.escape(f"{bad}, line 2")) as err:
        run([threshold()], Syntax.TEXT, templates_dir=tmp_path)
    assert "no_such_name" in str(err.value)
    with pytest.raises(TemplateError, match=r"alert\.j2"):
        check_templates(tmp_path)


def test_check_compiles_files_that_no_sample_reaches(tmp_path: Path) -> None:
    (tmp_path / "zh_CN").mkdir()
    (tmp_path / "zh_CN" / "footer.j2").write_text("{% for %}\n", encoding="utf-8")
    run([threshold()], Syntax.TEXT, templates_dir=tmp_path)  # not included anywhere: rendering works
    with pytest.raises(TemplateError, match=r"footer\.j2"):
        check_templates(tmp_path)


def test_check_rejects_missing_dir_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not a directory"):
        check_templates(tmp_path / "missing")
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "title.j2").write_bytes("标题".encode("gbk"))
    with pytest.raises(TemplateError, match=r"title\.j2"):
        check_templates(tmp_path)


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="locale"):
        run([threshold()], Syntax.TEXT, "fr")
    with pytest.raises(ValueError, match="kind"):
        run([threshold()], Syntax.TEXT, kind="page")
    with pytest.raises(ValueError, match="at least one"):
        run([], Syntax.TEXT)
    assert "Status page" in run([threshold()], Syntax.TEXT, "en_US")[1]
    assert "状态页" in run([threshold()], Syntax.TEXT, "zh-CN")[1]


def test_one_environment_per_syntax_and_dir(tmp_path: Path) -> None:
    assert environment(Syntax.SLACK, None) is environment(Syntax.SLACK, None)
    assert environment(Syntax.SLACK, None) is not environment(Syntax.TEXT, None)
    assert environment(Syntax.SLACK, tmp_path) is not environment(Syntax.SLACK, None)


# --- helpers ----------------------------------------------------------------------------------------


def test_safe_url_accepts_http_and_neutralises_what_would_close_a_link() -> None:
    assert safe_url(STATUS) == STATUS
    assert safe_url("http://127.0.0.1:9732/ack/a_b-c.d~e") == "http://127.0.0.1:9732/ack/a_b-c.d~e"
    assert safe_url("https://x.example/a)b|c>d]e*f") == "https://x.example/a%29b%7Cc%3Ed%5De%2Af"
    assert safe_url("https://x.example/工单?id=1&t=2") == "https://x.example/%E5%B7%A5%E5%8D%95?id=1&t=2"
    for bad in (
        "javascript:alert(1)",
        "ftp://x.example/",
        "https://user:pw@x.example/",
        "https://x.example/a b",
        "https://x.example/\nb",
        "http://",
        "https://bad_host/",
        "//x.example/",
        "",
    ):
        assert safe_url(bad) is None, bad


@pytest.mark.parametrize("syntax", list(Syntax))
def test_sample_urls_are_validated_and_encoded_in_every_syntax(syntax: Syntax) -> None:
    view = threshold(
        samples=(
            ("1", "https://crm.example/c/a)b"),
            ("2", "javascript:alert(1)"),
            ("3", "https://crm.example/x y"),
            ("4", "https://u:p@crm.example/"),
        )
    )
    _, body = run([view], syntax)
    assert link_of(syntax, "1", "https://crm.example/c/a%29b") in body
    assert "javascript" not in body and "crm.example/x" not in body and "u:p@" not in body
    assert body.count("://") == 3  # the sample, the status page, the ack link


def test_slack_link_escapes_ampersand_and_invalid_urls_lose_the_link() -> None:
    view = threshold(samples=(("1", "https://crm.example/c?id=1&x=2"), ("2", "javascript:alert(1)")))
    _, body = run([view], Syntax.SLACK)
    assert "<https://crm.example/c?id=1&amp;x=2|1>" in body
    assert "javascript" not in body and "2" in body


@pytest.mark.parametrize(
    ("seconds", "zh", "en"),
    [
        (8100, "2小时15分", "2h15m"),
        (45, "45秒", "45s"),
        (7200, "2小时", "2h"),
        (3660, "1小时1分", "1h1m"),
        (90000, "1天1小时", "1d1h"),
        (86400 + 59, "1天", "1d"),
        (600, "10分", "10m"),
        (-5, "0秒", "0s"),
    ],
)
def test_durations(seconds: int, zh: str, en: str) -> None:
    assert human_duration(seconds, "zh_CN") == zh and human_duration(seconds, "en") == en


def test_number_formats() -> None:
    assert (num(151.0), num(1.512), num(100, 1), num(1.5, 2), num(None)) == ("151", "1.51", "100.0", "1.50", "–")
    assert (sci(2.1e-06), sci(0.0), sci(0.5)) == ("2.1e-06", "0", "5.0e-01")
    assert (sig(0.031), sig(4.21), sig(1234.5), sig(3.1e-05)) == ("0.031", "4.2", "1234", "3.1e-05")
