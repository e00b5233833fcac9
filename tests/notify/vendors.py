"""Local HTTP servers that imitate each chat tool, for tests of the adapters, the delivery worker and
the end-to-end runs.

Each server listens on 127.0.0.1 on a free port, records every request (method, path, query, headers,
raw body and parsed JSON), checks what the real service checks - the URL's key or token, DingTalk and
Feishu signatures and timestamps (older than an hour: rejected), keywords, size limits - and answers
like the real service. Tests script further answers with `script(...)`: a vendor error code
(`error(45009)`), any HTTP answer (`Answer(status=429, headers={"Retry-After": "7"})`), a slow answer
(`Answer(delay=2)`), an answer that drips (`Answer(body=b"...", drip=1)`: the head at once, then one
byte of the body a second; `drip_head=True` drips the status line and headers too) or a dropped
connection (`Answer(drop=True)`). `closed_port_url()` gives a URL where nothing listens.

    with FakeDingTalk(secret="SEC…", keyword="预警") as robot:
        robot.script(robot.error(130101))
        adapter = DingTalkAdapter(robot.receiver())
        assert isinstance(adapter.send(message), RetryAfter)
        assert robot.requests[-1].json["at"]["isAtAll"] is False
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

from sentinel.config import ReceiverConfig

STALE_SECONDS = 3600


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]  # decoded once, as a real server decodes it
    raw_query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # None when the body is not JSON
    at: float  # the server's clock (time.time(), so freezegun moves it)
    peer: tuple[str, int] = ("", 0)  # the client's address: one port for requests on one kept-alive connection


@dataclass
class Answer:
    """What the server answers; `json` or `body`, with `headers`, after `delay` seconds, or nothing."""

    status: int = 200
    json: Any = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering
    drip: float = 0.0  # seconds between the bytes of the body (a receiver that drips its answer)
    drip_head: bool = False  # drip the status line and headers as well


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that hang up (a capped read, a timeout); loud about anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeVendor:
    """The shared server machinery; subclasses imitate one vendor in `check` and `ok`."""

    kind: ClassVar[str]
    CODES: ClassVar[dict[int, str]] = {}

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.clock_offset = 0.0  # seconds added to this server's clock (to make timestamps stale)
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits out a 40 ms delayed ACK

            def do_POST(self) -> None:
                vendor._handle(self)

            do_GET = do_POST
            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name=f"fake-{self.kind}", daemon=True
        )
        self._thread.start()

    # --- for tests ---------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        raise NotImplementedError

    def receiver(self, **overrides: Any) -> ReceiverConfig:
        """A receiver pointing at this server, with its secrets; `overrides` set any other key."""
        values: dict[str, Any] = {
            "name": f"test-{self.kind}",
            "kind": self.kind,
            "url": self.url,
            "timeout": timedelta(seconds=5),
        }
        values.update(self.receiver_secrets())
        values.update(overrides)
        if "urls" in overrides:
            values.pop("url")
        return ReceiverConfig(**values)

    def receiver_secrets(self) -> dict[str, Any]:
        return {}

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order (after the usual checks pass)."""
        with self._lock:
            self._script.extend(answers)

    def error(self, code: int, message: str | None = None) -> Answer:
        """The vendor's answer carrying an error `code` (HTTP 200 and a JSON code, like the real one)."""
        raise NotImplementedError

    def now(self) -> float:
        return time.time() + self.clock_offset

    @property
    def last(self) -> Request:
        assert self.requests, f"the fake {self.kind} received no request"
        return self.requests[-1]

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the vendor does ----------------------------------------------------------------------
    def check(self, req: Request) -> Answer | None:
        """The vendor's own rejection of a request (bad token, signature, keyword, size), or None."""
        return None

    def ok(self, req: Request) -> Answer:
        raise NotImplementedError

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        req = Request(
            h.command,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            parts.query,
            {k.lower(): v for k, v in h.headers.items()},
            body,
            parsed,
            self.now(),
            h.client_address[:2],
        )
        with self._lock:
            self.requests.append(req)
            scripted = self._script.popleft() if self._script else None
        answer = self.check(req) or scripted or self.ok(req)
        if answer.delay:
            self._release.wait(answer.delay)
        if answer.drop:
            h.close_connection = True
            return
        data = json.dumps(answer.json, ensure_ascii=False).encode() if answer.json is not None else answer.body
        try:
            out, head = h.wfile, io.BytesIO()
            if answer.drip_head:
                h.wfile = head  # the head is collected here, then dripped with the body
            h.send_response(answer.status)
            for k, v in answer.headers.items():
                h.send_header(k, v)
            if answer.json is not None:
                h.send_header("Content-Type", "application/json; charset=utf-8")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile = out
            data = head.getvalue() + data
            if not answer.drip:
                out.write(data)
            for i in range(len(data) if answer.drip else 0):
                out.write(data[i : i + 1])
                if self._release.wait(answer.drip):
                    break  # the server is closing
        except OSError:
            pass  # the client gave up (a deliberate slow answer)


def closed_port_url(path: str = "/hook?key=closed-port-secret-123") -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _json_error(code_key: str, msg_key: str, code: int, message: str) -> Answer:
    return Answer(200, {code_key: code, msg_key: message})


# --- WeCom -----------------------------------------------------------------------------------------


class FakeWeCom(FakeVendor):
    kind = "wecom"
    CODES: ClassVar[dict[int, str]] = {
        45009: "api freq out of limit",
        -1: "system busy",
        93000: "invalid webhook url",
        40058: "markdown.content exceed max length 4096",
    }

    def __init__(self, key: str = "wecom-KEY-7f3a9c21") -> None:
        self.key = key
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.base}/cgi-bin/webhook/send?key={self.key}"

    def error(self, code: int, message: str | None = None) -> Answer:
        return _json_error("errcode", "errmsg", code, message or self.CODES.get(code, "error"))

    def check(self, req: Request) -> Answer | None:
        if req.path != "/cgi-bin/webhook/send" or req.query.get("key") != [self.key]:
            return self.error(93000)
        msg = req.json if isinstance(req.json, dict) else {}
        kind = msg.get("msgtype")
        if kind not in ("text", "markdown") or not isinstance(msg.get(kind), dict):
            return self.error(40008, "invalid message type")
        content = msg[kind].get("content")
        if not isinstance(content, str):
            return self.error(44004, "empty content")
        limit = 2048 if kind == "text" else 4096
        if len(content.encode()) > limit:
            return self.error(40058, f"{kind}.content exceed max length {limit}")
        return None

    def ok(self, req: Request) -> Answer:
        return self.error(0, "ok")


# --- DingTalk --------------------------------------------------------------------------------------


def dingtalk_sign(secret: str, timestamp: str) -> str:
    """From DingTalk's documentation, independently of the adapter's code."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}\n{secret}".encode(), digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("utf-8")


class FakeDingTalk(FakeVendor):
    kind = "dingtalk"
    CODES: ClassVar[dict[int, str]] = {
        130101: "send too fast, exceed 20 times per minute",
        310000: "sign not match",
        300001: "token is not exist",
        460101: "message too long, exceed 20000 bytes",
    }

    def __init__(
        self, token: str = "ding-TOKEN-5b1e0d44", secret: str | None = "SECding9f8e7d6c5b4a", keyword: str | None = None
    ) -> None:
        self.token, self.secret, self.keyword = token, secret, keyword
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.base}/robot/send?access_token={self.token}"

    def receiver_secrets(self) -> dict[str, Any]:
        return {k: v for k, v in (("secret", self.secret), ("keyword", self.keyword)) if v is not None}

    def error(self, code: int, message: str | None = None) -> Answer:
        return _json_error("errcode", "errmsg", code, message or self.CODES.get(code, "error"))

    def check(self, req: Request) -> Answer | None:
        if req.path != "/robot/send" or req.query.get("access_token") != [self.token]:
            return self.error(300001)
        if self.secret is not None:
            ts, sign = req.query.get("timestamp", []), req.query.get("sign", [])
            if len(ts) != 1 or len(sign) != 1 or not ts[0].isdigit():
                return self.error(310000, "sign not match: missing or repeated timestamp/sign")
            if abs(self.now() * 1000 - int(ts[0])) > STALE_SECONDS * 1000:
                return self.error(310000, "invalid timestamp")
            if not hmac.compare_digest(sign[0], dingtalk_sign(self.secret, ts[0])):
                return self.error(310000, "sign not match")
        if len(req.body) > 20_000:
            return self.error(460101)
        msg = req.json if isinstance(req.json, dict) else {}
        kind = msg.get("msgtype")
        inner = msg.get(kind) if isinstance(kind, str) else None
        if not isinstance(inner, dict):
            return self.error(40035, "缺少参数 json")
        content = " ".join(str(inner.get(k, "")) for k in ("content", "title", "text"))
        if self.keyword is not None and self.keyword not in content:
            return self.error(310000, "keywords not in content")
        return None

    def ok(self, req: Request) -> Answer:
        return self.error(0, "ok")


# --- Feishu / Lark ---------------------------------------------------------------------------------


def feishu_sign(secret: str, timestamp: str) -> str:
    """From Feishu's documentation: the key is timestamp + "\\n" + secret, the message empty."""
    mac = hmac.new(f"{timestamp}\n{secret}".encode(), digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("utf-8")


class FakeFeishu(FakeVendor):
    kind = "feishu"
    CODES: ClassVar[dict[int, str]] = {
        19021: "sign match fail or timestamp is not within one hour from current time",
        19022: "Ip Not Allowed",
        19024: "Key Words Not Found",
        19007: "Bot Not Enabled",
        11232: "frequency limited",
        19036: "request too large",
        9499: "Bad Request",
        19001: "param invalid: incoming webhook access token invalid",
    }

    def __init__(
        self,
        token: str = "5a8e2c1d-feishu-hook-0b7f",
        secret: str | None = "SECfeishu1a2b3c4d",
        keyword: str | None = None,
        kind: str = "feishu",
    ) -> None:
        self.token, self.secret, self.keyword = token, secret, keyword
        self.kind = kind  # type: ignore[misc]  # the same fake serves Lark
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.base}/open-apis/bot/v2/hook/{self.token}"

    def receiver_secrets(self) -> dict[str, Any]:
        return {k: v for k, v in (("secret", self.secret), ("keyword", self.keyword)) if v is not None}

    def error(self, code: int, message: str | None = None) -> Answer:
        return Answer(200, {"code": code, "data": {}, "msg": message or self.CODES.get(code, "error")})

    def check(self, req: Request) -> Answer | None:
        if req.path != f"/open-apis/bot/v2/hook/{self.token}":
            return self.error(19001)
        if len(req.body) > 20 * 1024:
            return self.error(19036)
        msg = req.json if isinstance(req.json, dict) else None
        if msg is None:
            return self.error(9499, "Bad Request: body is not JSON")
        if self.secret is not None:
            ts, sign = msg.get("timestamp"), msg.get("sign")
            if not isinstance(ts, str) or not ts.isdigit() or not isinstance(sign, str):
                return self.error(19021)
            if abs(self.now() - int(ts)) > STALE_SECONDS:
                return self.error(19021)
            if not hmac.compare_digest(sign, feishu_sign(self.secret, ts)):
                return self.error(19021)
        if (
            msg.get("msg_type") != "text"
            or not isinstance(msg.get("content"), dict)
            or not isinstance(msg["content"].get("text"), str)
        ):
            return self.error(9499, "Bad Request: content.text is required")
        if self.keyword is not None and self.keyword not in msg["content"]["text"]:
            return self.error(19024)
        return None

    def ok(self, req: Request) -> Answer:
        return Answer(200, {"code": 0, "data": {}, "msg": "success"})


# --- Slack -----------------------------------------------------------------------------------------


class FakeSlack(FakeVendor):
    kind = "slack"

    def __init__(self, path: str = "/services/T0ABC1234/B0DEF5678/slackSECRETtoken0123456789") -> None:
        self.path = path
        super().__init__()

    @property
    def url(self) -> str:
        return self.base + self.path

    def error(self, code: int, message: str | None = None) -> Answer:
        """Slack has no JSON codes: `code` is the HTTP status, `message` Slack's error word."""
        return Answer(code, body=(message or "invalid_payload").encode(), headers={"Content-Type": "text/html"})

    def check(self, req: Request) -> Answer | None:
        if req.path != self.path:
            return self.error(404, "no_service")
        if not isinstance(req.json, dict) or not isinstance(req.json.get("text"), str):
            return self.error(400, "invalid_payload")
        return None

    def ok(self, req: Request) -> Answer:
        return Answer(200, body=b"ok", headers={"Content-Type": "text/html"})


# --- Teams -----------------------------------------------------------------------------------------


class FakeTeams(FakeVendor):
    kind = "teams"

    def __init__(self, sig: str = "teamsSIG0123456789abcdef") -> None:
        self.sig = sig
        super().__init__()

    @property
    def url(self) -> str:
        return (
            f"{self.base}/workflows/0f1e2d3c/triggers/manual/paths/invoke"
            f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={self.sig}"
        )

    def error(self, code: int, message: str | None = None) -> Answer:
        return Answer(code, {"error": {"code": "Error", "message": message or "error"}})

    def check(self, req: Request) -> Answer | None:
        if req.query.get("sig") != [self.sig]:
            return self.error(401, "The provided authentication token is not valid.")
        if len(req.body) > 28 * 1024:
            return self.error(413, "Request Entity Too Large")
        msg = req.json if isinstance(req.json, dict) else {}
        attachments = msg.get("attachments")
        if (
            msg.get("type") != "message"
            or not isinstance(attachments, list)
            or not attachments
            or attachments[0].get("contentType") != "application/vnd.microsoft.card.adaptive"
            or attachments[0].get("content", {}).get("type") != "AdaptiveCard"
        ):
            return self.error(400, "The request body is not a message with an adaptive card.")
        return None

    def ok(self, req: Request) -> Answer:
        return Answer(202)


# --- Discord ---------------------------------------------------------------------------------------


class FakeDiscord(FakeVendor):
    kind = "discord"

    def __init__(self, webhook_id: str = "112233445566778899", token: str = "discordTOKEN-abc123XYZ") -> None:
        self.webhook_id, self.token = webhook_id, token
        super().__init__()

    @property
    def url(self) -> str:
        return f"{self.base}/api/webhooks/{self.webhook_id}/{self.token}"

    def error(self, code: int, message: str | None = None) -> Answer:
        """`code` is Discord's JSON code, sent with HTTP 400 (429 for a rate limit: see `rate_limited`)."""
        return Answer(400, {"code": code, "message": message or "error"})

    def rate_limited(self, retry_after: float, is_global: bool = False) -> Answer:
        return Answer(
            429,
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global},
            headers={"Retry-After": str(int(retry_after) + 1)},
        )

    def check(self, req: Request) -> Answer | None:
        if req.path != f"/api/webhooks/{self.webhook_id}/{self.token}":
            return Answer(401, {"message": "Invalid Webhook Token", "code": 50027})
        msg = req.json if isinstance(req.json, dict) else {}
        content = msg.get("content")
        if not isinstance(content, str) or len(content) > 2000:
            return self.error(50035, "Invalid Form Body: content must be 2000 or fewer in length.")
        return None

    def ok(self, req: Request) -> Answer:
        if req.query.get("wait") == ["true"]:
            return Answer(200, {"id": "1", "content": req.json["content"]})
        return Answer(204)


# --- generic webhook -------------------------------------------------------------------------------


class FakeWebhook(FakeVendor):
    kind = "webhook"

    def __init__(self, hmac_secret: str | None = None, path: str = "/alerts?token=hookTOKEN42abc") -> None:
        self.hmac_secret, self.path = hmac_secret, path
        super().__init__()

    @property
    def url(self) -> str:
        return self.base + self.path

    def receiver_secrets(self) -> dict[str, Any]:
        return {"hmac_secret": self.hmac_secret} if self.hmac_secret is not None else {}

    def error(self, code: int, message: str | None = None) -> Answer:
        return Answer(code, body=(message or "error").encode())

    def check(self, req: Request) -> Answer | None:
        if self.hmac_secret is not None:
            ts = req.headers.get("x-sentinel-timestamp", "")
            expected = (
                "sha256="
                + hmac.new(self.hmac_secret.encode(), ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
            )
            if (
                not ts.isdigit()
                or abs(self.now() - int(ts)) > 300
                or not hmac.compare_digest(req.headers.get("x-sentinel-signature", ""), expected)
            ):
                return self.error(401, "bad signature")
        return None

    def ok(self, req: Request) -> Answer:
        return Answer(200, body=b"")


FAKES: dict[str, type[FakeVendor]] = {
    "wecom": FakeWeCom,
    "dingtalk": FakeDingTalk,
    "feishu": FakeFeishu,
    "slack": FakeSlack,
    "teams": FakeTeams,
    "discord": FakeDiscord,
    "webhook": FakeWebhook,
}
