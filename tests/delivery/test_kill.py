"""`kill -9` in the middle of a send, with real processes: `sentinel run` over a real SQLite CRM
delivers to a fake generic webhook in this process that answers the first request slowly; the daemon is
killed while that request is in flight and started again. Every message is delivered afterwards and
only the one in flight is repeated (counted per `X-Sentinel-Delivery` id at the server)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.delivery.builders import daemon_config
from tests.notify.vendors import Answer, FakeWebhook
from tests.test_daemon import Crm

HMAC = "hmacSECRET-kill9-0123456789"
TYPES = ["物流配送延误", "服务态度", "系统操作错误", "产品相关"]
RECEIVER = f"""
[[receivers]]
name = "hook"
kind = "webhook"
url = "{{url}}"
hmac_secret = "{HMAC}"
timeout = "120s"

[[routes]]
receivers = ["hook"]
group_by = ["rule", "type"]
group_wait = "0s"
group_interval = "0s"
"""


def sentinel_command() -> list[str]:
    script = Path(sys.executable).with_name("sentinel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sentinel.cli"]


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    with log.open("ab") as out:
        return subprocess.Popen(
            [*sentinel_command(), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def wait_for(
    what: str, condition: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if condition():
        return
    raise AssertionError(
        f"{what}: not within {timeout} s (exit {proc.poll()}); log:\n" + log.read_text(errors="replace")[-4000:]
    )


def query(db: Path, sql: str) -> list[Any]:
    """Read the daemon's state store from outside (read-only, like an operator would)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # not created or migrated yet


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


def test_kill_9_during_a_send_loses_nothing_and_repeats_at_most_that_send(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    state = tmp_path / "state.db"
    log = tmp_path / "sentinel.log"
    with FakeWebhook(hmac_secret=HMAC) as hook:
        hook.script(Answer(delay=120))  # the first answer hangs: that send is in flight when the kill comes
        config = daemon_config(tmp_path, crm.path, RECEIVER.format(url=hook.url), poll_interval="200ms")
        first = start(config, log)
        try:
            wait_for(
                "first start's backfill",
                lambda: query(state, "SELECT backfill_done FROM source_state") == [(1,)],
                first,
                log,
            )
            now = datetime.now(UTC)
            for i, t in enumerate(TYPES):  # four five-in-a-row streaks: four alerts, four messages
                crm.add(now + timedelta(milliseconds=10 * i), type_=t, n=5, spacing=timedelta(microseconds=100))
            wait_for("the first send", lambda: len(hook.requests) == 1, first, log)
            wait_for(
                "all four messages queued", lambda: len(query(state, "SELECT id FROM outbox")) == len(TYPES), first, log
            )
            in_flight = hook.requests[0].headers["x-sentinel-delivery"]
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        assert query(state, "SELECT delivery_id, status FROM outbox WHERE status != 'pending'") == [
            (in_flight, "sending")
        ]  # killed in the middle of that send

        second = start(config, log)
        try:
            wait_for(
                "every message delivered",
                lambda: [s for (s,) in query(state, "SELECT status FROM outbox")] == ["delivered"] * len(TYPES),
                second,
                log,
            )
        finally:
            code = stop(second)  # once it has exited, what the server saw is final
        assert code == 0, log.read_text(errors="replace")[-4000:]

        expected = [d for (d,) in query(state, "SELECT delivery_id FROM outbox ORDER BY id")]
        counts = Counter(r.headers["x-sentinel-delivery"] for r in hook.requests)
        assert set(counts) == set(expected)  # every message arrived
        assert {d: n for d, n in counts.items() if n > 1} == {in_flight: 2}  # only the one in flight, once more
        delivered_types = {r.json["alerts"][0]["labels"]["type"] for r in hook.requests}
        assert delivered_types == set(TYPES)
        assert "messages in flight at the last stop will be sent again" in log.read_text(errors="replace")
