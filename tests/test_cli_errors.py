"""What a person gets for a mistake in the configuration or on the command line: one `error:` line naming
the key and the fix, the right exit status, and never a traceback. Each case runs `sentinel` as a real
process, as the person would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from sentinel.config import SourceConfig
from sentinel.sources import SourceUnavailable
from sentinel.sources.sql import SqlSource
from tests.conftest import PG_HOST, PG_PORT, PG_USER, _reachable, unique_name
from tests.crm import Crm

SENTINEL = [sys.executable, "-m", "sentinel.cli"]


def sentinel(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    return subprocess.run([*SENTINEL, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def one_error(out: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of stderr; fails on a traceback or on more than one error."""
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    return errors[0]


def config(tmp_path: Path, *, source: str, state: str | None = None, listen: str = "127.0.0.1:0") -> Path:
    p = tmp_path / "sentinel.toml"
    p.write_text(
        f"""
state_url = "{state or f"sqlite:///{tmp_path}/state.db"}"
listen = "{listen}"
[source]
url = "{source}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel" }}
timezone = "UTC"
[[rules]]
name = "type-surge"
kind = "threshold"
""",
        encoding="utf-8",
    )
    return p


def test_a_sqlite_source_that_is_not_there_is_named_and_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "crmm.db"
    out = sentinel("run", "--config", str(config(tmp_path, source=f"sqlite:///{typo}")))
    assert out.returncode == 2
    line = one_error(out)
    assert f"source.url: SQLite source file {typo} does not exist" in line
    assert not typo.exists()  # SQLite used to create an empty file, and then the table was "missing"


def test_sqlite_sources_are_opened_read_only(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    source = SqlSource(
        SourceConfig(url=f"sqlite:///{crm.path}", table="complaints", columns={"type": "category"}), ZoneInfo("UTC")
    )
    try:
        assert source.read(0, None, 10).rows == []
        with source.engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="readonly"):
            conn.exec_driver_sql("DELETE FROM complaints")
    finally:
        source.close()
    crm.path.unlink()
    gone = SqlSource(SourceConfig(url=f"sqlite:///{crm.path}", table="complaints"), ZoneInfo("UTC"))
    try:  # deleted while the daemon runs: each retry says so, and does not recreate it
        with pytest.raises(SourceUnavailable, match="does not exist"):
            gone.read(0, None, 10)
    finally:
        gone.close()
    assert not crm.path.exists()


def test_a_mistyped_table_or_column_gets_did_you_mean(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    wrong_table = SqlSource(SourceConfig(url=f"sqlite:///{crm.path}", table="complaint"), ZoneInfo("UTC"))
    with pytest.raises(SourceUnavailable, match=r"table 'complaint' does not exist; did you mean 'complaints'\?"):
        wrong_table.check()
    wrong_table.close()
    wrong_column = SqlSource(
        SourceConfig(
            url=f"sqlite:///{crm.path}", table="complaints", columns={"type": "categroy", "channel": "chanel"}
        ),
        ZoneInfo("UTC"),
    )
    with pytest.raises(SourceUnavailable) as got:
        wrong_column.check()
    wrong_column.close()
    assert "did you mean 'category' for 'categroy'?" in str(got.value)
    assert "did you mean 'channel' for 'chanel'?" in str(got.value)
    nothing_close = SqlSource(SourceConfig(url=f"sqlite:///{crm.path}", table="tickets"), ZoneInfo("UTC"))
    with pytest.raises(SourceUnavailable) as none:
        nothing_close.check()
    nothing_close.close()
    assert "did you mean" not in str(none.value)


def test_a_postgresql_state_store_that_does_not_exist_says_how_to_create_it(tmp_path: Path) -> None:
    if not _reachable(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    crm = Crm(tmp_path / "crm.db")
    name = unique_name()  # never created
    state = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    out = sentinel("run", "--config", str(config(tmp_path, source=f"sqlite:///{crm.path}", state=state)))
    assert out.returncode == 2
    line = one_error(out)
    assert f"state_url: PostgreSQL database '{name}' does not exist on {PG_HOST}:{PG_PORT}" in line
    assert f"createdb -h {PG_HOST} -p {PG_PORT} -U {PG_USER} {name}" in line


def test_a_listen_port_in_use_is_one_line(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = sentinel(
            "run", "--config", str(config(tmp_path, source=f"sqlite:///{crm.path}", listen=f"127.0.0.1:{port}"))
        )
    assert out.returncode == 2
    assert f"listen: cannot listen on 127.0.0.1:{port}: the port is already in use" in one_error(out)


def test_a_silence_on_a_label_no_alert_has_is_refused_without_force(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    cfg = config(tmp_path, source=f"sqlite:///{crm.path}", listen="127.0.0.1:9")  # nothing is asked of it
    out = sentinel("silence", "add", "tpye=物流配送延误", "--config", str(cfg), "--comment", "carrier outage")
    assert out.returncode == 2
    line = one_error(out)
    assert "no alert has the label 'tpye' (did you mean 'type'?)" in line and "--force" in line
    assert out.stdout == ""
