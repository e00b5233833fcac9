"""The HTTP call every adapter makes, and the classification every vendor shares.

Guarantees, so no vendor module has to remember them:
- one set of urllib3 connection pools per adapter instance (connections reused, nothing shared across
  receivers), with requests' reading of the environment (proxies, CA bundle, netrc);
- a hard deadline per attempt: the receiver's `timeout` bounds connect, request, headers and body
  together, whatever the peer does. Socket timeouts alone cannot (each byte restarts them: a robot
  that drips one byte every few seconds would hold the attempt for ever), so a watchdog thread shuts
  the connection's socket down when the deadline passes, and the attempt becomes a retryable
  "timed out after N s while …" outcome. `close()` cuts an attempt in flight the same way (SIGTERM);
- redirects are never followed: a 3xx is an answer to classify (DingTalk answered throttling with a
  302), not a place to send the alert and its secrets;
- answers are read up to `MAX_ANSWER_BYTES`: a misconfigured URL cannot make the daemon buffer a
  video;
- network exceptions become `RetryAfter` values whose reasons name what happened ("connection
  refused") but never the exception text, because urllib3 puts the full URL - key and token
  included - into it;
- logs name the receiver, never its URL; vendor messages are scrubbed of every secret the receiver has.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import itertools
import json
import logging
import math
import netrc
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from http.client import RemoteDisconnected
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import certifi
import urllib3
import urllib3.exceptions
import urllib3.response
from urllib3.connection import HTTPConnection, HTTPSConnection

from sentinel import __version__
from sentinel.config import Mention, ReceiverConfig
from sentinel.notify.base import Delivered, Failed, Message, Outcome, RetryAfter, Syntax
from sentinel.notify.escape import clean, truncate_bytes, truncate_chars, utf8_len
from sentinel.units import Rate

log = logging.getLogger("sentinel.notify")

MAX_ANSWER_BYTES = 64 * 1024
CONNECT_TIMEOUT_CAP = 5.0
"""A robot host that has not accepted a TCP connection in 5 s is down; reading may take longer."""
NETWORK_DELAY = 5.0
"""Retry delay after a timeout or a connection error; the worker's backoff grows it."""
SERVER_ERROR_DELAY = 10.0
RATE_LIMIT_DELAY = 30.0
"""Retry delay after a 429 that did not say how long to wait."""
REDIRECT_DELAY = 60.0
MAX_RETRY_AFTER = 24 * 3600.0
"""A Retry-After longer than a day is taken as a day, so one odd header cannot park a receiver."""
USER_AGENT = f"sentinel/{__version__}"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, read (at most `MAX_ANSWER_BYTES`) and detached from the connection."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("Retry-After"))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def url_secrets(url: str) -> list[str]:
    """The parts of a webhook URL that grant access: query values, the password, and path segments
    that look like tokens (8+ characters with a digit: WeCom key, DingTalk token, Feishu hook id,
    Slack and Discord tokens)."""
    parts = urlsplit(url)
    found = [v for _, v in parse_qsl(parts.query, keep_blank_values=False) if len(v) >= 4]
    if parts.password:
        found.append(parts.password)
    found += [s for s in parts.path.split("/") if len(s) >= 8 and any(c.isdigit() for c in s)]
    return found


class Scrubber:
    """Replaces every secret of one receiver in a text that came from outside (a vendor's message)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str, max_chars: int = 300) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return clean(text, max_chars)


def with_query(url: str, params: Mapping[str, str]) -> str:
    """A new URL string: `url` with `params` set (replacing any same-named ones), encoded once.

    The configured URL is never modified, so signing parameters cannot pile up across attempts.
    """
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- the deadline of one attempt ------------------------------------------------------------------

CONNECTING = "connecting"
SENDING = "sending the message"
WAITING = "waiting for the answer"
READING = "reading the answer"
_MAY_HAVE_ARRIVED = (SENDING, WAITING, READING)


class Attempt:
    """One POST's progress, shared with the thread that may cut it (the watchdog, or `close()`).

    The connection in use is noted at each phase, so cutting it shuts down the socket the attempt is
    blocked on: the blocked call returns at once (EOF or an error) instead of waiting for the peer."""

    __slots__ = ("_lock", "conn", "deadline", "finished", "phase", "seconds", "why")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.phase = CONNECTING
        self.conn: HTTPConnection | None = None
        self.why: str | None = None  # set once cut: "deadline" or "stopping"
        self.finished = False
        self._lock = threading.Lock()

    def at(self, phase: str, conn: HTTPConnection) -> None:
        """The attempt reached `phase` on `conn`; an attempt already cut does not go on."""
        with self._lock:
            self.phase, self.conn = phase, conn
            if self.why is not None:
                _shutdown(conn)
                raise ConnectionAbortedError("attempt cut")

    def cut(self, why: str) -> None:
        with self._lock:
            if self.finished or self.why is not None:
                return
            self.why = why
            if self.conn is not None:
                _shutdown(self.conn)

    def finish(self) -> None:
        with self._lock:
            self.finished = True

    def outcome(self) -> RetryAfter:
        """What a cut attempt is: a network error the worker retries with its backoff."""
        maybe = " (the message may have been delivered)" if self.phase in _MAY_HAVE_ARRIVED else ""
        if self.why == "stopping":
            return RetryAfter(NETWORK_DELAY, f"abandoned while {self.phase}: the daemon is stopping{maybe}")
        return RetryAfter(NETWORK_DELAY, f"timed out after {self.seconds:g} s while {self.phase}{maybe}")


def _shutdown(conn: HTTPConnection) -> None:
    """Shut the connection's socket down from another thread: a blocked recv or send returns at once
    (close() alone does not wake it). The plain socket's method, so a TLS socket's state is untouched."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """One thread that cuts every attempt whose deadline passed (a timer thread per attempt would cost
    a thread start per message in a burst). Finished attempts are dropped lazily."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Attempt]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, attempt: Attempt) -> None:
        with self._cond:
            if len(self._heap) > 1024:
                self._heap = [e for e in self._heap if not e[2].finished]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (attempt.deadline, next(self._seq), attempt))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is attempt:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2].finished:
                        heapq.heappop(self._heap)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        due = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            due.cut("deadline")


WATCHDOG = Watchdog()
_current = threading.local()  # .attempt: the Attempt this thread is making (urllib3 is synchronous)


def _note(phase: str, conn: HTTPConnection) -> None:
    attempt: Attempt | None = getattr(_current, "attempt", None)
    if attempt is not None:
        attempt.at(phase, conn)


class _Connection(HTTPConnection):
    """urllib3's connection, telling the attempt in progress which socket it is blocked on (a reused
    connection is noted at its request, a new one at its connect)."""

    def connect(self) -> None:
        _note(CONNECTING, self)
        super().connect()
        _note(SENDING, self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _note(SENDING, self)
        super().request(*args, **kwargs)

    def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]
        _note(WAITING, self)
        return super().getresponse()


class _TlsConnection(_Connection, HTTPSConnection):
    """The same for https (the MRO puts the notes around HTTPSConnection's connect)."""


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


_POOLS = {"http": _Pool, "https": _TlsPool}


# --- where a request goes: the environment's proxies, CA bundle and netrc -------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """How to reach one scheme://host: through which proxy (or none), checking TLS against which CA
    bundle, with which netrc credentials. Read from the environment once per host (a daemon's
    environment is fixed), with requests' conventions, so a deployment that set `HTTPS_PROXY`,
    `NO_PROXY`, `REQUESTS_CA_BUNDLE` or a `~/.netrc` for requests keeps working."""

    proxy: str | None
    ca_certs: str
    authorization: str | None


def _route(scheme: str, host: str, port: int | None) -> Route:
    netloc = host if port is None else f"{host}:{port}"
    proxy = None
    if not urllib.request.proxy_bypass(netloc):
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(scheme) or proxies.get("all")
    ca_certs = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    return Route(proxy, ca_certs, _netrc_authorization(host))


def _netrc_authorization(host: str) -> str | None:
    """A Basic `Authorization` header from `$NETRC` or `~/.netrc` for `host`, as requests sends it."""
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if not os.path.isfile(path):
        return None
    try:
        found = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError):
        return None  # requests ignores a broken netrc too
    if found is None:
        return None
    login, _, password = found
    return "Basic " + base64.b64encode(f"{login}:{password or ''}".encode()).decode("ascii")


def _manager(route: Route) -> urllib3.PoolManager:
    """A pool manager whose connections the deadline can cut (direct and through an HTTP proxy;
    through a SOCKS proxy only the socket timeouts apply)."""
    options: dict[str, Any] = {"num_pools": 4, "maxsize": 1, "retries": False, "ca_certs": route.ca_certs}
    if route.proxy is None:
        manager = urllib3.PoolManager(**options)
    elif route.proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as requests does

        return SOCKSProxyManager(route.proxy, **options)
    else:
        manager = urllib3.ProxyManager(route.proxy, **options)
    manager.pool_classes_by_scheme = _POOLS
    return manager


# --- the call --------------------------------------------------------------------------------------


class HttpClient:
    """One receiver's connections: posts a body and returns a `Reply`, or the outcome of a network error.

    `timeout` is the whole attempt's deadline (connect, request, headers, body); the socket timeouts
    (connect capped at `CONNECT_TIMEOUT_CAP`) only make a silent peer fail sooner. urllib3 is used
    directly (it is what requests sends with): importing requests cost the first message after a
    start 70-190 ms, and its per-request machinery (cookies, hooks, environment merging) a share of
    every message in a burst."""

    def __init__(self, receiver: str, timeout: timedelta) -> None:
        self.receiver = receiver
        read = timeout.total_seconds()
        self.deadline_s = read
        self.timeout = (min(read, CONNECT_TIMEOUT_CAP), read)
        self._managers: dict[tuple[str, str, int | None], tuple[Route, urllib3.PoolManager]] = {}
        self._attempt: Attempt | None = None
        self._closed = False

    def _manager_for(self, url: str) -> tuple[Route, urllib3.PoolManager]:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
        if scheme not in _POOLS or not host:
            raise ValueError("not an http(s) URL")
        key = (scheme, host, port)
        found = self._managers.get(key)
        if found is None:
            route = _route(scheme, host, port)
            found = self._managers[key] = (route, _manager(route))
        return found

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply | RetryAfter | Failed:
        """One attempt, over within `deadline_s` whatever the peer does (a name lookup excepted: the
        system resolver bounds it)."""
        try:
            route, manager = self._manager_for(url)
        except (ValueError, urllib3.exceptions.LocationValueError):  # the same answer for every bad URL
            return _INVALID
        except ImportError:
            return Failed("config", "a SOCKS proxy is set in the environment but PySocks is not installed")
        attempt = Attempt(self.deadline_s)
        self._attempt = _current.attempt = attempt
        if self._closed:  # checked after `_attempt` is set: a close() racing this start cuts it either way
            self._attempt = _current.attempt = None
            attempt.why = "stopping"
            return attempt.outcome()
        WATCHDOG.arm(attempt)
        sent = {"User-Agent": USER_AGENT, **headers}  # urllib3 sends a request's headers or the defaults
        if route.authorization is not None and "Authorization" not in sent:
            sent["Authorization"] = route.authorization
        try:
            out = self._post(manager, url, body, sent, attempt)
        except Exception:
            if attempt.why is None:
                raise
            out = attempt.outcome()
        finally:
            attempt.finish()
            self._attempt = _current.attempt = None
        # Cut: whatever the read returned (an error, or a clean EOF on an answer without a length) is not
        # the answer.
        return attempt.outcome() if attempt.why is not None else out

    def _post(self, manager: urllib3.PoolManager, url: str, body: bytes, headers: Mapping[str, str],
              attempt: Attempt) -> Reply | RetryAfter | Failed:
        errors = urllib3.exceptions
        timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])
        try:
            resp = manager.request("POST", url, body=body, headers=headers, timeout=timeout, redirect=False,
                                   retries=False, preload_content=False)
            read_all = False
            try:
                attempt.phase = READING
                data = bytearray()
                for chunk in resp.stream(8192):
                    data += chunk
                    if len(data) >= MAX_ANSWER_BYTES:
                        del data[MAX_ANSWER_BYTES:]
                        break
                    if time.monotonic() > attempt.deadline:
                        return attempt.outcome()
                else:
                    read_all = True
                return Reply(resp.status, resp.headers, bytes(data))
            finally:
                if not read_all:  # the rest of the answer is still on the connection: it cannot be reused
                    resp.close()
                resp.release_conn()
        except errors.NewConnectionError as exc:  # before ConnectTimeoutError: it is one in urllib3 2
            return RetryAfter(NETWORK_DELAY, _connection_error(exc))
        except errors.ConnectTimeoutError:
            return RetryAfter(NETWORK_DELAY, f"connect timeout after {self.timeout[0]:g} s")
        except errors.ReadTimeoutError:
            return attempt.outcome()  # the socket timeout ran out first: the peer fell silent
        except errors.SSLError:
            return RetryAfter(REDIRECT_DELAY, "TLS error (handshake or certificate verification failed)")
        except (errors.LocationValueError, errors.InvalidHeader, ValueError):
            return _INVALID
        except (errors.ProtocolError, errors.ProxyError, OSError) as exc:
            return RetryAfter(NETWORK_DELAY, _connection_error(exc))
        except errors.HTTPError as exc:
            return RetryAfter(NETWORK_DELAY, f"HTTP error ({type(exc).__name__})")

    def close(self) -> None:
        """Cut the attempt in flight (it returns "abandoned …" at once) and refuse new ones; safe to
        call from another thread (SIGTERM while a robot is still answering)."""
        self._closed = True
        attempt = self._attempt
        if attempt is not None:
            attempt.cut("stopping")
        for _, manager in list(self._managers.values()):
            manager.clear()


_INVALID = Failed("config", "invalid webhook URL or header (check the receiver's configuration)")


def _causes(exc: BaseException) -> Iterator[object]:
    """The exception, its causes, and the `reason`/args urllib3 wraps them in (without recursion loops)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo and len(seen) < 50:
        e = todo.pop()
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseException):
            todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
            todo += [a for a in e.args if isinstance(a, BaseException)]


def _connection_error(exc: BaseException) -> str:
    for e in _causes(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(e, RemoteDisconnected):
            return "connection closed by the server without an answer"
        if isinstance(e, socket.gaierror):
            return "host name not found (DNS)"
        if isinstance(e, TimeoutError | socket.timeout) or type(e).__name__ == "ReadTimeoutError":
            return "read timeout (the message may have been delivered)"
    return "connection error"


# --- classification shared by every vendor ---------------------------------------------------------

_STATUS_MEANING = {
    400: "bad request", 401: "unauthorized (bad token)", 403: "forbidden", 404: "webhook not found",
    405: "method not allowed", 410: "webhook gone (revoked or deleted)", 413: "message too large",
}


def classify_status(reply: Reply, scrub: Scrubber, redirect_delay: float = REDIRECT_DELAY) -> Outcome | None:
    """The outcome of an HTTP status alone, or None for 2xx (the vendor module reads the body).

    3xx: retry (never followed). 408, 429, 5xx: retry, honouring Retry-After. Other 4xx: permanent.
    """
    status = reply.status
    if 200 <= status < 300:
        return None
    wait = reply.retry_after()
    if 300 <= status < 400:
        return RetryAfter(wait if wait is not None else redirect_delay,
                          f"HTTP {status}: redirect not followed (the vendor may be throttling)")
    if status == 429:
        return RetryAfter(wait if wait is not None else RATE_LIMIT_DELAY, "HTTP 429: rate limited")
    if status == 408 or status >= 500:
        return RetryAfter(wait if wait is not None else SERVER_ERROR_DELAY, f"HTTP {status}: server error")
    meaning = _STATUS_MEANING.get(status, "rejected")
    detail = scrub(reply.text(), 200)
    return Failed(f"HTTP {status}", f"{meaning}: {detail}" if detail else meaning)


# --- the shared adapter skeleton -------------------------------------------------------------------


class HttpAdapter:
    """What every vendor adapter shares: config, URL choice, session, mention lookup, logging.

    A vendor module subclasses it, sets `kind`, `syntax`, `max_bytes` and `default_limits` (and whatever
    else of the `Adapter` facts differs from the defaults here), and implements `attempt` (build the body
    for this attempt - signing included - post it, classify the answer).

    One instance serves one receiver from one worker at a time (the outbox keeps at most one message
    in flight per receiver); its connections are not meant to be shared across threads.
    """

    kind: ClassVar[str]
    syntax: ClassVar[Syntax]
    max_bytes: ClassVar[int]
    max_chars: ClassVar[int | None] = None
    max_text_bytes: ClassVar[int | None] = None
    default_limits: ClassVar[tuple[Rate, ...]]
    accepts: ClassVar[frozenset[str]] = frozenset()
    lists_group: ClassVar[bool] = False
    redirect_delay: ClassVar[float] = REDIRECT_DELAY

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.name = config.name
        self._urls = config.all_urls()
        self.http = HttpClient(config.name, config.timeout)
        secrets = [s for u in self._urls for s in (u.get(), *url_secrets(u.get()))]
        secrets += [s.get() for s in (config.secret, config.hmac_secret) if s is not None]
        self.scrub = Scrubber(secrets)
        self.zh = (config.locale or "zh_CN") == "zh_CN"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(receiver={self.name!r})"

    def send(self, message: Message, url_index: int = 0) -> Outcome:
        if not 0 <= url_index < len(self._urls):
            outcome: Outcome = Failed("config", f"no URL number {url_index} (the receiver has {len(self._urls)})")
        else:
            outcome = self.attempt(message, self._urls[url_index].get())
        _log(self.name, self.kind, message.id, url_index, outcome)
        return outcome

    def attempt(self, message: Message, url: str) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        self.http.close()

    # helpers for the vendor modules --------------------------------------------------------------
    def mention(self, message: Message) -> Mention | None:
        """Whom this message mentions: only the receiver's configuration for the message's tier."""
        if not message.mention:
            return None
        m = self.config.mention.for_tier(message.tier)
        if m is None or not (m.all or m.users or m.mobiles):
            return None
        return m

    def post_json(self, url: str, payload: Any, headers: Mapping[str, str] | None = None
                  ) -> Reply | RetryAfter | Failed:
        return self.http.post(url, dump(payload), {"Content-Type": "application/json; charset=utf-8",
                                                   **(headers or {})})

    def status_outcome(self, reply: Reply) -> Outcome | None:
        return classify_status(reply, self.scrub, self.redirect_delay)

    @property
    def truncated_marker(self) -> str:
        return "…（内容过长，已截断）" if self.zh else "… (truncated)"

    def fit_text(self, head: str, body: str, tail: str, limit: int, sep: str = "\n", *,
                 chars: bool = False) -> str:
        """`head`, `body` and `tail` joined by `sep`, the body cut (with the marker) so the whole stays
        within `limit` UTF-8 bytes (characters when `chars`). Head and tail are kept whole: the title
        is already capped by its escape and the tail is configured mentions."""
        size = len if chars else utf8_len
        cut = truncate_chars if chars else truncate_bytes
        fixed = [p for p in (head, tail) if p]
        budget = limit - sum(size(p) for p in fixed) - size(sep) * len(fixed)
        body = cut(body, max(budget, 0), self.truncated_marker) if budget > 0 else ""
        text = sep.join(p for p in (head, body, tail) if p)
        return cut(text, limit, self.truncated_marker)

    def fit_payload(self, build: Callable[[str], Any], body: str, limit: int) -> bytes:
        """The JSON of `build(body)`, with `body` cut until the whole request body fits `limit` bytes.

        A body byte costs one request byte or more (JSON escapes, Teams' block per line), so cut in
        proportion to the overflow and measure again; it converges in a few rounds.
        """
        data = dump(build(body))
        keep = utf8_len(body)
        for _ in range(16):
            if len(data) <= limit:
                break
            keep = max(min(keep - 1, int(keep * limit / len(data) * 0.99)), 0)
            data = dump(build(truncate_bytes(body, keep, self.truncated_marker) if keep else ""))
        return data

    def classify_coded(self, reply: Reply, vendor: str, table: Mapping[int, Code],
                       code_keys: tuple[str, ...], msg_keys: tuple[str, ...]) -> Outcome:
        """WeCom, DingTalk and Feishu answer HTTP 200 with a code in the JSON body: the code decides.

        Without a code the status decides; a 2xx without a code is not counted as delivered.
        """
        data = reply.json()
        code: Any = None
        message = ""
        if isinstance(data, dict):
            code = next((data[k] for k in code_keys if k in data), None)
            message = str(next((data[k] for k in msg_keys if k in data), ""))
        if isinstance(code, str) and re.fullmatch(r"-?\d+", code.strip()):
            code = int(code)
        if isinstance(code, int) and not isinstance(code, bool):
            return classify_code(vendor, code, self.scrub(message), table, reply.retry_after())
        status = self.status_outcome(reply)
        if status is not None:
            return status
        return Failed("no-code", f"{vendor}: HTTP {reply.status} without `{code_keys[0]}` in the answer "
                                 f"(not counted as delivered; is the URL right?)")


@dataclass(frozen=True, slots=True)
class Code:
    """What a vendor's error code means: retry after at least `retry` seconds, or permanent (None)."""

    meaning: str
    retry: float | None = None


def classify_code(vendor: str, code: int, message: str, table: Mapping[int, Code],
                  retry_after: float | None = None) -> Outcome:
    if code == 0:
        return Delivered()
    entry = table.get(code)
    if entry is None:
        return Failed(str(code), f"{vendor} {code}: unknown error: {message}" if message
                      else f"{vendor} {code}: unknown error")
    if entry.retry is not None:
        return RetryAfter(max(entry.retry, retry_after or 0.0), f"{vendor} {code}: {entry.meaning}")
    return Failed(str(code), f"{vendor} {code}: {entry.meaning}" + (f" ({message})" if message else ""))


def dump(payload: Any) -> bytes:
    """Compact UTF-8 JSON (Chinese stays 3 bytes, not a 6-byte \\u escape)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _log(receiver: str, kind: str, delivery: str, url_index: int, outcome: Outcome) -> None:
    match outcome:
        case Delivered():
            log.debug("receiver %s (%s): delivered %s via URL #%d", receiver, kind, delivery, url_index)
        case RetryAfter(seconds=seconds, reason=reason):
            log.warning("receiver %s (%s): %s will be retried in %.0f s: %s", receiver, kind, delivery,
                        seconds, reason)
        case Failed(code=code, reason=reason):
            log.error("receiver %s (%s): %s failed permanently (%s): %s", receiver, kind, delivery, code, reason)


# --- urllib3 writes request lines (with the URL's query and path) at DEBUG -------------------------

_FULL_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s\"']+)[^\s\"']*")
_PATH = re.compile(r"(?<=[\s\"'(=])/[^\s\"')]*")


class RedactUrls(logging.Filter):
    """Cuts paths and queries out of urllib3's debug lines: webhook tokens live there."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            return True
        text = _FULL_URL.sub(r"\1/…", text)
        record.msg, record.args = _PATH.sub("/…", text), ()
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactUrls) for f in _logger.filters):
        _logger.addFilter(RedactUrls())
