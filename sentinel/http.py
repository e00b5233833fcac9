"""The HTTP face of the daemon: a small WSGI router served by waitress.

Later stages register their endpoints with `App.route` (the status page, the API, the ack links);
this module only knows how to match a path, call a handler and answer errors as JSON.

The server is reachable without a token (health, metrics, the status page), so what one client can cost
it is bounded (`Limits`): a body over the limit, chunked or not, is refused with 413 once that many bytes
have come (a declared Content-Length at once); a route's guard (the API's bearer token) refuses a request
before its body is read; a connection that has not sent a whole request head within `header_timeout`, or
a whole request within `request_timeout`, is closed; and the number of connections is capped. waitress
reads requests on one event loop and hands only complete ones to its threads, so idle or dripping
connections never hold a thread and `/healthz` and `/metrics` keep answering.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from sqlalchemy.exc import OperationalError
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, create_server
from waitress.utilities import Error

from sentinel.logs import error_line, fields
from sentinel.store.lock import LockLost

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from sentinel.model import JsonValue

log = logging.getLogger("sentinel.http")

MAX_BODY = 1_000_000


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    remote: str = ""

    def json(self) -> JsonValue:  # JSON as parsed: the handler narrows it with isinstance
        try:
            value: JsonValue = json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, f"body is not JSON: {exc}") from None
        return value

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(data: object, status: int = 200) -> Response:
        return Response(
            status, json.dumps(data, ensure_ascii=False, default=str).encode(), "application/json; charset=utf-8"
        )

    @staticmethod
    def text(text: str, status: int = 200) -> Response:
        return Response(status, text.encode())

    @staticmethod
    def html(text: str, status: int = 200) -> Response:
        return Response(status, text.encode(), "text/html; charset=utf-8")


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[Request], Response]
Guard = Callable[[Request], None]
"""Raises `HTTPError` to refuse a request from its head alone (method, path, headers; the body is empty)."""

_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _regex(pattern: str) -> str:
    return "^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern) + "$"


class App:
    """A WSGI application with a route table that other modules extend."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler, Guard | None]] = []

    def route(self, method: str, pattern: str, handler: Handler, *, guard: Guard | None = None) -> None:
        """`pattern` is a path with `<name>` placeholders for one segment each. `guard` (authentication)
        runs before the handler, and already when the request head has arrived, so a refused client never
        gets its body read."""
        self._routes.append((method.upper(), re.compile(_regex(pattern)), handler, guard))

    def routed(self, method: str, pattern: str) -> bool:
        """Whether `pattern` is routed for `method` already (a page registers itself once)."""
        regex = _regex(pattern)
        return any(m == method.upper() and r.pattern == regex for m, r, _h, _g in self._routes)

    def _match(self, req: Request) -> tuple[Handler, Guard | None] | list[str]:
        """The route for `req` (setting its params), or the methods the path allows."""
        allowed = []
        for method, regex, handler, guard in self._routes:
            m = regex.match(req.path)
            if not m:
                continue
            if method != req.method and not (method == "GET" and req.method == "HEAD"):
                allowed.append(method)
                continue
            req.params = m.groupdict()
            return handler, guard
        return allowed

    def dispatch(self, req: Request) -> Response:
        found = self._match(req)
        if isinstance(found, list):
            if found:
                return Response(405, b"method not allowed", headers={"Allow": ", ".join(sorted(set(found)))})
            raise HTTPError(404, "not found")
        handler, guard = found
        if guard is not None:
            guard(req)
        return handler(req)

    def screen(self, req: Request) -> HTTPError | None:
        """The refusal of a request's route guard, judged from the head alone (`req.body` is empty)."""
        found = self._match(req)
        if isinstance(found, list) or found[1] is None:
            return None
        try:
            found[1](req)
        except HTTPError as err:
            return err
        return None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        try:
            if length > MAX_BODY:
                raise HTTPError(413, "request body too large")
            body = environ["wsgi.input"].read(length) if length else b""
            headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
            if environ.get("CONTENT_TYPE"):
                headers["content-type"] = environ["CONTENT_TYPE"]
            req = Request(
                environ.get("REQUEST_METHOD", "GET").upper(),
                environ.get("PATH_INFO", "/") or "/",
                parse_qs(environ.get("QUERY_STRING", "")),
                headers,
                body,
                remote=environ.get("REMOTE_ADDR", ""),
            )
            resp = self.dispatch(req)
        except HTTPError as err:
            resp = Response.json({"error": err.message}, err.status)
        except LockLost as exc:  # a write while the daemon holds for the store's lock: try again later
            resp = Response.json({"error": str(exc)}, 503)
        except OperationalError as exc:  # the store is unreachable: an outage to wait out, not a bug
            log.warning(
                "HTTP request failed: the state store is unavailable",
                extra=fields(path=environ.get("PATH_INFO", ""), error=error_line(exc)),
            )
            resp = Response.json({"error": f"the state store is unavailable ({type(exc.orig).__name__})"}, 503)
        except Exception:
            log.exception("HTTP handler failed")
            resp = Response.json({"error": "internal error"}, 500)
        status = f"{resp.status} {_REASONS.get(resp.status, 'Unknown')}"
        hdrs = [
            ("Content-Type", resp.content_type),
            ("Content-Length", str(len(resp.body))),
            ("X-Content-Type-Options", "nosniff"),
            *resp.headers.items(),
        ]
        if "Cache-Control" not in resp.headers:  # answers are live state; a static asset says otherwise
            hdrs.append(("Cache-Control", "no-store"))
        start_response(status, hdrs)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else resp.body]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may cost the server. The defaults suit the daemon; tests shrink the timeouts.

    `max_body` (at most `MAX_BODY`, which the App enforces too) and `max_header` are bytes; chunked bodies
    count with their framing. `header_timeout` runs from the connection's opening (or the end of its last
    response, for keep-alive) to a complete request head; `request_timeout` to the whole request, and also
    bounds how long a client may take to read a response. `connections` caps open connections: beyond it
    new ones wait in the listen backlog until a slot frees (at the latest after `header_timeout`).
    """

    max_body: int = MAX_BODY
    max_header: int = 32 * 1024
    header_timeout: float = 5.0
    request_timeout: float = 30.0
    connections: int = 500
    threads: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.max_body <= MAX_BODY:
            raise ValueError(f"max_body must be between 1 and {MAX_BODY}")
        if not 0 < self.header_timeout <= self.request_timeout:
            raise ValueError("header_timeout must be positive and at most request_timeout")


CHAT_PEER = Limits(header_timeout=75.0, request_timeout=75.0)
"""For the local imitations of a chat tool (the demo sink, the benchmarks' sinks): keep-alive connections
left idle as long as a chat tool's front end leaves them (nginx's 75 s), so a sender's pooled connection is
not cut between two messages and the figures measure the sender, not reconnections."""


class _Refusal(Error):
    """A guard's refusal, answered by waitress before the body is read, as JSON like the App's errors."""

    def __init__(self, err: HTTPError) -> None:
        super().__init__(err.message)
        self.code = err.status
        self.reason = _REASONS.get(err.status, "Unknown")

    # Any: waitress's stub says the body is str; it is bytes here, which waitress writes as they are
    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], Any]:
        body = json.dumps({"error": self.body}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json; charset=utf-8")], body


class _Parser(HTTPRequestParser):
    """waitress's parser, plus the route guard once the head is in, before any of the body is taken."""

    app: App  # set on the per-server subclass
    _screened = False

    def received(self, data: bytes) -> int:
        n = super().received(data)
        if self.headers_finished and not self._screened:
            self._screened = True
            if self.error is None and not self.completed:  # a body follows
                refusal = self.app.screen(self._head())
                if refusal is not None:
                    self.error = _Refusal(refusal)
                    self.completed = True
            if self.error is not None:
                # Else waitress answers `Expect: 100-continue` and reads the body it has already refused.
                self.expect_continue = False
        return n

    def _head(self) -> Request:
        headers = {k.replace("_", "-").lower(): v for k, v in self.headers.items()}
        return Request(str(self.command).upper(), str(getattr(self, "path", "/")) or "/", {}, headers, b"")


class _Channel(HTTPChannel):
    """A connection that is closed when its client is too slow: no whole request head within
    `header_timeout`, no whole request (or response taken) within `request_timeout`. waitress's own
    `channel_timeout` only cuts connections with no traffic at all, so a drip of a byte a second would
    hold one for ever. Checked on every turn of the event loop (at least once a second)."""

    limits: Limits  # set on the per-server subclass
    _waiting_since = 0.0
    _busy = False

    def service(self) -> None:
        self._busy = True
        try:
            super().service()
        finally:
            self._waiting_since = time.monotonic()
            self._busy = False

    def writable(self) -> bool:
        if not self.will_close and self._overdue():
            log.debug("closing a slow HTTP connection", extra=fields(peer=str(self.addr)))
            self.will_close = True  # writable() -> handle_write() -> handle_close()
        return bool(super().writable())

    def _overdue(self) -> bool:
        if self._busy or self.requests:
            return False  # our handler's time, not the client's
        if not self._waiting_since:
            self._waiting_since = time.monotonic()
        head_in = self.total_outbufs_len or (self.request is not None and self.request.headers_finished)
        limit = self.limits.request_timeout if head_in else self.limits.header_timeout
        return time.monotonic() - self._waiting_since > limit


class ListenError(Exception):
    """`listen` cannot be bound (port in use, address not on this machine): said in one line naming the
    address, since the person who configured it must pick another or stop what holds it."""

    def __init__(self, listen: str, reason: str) -> None:
        super().__init__(f"listen: cannot listen on {listen}: {reason}")
        self.reason = reason


class Server:
    """waitress in a background thread; `port` is the real port (useful with port 0)."""

    def __init__(self, app: App, listen: str, threads: int | None = None, limits: Limits = Limits()) -> None:
        host, _, port = listen.rpartition(":")
        try:
            server = self._bind(app, host, int(port), threads, limits)
        except OSError as exc:
            import errno

            why = {
                errno.EADDRINUSE: "the port is already in use (another sentinel, or another program: "
                f"`ss -ltnp 'sport = :{port}'` shows which)",
                errno.EADDRNOTAVAIL: "the address is not one of this machine's",
                errno.EACCES: "permission denied (ports below 1024 need privileges)",
            }.get(exc.errno or 0, exc.strerror or str(exc))
            raise ListenError(listen, why) from None
        parser = type("Parser", (_Parser,), {"app": app})
        channel = type("Channel", (_Channel,), {"parser_class": parser, "limits": limits})
        listeners = (
            [server]
            if isinstance(server, BaseWSGIServer)
            else [s for s in (server.map or {}).values() if isinstance(s, BaseWSGIServer)]
        )
        for one in listeners:
            one.channel_class = channel
        self._server = server
        self.host = host
        self.port: int = int(server.effective_port if listeners == [server] else server.effective_listen[0][1])
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    @staticmethod
    # Any: waitress's stubs lack `effective_port` / `effective_listen`, which its servers have at run time
    def _bind(app: App, host: str, port: int, threads: int | None, limits: Limits) -> Any:
        return create_server(
            app,
            host=host.strip("[]"),
            port=port,
            threads=threads or limits.threads,
            ident="sentinel",
            clear_untrusted_proxy_headers=True,
            max_request_body_size=limits.max_body + 1,  # waitress refuses at >=, the App at >
            max_request_header_size=limits.max_header,
            connection_limit=limits.connections + 2,  # the listening socket and waitress's trigger count too
            channel_timeout=max(1, int(limits.request_timeout + 0.999)),  # no traffic at all: a backstop
            cleanup_interval=1,
            asyncore_use_poll=True,
        )  # select() fails on descriptors over 1023

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # closed during shutdown
            self._server.run()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Let the requests being answered finish, then close. (A single listener's `close()` closes the
        trigger its worker threads write to when a response is done: a probe answered during shutdown then
        logged a traceback, EBADF.)"""
        self._server.task_dispatcher.shutdown(timeout=2)
        self._server.close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
