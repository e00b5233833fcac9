"""What a client without a token can cost the HTTP server, over the daemon's real app and waitress on
127.0.0.1 with real sockets: held-open and dripping connections are cut and never starve `/healthz`,
`/readyz` and `/metrics`; a body over the limit (chunked, or with a Content-Length that lies either way) is
refused after about the limit, and an unauthenticated write before its body is read. Timeouts are shrunk
to a second so the tests stay fast; the defaults are the same code with larger numbers."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sentinel.clock import ManualClock
from sentinel.config import load_config
from sentinel.http import Limits, Server
from sentinel.service import build
from tests.crm import NOW, Crm, write_config

TOKEN = "api-TOKEN-5e6f7a8b"
LIMIT = 64 * 1024
LIMITS = Limits(max_body=LIMIT, header_timeout=1.0, request_timeout=3.0)
FLOOD = 40 * 1024 * 1024  # what the client offers; the old server took it all (its limit was 1 GB)
TAKEN_AT_MOST = 16 * 1024 * 1024  # the limit plus both ends' socket buffers, generously


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("T_API_TOKEN", TOKEN)
    crm = Crm(tmp_path / "crm.db")
    crm.add(NOW, n=3)
    cfg = write_config(
        tmp_path,
        crm,
        """
[api]
token = "${T_API_TOKEN}"
[[rules]]
name = "type-surge"
kind = "threshold"
""",
    )
    daemon = build(load_config(cfg), config_path=str(cfg), clock=ManualClock(NOW))
    daemon.open()
    while daemon.cycle():
        pass
    server = Server(daemon.app, "127.0.0.1:0", limits=LIMITS)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        daemon.stop()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    return sock


def answered(url: str) -> None:
    """`/healthz`, `/readyz` and `/metrics` each answer within a few seconds (the old server: never, while
    its 100 connection slots were held)."""
    for path in ("/healthz", "/readyz", "/metrics"):
        r = requests.get(url + path, timeout=5)
        assert r.status_code in (200, 503) and r.content, path  # readyz may say not ready; it must answer
    assert requests.get(url + "/healthz", timeout=5).text == "ok\n"


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True once the server has closed `sock` (EOF or reset), waiting at most `within` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            try:
                if not sock.recv(65536):
                    return True
            except OSError:
                return True
    return False


def flood(sock: socket.socket, head: bytes, piece: bytes) -> int:
    """Sends `head`, then `piece` until the server stops taking it or FLOOD bytes went; returns the bytes
    of body sent."""
    sock.sendall(head)
    sent = 0
    try:
        while sent < FLOOD:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:  # reset, broken pipe, or the server stopped reading (send timed out)
        pass
    return sent


def status_of(sock: socket.socket) -> int | None:
    """The status of the answer the server sent before it closed, if it could still be read."""
    try:
        data = sock.recv(4096)
    except OSError:
        return None
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None


# --- held and dripping connections ----------------------------------------------------------------


def test_150_half_open_connections_neither_starve_health_nor_stay_open(url: str) -> None:
    held = [connect(url) for _ in range(150)]
    for sock in held[::3]:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a head begun and never finished
    try:
        answered(url)
        assert all(closed_by_server(sock, within=10) for sock in held)
        answered(url)
    finally:
        for sock in held:
            sock.close()


def test_connections_over_the_cap_wait_only_until_the_held_ones_are_cut(tmp_path: Path) -> None:
    from sentinel.http import App, Response

    app = App()
    app.route("GET", "/healthz", lambda _r: Response.text("ok\n"))
    server = Server(app, "127.0.0.1:0", limits=Limits(header_timeout=1.0, request_timeout=3.0, connections=20))
    server.start()
    held = [connect(server.url) for _ in range(40)]  # twice the cap
    try:
        started = time.monotonic()
        assert requests.get(server.url + "/healthz", timeout=15).text == "ok\n"
        assert time.monotonic() - started > 0.5  # it did wait: the cap holds
    finally:
        for sock in held:
            sock.close()
        server.stop()


@pytest.mark.parametrize(
    "drip",
    [
        pytest.param((b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n"), id="head"),
        pytest.param(
            (
                b"POST /api/v1/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\nContent-Length: 1000\r\n\r\n",
                b"x",
            ),
            id="body",
        ),
    ],
)
def test_a_slow_drip_is_cut_while_health_answers(url: str, drip: tuple[bytes, bytes]) -> None:
    first, more = drip
    sock = connect(url)
    sock.sendall(first)
    started = time.monotonic()
    cut = False
    try:
        while not cut and time.monotonic() - started < 20:
            try:
                sock.sendall(more)  # each drip is well inside waitress's idle timeout
            except OSError:
                cut = True
                break
            cut = closed_by_server(sock, within=0.3)
            if int(time.monotonic() - started) % 2 == 0:
                assert requests.get(url + "/healthz", timeout=5).text == "ok\n"
        assert cut, "the dripping connection was still open after 20 s"
        answered(url)
    finally:
        sock.close()


# --- bodies over the limit ------------------------------------------------------------------------

CHUNK = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"


@pytest.mark.parametrize(("auth", "status"), [(f"Authorization: Bearer {TOKEN}\r\n", 413), ("", 401)])
def test_a_chunked_flood_is_refused_after_about_the_limit(url: str, auth: str, status: int) -> None:
    sock = connect(url)
    head = f"POST /api/v1/silences HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode()
    try:
        sent = flood(sock, head, CHUNK)
        assert sent < TAKEN_AT_MOST, f"the server kept reading: {sent} bytes taken against a {LIMIT}-byte limit"
        assert status_of(sock) in (status, None)  # the answer, unless the reset overtook it
    finally:
        sock.close()
    answered(url)


def test_a_declared_length_over_the_limit_is_refused_before_any_body(url: str) -> None:
    sock = connect(url)
    try:
        sock.sendall(
            f"POST /api/v1/silences HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 50000000\r\n\r\n".encode()
        )
        assert status_of(sock) == 413  # at once, without waiting for the 50 MB the old server waited for
    finally:
        sock.close()


def test_a_declared_length_under_what_is_sent_does_not_let_the_rest_in(url: str) -> None:
    sock = connect(url)
    head = b"POST /api/v1/silences HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
    try:
        sent = flood(sock, head, b"y" * 65536)  # the rest would be a next request's head, without end
        assert sent < TAKEN_AT_MOST
    finally:
        sock.close()
    answered(url)


def test_an_unauthenticated_write_is_refused_before_its_body(url: str) -> None:
    sock = connect(url)
    try:  # a client that asks first is told no, not "100 Continue"
        sock.sendall(
            b"POST /api/v1/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
            b"Expect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        )
        answer = b""
        while not answer.endswith(b"}"):  # the head and the body may arrive in separate segments
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 401 "), answer
        assert answer.endswith(b'{"error": "missing or wrong bearer token"}')
    finally:
        sock.close()
    r = requests.post(
        url + "/api/v1/ack", json={"instance": "nope"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert r.status_code == 404  # with the token the same route still works
