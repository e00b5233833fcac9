"""The HTTP face of the daemon: a small WSGI router served by waitress.

Later stages register their endpoints with `App.route` (the status page, the API, the ack links);
this module only knows how to match a path, call a handler and answer errors as JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

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

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, f"body is not JSON: {exc}") from None

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def json(data: Any, status: int = 200) -> Response:
        return Response(status, json.dumps(data, ensure_ascii=False, default=str).encode(),
                        "application/json; charset=utf-8")

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

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 303: "See Other", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 413: "Payload Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


class App:
    """A WSGI application with a route table that other modules extend."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` is a path with `<name>` placeholders for one segment each."""
        regex = "^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", pattern) + "$"
        self._routes.append((method.upper(), re.compile(regex), handler))

    def dispatch(self, req: Request) -> Response:
        allowed = []
        for method, regex, handler in self._routes:
            m = regex.match(req.path)
            if not m:
                continue
            if method != req.method and not (method == "GET" and req.method == "HEAD"):
                allowed.append(method)
                continue
            req.params = m.groupdict()
            return handler(req)
        if allowed:
            return Response(405, b"method not allowed", headers={"Allow": ", ".join(sorted(set(allowed)))})
        raise HTTPError(404, "not found")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
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
            req = Request(environ.get("REQUEST_METHOD", "GET").upper(), environ.get("PATH_INFO", "/") or "/",
                          parse_qs(environ.get("QUERY_STRING", "")), headers, body,
                          remote=environ.get("REMOTE_ADDR", ""))
            resp = self.dispatch(req)
        except HTTPError as err:
            resp = Response.json({"error": err.message}, err.status)
        except Exception:
            log.exception("HTTP handler failed")
            resp = Response.json({"error": "internal error"}, 500)
        status = f"{resp.status} {_REASONS.get(resp.status, 'Unknown')}"
        hdrs = [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body))),
                ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"),
                *resp.headers.items()]
        start_response(status, hdrs)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else resp.body]


class Server:
    """waitress in a background thread; `port` is the real port (useful with port 0)."""

    def __init__(self, app: App, listen: str, threads: int = 4) -> None:
        from waitress.server import create_server

        host, _, port = listen.rpartition(":")
        server: Any = create_server(app, host=host.strip("[]"), port=int(port), threads=threads,
                                          ident="sentinel", clear_untrusted_proxy_headers=True)
        self._server = server
        self.host = host
        self.port: int = int(server.effective_port)
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # closed during shutdown
            self._server.run()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
