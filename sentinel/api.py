"""The daemon's JSON API for people and the CLI: `/api/v1/status` (receivers, outbox, source).

Reads only; nothing here contains a secret (receivers are named, sources described without passwords).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from sentinel import __version__
from sentinel.clock import now_us
from sentinel.daemon import Daemon
from sentinel.http import Response
from sentinel.model import US, to_datetime
from sentinel.notify import outbox
from sentinel.store.schema import alerts


def status(daemon: Daemon) -> dict[str, Any]:
    tz = daemon.cfg.tz
    now = now_us(daemon.clock)
    h = daemon.health

    def iso(us: int | None) -> str | None:
        return None if us is None else to_datetime(int(us), tz).isoformat()

    with daemon.store.reading() as conn:
        pending = outbox.pending_counts(conn)
        last = outbox.last_outcomes(conn)
        failed = outbox.recent(conn, [outbox.FAILED], limit=20)
        open_by_tier = {t: int(n) for t, n in conn.execute(
            select(alerts.c.tier, func.count()).where(alerts.c.status == "open").group_by(alerts.c.tier))}
    receivers = []
    for rc in daemon.cfg.receivers:
        lo = last.get(rc.name)
        receivers.append({
            "name": rc.name, "kind": rc.kind, "urls": len(rc.all_urls()), "pending": pending.get(rc.name, 0),
            "last": None if lo is None else {"status": lo["status"], "at": iso(lo["at_us"]), "error": lo["error"]},
        })
    state = daemon.state
    return {
        "version": __version__,
        "now": iso(now),
        "dry_run": bool(daemon.extras.get("dry_run", False)),
        "source": {
            "description": daemon.source.describe(),
            "up": h.up,
            "last_error": h.last_error,
            "newest_record": iso(h.newest_us),
            "lag_seconds": None if h.newest_us is None else round((now - h.newest_us) / US, 1),
            "watermark": iso(state.watermark_us) if state else None,
            "backfill_done": bool(state and state.backfill_done),
        },
        "receivers": receivers,
        "outbox": {"pending": sum(pending.values())},
        "failed": [{"id": m.id, "receiver": m.receiver, "kind": m.kind, "tier": m.tier, "error": m.last_error,
                    "created": iso(m.created_us), "attempts": m.attempts, "instances": m.instances}
                   for m in failed],
        "alerts": {"open": open_by_tier},
    }


def register(daemon: Daemon) -> None:
    daemon.app.route("GET", "/api/v1/status", lambda _req: Response.json(status(daemon)))


