"""PostgreSQL LISTEN/NOTIFY: a trigger that announces inserts, and a listener that wakes the poll.

Polling every `poll_interval` bounds how long a new complaint waits; a notification removes the wait.
The trigger is FOR EACH STATEMENT (one NOTIFY per INSERT statement, whatever its row count, and
PostgreSQL folds identical notifications of one transaction into one), so a bulk load costs one
message, not one per row. The notification carries nothing: it only says "poll now", and the poll
reads the rows through the watermark as always, so a lost notification costs latency, never data.

Guarantees:
- The listener holds its own connection (LISTEN is per session; a pooled connection could be handed
  to a query and lose it) on its own thread, and never blocks the poll.
- When that connection drops, it says so once, the daemon keeps polling at `poll_interval`, and it
  reconnects with backoff (1 s doubling to 60 s); once listening again it asks for one poll, since
  rows inserted while nobody listened were announced to no one.
- No message it logs or raises contains the password or another secret of the URL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow
from sqlalchemy.engine import make_url

from sentinel.logs import fields
from sentinel.sources.sql_connect import ConnectArg, driver_message, postgres_connect_args, url_secrets

log = logging.getLogger("sentinel.sources.listen")

TRIGGER = "sentinel_notify"
FUNCTION = "sentinel_notify"
MAX_CHANNEL_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer channel names
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
WAIT_S = 0.5
"""How long one wait for notifications lasts: the bound on how long `stop()` waits for the thread."""


class ListenSetupError(Exception):
    """A source on which a NOTIFY trigger cannot be installed; the message names the key and why."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def default_channel(table: str) -> str:
    """`sentinel_<schema>_<table>`, lower case, cut to 63 bytes: stable across restarts and hosts, so
    the trigger installed once keeps matching what every daemon LISTENs to."""
    return ("sentinel_" + table.replace(".", "_").lower())[:MAX_CHANNEL_BYTES]


def channel_for(table: str | None, configured: str | None) -> str | None:
    """The configured channel, else the default for the table; None for a query source without one."""
    if configured is not None:
        return configured
    return default_channel(table) if table is not None else None


# --- connections ------------------------------------------------------------------------------------

PgConnection = psycopg.Connection[TupleRow]
"""A psycopg connection with the default row factory: rows are tuples."""


@dataclass(frozen=True, slots=True)
class Target:
    """How to reach the database with psycopg, and what to scrub from its error messages."""

    conninfo: str
    secrets: tuple[str, ...]
    options: dict[str, ConnectArg]

    @classmethod
    def from_url(cls, url: str, application_name: str) -> Target:
        """A libpq URI from a SQLAlchemy URL (`postgresql+psycopg://`, `+psycopg2`, plain): the driver
        part is SQLAlchemy's, everything else (host, port, sslmode...) means the same to libpq."""
        u = make_url(url)
        options = {k: v for k, v in postgres_connect_args(application_name).items() if k not in u.query}  # the URL wins
        conninfo = u.set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(conninfo, url_secrets(u), options)

    def connect(self) -> PgConnection:
        # what `connect(conninfo, **options)` does inside; merged first, since `connect`'s own keywords
        # (row_factory, context...) would take any option of the same name
        return psycopg.connect(make_conninfo(self.conninfo, **self.options), autocommit=True)

    def explain(self, exc: BaseException) -> str:
        """The driver's words on one line, secrets masked."""
        return driver_message(exc, self.secrets)


# --- the trigger ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableRef:
    oid: int
    schema: str
    name: str

    @property
    def qualified(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE lower(c.relname) = lower(%(name)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname = coalesce(%(schema)s::text, current_schema())
"""


def resolve_table(conn: PgConnection, table: str) -> TableRef:
    """The stored table `source.table` names, found the way the SQL source finds it (schema as written,
    else the current schema; the name exactly, else the only case-insensitive match), because the
    trigger must sit on the very table that is polled. Raises `ListenSetupError` for a missing table or a
    view (inserts into the table behind a view never fire the view's triggers)."""
    schema, _, name = table.rpartition(".")
    rows = conn.execute(_RELATIONS, {"name": name, "schema": schema or None}).fetchall()
    exact = [r for r in rows if r[2] == name]
    found = exact or (rows if len(rows) == 1 else [])
    if not found:
        where = f"schema {schema!r}" if schema else "the current schema"
        raise ListenSetupError("source.table", f"no table {table!r} in {where}")
    oid, nsp, rel, kind = found[0]
    if kind in ("v", "m"):
        raise ListenSetupError(
            "source.table",
            f"{table!r} is a view; inserts into the table behind it never "
            "fire a trigger on the view: put the trigger on that table "
            "(see docs/sources.md) and set source.notify_channel",
        )
    return TableRef(int(oid), str(nsp), str(rel))


def trigger_statements(ref: TableRef, channel: str) -> list[sql.Composed]:
    """The function (shared by every table of the schema: the channel is the trigger's argument) and
    the statement-level trigger, written so that running them again replaces what is there."""
    function = sql.Identifier(ref.schema, FUNCTION)
    trigger = sql.Identifier(TRIGGER)
    return [
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $sentinel$\n"
            "BEGIN\n"
            "  -- Wake Sentinel's poll; the rows themselves are read through its watermark.\n"
            "  PERFORM pg_notify(TG_ARGV[0], '');\n"
            "  RETURN NULL;\n"
            "END\n"
            "$sentinel$"
        ).format(function),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, ref.qualified),
        sql.SQL("CREATE TRIGGER {} AFTER INSERT ON {}\n  FOR EACH STATEMENT EXECUTE FUNCTION {}({})").format(
            trigger, ref.qualified, function, sql.Literal(channel)
        ),
    ]


def trigger_script(ref: TableRef, channel: str) -> str:
    """The statements as one script for psql, in a transaction so the table is never left without it."""
    body = ";\n\n".join(s.as_string(None) for s in trigger_statements(ref, channel))
    return f"-- Sentinel: NOTIFY {channel} after each INSERT statement on {ref}\nBEGIN;\n\n{body};\n\nCOMMIT;\n"


def install_trigger(conn: PgConnection, ref: TableRef, channel: str) -> None:
    with conn.transaction():
        for statement in trigger_statements(ref, channel):
            conn.execute(statement)


def trigger_problem(conn: PgConnection, ref: TableRef, channel: str) -> str | None:
    """Why inserts into the table would not notify `channel`, or None when an enabled trigger does.

    Any trigger counts whose argument or function body names the channel: people who wrote their own
    (a row-level one, say) need no warning."""
    rows = conn.execute(
        "SELECT t.tgname, t.tgenabled, t.tgargs, p.prosrc FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = %s AND NOT t.tgisinternal",
        (ref.oid,),
    ).fetchall()
    ours = None
    for name, enabled, args, source in rows:
        arguments = bytes(args or b"").split(b"\x00")
        if channel.encode() in arguments or channel in (source or ""):
            if enabled != "D":
                return None
            return f"the trigger {name!r} on {ref} that notifies {channel!r} is disabled"
        if name == TRIGGER:
            ours = [a.decode(errors="replace") for a in arguments if a]
    if ours is not None:
        return (
            f"the trigger {TRIGGER!r} on {ref} notifies {', '.join(ours) or 'nothing'}, "
            f"not the channel {channel!r} that is listened to"
        )
    return f"no trigger on {ref} notifies the channel {channel!r}"


# --- the listener ----------------------------------------------------------------------------------


class Listener:
    """LISTENs on its own connection and thread; calls `on_notify` for each notification.

    `on_notify` must be cheap and thread-safe (the daemon's `wake_poll`, which folds a burst into one
    poll). `connected`, `connects` and `notifications` show what happened, for tests and the status.
    """

    def __init__(
        self,
        target: Target,
        channel: str,
        on_notify: Callable[[], None],
        *,
        table: str | None = None,
        describe: str = "PostgreSQL source",
        fix_hint: str = "sentinel db notify-trigger --apply",
        on_state: Callable[[bool], None] | None = None,
        backoff_start_s: float = BACKOFF_START_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.target = target
        self.channel = channel
        self.on_notify = on_notify
        self.table = table
        self.describe = describe
        self.fix_hint = fix_hint
        self.on_state = on_state
        self.backoff_start_s = backoff_start_s
        self.backoff_max_s = backoff_max_s
        self.connected = False
        self.connects = 0  # successful LISTENs; more than one means it reconnected
        self.failures = 0  # failed attempts since the last successful LISTEN
        self.notifications = 0
        self.trigger_warning: str | None = None
        self._checked = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="listen-notify", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 2 * WAIT_S) -> None:
        """Ask the thread to close its connection and end; it does within one wait (0.5 s) unless it is
        inside a connection attempt, which is bounded by the connect timeout (the thread is a daemon)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        delay = self.backoff_start_s
        while not self._stop.is_set():
            try:
                with self.target.connect() as conn:
                    self._listen(conn)
                    delay = self.backoff_start_s
                    self._wait(conn)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                self._lost(self.target.explain(exc), delay)
            except Exception:  # a bug must not end the thread silently: report it and retry
                log.exception("listener failed", extra=fields(source=self.describe))
                self._lost("internal error", delay)
            else:
                if self._stop.is_set():
                    break
            self._stop.wait(delay)
            delay = min(self.backoff_max_s, delay * 2)
        self._set_connected(False)

    def _listen(self, conn: PgConnection) -> None:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        if not self._checked:
            self._checked = True
            self._check_trigger(conn)
        if self.failures:
            log.info(
                "listening for notifications again", extra=fields(source=self.describe, after_failures=self.failures)
            )
        elif self.connects == 0:
            log.info("listening for notifications", extra=fields(source=self.describe, channel=self.channel))
        self.connects += 1
        self.failures = 0
        # Rows inserted while nobody listened were announced to no one: one poll now picks them up.
        # Asked for before `connected` turns true, so whoever waits on it sees the catch-up as past.
        self.on_notify()
        self._set_connected(True)

    def _wait(self, conn: PgConnection) -> None:
        while not self._stop.is_set():
            for _ in conn.notifies(timeout=WAIT_S):
                self.notifications += 1
                self.on_notify()
                if self._stop.is_set():
                    return

    def _check_trigger(self, conn: PgConnection) -> None:
        if self.table is None:
            return  # a query source: whoever set notify_channel owns the trigger
        try:
            problem = trigger_problem(conn, resolve_table(conn, self.table), self.channel)
        except ListenSetupError as exc:
            if self.channel != default_channel(self.table):
                # A view with a channel of its own: its trigger sits on a table behind it we cannot know.
                log.info("%s: %s; the trigger is not checked", self.describe, exc.reason)
                return
            problem = exc.reason
        if problem is not None:
            self.trigger_warning = problem
            log.warning(
                "%s: %s, so new rows wait for the next poll (poll_interval); install it with: %s",
                self.describe,
                problem,
                self.fix_hint,
            )

    def _lost(self, error: str, retry_in_s: float) -> None:
        self._set_connected(False)
        self.failures += 1
        if self.failures == 1:  # once per outage; the attempts that follow are only debug lines
            log.warning(
                "LISTEN connection unavailable; polling every poll_interval until it is back",
                extra=fields(source=self.describe, error=error, retry_in_s=retry_in_s),
            )
        else:
            log.debug("LISTEN reconnect failed", extra=fields(error=error, retry_in_s=retry_in_s))

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        if self.on_state is not None:
            self.on_state(up)
