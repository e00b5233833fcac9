"""Alertmanager's HTTP API v2 over Sentinel's alerts, silences and routes, so the tools people already
run against Alertmanager (amtool, Grafana's Alertmanager data source, karma) work against Sentinel
unchanged. The JSON follows Alertmanager's OpenAPI spec (`api/v2/openapi.yaml`, 0.25 and later).

- `GET /api/v2/status` — cluster `disabled` (one daemon, no peers), version, the routes, receivers (names)
  and inhibitions as an Alertmanager configuration in `config.original` (never a URL or a secret),
  `uptime` (when this process started serving).
- `GET /api/v2/alerts` — open alerts; `active`, `silenced`, `inhibited`, `unprocessed`, `filter`
  (Prometheus matchers `name=value`, `!=`, `=~`, `!~`, quoted or not) and `receiver` (a regex).
- `GET /api/v2/alerts/groups` — the same alerts, grouped as Sentinel's routes group them, per receiver.
- `GET|POST /api/v2/silences`, `GET|DELETE /api/v2/silence/{id}` — Sentinel's silences; a POST with an
  `id` updates it as Alertmanager does (see `silences.update`).
- `GET /api/v2/receivers` — the configured receivers.
- `GET /-/healthy`, `GET /-/ready`, `POST /-/reload` (the same reload as SIGHUP).

An alert's labels are its series labels (`type`, `channel`, …), `kind`, `alertname` (the rule) and
`severity` (the tier); its annotations carry a summary, the value and baseline. Its state is
`unprocessed` until the dispatcher has taken its latest event, `suppressed` while a silence, an
inhibition or a route's mute window holds it, else `active`.

Reads are open like `/api/v1`'s; writes (silences, reload) need the same bearer token, judged by the same
guard before a body is read. Errors are a JSON string, as Alertmanager answers them (amtool prints it).

This module holds the handlers and what they ask the store (`open_alerts`); the wire forms that need no
request (matchers, times, silences, `config.original`) are `sentinel.api_v2.codec`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from sentinel import __version__
from sentinel.alerting import silences as silence_store
from sentinel.alerting.dispatch import CURSOR
from sentinel.alerting.policy import Policy
from sentinel.alerting.routing import Route, Router, labels_of
from sentinel.api import _authorise, last_figures
from sentinel.api_v2.codec import (
    AM_NAME,
    NO_RECEIVER,
    STATE_ORDER,
    am_labels,
    filter_matches,
    iso,
    original,
    parse_matcher,
    silence_filter_hit,
    silence_json,
    silence_order,
)
from sentinel.clock import now_us
from sentinel.config import Config, ThresholdRuleConfig
from sentinel.daemon import Daemon
from sentinel.history import counts_today
from sentinel.http import HTTPError, Request, Response
from sentinel.model import US, JsonOutObject
from sentinel.notify import outbox
from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert

PREFIX = "/api/v2"
EXPIRED_KEPT_US = 5 * 86_400 * US
"""Expired silences stay listed this long (Alertmanager's default retention, `--data.retention=120h`)."""


# --- request helpers ---------------------------------------------------------------------------------


def _flag(req: Request, name: str, default: bool = True) -> bool:
    values = req.query.get(name)
    if not values:
        return default
    v = values[-1].strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise HTTPError(400, f"{name}: {values[-1][:20]!r} is not a boolean (true or false)")


def _filters(req: Request, name: str = "filter") -> list[silence_store.SilenceMatcher]:
    try:
        return [parse_matcher(f) for f in req.query.get(name, []) if f.strip()]
    except ValueError as exc:
        raise HTTPError(400, f"{name}: {exc}") from None


def _receiver_filter(req: Request) -> re.Pattern[str] | None:
    text = (req.query.get("receiver") or [""])[-1]
    if not text:  # amtool sends none when `--receiver` is not given
        return None
    try:
        return re.compile(f"(?:{text})")
    except re.error as exc:
        raise HTTPError(400, f"failed to parse receiver param: {exc}") from None


def _am_errors(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Errors as a JSON string, Alertmanager's error body, so amtool shows the reason."""

    @functools.wraps(handler)
    def run(req: Request) -> Response:
        try:
            return handler(req)
        except HTTPError as err:
            return Response.json(err.message, err.status)

    return run


# --- alerts ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listed:
    """One open alert as the API shows it, with what holds it and where it goes."""

    row: StoredAlert  # its value and peak as of now (see `open_alerts`)
    labels: dict[str, str]  # Alertmanager's: series labels, kind, alertname, severity
    routes: tuple[Route, ...]
    receivers: tuple[str, ...]
    silenced_by: tuple[str, ...]
    inhibited_by: tuple[str, ...]
    muted_by: tuple[str, ...]
    unprocessed: bool

    @property
    def state(self) -> str:
        if self.unprocessed:
            return "unprocessed"
        return "suppressed" if self.silenced_by or self.inhibited_by or self.muted_by else "active"

    def to_json(self, cfg: Config, now: int) -> JsonOutObject:
        r = self.row
        summary_text = f"{r.rule} {' '.join(f'{k}={v}' for k, v in r.labels.items())}".strip()
        annotations = {"summary": summary_text, "value": f"{r.value:g}", "peak": f"{r.peak:g}", "instance": r.instance}
        if r.baseline is not None:
            annotations["baseline"] = f"{r.baseline:g}"
        for key, value in last_figures(r).items():  # projected (day-mode surge), expected (quiet series)
            annotations[key] = f"{value:g}"
        poll_us = int(cfg.source.poll_interval.total_seconds() * US) if cfg.source is not None else 60 * US
        return {
            "labels": self.labels,
            "annotations": annotations,
            "receivers": [{"name": n} for n in self.receivers],
            "fingerprint": r.fingerprint,
            "startsAt": iso(r.started_us),
            "updatedAt": iso(r.updated_us),
            # open: no end known; like an alert its source keeps re-sending, it ends "soon" unless renewed
            "endsAt": iso(max(now, r.updated_us) + 2 * poll_us),
            "generatorURL": f"{cfg.base_url}/#alert-{r.instance}",
            "status": {
                "state": self.state,
                "silencedBy": list(self.silenced_by),
                "inhibitedBy": list(self.inhibited_by),
                "mutedBy": list(self.muted_by),
            },
        }


def _receivers(routes: Iterable[Route]) -> tuple[str, ...]:
    names: list[str] = []
    for r in routes:
        names += [n for n in r.cfg.receivers if n != NO_RECEIVER and n not in names]
    return tuple(names)


def open_alerts(daemon: Daemon, now: int) -> list[Listed]:
    """Every open alert with its receivers and holds, in fingerprint order (Alertmanager's)."""
    cfg = daemon.cfg
    router = Router(cfg)
    policy = Policy(cfg)  # of the current configuration; the mute stages are this request's own moment
    with daemon.store.reading() as conn:
        muting = policy.muting(conn, router, now)
        rows = list(muting.open_alerts)
        cursor = outbox.get_cursor(conn, CURSOR) or 0
        waiting = alert_store.instances_with_events_after(conn, cursor)
        thresholds = {rule.name: rule for rule in cfg.rules if isinstance(rule, ThresholdRuleConfig)}
        today = counts_today(conn, thresholds, daemon.calendar, rows, now)
    # the value now, as /api/v1/alerts reports it
    rows = [
        replace(r, value=today[r.instance], peak=max(r.peak, today[r.instance])) if r.instance in today else r
        for r in rows
    ]
    fingerprints = {r.instance: r.fingerprint for r in rows}
    out = []
    for r in rows:
        routes = tuple(router.route(labels_of(r)))
        inhibitor = muting.inhibition.mutes(r)
        out.append(
            Listed(
                row=r,
                labels=am_labels(r),
                routes=routes,
                receivers=_receivers(routes),
                silenced_by=muting.silences.all_muting(r),
                inhibited_by=() if inhibitor is None else (fingerprints.get(inhibitor, inhibitor),),
                muted_by=tuple(m for rt in routes for m in muting.windows.route_reasons(rt)),
                unprocessed=r.instance in waiting,
            )
        )
    out.sort(key=lambda a: a.row.fingerprint)
    return out


def _wanted(req: Request, *, unprocessed_flag: bool) -> Callable[[Listed], bool]:
    """The query's filter, as Alertmanager applies it: `active=false` drops active alerts, `silenced=false`
    silenced ones, `inhibited=false` inhibited ones, `unprocessed=false` unprocessed ones; `filter` matches
    the labels; `receiver` must fully match one of the alert's receivers."""
    active, silenced, inhibited = _flag(req, "active"), _flag(req, "silenced"), _flag(req, "inhibited")
    unprocessed = _flag(req, "unprocessed") if unprocessed_flag else True
    matchers = _filters(req)
    receiver = _receiver_filter(req)
    receiver_labels = _filters(req, "receiver_matchers")  # Sentinel's receivers have no labels of their own

    def keep(a: Listed) -> bool:
        if not active and a.state == "active":
            return False
        if not silenced and a.silenced_by:
            return False
        if not inhibited and a.inhibited_by:
            return False
        if not unprocessed and a.state == "unprocessed":
            return False
        if receiver is not None and not any(receiver.fullmatch(n) for n in a.receivers):
            return False
        if receiver_labels and not (a.receivers and filter_matches(receiver_labels, {})):
            return False
        return filter_matches(matchers, a.labels)

    return keep


def groups_json(
    listed: Sequence[Listed], cfg: Config, now: int, receiver: re.Pattern[str] | None
) -> list[JsonOutObject]:
    """Alerts per (route group, receiver), as Sentinel's dispatcher groups them: a route's `group_by`
    labels (Sentinel's `rule` and `tier` shown as `alertname` and `severity`) for each of its receivers."""
    groups: dict[tuple[int, str, str], tuple[dict[str, str], list[JsonOutObject]]] = {}  # labels, alerts
    for a in listed:
        own = labels_of(a.row)
        for route in a.routes:
            key, glabels = route.group_key(own)
            shown = {AM_NAME.get(k, k): v for k, v in glabels.items()}
            for name in route.cfg.receivers:
                if name == NO_RECEIVER or (receiver is not None and not receiver.fullmatch(name)):
                    continue
                _, alerts = groups.setdefault((route.index, key, name), (shown, []))
                alerts.append(a.to_json(cfg, now))
    order = sorted(groups, key=lambda k: (k[2], k[0], json.dumps(groups[k][0])))
    return [
        {"labels": groups[k][0], "routeLabels": {}, "receiver": {"name": k[2]}, "alerts": groups[k][1]} for k in order
    ]


def register(daemon: Daemon) -> None:
    app = daemon.app
    write = functools.partial(_authorise, daemon)
    started_us = now_us(daemon.clock)

    def route(method: str, path: str, handler: Callable[[Request], Response], *, guarded: bool = False) -> None:
        app.route(method, path, _am_errors(handler), guard=write if guarded else None)

    def status(_req: Request) -> Response:
        cfg = daemon.cfg
        return Response.json(
            {
                "cluster": {"status": "disabled", "peers": []},
                "versionInfo": {
                    "version": __version__,
                    "revision": "",
                    "branch": "",
                    "buildUser": "sentinel",
                    "buildDate": "",
                    "goVersion": "none (Sentinel, Python)",
                },
                "config": {"original": original(cfg)},
                "uptime": iso(started_us),
            }
        )

    def receivers(_req: Request) -> Response:
        return Response.json([{"name": r.name} for r in daemon.cfg.receivers])

    def get_alerts(req: Request) -> Response:
        keep = _wanted(req, unprocessed_flag=True)
        now = now_us(daemon.clock)
        return Response.json([a.to_json(daemon.cfg, now) for a in open_alerts(daemon, now) if keep(a)])

    def get_groups(req: Request) -> Response:
        keep = _wanted(req, unprocessed_flag=False)
        now = now_us(daemon.clock)
        listed = [a for a in open_alerts(daemon, now) if keep(a)]
        return Response.json(groups_json(listed, daemon.cfg, now, _receiver_filter(req)))

    def get_silences(req: Request) -> Response:
        filters = _filters(req)
        states = {state for state in STATE_ORDER if _flag(req, state)}  # Alertmanager 0.28 and later
        now = now_us(daemon.clock)
        with daemon.store.reading() as conn:
            items = silence_store.load(conn, include_expired_after_us=now - EXPIRED_KEPT_US)
        items = sorted(
            (s for s in items if s.state(now) in states and silence_filter_hit(s, filters)),
            key=lambda s: silence_order(s, now),
        )
        return Response.json([silence_json(s, now) for s in items])

    def get_silence(req: Request) -> Response:
        with daemon.store.reading() as conn:
            s = silence_store.get(conn, req.params["sid"])
        if s is None:
            raise HTTPError(404, f"silence {req.params['sid'][:40]!r} not found")
        return Response.json(silence_json(s, now_us(daemon.clock)))

    def post_silence(req: Request) -> Response:
        now = now_us(daemon.clock)
        body = req.json()
        try:
            matchers, starts, ends, by, comment = silence_store.parse(body, now)
        except silence_store.SilenceError as exc:
            raise HTTPError(400, f"silence not valid: {exc}") from None
        sid = body.get("id") if isinstance(body, dict) else None
        if sid is not None and not isinstance(sid, str):
            raise HTTPError(400, "silence not valid: id must be a string")
        with daemon.store.transaction(fenced=False) as conn:  # any instance may write it
            if sid:
                try:
                    sid = silence_store.update(conn, sid, matchers, starts, ends, by, comment, now)
                except KeyError:
                    raise HTTPError(404, f"silence {sid[:40]!r} not found") from None
            else:
                sid = silence_store.add(conn, matchers, max(starts, now), ends, by, comment, now)
        return Response.json({"silenceID": sid})

    def delete_silence(req: Request) -> Response:
        sid = req.params["sid"]
        now = now_us(daemon.clock)
        with daemon.store.transaction(fenced=False) as conn:  # any instance may write it
            s = silence_store.get(conn, sid)
            if s is None:
                raise HTTPError(404, f"silence {sid[:40]!r} not found")
            if s.state(now) == "expired":
                raise HTTPError(404, f"silence {sid[:40]!r} already expired")
            silence_store.expire(conn, sid, now)
        return Response(200)

    def healthy(_req: Request) -> Response:
        return Response.text("OK")

    def ready(_req: Request) -> Response:
        problems = daemon.readiness()
        if problems:
            return Response.text("not ready: " + "; ".join(problems) + "\n", 503)
        return Response.text("OK")

    def reload(_req: Request) -> Response:
        """The reload SIGHUP does, answered when done: 200, or 500 with the configuration's problems
        (phrased as `sentinel check` prints them: file, key and reason, never a value) while the old
        configuration keeps running."""
        from sentinel.loader import ConfigError, load

        if daemon.config_path is None:
            raise HTTPError(500, "this daemon was started without a configuration file; nothing to reload")
        try:
            load(daemon.config_path)
        except ConfigError as exc:
            daemon.reload()  # logs the problems and sets sentinel_config_last_reload_successful to 0
            raise HTTPError(
                500, "reload refused, the previous configuration keeps running: " + "; ".join(exc.problems)
            ) from None
        if not daemon.reload():
            raise HTTPError(500, "reload failed, the previous configuration keeps running (see the daemon's log)")
        return Response.text("OK")

    route("GET", f"{PREFIX}/status", status)
    route("GET", f"{PREFIX}/receivers", receivers)
    route("GET", f"{PREFIX}/alerts", get_alerts)
    route("GET", f"{PREFIX}/alerts/groups", get_groups)
    route("GET", f"{PREFIX}/silences", get_silences)
    route("POST", f"{PREFIX}/silences", post_silence, guarded=True)
    route("GET", f"{PREFIX}/silence/<sid>", get_silence)
    route("DELETE", f"{PREFIX}/silence/<sid>", delete_silence, guarded=True)
    route("GET", "/-/healthy", healthy)
    route("GET", "/-/ready", ready)
    route("POST", "/-/reload", reload, guarded=True)
