"""The status page for on-call: `GET /`, server-rendered HTML, refreshed by the browser every 30 s.

It shows open alerts by tier (most severe first) with what holds each back (silenced, inhibited,
acknowledged, muted), recently resolved alerts, active silences, receivers (state — ok, retrying,
failing or set aside, see `sentinel.notify.health` — failures in a row, pending messages and the
oldest's age, next attempt, last error and when, last delivery, recent permanent failures; a failing
or set-aside receiver also gets a banner), the source's health and, for each alerted threshold
series, a chart of its daily counts against baseline and threshold rebuilt from the raw hourly buckets
(the days read only: none before the source's coverage began).

Its words follow `locale` (the catalogue `sentinel.web.catalogue`), its times `timezone`. It can be
narrowed to a tier, a rule and a type (`?tier=&rule=&type=`, see `Filters`): a GET form and links,
filtered here on the server — the page runs no script.

Guarantees: every data-derived string (types, channels, rule names, silence comments, errors) goes
through Jinja2's autoescape or `markupsafe.escape`; the page carries no script and forbids one
(Content-Security-Policy); its one asset is the Chinese font for browsers without one (last in the
font list, after the system CJK fonts; `sentinel.web.static`); it only reads — the store through read
connections and the alert policy through a private `Policy` instance, so a page view never disturbs the
dispatcher's state. Messages link to `/#alert-<instance>`, the anchor of each alert.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from markupsafe import Markup
from sqlalchemy import Connection

from sentinel import __version__, api
from sentinel.alerting import silences as silence_store
from sentinel.alerting.mute import Muting
from sentinel.alerting.policy import Policy
from sentinel.clock import now_us
from sentinel.config import ThresholdRuleConfig
from sentinel.daemon import Daemon
from sentinel.history import DailyCounts, chartable, series_history
from sentinel.http import Request, Response
from sentinel.model import US, JsonObject, JsonOut, JsonOutObject, Tier, to_datetime
from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert
from sentinel.web import static
from sentinel.web.catalogue import Text
from sentinel.web.svg import daily_chart

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger("sentinel.web")

TEMPLATES = Path(__file__).parent / "templates"
REFRESH_S = 30
CHART_DAYS = 14
MAX_CHARTS = 24  # a crisis of 500 alerts still makes a page that loads fast
RESOLVED_WINDOW_US = 24 * 3600 * US
RESOLVED_LIMIT = 25
FAILURES_PER_RECEIVER = 5
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Badge:
    kind: str  # silenced | inhibited | acknowledged | muted
    detail: str
    href: str | None = None


@dataclass(slots=True)
class AlertItem:
    instance: str
    fingerprint: str
    rule: str
    kind: str
    labels: dict[str, str]
    tier: Tier
    started: datetime
    updated: datetime
    resolved: datetime | None
    value: float
    baseline: float | None
    peak: float
    event: JsonObject  # the last event's payload: ratio, p, mode, length, reason, ...
    badges: list[Badge] = field(default_factory=list)
    chart: Markup | None = None
    today: int | None = None  # the series' count today so far, from the buckets (charted series)

    @property
    def ratio(self) -> float | None:
        r = self.event.get("ratio")
        return float(r) if isinstance(r, int | float) else None


@dataclass(frozen=True, slots=True)
class SilenceItem:
    id: str
    matchers: list[str]
    state: str
    starts: datetime
    ends: datetime
    created_by: str
    comment: str


def _environment() -> jinja2.Environment:
    import jinja2  # at the first page view: a daemon nobody looks at does not carry the template engine

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["num"] = _num
    return env


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt.strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0")


def matcher_text(m: silence_store.SilenceMatcher) -> str:
    op = ("=~" if m.is_regex else "=") if m.is_equal else ("!~" if m.is_regex else "!=")
    return f"{m.name}{op}{json.dumps(m.value, ensure_ascii=False)}"


def _objects(value: JsonOut) -> list[JsonOutObject]:
    """The objects of a list of `api.status` (`receivers`, `failed`): it writes nothing else there."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        return []
    return [v for v in value if isinstance(v, Mapping)]


class StatusPage:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._env: jinja2.Environment | None = None

    @property
    def env(self) -> jinja2.Environment:
        if self._env is None:
            self._env = _environment()
        return self._env

    def handle(self, req: Request) -> Response:
        chosen = Filters.of(req.query)
        return Response(200, self.render(chosen).encode("utf-8"), "text/html; charset=utf-8", headers=dict(HEADERS))

    def render(self, chosen: Filters | None = None) -> str:
        return self.env.get_template("status.html.j2").render(self.context(chosen or Filters()))

    # --- what the page shows -------------------------------------------------------------------------
    def context(self, chosen: Filters) -> dict[str, object]:
        """The template's variables (values of every kind: rows, `Text`, markup)."""
        d = self.daemon
        t = Text(d.cfg.locale)
        now = now_us(d.clock)
        problems: list[str] = []
        status: JsonOutObject
        try:
            status = api.status(d)
        except Exception as exc:  # the page must still say what it can
            log.exception("status page: status unavailable")
            problems.append(t("problem_store", error=type(exc).__name__))
            status = {"source": None, "receivers": [], "failed": [], "outbox": {"pending": None}}
        open_items: list[AlertItem] = []
        resolved: list[AlertItem] = []
        silences: list[SilenceItem] = []
        capped = 0
        if not problems:
            try:
                with d.store.reading() as conn:
                    open_items, resolved, silences = self._alerts(conn, now, t)
                    capped = self._charts(conn, [a for a in open_items if chosen.admits(a)], now, t)
            except Exception as exc:
                log.exception("status page: alerts unavailable")
                problems.append(t("problem_alerts", error=type(exc).__name__))
        shown = [a for a in open_items if chosen.admits(a)]
        tiers = [
            (tier, sorted((a for a in shown if a.tier is tier), key=lambda a: a.started, reverse=True))
            for tier in sorted(Tier, reverse=True)
        ]
        tier_totals = [(tier, sum(1 for a in open_items if a.tier is tier)) for tier in sorted(Tier, reverse=True)]
        rule_names = sorted({r.name for r in d.cfg.rules} | {a.rule for a in open_items})
        type_names = sorted({a.labels["type"] for a in [*open_items, *resolved] if "type" in a.labels})
        failed: dict[str, list[JsonOutObject]] = {}
        for f in _objects(status["failed"]):
            mine = failed.setdefault(str(f["receiver"]), [])
            if len(mine) < FAILURES_PER_RECEIVER:
                mine.append(f)
        receivers = [
            {
                **r,
                "next_in_s": None
                if (nxt := r.get("next_attempt")) is None
                else (datetime.fromisoformat(str(nxt)) - to_datetime(now, d.cfg.tz)).total_seconds(),
            }
            for r in _objects(status["receivers"])
        ]
        outbox = status["outbox"]
        return {
            "now": to_datetime(now, d.cfg.tz),
            "version": __version__,
            "refresh": REFRESH_S,
            "dry_run": d.pipeline.dry_run,
            "problems": problems,
            "standby": self._standby(status.get("leadership"), t),
            "source": status["source"],
            "receivers": receivers,
            "failed": failed,
            "pending_total": outbox.get("pending") if isinstance(outbox, Mapping) else None,
            "tiers": tiers,
            "open_count": len(open_items),
            "shown_count": len(shown),
            "tier_totals": tier_totals,
            "all_tiers": sorted(Tier, reverse=True),
            "rule_names": rule_names,
            "type_names": type_names,
            "chosen": chosen,
            "filtering": chosen.any,
            "link": chosen.link,
            "t": t,
            "resolved": [a for a in resolved if chosen.admits(a)],
            "silences": silences,
            "charts_capped": capped,
            "chart_days": CHART_DAYS,
            "timezone": d.cfg.timezone,
            "font_face": Markup(static.font_face_css()),
            "cjk_family": static.CJK_FAMILY,  # constants, no data
        }

    @staticmethod
    def _standby(lead: object, t: Text) -> str | None:
        """On a standby: who leads (the banner's words); None on the leader (`lead` is the status's
        `leadership` object, or None without one)."""
        if not isinstance(lead, dict) or lead.get("role") != "standby":
            return None
        leader = lead.get("leader")
        return t("no_leader") if leader is None else f"{leader['instance']} (epoch {leader['epoch']})"

    def _item(self, a: StoredAlert) -> AlertItem:
        tz = self.daemon.cfg.tz
        return AlertItem(
            instance=a.instance,
            fingerprint=a.fingerprint,
            rule=a.rule,
            kind=a.kind,
            labels=dict(a.labels),
            tier=a.tier,
            started=to_datetime(a.started_us, tz),
            updated=to_datetime(a.updated_us, tz),
            resolved=None if a.resolved_us is None else to_datetime(a.resolved_us, tz),
            value=a.value,
            baseline=a.baseline,
            peak=a.peak,
            event=a.last_event,
        )

    def _alerts(
        self, conn: Connection, now: int, t: Text
    ) -> tuple[list[AlertItem], list[AlertItem], list[SilenceItem]]:
        tz = self.daemon.cfg.tz
        open_rows = alert_store.open_alerts(conn)
        resolved_rows = alert_store.resolved_since(conn, now - RESOLVED_WINDOW_US, RESOLVED_LIMIT)
        items = [self._item(r) for r in open_rows]
        active = silence_store.load(conn, include_expired_after_us=now)
        muting = self._policy().muting(conn, self.daemon.pipeline.dispatch.dispatcher.router, now)
        by_id = {s.id: s for s in active}
        for item, row in zip(items, open_rows, strict=True):
            item.badges = self._badges(muting, row, by_id, t)
        silences = [
            SilenceItem(
                s.id,
                [matcher_text(m) for m in s.matchers],
                s.state(now),
                to_datetime(s.starts_us, tz),
                to_datetime(s.ends_us, tz),
                s.created_by,
                s.comment,
            )
            for s in active
        ]
        return items, [self._item(r) for r in resolved_rows], silences

    def _policy(self) -> Policy:
        """A private Policy with the dispatch stage's configuration (its own is in use on another thread)."""
        return Policy(self.daemon.pipeline.dispatch.policy.cfg)

    def _badges(
        self, muting: Muting, row: StoredAlert, silences: Mapping[str, silence_store.Silence], t: Text
    ) -> list[Badge]:
        hold = muting.hold(row)
        who = muting.acks.by_instance
        out = []
        if hold.silenced is not None:
            s = silences.get(hold.silenced)
            detail = t("held.silenced", who=s.created_by, comment=s.comment) if s is not None else hold.silenced
            out.append(Badge("silenced", detail, "#silence-" + hold.silenced))
        if hold.inhibited is not None:
            out.append(Badge("inhibited", t("held.inhibited", instance=hold.inhibited), "#alert-" + hold.inhibited))
        if hold.acknowledged:
            by, at = who.get(row.instance, ("", 0))
            when = _when(to_datetime(at, self.daemon.cfg.tz))
            out.append(Badge("acknowledged", t("held.acknowledged", who=by, when=when)))
        if hold.muted:
            out.append(Badge("muted", t("held.muted")))
        return out

    def _charts(self, conn: Connection, items: Sequence[AlertItem], now: int, t: Text) -> int:
        """Attach a daily chart to each alerted threshold series; returns how many were left without."""
        d = self.daemon
        rules = {r.name: r for r in d.cfg.rules if isinstance(r, ThresholdRuleConfig)}
        wanted = [a for a in items if a.kind == "threshold" and a.rule in rules and chartable(rules[a.rule], a.labels)]
        if not wanted:
            return 0
        wanted.sort(key=lambda a: (-int(a.tier), -a.started.timestamp()))
        today = d.calendar.day_of(now)
        longest = max(rules[a.rule].baseline_days for a in wanted)
        daily = DailyCounts.read(conn, d.calendar, today - CHART_DAYS + 1 - longest)
        coverage = d.state.coverage_start_us if d.state is not None else None
        for a in wanted[:MAX_CHARTS]:
            points = series_history(
                daily, rules[a.rule], a.labels, today=today, coverage_start_us=coverage, days=CHART_DAYS
            )
            # the days drawn: fewer than CHART_DAYS while the coverage is younger than that
            title = t("chart.title", rule=a.rule, series=series_name(a.labels, t), n=len(points))
            a.chart = daily_chart(points, title=title, text=t)
            a.today = points[-1].count
        return max(0, len(wanted) - MAX_CHARTS)


def series_name(labels: Mapping[str, str], t: Text | None = None) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or (t or Text("en"))("all_complaints")


@dataclass(frozen=True, slots=True)
class Filters:
    """What the page is asked to show: `?tier=…&rule=…&type=…` (each one exact value, empty: any), from
    the page's GET form or its links. The filtering is done here, on the server: the page has no script."""

    tier: str = ""
    rule: str = ""
    type: str = ""

    @staticmethod
    def of(query: Mapping[str, list[str]]) -> Filters:
        def one(name: str) -> str:
            values = query.get(name) or [""]
            return values[0].strip()

        return Filters(one("tier").lower(), one("rule"), one("type"))

    @property
    def any(self) -> bool:
        return bool(self.tier or self.rule or self.type)

    def admits(self, a: AlertItem) -> bool:
        return (
            (not self.tier or a.tier.label == self.tier)
            and (not self.rule or a.rule == self.rule)
            and (not self.type or a.labels.get("type") == self.type)
        )

    def link(self, **change: str) -> str:
        """The page's address with these filters and `change` applied, for links that narrow the view."""
        query = {"tier": self.tier, "rule": self.rule, "type": self.type, **change}
        kept = {k: v for k, v in query.items() if v}
        return "/?" + urlencode(kept) if kept else "/"


def register(daemon: Daemon) -> None:
    """Serve the status page at `/` (once, however often it is called)."""
    if daemon.app.routed("GET", "/"):
        return
    page = StatusPage(daemon)
    daemon.app.route("GET", "/", page.handle)
    static.register(daemon.app)
