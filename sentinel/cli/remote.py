"""The commands that ask the running daemon through its API: `status`, `ack` and `silence`.

They read only what `sentinel.client_config` reads (the API's address and token, the person's language
and time zone), never the full configuration, so they start fast and work where the daemon's secrets are
not set. Words in the configured `locale`, times in the configured `timezone`. Exit statuses as
`sentinel.cli.common` says: an API that cannot be reached or refuses is 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from sentinel.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_client_or_exit

if TYPE_CHECKING:
    from sentinel.client_config import ClientConfig
    from sentinel.web.catalogue import Text


def cmd_status(args: argparse.Namespace) -> int:
    """The daemon's state in the configured `locale`, times in the configured `timezone`."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from sentinel.client import ApiError, call
    from sentinel.web.catalogue import Text

    cfg = load_client_or_exit(args.config)
    try:
        data = call(cfg, "GET", "/api/v1/status")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        import json

        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    t = Text(cfg.locale)
    console = Console(highlight=False)
    src = data["source"]
    if src["up"] is None:
        state = t("standby_source")
    else:
        state = t("up") if src["up"] else f"{t('down')}{t('colon')}{src['last_error']}"
    console.print(
        escape(
            t(
                "cli.head",
                version=data["version"],
                dry=t("cli.dry") if data["dry_run"] else "",
                source=src["description"],
                state=state,
                newest=local_time(src["newest_record"], cfg),
                lag=src["lag_seconds"],
            )
        )
    )
    delay_warning = (src.get("commit_delay") or {}).get("warning")
    if delay_warning:
        console.print(f"[bold yellow]{escape(t('cli.warning'))}[/] {escape(delay_warning)}")
    console.print(escape(leadership_line(data.get("leadership") or {}, t)))
    lock = data.get("lock") or {}
    if lock.get("error"):
        console.print(f"[bold red]{escape(t('cli.lock_lost'))}[/] {escape(lock['error'])}")
    elif lock.get("losses"):
        last = lock.get("last_loss") or {}
        console.print(
            escape(
                t(
                    "cli.lock_losses",
                    losses=lock["losses"],
                    at=local_time(last.get("at"), cfg),
                    reason=last.get("reason"),
                    after=last.get("retaken_after_s"),
                )
            )
        )
    console.print(escape(t("cli.open", open=data["alerts"]["open"] or t("none"), pending=data["outbox"]["pending"])))
    table = Table(title=f"{t('cli.receivers')} ({t('cli.times', tz=cfg.timezone)})")
    for col in ("name", "kind", "state", "fails", "pending_oldest", "next", "delivered"):
        table.add_column(t("col." + col), no_wrap=col in ("name", "state", "delivered"))
    errors = []
    for r in data["receivers"]:
        row, error = receiver_lines(r, data["now"], t, cfg)
        table.add_row(*row)
        if error is not None:
            errors.append(error)
    console.print(table)
    for line in errors:
        console.print(line)
    if data["failed"]:
        failed = Table(title=t("cli.failed"))
        for col in ("id", "receiver", "created", "error"):
            failed.add_column(t("col." + col))
        for f in data["failed"]:
            failed.add_row(str(f["id"]), escape(f["receiver"]), local_time(f["created"], cfg), escape(f["error"] or ""))
        console.print(failed)
    return EXIT_OK


def leadership_line(lead: dict[str, Any], t: Text) -> str:
    """Who leads, as `sentinel status` says it: this instance or which other one, its epoch and lease age."""
    me, leader = lead.get("instance", "?"), lead.get("leader")
    if lead.get("kind") == "file":
        return str(t("cli.single", me=me))
    if leader is None:
        return str(t("cli.standby_none", me=me))
    key = "cli.leader" if lead.get("role") == "leader" else "cli.standby"
    return str(
        t(
            key,
            me=me,
            leader=leader["instance"],
            epoch=leader["epoch"],
            age=leader["lease_age_seconds"],
            ttl=f"{leader['lease_ttl_seconds']:g}",
        )
    )


STATE_STYLE = {"ok": "green", "retrying": "yellow", "failing": "bold red", "set_aside": "red"}


def local_time(iso: str | None, cfg: ClientConfig, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """An API timestamp (ISO 8601 with its offset) in the configured timezone."""
    from datetime import datetime

    return "-" if iso is None else datetime.fromisoformat(iso).astimezone(cfg.tz).strftime(fmt)


def receiver_lines(
    r: dict[str, Any], now: str, t: Text | None = None, cfg: ClientConfig | None = None
) -> tuple[list[str], str | None]:
    """One receiver of `/api/v1/status` as a row of `sentinel status` and its last error as a line below
    the table (an error is too long for a column on an 80-column terminal). The state comes first, so a
    webhook that refuses connections reads "failing … connection refused", never its last success.
    Words from `t` (a `sentinel.web.catalogue.Text`, English without one), times in `cfg`'s timezone."""
    from datetime import datetime, timedelta

    from rich.markup import escape

    from sentinel.units import format_duration
    from sentinel.web.catalogue import Text

    t = t or Text("en")

    def when(iso: str | None) -> str:
        if iso is None:
            return "-"
        return (
            local_time(iso, cfg, "%m-%d %H:%M:%S")
            if cfg is not None
            else datetime.fromisoformat(iso).strftime("%m-%d %H:%M:%S")
        )

    def seconds(value: float) -> str:
        return format_duration(timedelta(seconds=int(value)))

    state = str(r.get("state", "-"))
    words = escape(t.get("state." + state, state))
    styled = f"[{STATE_STYLE[state]}]{words}[/]" if state in STATE_STYLE else words
    age = r.get("oldest_pending_age_seconds")
    pending = str(r["pending"]) + ("" if age is None else f" ({seconds(float(age))})")
    nxt = r.get("next_attempt")
    if nxt is None:
        next_text = "-"
    else:
        wait = (datetime.fromisoformat(nxt) - datetime.fromisoformat(now)).total_seconds()
        next_text = t("in", d=seconds(wait)) if wait >= 1 else t("due_now")
    row = [
        escape(r["name"]),
        escape(r["kind"]),
        styled,
        str(r.get("consecutive_failures", "-")),
        pending,
        escape(next_text),
        when(r.get("last_delivered")),
    ]
    error = r.get("last_error")
    if not error:
        return row, None
    at = r.get("last_error_at")
    at_text = when(at) if at else t("before_restart") if state in ("retrying", "failing") else t("time_unknown")
    return row, escape(t("cli.last_error", name=r["name"], at=at_text, error=str(error)))


def cmd_ack(args: argparse.Namespace) -> int:
    import getpass

    from sentinel.client import ApiError, call

    cfg = load_client_or_exit(args.config)
    try:
        data = call(cfg, "POST", "/api/v1/ack", {"instance": args.instance, "by": args.by or getpass.getuser()})
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.instance}: {data['status']}")
    return EXIT_OK


def cmd_silence(args: argparse.Namespace) -> int:
    import getpass
    from datetime import UTC, datetime

    from sentinel.client import ApiError, call, parse_matcher, unknown_label
    from sentinel.units import parse_duration

    cfg = load_client_or_exit(args.config)
    try:
        if args.silence_command == "add":
            try:
                matchers = [parse_matcher(m) for m in args.matchers]
                duration = parse_duration(args.duration)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            unknown = [why for m in matchers if (why := unknown_label(m)) is not None]
            if unknown and not args.force:  # such a silence holds nothing, or everything: a typo
                for why in unknown:
                    print(f"error: silence add: {why}; --force adds it anyway", file=sys.stderr)
                return EXIT_CONFIG
            now = datetime.now(UTC)
            # no startsAt: the silence starts when the daemon receives it
            body = {
                "matchers": matchers,
                "endsAt": (now + duration).isoformat(),
                "createdBy": args.by or getpass.getuser(),
                "comment": args.comment,
            }
            data = call(cfg, "POST", "/api/v1/silences", body)
            print(data["silenceID"])
        elif args.silence_command == "expire":
            call(cfg, "DELETE", f"/api/v1/silences/{args.id}")
            print(f"{args.id}: expired")
        else:
            from rich.console import Console
            from rich.table import Table

            items = call(cfg, "GET", "/api/v1/silences")
            table = Table(title="Silences")
            for col in ("id", "state", "matchers", "until", "by", "comment"):
                table.add_column(col, no_wrap=col in ("id", "state", "until"))
            for s in items:
                if s["status"]["state"] == "expired" and not args.all:
                    continue
                ms = ", ".join(
                    f"{m['name']}{'' if m['isEqual'] else '!'}{'=~' if m['isRegex'] else '='}{m['value']}"
                    for m in s["matchers"]
                )
                table.add_row(s["id"], s["status"]["state"], ms, s["endsAt"], s["createdBy"], s["comment"])
            Console(highlight=False, width=max(120, Console().width)).print(table)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
