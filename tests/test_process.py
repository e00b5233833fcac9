"""`sentinel run` as a real process: JSON logs, health endpoints, sd_notify (READY, WATCHDOG, RELOADING,
STOPPING), SIGHUP reload (good and bad configs), SIGTERM exit 0, and a second daemon refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.test_daemon import Crm

SENTINEL = [sys.executable, "-m", "sentinel.cli"]


class Daemon:
    """A `sentinel run` subprocess whose JSON log lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [*SENTINEL, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                self.lines.append({"msg": line.strip(), "_not_json": True})

    def wait_for(self, msg: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in list(self.lines):
                if msg in str(rec.get("msg", "")):
                    return rec
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line {msg!r}; got: {''.join(self.raw)[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    crm = Crm(tmp_path / "crm.db")
    now = datetime.now(UTC)
    for d in range(1, 9):
        crm.add(now - timedelta(days=d), n=20, spacing=timedelta(minutes=20))
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(
        f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/state.db"
listen = "127.0.0.1:0"
[source]
url = "sqlite:///{crm.path}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel" }}
timezone = "UTC"
poll_interval = "1s"
lateness = "2s"
[[rules]]
name = "type-surge"
kind = "threshold"
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    return cfg, env


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                got.append(sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    yield path, got
    stop.set()
    t.join(2)
    sock.close()


def wait_until(pred: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_run_logs_json_serves_health_reloads_and_stops_cleanly(
    setup: tuple[Path, dict[str, str]], notify_socket: tuple[str, list[str]]
) -> None:
    cfg, env = setup
    sock_path, notes = notify_socket
    env = {**env, "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000"}
    d = Daemon(["run", "--config", str(cfg)], env)
    try:
        url = d.wait_for("listening")["url"]
        assert all(not rec.get("_not_json") for rec in d.lines), d.raw  # JSON logs when not on a terminal
        assert {"ts", "level", "logger", "msg"} <= set(d.lines[0])
        assert requests.get(f"{url}/healthz", timeout=5).text == "ok\n"
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=5).status_code == 200)
        metrics = requests.get(f"{url}/metrics", timeout=5).text
        assert "sentinel_build_info{" in metrics and "sentinel_source_up 1.0" in metrics
        wait_until(lambda: any("READY=1" in n for n in notes))
        wait_until(lambda: any("WATCHDOG=1" in n for n in notes))
        # a bad configuration is refused and the old one keeps running
        good = cfg.read_text(encoding="utf-8")
        cfg.write_text(good + "\nbogus = 1\n", encoding="utf-8")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("reload refused")
        wait_until(
            lambda: "sentinel_config_last_reload_successful 0.0" in requests.get(f"{url}/metrics", timeout=5).text
        )
        assert any("RELOADING=1" in n for n in notes)
        cfg.write_text(good.replace('kind = "threshold"', 'kind = "threshold"\nmin_count = 12'), encoding="utf-8")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for("configuration reloaded")
        assert "sentinel_config_last_reload_successful 1.0" in requests.get(f"{url}/metrics", timeout=5).text
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0
        d.wait_for("stopping")
        assert any("STOPPING=1" in n for n in notes)
    finally:
        d.stop()


@pytest.mark.slow
def test_second_daemon_on_the_same_store_is_refused(setup: tuple[Path, dict[str, str]]) -> None:
    cfg, env = setup
    first = Daemon(["run", "--config", str(cfg)], env)
    try:
        first.wait_for("listening")
        second = subprocess.run(
            [*SENTINEL, "run", "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert second.returncode == 75  # EX_TEMPFAIL: systemd's Restart= tries again later
        assert f"another sentinel (pid {first.proc.pid})" in second.stderr
    finally:
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(30)
        first.stop()


def test_run_without_source_or_state_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[rules]]\nname = "r"\nkind = "threshold"\n', encoding="utf-8")
    out = subprocess.run(
        [*SENTINEL, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2
    assert "source" in out.stderr and "state_url" in out.stderr
