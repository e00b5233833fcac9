"""A receiver that drips its answer (one byte a second, each byte restarting every socket timeout) holds
neither its queue nor the shutdown: every attempt ends at the receiver's `timeout` as a recorded retry,
SIGTERM abandons a send in flight within a bounded time and keeps its message pending, and
`sentinel notify-test` ends at the deadline with the reason. Real local HTTP servers, a real SQLite
store, and real `sentinel` processes for SIGTERM and notify-test."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.model import US
from sentinel.notify import outbox
from tests.crm import Crm
from tests.delivery.builders import Alert, daemon_config, route
from tests.delivery.conftest import MakePipeline
from tests.delivery.test_isolation import wait_for as wait_until
from tests.delivery.test_kill import query, sentinel_command, start, stop, wait_for
from tests.notify.vendors import Answer, FakeWebhook

DRIP = Answer(body=b'{"ok":true}'.ljust(120), drip=1.0)  # 2 minutes of answer, a byte a second
TIMED_OUT = "timed out after 1 s while reading the answer (the message may have been delivered)"


def test_each_attempt_ends_at_the_deadline_and_is_retried_with_its_reason(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook:
        hook.script(DRIP)
        p = pipeline([hook.receiver(name="hook", timeout=timedelta(seconds=1))], [route(["hook"])])
        p.record(Alert("物流配送延误", p.now).firing())
        assert p.dispatch() == 1
        started = time.monotonic()
        assert p.deliver() == 0
        assert time.monotonic() - started < 5.0  # the 1 s deadline and a slow CI, not the dripped 2 minutes
        [msg] = p.messages("hook")
        assert (msg.status, msg.attempts, msg.last_error) == ("pending", 1, TIMED_OUT)
        assert msg.next_attempt_us >= p.now + 5 * US  # the network delay and the usual backoff
        with p.store.reading() as conn:
            last = outbox.last_outcomes(conn)["hook"]
        assert (last["status"], last["error"]) == ("retrying", TIMED_OUT)  # what `sentinel status` shows

        p.advance(30)  # the robot answers normally again
        assert p.deliver() == 1
        assert [m.status for m in p.messages("hook")] == ["delivered"]
        assert [r.headers["x-sentinel-delivery"] for r in hook.requests] == [msg.delivery_id] * 2
        with p.store.reading() as conn:
            assert outbox.last_outcomes(conn)["hook"]["status"] == "delivered"


def test_stop_abandons_a_send_in_flight_and_its_message_goes_after_the_restart(pipeline: MakePipeline) -> None:
    with FakeWebhook() as hook:
        hook.script(DRIP)
        p = pipeline([hook.receiver(name="hook", timeout=timedelta(seconds=60))], [route(["hook"])])
        p.record(Alert("物流配送延误", p.now).firing())
        p.dispatch()
        p.worker.tick()  # the deliver job: its drain reads the dripping answer for up to 60 s
        assert wait_until(lambda: len(hook.requests) == 1)
        time.sleep(0.3)
        started = time.monotonic()
        p.worker.flush(0.5)  # SIGTERM
        p.worker.stop()
        assert time.monotonic() - started < 6.0  # the flush (0.5 s), the grace (2 s) and a slow CI; not 2 min
        [msg] = p.messages("hook")
        assert msg.status == "pending"
        assert msg.last_error is not None
        assert msg.last_error.startswith("abandoned while reading the answer: the daemon is stopping")
        assert msg.next_attempt_us <= p.now  # due as soon as a daemon runs again

        p.worker = p._worker()  # the restart
        assert p.deliver() == 1
        assert [m.status for m in p.messages("hook")] == ["delivered"]
        assert [r.headers["x-sentinel-delivery"] for r in hook.requests] == [msg.delivery_id] * 2


RECEIVER = """
[[receivers]]
name = "hook"
kind = "webhook"
url = "{url}"
timeout = "{timeout}"

[[routes]]
receivers = ["hook"]
group_wait = "0s"
group_interval = "0s"
"""
STOP_BOUND_S = 30.0  # the flush (10 s) and the grace (2 s), with a slow CI's margin; systemd allows 90 s


def test_sigterm_with_a_send_in_flight_exits_in_time_and_the_restart_delivers_it_once(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    state = tmp_path / "state.db"
    log = tmp_path / "sentinel.log"
    with FakeWebhook(path="/alerts") as hook:
        hook.script(DRIP)  # the first answer drips; later ones are healthy
        config = daemon_config(tmp_path, crm.path, RECEIVER.format(url=hook.url, timeout="60s"), poll_interval="200ms")
        first = start(config, log)
        try:
            wait_for(
                "first start's backfill",
                lambda: query(state, "SELECT backfill_done FROM source_state") == [(1,)],
                first,
                log,
            )
            crm.add(datetime.now(UTC), type_="物流配送延误", n=5, spacing=timedelta(microseconds=100))
            wait_for("the send", lambda: len(hook.requests) == 1, first, log)
            time.sleep(0.5)  # the answer's head has arrived, its body drips
            started = time.monotonic()
            first.send_signal(signal.SIGTERM)
            code = first.wait(timeout=STOP_BOUND_S)
            took = time.monotonic() - started
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        assert code == 0, log.read_text(errors="replace")[-4000:]
        assert took < STOP_BOUND_S
        [(delivery, status, error)] = query(state, "SELECT delivery_id, status, last_error FROM outbox")
        assert status == "pending"  # not sent, not lost
        assert error.startswith("abandoned while reading the answer: the daemon is stopping")

        second = start(config, log)
        try:
            wait_for(
                "the message delivered after the restart",
                lambda: query(state, "SELECT status FROM outbox") == [("delivered",)],
                second,
                log,
            )
        finally:
            assert stop(second) == 0, log.read_text(errors="replace")[-4000:]
        counts = Counter(r.headers["x-sentinel-delivery"] for r in hook.requests)
        assert counts == {delivery: 2}  # the abandoned attempt, then exactly one delivery
        text = log.read_text(errors="replace")
        assert "delivery abandoned at shutdown; the message is sent after the restart" in text


def test_notify_test_ends_at_the_deadline_with_the_reason(tmp_path: Path) -> None:
    crm = Crm(tmp_path / "crm.db")
    with FakeWebhook(path="/alerts") as hook:
        hook.script(DRIP)
        config = daemon_config(tmp_path, crm.path, RECEIVER.format(url=hook.url, timeout="2s"))
        started = time.monotonic()
        done = subprocess.run(
            [*sentinel_command(), "notify-test", "--config", str(config), "--receiver", "hook"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
    assert done.returncode != 0
    assert took < 20.0  # the 2 s deadline plus the interpreter's start on a slow CI; the answer drips 2 min
    assert "hook url #1: not delivered: timed out after 2 s while reading the answer" in done.stdout, done
    assert "Traceback" not in done.stderr
