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
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sentinel import __version__
from sentinel.alerting import silences as silence_store
from sentinel.alerting.dispatch import CURSOR
from sentinel.alerting.policy import Policy
from sentinel.alerting.routing import IMPLICIT, Route, Router, labels_of
from sentinel.api import _authorise, last_figures
from sentinel.clock import now_us
from sentinel.config import Config, MatchValue, ThresholdRuleConfig, summary
from sentinel.daemon import Daemon
from sentinel.history import counts_today
from sentinel.http import HTTPError, Request, Response
from sentinel.model import US
from sentinel.notify import outbox
from sentinel.store import alerts as alert_store
from sentinel.store.alerts import StoredAlert
from sentinel.units import format_duration

PREFIX = "/api/v2"
EXPIRED_KEPT_US = 5 * 86_400 * US
"""Expired silences stay listed this long (Alertmanager's default retention, `--data.retention=120h`)."""
NO_RECEIVER = "-"  # the implicit route's stand-in when no receiver is configured


# --- matchers in Prometheus's text form ------------------------------------------------------------

_MATCHER = re.compile(r'\s*(?P<name>[^\s=!~"{},]+)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*', re.S)


def parse_matcher(text: str) -> silence_store.SilenceMatcher:
    """`name=value`, `name!=value`, `name=~regex`, `name!~regex`, the value bare or double-quoted with
    Go's escapes, as amtool and Grafana send them in `filter`. Raises ValueError saying what is wrong."""
    m = _MATCHER.fullmatch(text)
    if m is None:
        raise ValueError(f"bad matcher {text[:80]!r}: expected name=value, name!=value, name=~regex or "
                         "name!~regex")
    value = m["value"]
    if value.startswith('"'):
        try:
            unquoted = json.loads(value)
        except json.JSONDecodeError:
            unquoted = None
        if not isinstance(unquoted, str):
            raise ValueError(f"bad matcher {text[:80]!r}: the quoted value is not closed or has a bad escape")
        value = unquoted
    is_regex = "~" in m["op"]
    if is_regex:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"bad matcher {text[:80]!r}: bad regular expression: {exc}") from None
    return silence_store.SilenceMatcher(m["name"], value, is_regex, not m["op"].startswith("!"))


def filter_matches(matchers: Sequence[silence_store.SilenceMatcher], labels: Mapping[str, str]) -> bool:
    """Alertmanager's filter: as the matcher says, except that an empty value also accepts the label's
    absence (`=`/`=~`) or its presence (`!=`/`!~`) — `foo=""` asks for alerts without `foo`."""
    for m in matchers:
        present = m.name in labels
        if m.value == "" and present != m.is_equal:
            continue
        if not m(labels):
            return False
    return True


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


def _iso(us: int) -> str:
    """RFC 3339 in UTC with milliseconds, as Alertmanager writes times."""
    dt = datetime.fromtimestamp(us // US, UTC).replace(microsecond=us % US)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    def to_json(self, cfg: Config, now: int) -> dict[str, Any]:
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
            "startsAt": _iso(r.started_us),
            "updatedAt": _iso(r.updated_us),
            # open: no end known; like an alert its source keeps re-sending, it ends "soon" unless renewed
            "endsAt": _iso(max(now, r.updated_us) + 2 * poll_us),
            "generatorURL": f"{cfg.base_url}/#alert-{r.instance}",
            "status": {"state": self.state, "silencedBy": list(self.silenced_by),
                       "inhibitedBy": list(self.inhibited_by), "mutedBy": list(self.muted_by)},
        }


def am_labels(alert: StoredAlert) -> dict[str, str]:
    """The labels Alertmanager's tools see: those routes and silences match on (the series labels, `kind`),
    with the rule as `alertname` and the tier as `severity`."""
    return {**alert.labels, "alertname": alert.rule, "severity": alert.tier.label, "kind": alert.kind}


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
    rows = [replace(r, value=today[r.instance], peak=max(r.peak, today[r.instance])) if r.instance in today else r
            for r in rows]
    fingerprints = {r.instance: r.fingerprint for r in rows}
    out = []
    for r in rows:
        routes = tuple(router.route(labels_of(r)))
        inhibitor = muting.inhibition.mutes(r)
        out.append(Listed(
            row=r, labels=am_labels(r), routes=routes, receivers=_receivers(routes),
            silenced_by=muting.silences.all_muting(r),
            inhibited_by=() if inhibitor is None else (fingerprints.get(inhibitor, inhibitor),),
            muted_by=tuple(m for rt in routes for m in muting.windows.route_reasons(rt)),
            unprocessed=r.instance in waiting))
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


_AM_NAME = {own: am for am, own in silence_store.ALIASES.items()}  # rule -> alertname, tier -> severity


def groups_json(listed: Sequence[Listed], cfg: Config, now: int, receiver: re.Pattern[str] | None
                ) -> list[dict[str, Any]]:
    """Alerts per (route group, receiver), as Sentinel's dispatcher groups them: a route's `group_by`
    labels (Sentinel's `rule` and `tier` shown as `alertname` and `severity`) for each of its receivers."""
    groups: dict[tuple[int, str, str], dict[str, Any]] = {}
    for a in listed:
        own = labels_of(a.row)
        for route in a.routes:
            key, glabels = route.group_key(own)
            shown = {_AM_NAME.get(k, k): v for k, v in glabels.items()}
            for name in route.cfg.receivers:
                if name == NO_RECEIVER or (receiver is not None and not receiver.fullmatch(name)):
                    continue
                g = groups.setdefault((route.index, key, name), {"labels": shown, "routeLabels": {},
                                                                 "receiver": {"name": name}, "alerts": []})
                g["alerts"].append(a.to_json(cfg, now))
    return [groups[k] for k in sorted(groups, key=lambda k: (k[2], k[0], json.dumps(groups[k]["labels"])))]


# --- silences --------------------------------------------------------------------------------------

_STATE_ORDER = {"active": 0, "pending": 1, "expired": 2}


def silence_json(s: silence_store.Silence, now: int) -> dict[str, Any]:
    return {"id": s.id, "status": {"state": s.state(now)}, "updatedAt": _iso(s.updated_us),
            "matchers": [m.to_json() for m in s.matchers], "startsAt": _iso(s.starts_us), "endsAt": _iso(s.ends_us),
            "createdBy": s.created_by, "comment": s.comment, "annotations": {}}


def _sort_key(s: silence_store.Silence, now: int) -> tuple[int, int]:
    """Alertmanager's order: active (soonest end first), pending (soonest start), expired (latest end)."""
    state = s.state(now)
    at = {"active": s.ends_us, "pending": s.starts_us, "expired": -s.ends_us}[state]
    return _STATE_ORDER[state], at


def _silence_filter_hit(s: silence_store.Silence, filters: Sequence[silence_store.SilenceMatcher]) -> bool:
    """Alertmanager's silence filter: every filter matcher appears among the silence's matchers, same name,
    kind and value."""
    return all(f in s.matchers for f in filters)


# --- the routes ------------------------------------------------------------------------------------

UNROUTED = "sentinel-unrouted"
"""`config.original`'s receiver for alerts no route matches: Sentinel tells no one of them."""


def _am_matchers(spec: Mapping[str, MatchValue]) -> list[str]:
    """Sentinel's route matchers (`value`, `~regex`, or a list of either) as Alertmanager's matcher text,
    with Sentinel's label names as this API shows them (`rule` -> `alertname`, `tier` -> `severity`)."""
    out = []
    for name, value in spec.items():
        items = [value] if isinstance(value, str) else list(value)
        shown = _AM_NAME.get(name, name)
        if len(items) == 1 and not items[0].startswith("~"):
            out.append(f"{shown}={json.dumps(items[0], ensure_ascii=False)}")
            continue
        either = "|".join(v[1:] if v.startswith("~") else re.escape(v) for v in items)
        out.append(f"{shown}=~{json.dumps(either if len(items) == 1 else f'(?:{either})', ensure_ascii=False)}")
    return out


def original(cfg: Config) -> str:
    """`config.original`: Sentinel's routes, receivers (names only) and inhibitions as an Alertmanager
    configuration, so `amtool config routes` and Grafana's notification policies can read them, under a
    comment with the rest in brief. Never a URL, a token or a secret: receivers keep only their name.

    A Sentinel route names several receivers; in Alertmanager's tree it becomes a route whose children,
    one per receiver, all match (`continue`), so the alert reaches each. The root's receiver stands for
    Sentinel's "no route matched: nobody is told"."""
    router = Router(cfg)
    comments = [f"Sentinel {__version__}'s routing in Alertmanager's form, for amtool and Grafana to read "
                "(Sentinel's own configuration is its TOML file).",
                *summary(cfg).splitlines()]
    children = []
    for route in router.routes:
        rc = route.cfg
        where = "default route" if route.index == IMPLICIT else f"route {route.index + 1}"
        if rc.mute:
            comments.append(f"{where}: muted {', '.join(map(str, rc.mute))} ({cfg.timezone})")
        if rc.escalate_to:
            comments.append(f"{where}: escalates to {', '.join(rc.escalate_to)} after "
                            f"{format_duration(rc.escalate_after)} unacknowledged")
        node: dict[str, Any] = {}
        if rc.match:
            node["matchers"] = _am_matchers(rc.match)
        names = [UNROUTED if n == NO_RECEIVER else n for n in rc.receivers]
        if len(names) == 1:
            node["receiver"] = names[0]
        else:
            node["routes"] = [{"receiver": n, "continue": i < len(names) - 1} for i, n in enumerate(names)]
        node.update({"group_by": [_AM_NAME.get(g, g) for g in rc.group_by],
                     "group_wait": format_duration(rc.group_wait),
                     "group_interval": format_duration(rc.group_interval),
                     "repeat_interval": format_duration(rc.repeat_interval), "continue": rc.continue_})
        children.append(node)
    doc: dict[str, Any] = {
        "route": {"receiver": UNROUTED, "routes": children},
        "receivers": [{"name": r.name} for r in cfg.receivers] + [{"name": UNROUTED}],
    }
    if cfg.inhibit:
        doc["inhibit_rules"] = [{"source_matchers": _am_matchers(i.source), "target_matchers": _am_matchers(i.target),
                                 **({"equal": [_AM_NAME.get(e, e) for e in i.equal]} if i.equal else {})}
                                for i in cfg.inhibit]
    import yaml  # only when asked: PyYAML costs an idle daemon about 1 MB for one rarely read answer

    header = "".join(f"# {line}\n" for line in comments)
    return header + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def register(daemon: Daemon) -> None:
    app = daemon.app
    write = functools.partial(_authorise, daemon)
    started_us = now_us(daemon.clock)

    def route(method: str, path: str, handler: Callable[[Request], Response], *, guarded: bool = False) -> None:
        app.route(method, path, _am_errors(handler), guard=write if guarded else None)

    def status(_req: Request) -> Response:
        cfg = daemon.cfg
        return Response.json({
            "cluster": {"status": "disabled", "peers": []},
            "versionInfo": {"version": __version__, "revision": "", "branch": "", "buildUser": "sentinel",
                            "buildDate": "", "goVersion": "none (Sentinel, Python)"},
            "config": {"original": original(cfg)},
            "uptime": _iso(started_us),
        })

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
        states = {state for state in _STATE_ORDER if _flag(req, state)}  # Alertmanager 0.28 and later
        now = now_us(daemon.clock)
        with daemon.store.reading() as conn:
            items = silence_store.load(conn, include_expired_after_us=now - EXPIRED_KEPT_US)
        items = sorted((s for s in items if s.state(now) in states and _silence_filter_hit(s, filters)),
                       key=lambda s: _sort_key(s, now))
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
            raise HTTPError(500, "reload refused, the previous configuration keeps running: "
                                 + "; ".join(exc.problems)) from None
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

