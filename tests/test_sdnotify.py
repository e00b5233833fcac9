"""sd_notify client against real AF_UNIX datagram sockets (a path in a temp dir, and an abstract one)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.sdnotify import Notifier, watchdog_interval

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sd_notify is Linux-only")


class Receiver:
    """The systemd side: a bound datagram socket that hands back what it received."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value  # what systemd would put into $NOTIFY_SOCKET

    def receive(self) -> list[str]:
        data = self.sock.recv(65536)
        return data.decode("utf-8").split("\n")

    def empty(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(65536)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(2.0)
        return False


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # Not tmp_path: AF_UNIX paths are limited to 108 bytes and pytest's directories can be longer.
    with tempfile.TemporaryDirectory(prefix="sdn-") as d, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        path = os.path.join(d, "notify.sock")
        sock.bind(path)
        sock.settimeout(2.0)
        yield Receiver(sock, path)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"sentinel-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        yield Receiver(sock, "@" + name)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    r: Receiver = request.getfixturevalue(f"{request.param}_receiver")
    return r


def test_ready_with_status(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value})
    assert n.enabled
    assert n.ready("watching complaints") is True
    assert receiver.receive() == ["READY=1", "STATUS=watching complaints"]


def test_each_message(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    assert n.watchdog()
    assert receiver.receive() == ["WATCHDOG=1"]
    assert n.stopping()
    assert receiver.receive() == ["STOPPING=1"]
    assert n.ready()
    assert receiver.receive() == ["READY=1"]
    assert n.extend_timeout(90)
    assert receiver.receive() == ["EXTEND_TIMEOUT_USEC=90000000"]


def test_reloading_carries_monotonic_usec(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading("reloading configuration")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = receiver.receive()
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert lines[2:] == ["STATUS=reloading configuration"]


def test_status_is_one_line_utf8(receiver: Receiver) -> None:
    n = Notifier(receiver.env_value)
    assert n.status("物流配送延误 surge\nREADY=1\r\n  open alerts: 2")
    assert receiver.receive() == ["STATUS=物流配送延误 surge READY=1 open alerts: 2"]


def test_from_process_environment(path_receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_receiver.env_value)
    assert Notifier.from_env().ready()
    assert path_receiver.receive() == ["READY=1"]


def test_without_systemd_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("no socket may be created without NOTIFY_SOCKET")

    n = Notifier.from_env()
    monkeypatch.setattr(socket, "socket", no_socket)
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False
    assert n.reloading() is False
    assert n.stopping() is False
    assert n.status("x") is False
    assert Notifier.from_env({"NOTIFY_SOCKET": ""}).ready() is False


@pytest.mark.parametrize("value", ["relative/notify.sock", "vsock:2:1234"])
def test_unsupported_address_disables(value: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="sentinel.sdnotify"):
        n = Notifier(value)
    assert not n.enabled
    assert n.ready() is False
    assert "unsupported NOTIFY_SOCKET" in caplog.text


def test_send_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.enabled
    with caplog.at_level(logging.DEBUG, logger="sentinel.sdnotify"):
        assert n.ready() is False
        assert n.watchdog() is False
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    assert "could not send 'READY=1'" in caplog.text


def test_send_failure_when_receiver_is_gone(path_receiver: Receiver) -> None:
    n = Notifier(path_receiver.env_value)
    path_receiver.sock.close()
    assert n.watchdog() is False  # connection refused: swallowed


def test_nothing_sent_for_no_assignments(path_receiver: Receiver) -> None:
    assert Notifier(path_receiver.env_value).notify() is False
    assert path_receiver.empty()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "abc"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


def test_watchdog_interval_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 20.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None
