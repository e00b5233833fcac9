"""A damaged SQLite state store stops `sentinel run` and `sentinel db upgrade` with one line that names the
file and what to do (exit 2, as other state store problems), never with a traceback; real processes.

Three kinds of damage: garbage bytes where the file was, a file cut short (a full disk, a partial copy),
and one page of an otherwise good file overwritten (found by the start-up `quick_check`, before any poll).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.crm import write_config
from tests.test_daemon import Crm

SENTINEL = [sys.executable, "-m", "sentinel.cli"]


def sentinel(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    return subprocess.run([*SENTINEL, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    crm = Crm(tmp_path / "crm.db")
    cfg = write_config(
        tmp_path,
        crm,
        """
[[rules]]
name = "type-surge"
kind = "threshold"
""",
    )
    out = sentinel("db", "upgrade", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    return cfg


def damage(state: Path, how: str) -> None:
    if how == "garbage":
        state.write_bytes(os.urandom(8192))
    elif how == "truncated":
        with state.open("r+b") as f:
            f.truncate(state.stat().st_size // 3)
    else:  # one table's root page overwritten; the file header and the schema still read
        with sqlite3.connect(state) as conn:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
        conn.close()
        with state.open("r+b") as f:
            f.seek((root - 1) * page_size)
            f.write(b"\xff" * page_size)


def assert_one_clear_line(out: subprocess.CompletedProcess[str], state: Path) -> None:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert f"state store {state} is damaged" in lines[0]
    assert "restore it from a backup" in lines[0] and "move it and its -wal and -shm files aside" in lines[0]


@pytest.mark.parametrize("how", ["garbage", "truncated", "page"])
def test_damaged_store_stops_run_and_upgrade_with_one_line(config: Path, how: str) -> None:
    state = config.parent / "state.db"
    damage(state, how)
    assert_one_clear_line(sentinel("run", "--config", str(config)), state)
    assert_one_clear_line(sentinel("db", "upgrade", "--config", str(config)), state)
    status = sentinel("status", "--config", str(config))  # the CLI asks the daemon, which did not start
    assert status.returncode == 1 and "Traceback" not in status.stderr and len(status.stderr.splitlines()) == 1


def test_moving_the_damaged_store_aside_starts_afresh(config: Path) -> None:
    state = config.parent / "state.db"
    damage(state, "garbage")
    state.rename(state.with_name("state.db.damaged"))
    out = sentinel("db", "upgrade", "--config", str(config))
    assert out.returncode == 0 and "empty ->" in out.stdout, out.stderr
