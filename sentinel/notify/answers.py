"""What a chat tool's answer means: the classification every vendor shares.

Guarantees, so no vendor module has to remember them:
- an HTTP answer (`Reply`) is a value detached from its connection, its body already capped by the
  client; reading it as JSON never raises (not JSON is None);
- a Retry-After header is honoured in both of its forms (seconds, HTTP date) and never parks a
  receiver longer than `MAX_RETRY_AFTER`;
- a status decides alone only what a status can say: 3xx is a retry (redirects are never followed:
  DingTalk answered throttling with a 302), 408, 429 and 5xx are retries, other 4xx are permanent;
- vendors that answer HTTP 200 with a code in the body (WeCom, DingTalk, Feishu) are judged by that
  code, and a 2xx without one is never counted as delivered;
- a vendor's own text reaches a reason only through the receiver's `Scrubber` (no secret in it).

The retry delays below are floors: the worker's backoff grows them.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from sentinel.notify.base import Delivered, Failed, Outcome, RetryAfter
from sentinel.notify.redact import Scrubber

NETWORK_DELAY = 5.0
"""Retry delay after a timeout or a connection error; the worker's backoff grows it."""
SERVER_ERROR_DELAY = 10.0
RATE_LIMIT_DELAY = 30.0
"""Retry delay after a 429 that did not say how long to wait."""
REDIRECT_DELAY = 60.0
MAX_RETRY_AFTER = 24 * 3600.0
"""A Retry-After longer than a day is taken as a day, so one odd header cannot park a receiver."""

Json = dict[str, "Json"] | list["Json"] | str | int | float | bool | None
"""A decoded JSON document."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, read (at most `transport.MAX_ANSWER_BYTES`) and detached from the connection."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Json:
        """The body as JSON, or None when it is not JSON."""
        try:
            found: Json = json.loads(self.body)
        except ValueError:
            return None
        return found

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


_STATUS_MEANING = {
    400: "bad request",
    401: "unauthorized (bad token)",
    403: "forbidden",
    404: "webhook not found",
    405: "method not allowed",
    410: "webhook gone (revoked or deleted)",
    413: "message too large",
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
        return RetryAfter(
            wait if wait is not None else redirect_delay,
            f"HTTP {status}: redirect not followed (the vendor may be throttling)",
        )
    if status == 429:
        return RetryAfter(wait if wait is not None else RATE_LIMIT_DELAY, "HTTP 429: rate limited")
    if status == 408 or status >= 500:
        return RetryAfter(wait if wait is not None else SERVER_ERROR_DELAY, f"HTTP {status}: server error")
    meaning = _STATUS_MEANING.get(status, "rejected")
    detail = scrub(reply.text(), 200)
    return Failed(f"HTTP {status}", f"{meaning}: {detail}" if detail else meaning)


@dataclass(frozen=True, slots=True)
class Code:
    """What a vendor's error code means: retry after at least `retry` seconds, or permanent (None)."""

    meaning: str
    retry: float | None = None


def classify_code(
    vendor: str, code: int, message: str, table: Mapping[int, Code], retry_after: float | None = None
) -> Outcome:
    if code == 0:
        return Delivered()
    entry = table.get(code)
    if entry is None:
        return Failed(
            str(code), f"{vendor} {code}: unknown error: {message}" if message else f"{vendor} {code}: unknown error"
        )
    if entry.retry is not None:
        return RetryAfter(max(entry.retry, retry_after or 0.0), f"{vendor} {code}: {entry.meaning}")
    return Failed(str(code), f"{vendor} {code}: {entry.meaning}" + (f" ({message})" if message else ""))


def classify_coded(
    reply: Reply,
    vendor: str,
    table: Mapping[int, Code],
    code_keys: tuple[str, ...],
    msg_keys: tuple[str, ...],
    scrub: Scrubber,
    redirect_delay: float = REDIRECT_DELAY,
) -> Outcome:
    """WeCom, DingTalk and Feishu answer HTTP 200 with a code in the JSON body: the code decides.

    Without a code the status decides; a 2xx without a code is not counted as delivered.
    """
    data = reply.json()
    code: Json = None
    message = ""
    if isinstance(data, dict):
        code = next((data[k] for k in code_keys if k in data), None)
        message = str(next((data[k] for k in msg_keys if k in data), ""))
    if isinstance(code, str) and re.fullmatch(r"-?\d+", code.strip()):
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool):
        return classify_code(vendor, code, scrub(message), table, reply.retry_after())
    status = classify_status(reply, scrub, redirect_delay)
    if status is not None:
        return status
    return Failed(
        "no-code",
        f"{vendor}: HTTP {reply.status} without `{code_keys[0]}` in the answer "
        f"(not counted as delivered; is the URL right?)",
    )
