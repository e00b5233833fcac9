"""LISTEN/NOTIFY on the real PostgreSQL: `sentinel db notify-trigger` prints and installs a trigger
whose NOTIFY a separate connection hears; a started daemon with `poll_interval = "1h"` ingests a new
row within seconds; losing the listening connection falls back to polling and recovers; a missing
trigger is warned about with the command that installs it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from sqlalchemy.engine import make_url

from sentinel.cli import main
from sentinel.config import SourceConfig, load_config
from sentinel.daemon import Daemon
from sentinel.service import build
from sentinel.sources.pg_notify import Listener, default_channel, resolve_table, trigger_problem
from sentinel.sources.sql import SqlSource
from tests.sources.dbs import Db, TcpProxy, complaints_table, row
from tests.test_ingest import counted  # complaints in the hourly buckets: what was ingested and committed

SECRET = "Sup3r-s3cret-pw"  # trust auth ignores it; it must never show in output or logs
DEADLINE_S = 20.0


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_password(url: str, port: int | None = None) -> str:
    u = make_url(url).set(password=SECRET)
    return (u.set(port=port) if port is not None else u).render_as_string(hide_password=False)


def write_config(
    tmp_path: Path, url: str, *, table: str = "complaints", poll: str = "2s", extra: str = "", name: str = "sentinel"
) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/{name}.db"
listen = "127.0.0.1:0"
[source]
url = "{url}"
table = "{table}"
timezone = "UTC"
poll_interval = "{poll}"
{extra}
[[rules]]
name = "type-surge"
kind = "threshold"
""",
        encoding="utf-8",
    )
    return path


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.05)


def insert_now(db: Db, rid: int) -> None:
    at = (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None)  # naive UTC, as configured
    db.insert("complaints", [row(db, rid, at)])


def trigger(path: Path, *flags: str) -> int:
    return main(["db", "notify-trigger", "--config", str(path), *flags])


@pytest.fixture
def listen_conn(pg: Db) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(libpq(pg.url), autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    made: list[Daemon] = []
    yield made
    for d in made:
        d.stop()


def started(cfg_path: Path, daemons: list[Daemon], **kw: Any) -> tuple[Daemon, Listener]:
    d = build(load_config(cfg_path), config_path=str(cfg_path), **kw)
    listener = d.pipeline.listener
    assert isinstance(listener, Listener)
    listener.backoff_max_s = 2.0  # keep the recovery quick; the doubling itself is what runs
    daemons.append(d)
    d.start()
    wait_for("the listener is connected", lambda: listener.connected)
    return d, listener


# --- sentinel db notify-trigger ---------------------------------------------------------------------


def test_printed_sql_once_applied_makes_an_insert_notify(
    pg: Db, tmp_path: Path, listen_conn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    complaints_table(pg)
    path = write_config(tmp_path, with_password(pg.url))
    assert trigger(path) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "FOR EACH STATEMENT" in out.out and "pg_notify" in out.out
    with psycopg.connect(libpq(pg.url), autocommit=True) as admin:
        admin.execute(out.out.encode())  # what a DBA pipes into psql
    listen_conn.execute('LISTEN "sentinel_complaints"')
    insert_now(pg, 1)
    got = list(listen_conn.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [("sentinel_complaints", "")]


def test_the_db_commands_do_not_need_the_chat_robots_secrets(
    pg: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DBA installs the trigger and upgrades the store from the service's file without the robots'
    variables (the quick-start trial stopped at `receivers[0].url: environment variable ... is not set`)."""
    complaints_table(pg)
    robot = '\n[[receivers]]\nname = "cs-team"\nkind = "wecom"\nurl = "${T_PG_NOTIFY_ROBOT_UNSET}"\n'
    path = write_config(tmp_path, pg.url, extra=robot)
    with pytest.raises(SystemExit) as refused:
        main(["check", "--config", str(path)])  # what sends still needs them
    assert refused.value.code == 2
    capsys.readouterr()
    assert trigger(path) == 0
    assert main(["db", "upgrade", "--config", str(path)]) == 0
    assert "not set" not in capsys.readouterr().err


def test_apply_is_idempotent_on_a_schema_qualified_table_with_capitals(
    pg: Db, tmp_path: Path, listen_conn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.run("CREATE SCHEMA crm")
    pg.run('CREATE TABLE crm."Complaints" (id BIGINT, created_at TIMESTAMP, type TEXT, channel TEXT)')
    path = write_config(tmp_path, pg.url, table="crm.complaints")  # matched as the SQL source matches it
    assert trigger(path, "--apply") == 0
    assert trigger(path, "--apply") == 0
    err = capsys.readouterr().err
    assert "installed" in err and "sentinel_crm_complaints" in err
    with psycopg.connect(libpq(pg.url), autocommit=True) as admin:
        triggers = admin.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'crm.\"Complaints\"'::regclass AND NOT tgisinternal"
        ).fetchone()
        assert triggers == (1,)
        assert trigger_problem(admin, resolve_table(admin, "crm.complaints"), "sentinel_crm_complaints") is None
    listen_conn.execute('LISTEN "sentinel_crm_complaints"')
    pg.run("INSERT INTO crm.\"Complaints\" VALUES (1, now(), 'a', 'b'), (2, now(), 'a', 'b'), (3, now(), 'a', 'b')")
    got = list(listen_conn.notifies(timeout=2))
    assert len(got) == 1  # one statement of three rows: one notification


def test_non_postgresql_and_query_sources_exit_2_saying_why(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, f"sqlite:///{tmp_path}/crm.db")
    assert trigger(path) == 2
    err = capsys.readouterr().err
    assert f"{path}: source.url: LISTEN/NOTIFY needs a PostgreSQL source, this one is sqlite" in err
    query = tmp_path / "query.toml"
    query.write_text(
        f"""
[source]
url = "{pg_url}"
query = "SELECT * FROM complaints WHERE (created_at, id) > (:since_ts, :since_id) ORDER BY created_at, id LIMIT :limit"
""",
        encoding="utf-8",
    )
    assert trigger(query, "--apply") == 2
    err = capsys.readouterr().err
    assert f"{query}: source.query: a query source names no table" in err and "notify_channel" in err
    assert "Traceback" not in err


def test_a_missing_table_or_a_view_exits_2_and_an_unreachable_server_1_without_the_password(
    pg: Db, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, with_password(pg.url), table="nowhere")
    assert trigger(path) == 2
    assert f"{path}: source.table: no table 'nowhere' in the current schema" in capsys.readouterr().err
    complaints_table(pg)
    pg.run("CREATE VIEW recent AS SELECT * FROM complaints")
    path = write_config(tmp_path, pg.url, table="recent", name="view")
    assert trigger(path) == 2
    assert f"{path}: source.table: 'recent' is a view" in capsys.readouterr().err
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    path = write_config(tmp_path, with_password(pg.url, closed_port), name="down")
    assert trigger(path, "--apply") == 1
    err = capsys.readouterr().err
    assert "source.url: installing the trigger failed: OperationalError" in err and SECRET not in err


def test_default_channel_is_stable_and_fits_63_bytes() -> None:
    assert default_channel("complaints") == "sentinel_complaints"
    assert default_channel("CRM.Complaints") == "sentinel_crm_complaints"
    assert len(default_channel("s" * 70).encode()) == 63
    with pytest.raises(ValueError, match="notify_channel"):
        SourceConfig(url="postgresql+psycopg://x@h/db", table="t", notify_channel="x" * 64)


# --- the daemon --------------------------------------------------------------------------------------


def test_a_notification_wakes_the_poll_long_before_poll_interval(pg: Db, tmp_path: Path, daemons: list[Daemon]) -> None:
    complaints_table(pg)
    path = write_config(tmp_path, with_password(pg.url), poll="1h")
    assert trigger(path, "--apply") == 0
    d, listener = started(path, daemons)
    assert listener.trigger_warning is None
    wait_for(
        "the first poll (backfill of an empty table) is done", lambda: d.state is not None and d.state.backfill_done
    )
    time.sleep(0.5)  # let the catch-up poll asked for at connect finish: what follows is the notification's
    before = listener.notifications
    insert_now(pg, 1)
    wait_for("the new row is ingested", lambda: counted(d) == 1)
    assert listener.notifications > before
    assert "sentinel_source_listen_up 1.0" in d.metrics.render().decode()
    d.stop()
    assert not listener.running  # the thread ended with the daemon
    assert "sentinel_source_listen_up 0.0" in d.metrics.render().decode()


def test_losing_the_connection_falls_back_to_polling_then_reconnects(
    pg: Db, proxy: TcpProxy, tmp_path: Path, daemons: list[Daemon], caplog: pytest.LogCaptureFixture
) -> None:
    """The listener reaches PostgreSQL through a proxy that we cut; the polls go straight to it."""
    caplog.set_level(logging.DEBUG, logger="sentinel")
    complaints_table(pg)
    path = write_config(tmp_path, with_password(pg.url, proxy.port), poll="1s")
    assert trigger(path, "--apply") == 0
    direct = SqlSource(SourceConfig(url=pg.url, table="complaints", timezone="UTC"), ZoneInfo("UTC"))
    d, listener = started(path, daemons, source=direct)
    proxy.stop()  # the listening connection drops, and reconnecting fails until the proxy is back
    wait_for("the listener notices", lambda: not listener.connected)
    insert_now(pg, 1)
    wait_for("the row arrives by poll_interval alone", lambda: counted(d) == 1)
    wait_for("two failed reconnects", lambda: listener.failures >= 2)
    assert "sentinel_source_listen_up 0.0" in d.metrics.render().decode()
    lost = [r for r in caplog.records if r.levelno == logging.WARNING and "LISTEN connection" in r.getMessage()]
    assert len(lost) == 1  # said once per outage, not once per attempt
    proxy.start()
    wait_for("the listener is back", lambda: listener.connected and listener.reconnects == 1)
    before = listener.notifications
    insert_now(pg, 2)
    wait_for("the insert is heard on the new connection", lambda: listener.notifications > before)
    wait_for("and ingested", lambda: counted(d) == 2)
    assert SECRET not in caplog.text
    assert any("listening for notifications again" in r.getMessage() for r in caplog.records)


def test_a_terminated_listen_backend_reconnects_and_wakes_the_poll_again(
    pg: Db, tmp_path: Path, daemons: list[Daemon]
) -> None:
    complaints_table(pg)
    path = write_config(tmp_path, pg.url, poll="1h")
    assert trigger(path, "--apply") == 0
    d, listener = started(path, daemons)
    wait_for("the first poll is done", lambda: d.state is not None and d.state.backfill_done)
    runs = d.poller.runs
    database = make_url(pg.url).database
    with psycopg.connect(libpq(pg.url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'sentinel-listen' AND datname = %s",
            (database,),
        ).fetchall()
    assert killed == [(True,)]
    wait_for("the listener reconnects", lambda: listener.connected and listener.reconnects == 1)
    wait_for("the catch-up poll after reconnecting ran", lambda: d.poller.runs > runs)
    before = listener.notifications
    insert_now(pg, 1)
    wait_for("the new row is ingested (poll_interval is 1h)", lambda: counted(d) == 1)
    assert listener.notifications > before


def test_a_missing_trigger_is_warned_about_with_the_command_and_it_still_listens(
    pg: Db, tmp_path: Path, daemons: list[Daemon], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sentinel")
    complaints_table(pg)
    path = write_config(tmp_path, pg.url, poll="1h")
    d, listener = started(path, daemons)
    wait_for("the trigger check is done", lambda: listener.trigger_warning is not None)
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "trigger" in r.getMessage()]
    assert len(warning) == 1
    assert "no trigger on public.complaints notifies the channel 'sentinel_complaints'" in warning[0]
    assert f"sentinel db notify-trigger --config {path} --apply" in warning[0]
    before = listener.notifications
    with psycopg.connect(libpq(pg.url), autocommit=True) as other:
        other.execute('NOTIFY "sentinel_complaints"')
    wait_for("a NOTIFY from elsewhere is still heard", lambda: listener.notifications > before)
    assert "sentinel_source_listen_up 1.0" in d.metrics.render().decode()


def test_a_trigger_for_another_channel_is_named_in_the_warning(pg: Db, tmp_path: Path) -> None:
    complaints_table(pg)
    assert trigger(write_config(tmp_path, pg.url, extra='notify_channel = "old_channel"'), "--apply") == 0
    with psycopg.connect(libpq(pg.url), autocommit=True) as conn:
        ref = resolve_table(conn, "complaints")
        assert trigger_problem(conn, ref, "old_channel") is None
        problem = trigger_problem(conn, ref, "sentinel_complaints")
        assert problem == (
            "the trigger 'sentinel_notify' on public.complaints notifies old_channel, "
            "not the channel 'sentinel_complaints' that is listened to"
        )
        conn.execute('ALTER TABLE complaints DISABLE TRIGGER "sentinel_notify"')
        assert "is disabled" in (trigger_problem(conn, ref, "old_channel") or "")
