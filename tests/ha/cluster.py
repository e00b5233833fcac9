"""Several `sentinel run` processes on one PostgreSQL state store, for the failover tests.

Each instance is a real process on 127.0.0.1 with its own configuration (its own port, and its own path on
the one local webhook sink, so every message says which instance sent it); they share the SQLite CRM and a
fresh PostgreSQL database per test. An instance may reach the store through a TCP proxy of the test (to cut
its connection). The lease is short (`TTL`) so the tests are quick; no test asserts a time, every wait is
generous, so a slow CI machine passes the same way."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests

from sentinel.demo import free_port
from tests.crm import Crm
from tests.notify.vendors import FakeWebhook
from tests.sources.dbs import TcpProxy
from tests.test_process import Daemon

TOKEN = "haTOKEN-0123456789abcdef"
TTL = "4s"
TTL_S = 4.0
WAIT_S = 60.0  # a generous deadline for anything a failover needs
TYPES = ["物流配送延误", "服务态度", "系统操作错误", "产品相关", "账单争议", "退款", "其他", "网络故障"]


def wait_until(
    what: str, pred: Callable[[], bool], timeout: float = WAIT_S, log: Callable[[], str] | None = None
) -> float:
    """Waits for `pred()`; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g} s" + ("" if log is None else f"; logs:\n{log()}"))


@dataclass
class Instance:
    name: str
    config: Path
    url: str
    env: dict[str, str]
    daemon: Daemon | None = None
    runs: list[Daemon] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.proc.pid

    @property
    def app(self) -> str:
        """Its pool's application_name in pg_stat_activity (and the lease's holder, after "sentinel ")."""
        return f"sentinel {socket.gethostname()[:32]} pid {self.pid}"

    def start(self) -> Instance:
        self.daemon = Daemon(["run", "--config", str(self.config)], self.env)
        self.runs.append(self.daemon)
        return self

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9, and wait for it to be gone."""
        assert self.daemon is not None
        self.daemon.proc.kill()
        self.daemon.proc.wait(10)

    def terminate(self) -> int:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGTERM)
        return self.daemon.proc.wait(60)

    def status(self) -> dict[str, Any] | None:
        try:
            answer = requests.get(f"{self.url}/api/v1/status", timeout=3)
            return answer.json() if answer.status_code == 200 else None  # type: ignore[no-any-return]
        except (requests.RequestException, ValueError):
            return None

    def role(self) -> str | None:
        if not self.alive():
            return None
        s = self.status()
        return None if s is None else str(s["leadership"]["role"])

    def readyz(self) -> tuple[int, str]:
        try:
            answer = requests.get(f"{self.url}/readyz", timeout=3)
            return answer.status_code, answer.text
        except requests.RequestException as exc:
            return 0, str(exc)

    def log(self) -> str:
        return "".join(line for d in self.runs for line in d.raw)

    def tracebacks(self) -> list[str]:
        return [line for d in self.runs for line in d.raw if "Traceback" in line]

    def stop(self) -> None:
        for d in self.runs:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
            d.stop()


class Cluster:
    """The shared scene: CRM, state store, sink, and the instances."""

    def __init__(self, tmp: Path, pg_url: str, hook: FakeWebhook, proxy: TcpProxy | None = None) -> None:
        self.tmp = tmp
        self.pg_url = pg_url
        self.hook = hook
        self.proxy = proxy
        self.crm = Crm(tmp / "crm.db")
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))
        }
        self.instances: dict[str, Instance] = {}

    # --- instances -----------------------------------------------------------------------------------
    def add(self, name: str, *, proxied: bool = False, timeout: str = "30s") -> Instance:
        port = free_port()
        url = self.pg_url
        if proxied:
            assert self.proxy is not None
            host_port = url.split("@", 1)[1].split("/", 1)[0]
            url = url.replace(host_port, f"127.0.0.1:{self.proxy.port}")
        path = self.tmp / f"{name}.toml"
        path.write_text(
            f"""
timezone = "Asia/Shanghai"
locale = "en"
state_url = "{url}"
listen = "127.0.0.1:{port}"

[state]
lease_ttl = "{TTL}"

[api]
token = "{TOKEN}"
ack_secret = "ackSECRET-ha-0123456789"

[source]
url = "sqlite:///{self.crm.path}"
table = "complaints"
columns = {{ id = "id", created_at = "created_at", type = "category", channel = "channel", customer = "customer_id" }}
timezone = "UTC"
poll_interval = "200ms"
lateness = "1s"

[[rules]]
name = "streak"
kind = "streak"
length = 5

[[receivers]]
name = "hook"
kind = "webhook"
url = "{self.hook.base}/{name}"
timeout = "{timeout}"

[[routes]]
receivers = ["hook"]
group_by = ["rule", "type"]
group_wait = "0s"
group_interval = "0s"
""",
            encoding="utf-8",
        )
        inst = Instance(name, path, f"http://127.0.0.1:{port}", self.env)
        self.instances[name] = inst
        return inst

    def logs(self) -> str:
        return "\n".join(f"--- {n}:\n{i.log()[-3000:]}" for n, i in self.instances.items())

    def leaders(self) -> list[str]:
        return [n for n, i in self.instances.items() if i.role() == "leader"]

    def wait_leader(self, among: list[str] | None = None, timeout: float = WAIT_S) -> str:
        found: list[str] = []

        def one() -> bool:
            found[:] = [n for n in self.leaders() if among is None or n in among]
            return len(found) == 1

        wait_until("one leader", one, timeout, self.logs)
        return found[0]

    def wait_standby(self, name: str) -> None:
        inst = self.instances[name]
        wait_until(
            f"{name} ready as a standby",
            lambda: inst.readyz()[1].startswith("ready: standby; the leader is"),
            log=self.logs,
        )

    def stop(self) -> None:
        for inst in self.instances.values():
            inst.stop()

    # --- the store, read as an operator would --------------------------------------------------------
    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            with psycopg.connect(
                self.pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
            ) as conn:
                return list(conn.execute(query, params).fetchall())
        except psycopg.errors.UndefinedTable:
            return []

    def backfilled(self) -> bool:
        return self.sql("SELECT backfill_done FROM source_state") == [(True,)]

    def epoch(self) -> int:
        rows = self.sql("SELECT epoch FROM leader_lease")
        return int(rows[0][0]) if rows else 0

    def outbox(self) -> list[tuple[str, str]]:
        return [(str(d), str(s)) for d, s in self.sql("SELECT delivery_id, status FROM outbox ORDER BY id")]

    def all_delivered(self, n: int | None = None) -> bool:
        box = self.outbox()
        return bool(box) and all(s == "delivered" for _, s in box) and (n is None or len(box) == n)

    def audit(self) -> None:
        """Record who commits what from now on: a trigger on every table but the lease's writes the writing
        session's application_name and the server's time (rolled back with a refused write, so only
        committed writes are seen)."""
        from sentinel.store.schema import metadata

        stmts = [
            "CREATE TABLE IF NOT EXISTS audit (app text, tbl text, at timestamptz DEFAULT clock_timestamp())",
            "CREATE OR REPLACE FUNCTION audit_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO audit (app, tbl) VALUES (current_setting('application_name'), TG_TABLE_NAME); "
            "RETURN NULL; END $$",
        ]
        for table in metadata.tables:
            if table != "leader_lease":
                stmts.append(
                    f"CREATE TRIGGER audit_{table} AFTER INSERT OR UPDATE OR DELETE ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION audit_write()"
                )
        for stmt in stmts:
            self.sql_exec(stmt)

    def sql_exec(self, stmt: str, params: Any = None) -> None:
        with psycopg.connect(self.pg_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute(stmt, params)

    def server_now(self) -> datetime:
        return self.sql("SELECT clock_timestamp()")[0][0]  # type: ignore[no-any-return]

    # --- the sink --------------------------------------------------------------------------------------
    def deliveries(self) -> Counter[str]:
        """How often each delivery id reached the sink."""
        return Counter(r.headers["x-sentinel-delivery"] for r in list(self.hook.requests))

    def senders(self, since: float = 0.0) -> Counter[str]:
        """Messages per sending instance (the first part of the path) that reached the sink after `since`
        (epoch seconds, the sink's clock)."""
        return Counter(r.path.strip("/").split("/")[0] for r in list(self.hook.requests) if r.at >= since)

    # --- the CRM -----------------------------------------------------------------------------------------
    def last_time(self) -> datetime:
        """The newest row's created_at (aware, UTC)."""
        import sqlite3

        with sqlite3.connect(self.crm.path) as db:
            (text,) = db.execute("SELECT max(created_at) FROM complaints").fetchone()
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    def streak(self, type_: str, n: int = 5) -> None:
        """`n` of one type in a row, created a moment ago: one streak alert."""
        self.crm.add(
            datetime.now(UTC) - timedelta(milliseconds=200), type_=type_, n=n, spacing=timedelta(microseconds=100)
        )


def cluster_fixture(tmp_path: Path, pg_url: str, proxy: TcpProxy | None = None) -> Iterator[Cluster]:
    with FakeWebhook(path="/") as hook:
        c = Cluster(tmp_path, pg_url, hook, proxy)
        try:
            yield c
        finally:
            c.stop()
