"""Grouping through the dispatcher: alerts that arrive within `group_wait` are one digest; a storm of
500 alerts in one minute against a 20-messages-a-minute robot stays within the robot's limit and
every alert is listed or counted in what the robot received."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from sentinel.model import US
from tests.delivery.builders import Alert, Pipeline, at, route, storm
from tests.delivery.conftest import MakePipeline
from tests.notify.vendors import FakeWeCom

TYPE = re.compile(r"类型\d{3}")
MORE = re.compile(r"… (\d+) more alerts?")
TOTAL = re.compile(r"— (\d+) alerts?:")


def contents(wecom: FakeWeCom) -> list[str]:
    return [str(r.json["markdown"]["content"]) for r in wecom.requests]


def test_alerts_within_group_wait_become_one_digest(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    p = pipeline(
        [wecom.receiver(name="ops")],
        [route(["ops"], group_wait=timedelta(seconds=30), group_interval=timedelta(seconds=60))],
    )
    arrivals = {0: "物流配送延误", 5: "服务态度", 12: "系统操作错误", 29: "产品相关", 40: "其他"}
    for second in range(0, 120):
        p.set_time(at(second))
        if second in arrivals:
            p.record(Alert(arrivals[second], p.now).firing())
        p.step()
        if second == 29:
            assert wecom.requests == []  # still waiting for the group
        if second == 30:
            assert len(wecom.requests) == 1
        if second == 89:
            assert len(wecom.requests) == 1  # the late one waits for group_interval
    texts = contents(wecom)
    assert len(texts) == 2
    assert all(t in texts[0] for t in list(arrivals.values())[:4]) and "其他" not in texts[0]
    assert "— 4 alerts: 4 light" in texts[0]
    assert "其他" in texts[1]
    assert [m.kind for m in p.messages("ops")] == ["digest", "alert"]


def run_storm(p: Pipeline, alerts: list[Alert], wecom: FakeWeCom, until_s: int) -> list[int]:
    """The dispatch and deliver jobs once a second while the storm lasts (every 3 s after it, the
    robot's pace; after three minutes only delivery has work left); returns when each request was sent."""
    sent_at: list[int] = []
    pending = sorted(alerts, key=lambda a: a.started)
    second = 0
    while second < until_s:
        p.set_time(at(second))
        due = [a for a in pending if a.started <= p.now]
        pending = pending[len(due) :]
        if due:
            p.record(*(a.firing() for a in due))
        before = len(wecom.requests)
        if second < 180:
            p.step()
        else:  # every group has been flushed (asserted below): only the deliver job has work left
            p.deliver()
        sent_at += [p.now] * (len(wecom.requests) - before)
        if not pending and not p.pending() and second > 120:
            break
        second += 1 if second < 120 else 3
    assert not p.pending()
    assert p.dispatch() == 0 and len({i for m in p.messages() for i in m.instances}) == len(alerts)
    return sent_at


def most_in_a_minute(sent_at: list[int]) -> int:
    return max((sum(1 for t in sent_at if s <= t < s + 60 * US) for s in sent_at), default=0)


@pytest.mark.parametrize("group_by", [["rule"], ["rule", "type"]], ids=["by-rule", "by-type"])
def test_a_500_alert_storm_fits_a_20_a_minute_robot(
    group_by: list[str], wecom: FakeWeCom, pipeline: MakePipeline
) -> None:
    p = pipeline(
        [wecom.receiver(name="ops")],
        [route(["ops"], group_by=group_by, group_wait=timedelta(seconds=2), group_interval=timedelta(minutes=1))],
    )
    alerts = storm(500, at(0), spread_s=59)
    sent_at = run_storm(p, alerts, wecom, until_s=3600)
    assert sum(1 for t in sent_at if t < at(60)) <= 20  # the storm's minute
    assert most_in_a_minute(sent_at) <= 20  # and any minute after it
    assert all(m.status == "delivered" for m in p.messages("ops"))

    listed: list[str] = []
    counted = 0
    for text in contents(wecom):
        names = TYPE.findall(text)
        more = MORE.search(text)
        total = TOTAL.search(text)
        listed += names
        counted += int(more.group(1)) if more else 0
        if total:  # a digest says how many it carries: listed + counted
            assert int(total.group(1)) == len(set(names)) + (int(more.group(1)) if more else 0)
        assert len(text.encode()) <= 4096
    assert len(set(listed)) + counted == 500
    if group_by == ["rule"]:
        assert len(sent_at) <= 3  # a few digests, not 500 messages
    else:
        assert sorted(set(listed)) == sorted(a.type for a in alerts) and counted == 0


def test_a_new_wave_after_a_quiet_spell_waits_group_wait_like_the_first(
    wecom: FakeWeCom, pipeline: MakePipeline
) -> None:
    p = pipeline(
        [wecom.receiver(name="ops")],
        [route(["ops"], group_wait=timedelta(seconds=30), group_interval=timedelta(seconds=60))],
    )
    waves = {0: "物流配送延误", 5: "服务态度", 3600: "系统操作错误", 3605: "产品相关", 3610: "其他"}
    for second in [*range(0, 100), *range(3590, 3700)]:
        p.set_time(at(second))
        if second in waves:
            p.record(Alert(waves[second], p.now).firing())
        p.step()
    texts = contents(wecom)
    assert len(texts) == 2, [t.split("\n", 1)[0] for t in texts]
    assert "— 2 alerts" in texts[0] and "— 3 alerts" in texts[1]
    assert all(t in texts[1] for t in ("系统操作错误", "产品相关", "其他"))


def test_settled_groups_are_forgotten(wecom: FakeWeCom, pipeline: MakePipeline) -> None:
    """Groups with nothing waiting leave the store once their interval has passed, so a step's cost
    follows the alerts in flight, not every group ever seen."""
    p = pipeline(
        [wecom.receiver(name="ops", rate_limit="1000/min")],
        [
            route(
                ["ops"],
                group_by=["rule", "type"],
                group_wait=timedelta(seconds=2),
                group_interval=timedelta(seconds=60),
            )
        ],
    )
    p.record(*(a.firing() for a in storm(50, at(0), spread_s=1)))
    for second in range(0, 5):
        p.set_time(at(second))
        p.step()
    assert len(wecom.requests) == 50

    def groups() -> int:
        with p.store.reading() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM dispatch_groups").scalar_one())

    assert groups() == 50  # within their interval: a change now waits for it
    p.set_time(at(62))
    p.step()
    assert groups() == 0
    p.set_time(at(100))
    p.record(Alert("类型007", p.now).firing())
    p.step()
    assert len(wecom.requests) == 50 and groups() == 1  # a new group again: it waits group_wait
    p.set_time(at(102))
    p.step()
    assert len(wecom.requests) == 51
