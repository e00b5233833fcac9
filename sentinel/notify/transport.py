"""The HTTP call every adapter makes: one POST to one robot URL, as a value.

Guarantees, so no vendor module has to remember them:
- one set of urllib3 connection pools per `HttpClient` (one per adapter instance: connections reused,
  nothing shared across receivers), with requests' reading of the environment (proxies, CA bundle,
  netrc);
- a hard deadline per attempt: the receiver's `timeout` bounds connect, request, headers and body
  together, whatever the peer does (`sentinel.notify.deadline`); a late attempt becomes a retryable
  "timed out after N s while …" outcome, and `close()` cuts an attempt in flight the same way (SIGTERM);
- redirects are never followed: a 3xx is an answer to classify (`sentinel.notify.answers`), not a
  place to send the alert and its secrets;
- answers are read up to `MAX_ANSWER_BYTES`: a misconfigured URL cannot make the daemon buffer a
  video;
- network exceptions become `RetryAfter` values whose reasons name what happened ("connection
  refused") but never the exception text, because urllib3 puts the full URL - key and token
  included - into it; urllib3's own debug lines are redacted (`sentinel.notify.redact`).
"""

from __future__ import annotations

import base64
import netrc
import os
import socket
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from http.client import RemoteDisconnected
from typing import TypedDict
from urllib.parse import urlsplit

import certifi
import urllib3
import urllib3.exceptions

from sentinel import __version__
from sentinel.notify.answers import NETWORK_DELAY, REDIRECT_DELAY, Reply
from sentinel.notify.base import Failed, RetryAfter
from sentinel.notify.deadline import POOLS, READING, WATCHDOG, Attempt, set_current
from sentinel.notify.redact import RedactUrls  # noqa: F401 - importing it redacts urllib3's debug lines

MAX_ANSWER_BYTES = 64 * 1024
CONNECT_TIMEOUT_CAP = 5.0
"""A robot host that has not accepted a TCP connection in 5 s is down; reading may take longer."""
USER_AGENT = f"sentinel/{__version__}"


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


class _PoolOptions(TypedDict):
    """What every pool manager of a client is made with: few hosts, one connection each (one message in
    flight per receiver), no retries (the worker retries, with its backoff), the route's CA bundle."""

    num_pools: int
    maxsize: int
    retries: bool
    ca_certs: str


def _manager(route: Route) -> urllib3.PoolManager:
    """A pool manager whose connections the deadline can cut (direct and through an HTTP proxy;
    through a SOCKS proxy only the socket timeouts apply)."""
    options = _PoolOptions(num_pools=4, maxsize=1, retries=False, ca_certs=route.ca_certs)
    if route.proxy is None:
        manager = urllib3.PoolManager(**options)
    elif route.proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as requests does

        return SOCKSProxyManager(route.proxy, **options)
    else:
        manager = urllib3.ProxyManager(route.proxy, **options)
    manager.pool_classes_by_scheme = POOLS
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
        if scheme not in POOLS or not host:
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
        self._attempt = attempt
        set_current(attempt)
        if self._closed:  # checked after `_attempt` is set: a close() racing this start cuts it either way
            self._attempt = None
            set_current(None)
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
            self._attempt = None
            set_current(None)
        # Cut: whatever the read returned (an error, or a clean EOF on an answer without a length) is not
        # the answer.
        return attempt.outcome() if attempt.why is not None else out

    def _post(
        self, manager: urllib3.PoolManager, url: str, body: bytes, headers: Mapping[str, str], attempt: Attempt
    ) -> Reply | RetryAfter | Failed:
        errors = urllib3.exceptions
        timeout = urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1])
        try:
            resp = manager.request(
                "POST",
                url,
                body=body,
                headers=headers,
                timeout=timeout,
                redirect=False,
                retries=False,
                preload_content=False,
            )
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
