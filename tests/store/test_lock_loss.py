"""The PostgreSQL store's lock after a connection blip, with real processes and a real PostgreSQL.

Daemon A reaches its state store through a TCP proxy of this test (every store connection, the lock's
included); cutting the proxy ends A's sessions on the server, which frees the advisory lock. A must then
hold (no detection, no delivery, `/readyz` 503 with the reason while the store is unreachable), and either
re-take the lock and continue from the store, or stand by when a daemon B took the lead meanwhile. At no
moment may both lead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.conftest import PG_PORT
from tests.crm import Crm
from tests.sources.dbs import TcpProxy
from tests.test_process import Daemon

SENTINEL = [sys.executable, "-m", "sentinel.cli"]
CUT_S = 3.0


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def write_config(path: Path, crm: Crm, state_url: str, port: int) -> Path:
    path.write_text(
        f"""
timezone = "Asia/Shanghai"
locale = "en"
state_url = "{state_url}"
listen = "127.0.0.1:{port}"

[source]
url = "sqlite:///{crm.path}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel", customer = "customer_id" }}
timezone = "UTC"
poll_interval = "200ms"
lateness = "1s"

[[rules]]
name = "streak"
kind = "streak"
length = 5
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Setup:
    crm: Crm
    pg_url: str  # direct
    proxied_url: str  # through the proxy
    proxy: TcpProxy
    tmp: Path
    env: dict[str, str]

    def config(self, name: str, *, proxied: bool) -> tuple[Path, str]:
        port = free_port()
        url = self.proxied_url if proxied else self.pg_url
        return write_config(self.tmp / f"{name}.toml", self.crm, url, port), f"http://127.0.0.1:{port}"

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def bucket_total(self) -> int:
        with self.admin() as conn:
            try:
                row = conn.execute("SELECT coalesce(sum(count), 0) FROM hourly_buckets").fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
        return int(row[0]) if row else 0

    def lock_sessions(self) -> list[tuple[int, str]]:
        with self.admin() as conn:
            return [
                (int(p), str(a))
                for p, a in conn.execute(
                    "SELECT pid, application_name FROM pg_stat_activity "
                    "WHERE application_name LIKE 'sentinel lock %' AND datname = current_database()"
                )
            ]


@pytest.fixture
def setup(tmp_path: Path, pg_url: str, proxy: TcpProxy) -> Setup:
    crm = Crm(tmp_path / "crm.db")
    proxied = pg_url.replace(f":{PG_PORT}/", f":{proxy.port}/")
    assert proxied != pg_url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    return Setup(crm, pg_url, proxied, proxy, tmp_path, env)


def wait_until(what: str, pred: Any, timeout: float = 30.0, daemon: Daemon | None = None) -> float:
    """Waits for `pred()`; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        if daemon is not None and daemon.proc.poll() is not None:
            break
        time.sleep(0.05)
    log = "" if daemon is None else "".join(daemon.raw)[-3000:]
    raise AssertionError(f"{what}: not within {timeout} s; log:\n{log}")


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def add_rows(crm: Crm, n: int) -> None:
    now = datetime.now(UTC) - timedelta(seconds=2)  # already settled: every row counts in its bucket
    crm.add(now, n=n, spacing=timedelta(milliseconds=1))


def log_time(d: Daemon, msg: str) -> float:
    """Wall-clock time (epoch seconds) of the daemon's first log line containing `msg`."""
    rec = d.wait_for(msg, timeout=30)
    return datetime.fromisoformat(str(rec["ts"])).timestamp()


def leading(url: str) -> bool:
    """Whether the daemon at `url` says it leads (`/api/v1/status`)."""
    try:
        return bool(requests.get(f"{url}/api/v1/status", timeout=2).json()["leadership"]["role"] == "leader")
    except (requests.RequestException, ValueError, KeyError):
        return False


class Sampler:
    """Samples whether each daemon leads every 50 ms, to show they never both lead at the same moment."""

    def __init__(self, *urls: str) -> None:
        self.urls = urls
        self.samples: list[tuple[float, tuple[bool, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append((time.time(), tuple(leading(u) for u in self.urls)))

    def stop(self) -> list[tuple[float, tuple[bool, ...]]]:
        self._stop.set()
        self._thread.join(10)
        return self.samples


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def start(daemons: list[Daemon], config: Path, env: dict[str, str]) -> Daemon:
    d = Daemon(["run", "--config", str(config)], env)
    daemons.append(d)
    return d


def tracebacks(d: Daemon) -> list[str]:
    """The daemon's log lines that carry a traceback."""
    return [line for line in d.raw if "Traceback" in line]


def sigterm(d: Daemon) -> int:
    d.proc.send_signal(signal.SIGTERM)
    return d.proc.wait(40)


@pytest.mark.slow
def test_a_cut_with_a_second_daemon_started_meanwhile_makes_the_first_stand_by(
    setup: Setup, daemons: list[Daemon]
) -> None:
    """B starts during A's 3 s outage and takes the lead (the server freed the lock with A's sessions): A holds
    from the moment it notices, stands by when its store is back (ready as a standby, naming B), never leads
    again while B runs, and B counts every row once. When B stops, A takes the lead again."""
    cfg_a, url_a = setup.config("a", proxied=True)
    cfg_b, url_b = setup.config("b", proxied=False)
    a = start(daemons, cfg_a, setup.env)
    wait_until("A ready", lambda: ready(url_a), daemon=a)
    add_rows(setup.crm, 7)
    wait_until("A counted the first rows", lambda: setup.bucket_total() == 7, daemon=a)

    sampler = Sampler(url_a, url_b)
    cut = time.time()
    setup.proxy.stop()
    wait_until("the server ended A's lock session", lambda: setup.lock_sessions() == [])
    b = start(daemons, cfg_b, setup.env)
    add_rows(setup.crm, 6)
    wait_until("B leads", lambda: leading(url_b), daemon=b)
    time.sleep(max(0.0, cut + CUT_S - time.time()))
    setup.proxy.start()

    a.wait_for("standing by: another instance leads the state store")
    lost = log_time(a, "lost the state store's lock")
    answer = requests.get(f"{url_a}/readyz", timeout=5)
    assert answer.status_code == 200 and answer.text.startswith("ready: standby; the leader is ")
    assert f"pid {b.proc.pid} (epoch 2," in answer.text
    wait_until("B counted every row", lambda: setup.bucket_total() == 13, daemon=b)
    time.sleep(1.0)  # several more polls: nothing counted twice
    assert setup.bucket_total() == 13
    assert a.proc.poll() is None and not tracebacks(a), tracebacks(a)
    samples = sampler.stop()
    assert all(not (la and lb) for _, (la, lb) in samples), "both daemons led at once"
    assert not any(la for t, (la, _) in samples if t > cut + 0.2), "A led after the cut"
    assert any(lb for _, (_, lb) in samples)

    assert sigterm(b) == 0
    a.wait_for("re-took the state store's lock")
    wait_until("A leads again", lambda: leading(url_a), daemon=a)
    add_rows(setup.crm, 2)
    wait_until("A counted the new rows", lambda: setup.bucket_total() == 15, daemon=a)
    assert sigterm(a) == 0
    print(f"\nfigures: cut -> A noticed the loss {lost - cut:.2f} s")


@pytest.mark.slow
def test_a_cut_without_competitor_is_retaken_and_detection_resumes_exactly(setup: Setup, daemons: list[Daemon]) -> None:
    """A loses the lock for the 3 s of the cut, reports it (/readyz, metrics, status), takes it back when the
    proxy returns, reloads its state from the store and counts every row exactly once; a daemon started
    after that is refused, naming A."""
    cfg_a, url_a = setup.config("a", proxied=True)
    a = start(daemons, cfg_a, setup.env)
    wait_until("A ready", lambda: ready(url_a), daemon=a)
    add_rows(setup.crm, 9)
    wait_until("A counted the first rows", lambda: setup.bucket_total() == 9, daemon=a)

    cut = time.time()
    setup.proxy.stop()
    add_rows(setup.crm, 5)  # committed in the source while A cannot reach its store
    lost = log_time(a, "lost the state store's lock")
    answer = requests.get(f"{url_a}/readyz", timeout=5)
    assert answer.status_code == 503 and "the state store's lock is lost" in answer.text
    metrics = requests.get(f"{url_a}/metrics", timeout=5).text
    assert "sentinel_store_lock_held 0.0" in metrics and "sentinel_store_lock_losses_total 1.0" in metrics
    assert "sentinel_leader 0.0" in metrics
    time.sleep(max(0.0, cut + CUT_S - time.time()))
    setup.proxy.start()
    back = time.time()
    retaken = log_time(a, "re-took the state store's lock")
    a.wait_for("state reloaded from the store; detection resumes")
    wait_until("A ready again", lambda: ready(url_a), daemon=a)
    resumed = time.time()

    add_rows(setup.crm, 4)
    wait_until("A counted every row", lambda: setup.bucket_total() == 18, daemon=a)
    time.sleep(1.0)
    assert setup.bucket_total() == 18  # nothing counted twice across the loss and the restore
    metrics = requests.get(f"{url_a}/metrics", timeout=5).text
    assert "sentinel_store_lock_held 1.0" in metrics and "sentinel_store_lock_losses_total 1.0" in metrics
    lock = requests.get(f"{url_a}/api/v1/status", timeout=5).json()["lock"]
    assert lock["kind"] == "advisory" and lock["held"] and lock["error"] is None and lock["losses"] == 1
    assert "its connection failed" in lock["last_loss"]["reason"] and lock["last_loss"]["retaken_after_s"] > 0
    shown = subprocess.run(
        [*SENTINEL, "status", "--config", str(cfg_a)],
        capture_output=True,
        text=True,
        env={**setup.env, "COLUMNS": "250"},
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "state store lock: held; lost 1 time(s)" in shown.stdout

    cfg_b, url_b = setup.config("b", proxied=False)
    b = start(daemons, cfg_b, setup.env)
    b.wait_for("standing by: another instance leads the state store")
    wait_until("B ready as a standby", lambda: ready(url_b), daemon=b)
    answer = requests.get(f"{url_b}/readyz", timeout=5).text
    assert answer.startswith(f"ready: standby; the leader is {socket.gethostname()[:32]} pid {a.proc.pid} (epoch 2,")
    assert leading(url_a) and not leading(url_b)
    assert sigterm(b) == 0
    assert ready(url_a)
    assert sigterm(a) == 0
    assert not tracebacks(a), tracebacks(a)
    print(
        f"\nfigures: cut -> loss noticed {lost - cut:.2f} s; proxy back -> lock re-taken {retaken - back:.2f} s, "
        f"ready {resumed - back:.2f} s"
    )


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after the loss is reported", "right after the cut"])
def test_sigterm_while_the_lock_connection_is_dead_exits_0_without_traceback(
    setup: Setup, daemons: list[Daemon], when: str
) -> None:
    cfg_a, url_a = setup.config("a", proxied=True)
    a = start(daemons, cfg_a, setup.env)
    wait_until("A ready", lambda: ready(url_a), daemon=a)
    add_rows(setup.crm, 3)
    wait_until("A counted the rows", lambda: setup.bucket_total() == 3, daemon=a)
    setup.proxy.stop()
    if when == "after the loss is reported":
        a.wait_for("lost the state store's lock")
    asked = time.monotonic()
    assert sigterm(a) == 0
    took = time.monotonic() - asked
    a._reader.join(5)
    assert not tracebacks(a), tracebacks(a)
    assert not [line for line in a.raw if line.startswith("error: ")]
    assert took < 20
    print(f"\nfigures: SIGTERM {when}: exit 0 after {took:.2f} s")
