"""The daemon's HTTP API, for people and for the CLI (which never opens the store itself).

- `GET /api/v1/status` — receivers (each with its delivery state: `state`, `consecutive_failures`,
  `last_error`, `last_error_at`, `next_attempt`, `oldest_pending_age_seconds`, `last_delivered`; see
  `sentinel.notify.health`), outbox, source (feeds `sentinel status`).
- `GET /api/v1/alerts` — open and recently resolved alerts with their silenced / inhibited /
  acknowledged / muted state.
- `GET|POST /api/v1/silences`, `DELETE /api/v1/silences/<id>` — Alertmanager's silence JSON.
- `POST /api/v1/ack` — `{"instance": …, "by": …}`. How an acknowledgement arrived (`acks.via`: `api` with
  the bearer token, `link` through a signed link) is the server's record, never the client's claim.
- `GET /ack/<token>` shows a confirmation page; only `POST /ack/<token>` acknowledges, so link
  previews and mail scanners never do.

Writes need `Authorization: Bearer <[api] token>`, compared in constant time; without a configured
token, writes are refused. Nothing here contains a secret.
"""

from __future__ import annotations

import functools
import hmac
import unicodedata
from collections.abc import Callable
from html import escape

from sentinel import __version__
from sentinel.alerting import silences as silence_store
from sentinel.alerting.ack import BadToken, acknowledge, verify_token
from sentinel.alerting.policy import Policy
from sentinel.clock import now_us
from sentinel.config import ThresholdRuleConfig
from sentinel.daemon import Daemon
from sentinel.history import counts_today
from sentinel.http import HTTPError, Request, Response
from sentinel.model import US, JsonOutObject, json_float, to_datetime
from sentinel.notify import outbox
from sentinel.notify.health import ReceiverHealth
from sentinel.store import alerts as alert_store
from sentinel.store.records import load_source_state

RECENT_S = 24 * 3600
BY_MAX = 200  # acks.by


def ack_by(value: object, *, default: str) -> str:
    """Who acknowledged, as the person typed it: bounded to the column and free of control characters, so
    it is stored as given (never cut) and shows on the status page as it was written."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError("must be a string (a name)")
    text = value.strip()
    if len(text) > BY_MAX:
        raise ValueError(f"at most {BY_MAX} characters, got {len(text)}")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise ValueError("contains control characters")
    return text or default


def status(daemon: Daemon) -> JsonOutObject:
    tz = daemon.cfg.tz
    now = now_us(daemon.clock)
    h = daemon.health

    def iso(us: int | None) -> str | None:
        return None if us is None else to_datetime(int(us), tz).isoformat()

    health: dict[str, ReceiverHealth] = daemon.pipeline.delivery.worker.health()
    with daemon.store.reading() as conn:
        pending = outbox.pending_counts(conn)
        last = outbox.last_outcomes(conn)
        failed = outbox.recent(conn, [outbox.FAILED], limit=20)
        open_by_tier = alert_store.open_counts_by_tier(conn)
        # a standby's memory holds no source state: the leader's, as committed
        state = daemon.state if daemon.leading else load_source_state(conn)
    receivers: list[JsonOutObject] = []
    for rc in daemon.cfg.receivers:
        lo = last.get(rc.name)
        hr = health.get(rc.name)
        receivers.append(
            {
                "name": rc.name,
                "kind": rc.kind,
                "urls": len(rc.all_urls()),
                "pending": pending.get(rc.name, 0),
                "last": None
                if lo is None
                else {
                    "status": lo["status"],
                    "at": iso(lo["at_us"]),
                    "error": lo["error"],
                    "next_attempt": iso(lo.get("next_attempt_us")),
                },
                **(receiver_fields(hr, iso) if hr is not None else {}),
            }
        )
    return {
        "version": __version__,
        "now": iso(now),
        "dry_run": daemon.pipeline.dry_run,
        "source": {
            "description": daemon.source.describe(),
            "up": h.up if daemon.leading else None,  # None: a standby does not poll (the leader does)
            "last_error": h.last_error,
            "newest_record": iso(h.newest_us),
            "lag_seconds": None if h.newest_us is None else round((now - h.newest_us) / US, 1),
            "watermark": iso(state.watermark_us) if state else None,
            "backfill_done": bool(state and state.backfill_done),
            "commit_delay": daemon.commit_delay.report().as_json(),
        },
        "receivers": receivers,
        "outbox": {"pending": sum(pending.values())},
        "failed": [
            {
                "id": m.id,
                "receiver": m.receiver,
                "kind": m.kind,
                "tier": m.tier,
                "error": m.last_error,
                "created": iso(m.created_us),
                "attempts": m.attempts,
                "instances": m.instances,
            }
            for m in failed
        ],
        "alerts": {"open": open_by_tier},
        "lock": daemon.lock_report(),
        "leadership": daemon.leadership.report(),
    }


def receiver_fields(h: ReceiverHealth, iso: Callable[[int | None], str | None]) -> JsonOutObject:
    """A receiver's delivery state in `/api/v1/status` (see `sentinel.notify.health` for the states)."""
    return {
        "state": h.state.value,
        "consecutive_failures": h.consecutive_failures,
        "last_error": h.last_error,
        "last_error_at": iso(h.last_error_at_us),
        "next_attempt": iso(h.next_attempt_us),
        "oldest_pending_age_seconds": None if h.oldest_pending_age_s is None else round(h.oldest_pending_age_s, 1),
        "last_delivered": iso(h.last_delivered_us),
    }


def _policy(daemon: Daemon) -> Policy:
    """The policy of the daemon's current configuration, for one request (it keeps no state of its own
    between questions: each request reads its own moment's mute stages)."""
    return Policy(daemon.cfg)


def last_figures(row: alert_store.StoredAlert) -> dict[str, float]:
    """The figures of an alert's last event that its row has no column for: `projected` (a day-mode
    surge's expected final count of the day at its pace) and `expected` (what a quiet series normally has
    in its silence)."""
    return {k: json_float(row.last_event[k]) for k in ("projected", "expected") if row.last_event.get(k) is not None}


def alerts_json(daemon: Daemon) -> list[JsonOutObject]:
    """Open alerts and those resolved in the last 24 h, as `/api/v1/alerts` returns them."""
    tz = daemon.cfg.tz
    now = now_us(daemon.clock)
    policy = _policy(daemon)
    router = daemon.pipeline.dispatch.dispatcher.router
    with daemon.store.reading() as conn:
        rows = alert_store.recent_alerts(conn, now - RECENT_S * US)
        muting = policy.muting(conn, router, now)
        by_ack = muting.acks.by_instance
        rules = {r.name: r for r in daemon.cfg.rules if isinstance(r, ThresholdRuleConfig)}
        today = counts_today(conn, rules, daemon.calendar, rows, now)
    out: list[JsonOutObject] = []
    for r in rows:
        hold = muting.hold(r)
        ack = by_ack.get(r.instance)
        value = today.get(r.instance, r.value)
        out.append(
            {
                "instance": r.instance,
                "fingerprint": r.fingerprint,
                "rule": r.rule,
                "kind": r.kind,
                "labels": dict(r.labels),
                "tier": r.tier.label,
                "state": r.status,
                "startsAt": to_datetime(r.started_us, tz).isoformat(),
                "endsAt": None if r.resolved_us is None else to_datetime(r.resolved_us, tz).isoformat(),
                "value": value,
                "valueAtLastChange": r.value,
                "baseline": r.baseline,
                **{k: last_figures(r).get(k) for k in ("projected", "expected")},
                "peak": max(r.peak, value),
                "silenced": hold.silenced is not None,
                "inhibited": hold.inhibited is not None,
                "acknowledged": ack is not None,
                "muted": hold.muted and r.is_open,
                "silencedBy": hold.silenced,
                "inhibitedBy": hold.inhibited,
                "acknowledgedBy": None if ack is None else ack[0],
                "replay": r.replay,
            }
        )
    return out


def _authorise(daemon: Daemon, req: Request) -> None:
    """The route guard of every write: judged from the head alone, so a refused client's body is never read."""
    token = daemon.cfg.api.token
    if token is None:
        raise HTTPError(403, "writes are disabled: set [api] token in the configuration")
    given = req.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.get().encode()):
        raise HTTPError(401, "missing or wrong bearer token")


def register(daemon: Daemon) -> None:
    app = daemon.app
    write = functools.partial(_authorise, daemon)

    app.route("GET", "/api/v1/status", lambda _req: Response.json(status(daemon)))
    app.route("GET", "/api/v1/alerts", lambda _req: Response.json(alerts_json(daemon)))

    def list_silences(_req: Request) -> Response:
        now = now_us(daemon.clock)
        with daemon.store.reading() as conn:
            items = silence_store.load(conn)
        return Response.json([s.to_api(daemon.cfg.tz, now) for s in items])

    def add_silence(req: Request) -> Response:
        now = now_us(daemon.clock)
        try:
            matchers, starts, ends, by, comment = silence_store.parse(req.json(), now)
        except silence_store.SilenceError as exc:
            raise HTTPError(400, str(exc)) from None
        with daemon.store.transaction(fenced=False) as conn:  # any instance may write it
            sid = silence_store.add(conn, matchers, starts, ends, by, comment, now)
        return Response.json({"silenceID": sid})

    def expire_silence(req: Request) -> Response:
        with daemon.store.transaction(fenced=False) as conn:  # any instance may write it
            ok = silence_store.expire(conn, req.params["sid"], now_us(daemon.clock))
        if not ok:
            raise HTTPError(404, "no such active silence")
        return Response.json({"status": "expired"})

    def ack(req: Request) -> Response:
        body = req.json()
        instance = body.get("instance") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(instance, str):
            raise HTTPError(400, 'expected {"instance": …, "by": …}')
        if "via" in body:
            raise HTTPError(
                400,
                'via: set by the server from how the acknowledgement arrives ("api" with the '
                'bearer token, "link" through a signed link); do not send it',
            )
        unknown = sorted(set(body) - {"instance", "by"})
        if unknown:
            raise HTTPError(400, f'unknown field {unknown[0][:40]!r} (expected "instance" and "by")')
        try:
            by = ack_by(body.get("by"), default="api")
        except ValueError as exc:
            raise HTTPError(400, f"by: {exc}") from None
        try:
            with daemon.store.transaction(fenced=False) as conn:  # any instance may write it
                result = acknowledge(conn, instance, by, "api", now_us(daemon.clock))
        except KeyError:
            raise HTTPError(404, f"no alert instance {instance[:40]!r}") from None
        return Response.json({"status": result, "instance": instance})

    app.route("GET", "/api/v1/silences", list_silences)
    app.route("POST", "/api/v1/silences", add_silence, guard=write)
    app.route("DELETE", "/api/v1/silences/<sid>", expire_silence, guard=write)
    app.route("DELETE", "/api/v1/silence/<sid>", expire_silence, guard=write)
    app.route("POST", "/api/v1/ack", ack, guard=write)
    app.route("GET", "/ack/<token>", lambda req: ack_page(daemon, req, confirm=False))
    app.route("POST", "/ack/<token>", lambda req: ack_page(daemon, req, confirm=True))


_PAGE = """<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><style>body{{font-family:sans-serif;max-width:40rem;margin:2rem auto;
padding:0 1rem}}button{{font-size:1.1rem;padding:.5rem 1.5rem}}.bad{{color:#a50f15}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def ack_page(daemon: Daemon, req: Request, *, confirm: bool) -> Response:
    secret = daemon.cfg.api.ack_secret
    if secret is None:
        return Response.html(
            _PAGE.format(
                title="确认预警 / Acknowledge",
                body="<p class=bad>Acknowledgement links are disabled ([api] ack_secret is not set).</p>",
            ),
            404,
        )
    try:
        claim = verify_token(secret.get(), req.params["token"], now_us(daemon.clock) / US)
    except BadToken as exc:
        return Response.html(
            _PAGE.format(title="链接无效 / Link not valid", body=f"<p class=bad>{escape(str(exc))}</p>"), 403
        )
    with daemon.store.reading() as conn:
        row = alert_store.get_alert(conn, claim.instance)
    if row is None:
        return Response.html(_PAGE.format(title="未找到 / Not found", body="<p class=bad>No such alert.</p>"), 404)
    labels = " · ".join(f"{escape(k)} {escape(v)}" for k, v in row.labels.items())
    summary = (
        f"<p><b>{escape(row.rule)}</b> — {labels}<br>tier {escape(row.tier.label)}, "
        f"{escape(row.status)}, since {to_datetime(row.started_us, daemon.cfg.tz):%Y-%m-%d %H:%M}</p>"
    )
    if not confirm:
        form = (
            '<form method="post"><label>姓名 / Your name <input name="by" maxlength="100"></label> '
            '<button type="submit">确认 / Acknowledge</button></form>'
        )
        return Response.html(_PAGE.format(title="确认预警 / Acknowledge alert", body=summary + form))
    try:
        by = ack_by(req.form().get("by"), default="link")
    except ValueError as exc:
        return Response.html(
            _PAGE.format(
                title="姓名无效 / Name not valid", body=summary + f"<p class=bad>Your name: {escape(str(exc))}</p>"
            ),
            400,
        )
    with daemon.store.transaction(fenced=False) as conn:  # any instance may write it
        result = acknowledge(conn, claim.instance, by, "link", now_us(daemon.clock))
    text = "已确认 / Acknowledged" if result == "acknowledged" else "此前已确认 / Already acknowledged"
    return Response.html(_PAGE.format(title=text, body=summary + "<p>Repeats and escalation stop for this alert.</p>"))
