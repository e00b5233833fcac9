"""End to end: the real `prometheus` binary scrapes a running Sentinel daemon (built as `sentinel run`
builds it, polling a real SQLite CRM) and its query API returns Sentinel's series, UTF-8 labels intact."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel import __version__
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.service import build

pytestmark = pytest.mark.slow

T, OTHER = "物流配送延误", "服务态度"
PHONE, WECHAT = "电话热线", "微信公众号"
N_T, N_OTHER = 30, 12
DEADLINE_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def crm(path: Path) -> None:
    """A CRM table with complaints of the last hour (naive UTC, as many CRMs keep them)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        (i + 1, (now - timedelta(minutes=50) + timedelta(seconds=60 * i)).isoformat(sep=" "), T, PHONE)
        for i in range(N_T)
    ]
    rows += [
        (N_T + i + 1, (now - timedelta(minutes=45) + timedelta(seconds=90 * i)).isoformat(sep=" "), OTHER, WECHAT)
        for i in range(N_OTHER)
    ]
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, category TEXT, channel TEXT)"
        )
        db.execute("CREATE INDEX ix_complaints_created ON complaints (created_at, id)")
        db.executemany("INSERT INTO complaints VALUES (?, ?, ?, ?)", rows)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    crm(tmp_path / "crm.db")
    cfg = tmp_path / "sentinel.toml"
    cfg.write_text(
        f"""
timezone = "Asia/Shanghai"
state_url = "sqlite:///{tmp_path}/state.db"
listen = "127.0.0.1:0"

[source]
url = "sqlite:///{tmp_path}/crm.db"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel" }}
timezone = "UTC"
poll_interval = "1s"

[[rules]]
name = "type-surge"
kind = "threshold"
""",
        encoding="utf-8",
    )
    d = build(load_config(cfg), config_path=str(cfg))
    d.start()
    try:
        yield d
    finally:
        d.stop()


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as resp:
            body = json.loads(resp.read().decode("utf-8"))
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, expr: str, ok: Any = bool) -> list[dict[str, Any]]:
        """Poll the query API until `ok(result)` (bounded); fails with Prometheus' log otherwise."""
        deadline = time.monotonic() + DEADLINE_S
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.output()}")
            try:
                last = self.query(expr)
                if ok(last):
                    return list(last)
            except OSError as exc:  # not listening yet
                last = exc
            time.sleep(0.5)
        pytest.fail(f"{expr}: not seen within {DEADLINE_S:.0f} s (last: {last!r})\n{self.output()}")


@pytest.fixture
def prometheus_exe() -> str:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus is not installed (Debian package: prometheus; apt-get install prometheus)")
    return exe


@pytest.fixture
def prometheus(prometheus_exe: str, daemon: Daemon, tmp_path: Path) -> Iterator[Prometheus]:
    """Requested before the daemon, so a machine without prometheus skips before starting anything."""
    assert daemon.server is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sentinel
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["127.0.0.1:{daemon.server.port}"]
""",
        encoding="utf-8",
    )
    log = tmp_path / "prometheus.log"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                prometheus_exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Prometheus(proc, f"http://127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_prometheus_scrapes_sentinel(prometheus: Prometheus) -> None:
    up = prometheus.wait_for('up{job="sentinel"} == 1')
    assert len(up) == 1

    info = prometheus.wait_for("sentinel_build_info")
    assert [(r["metric"]["version"], r["metric"]["job"], r["value"][1]) for r in info] == [
        (__version__, "sentinel", "1")
    ]

    source = prometheus.wait_for("sentinel_source_up == 1")
    assert len(source) == 1

    def all_read(result: list[dict[str, Any]]) -> bool:
        got = {(r["metric"].get("type"), r["metric"].get("channel")): float(r["value"][1]) for r in result}
        return got == {(T, PHONE): N_T, (OTHER, WECHAT): N_OTHER}

    prometheus.wait_for("sentinel_records_ingested_total", all_read)

    # the type label reaches PromQL as the data has it
    surge = prometheus.wait_for(f'sentinel_records_ingested_total{{type="{T}"}}')
    assert surge[0]["metric"]["channel"] == PHONE
