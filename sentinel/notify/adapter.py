"""The skeleton every vendor adapter shares: configuration, URL choice, mentions, size fitting, logging.

Guarantees, so no vendor module has to remember them:
- a message goes to the robot URL the worker chose (`url_index`); a number the receiver does not have
  is a permanent configuration failure, never an exception;
- each adapter has its own `HttpClient` (its own connections, its receiver's deadline) and its own
  `Scrubber`, which knows every secret of the receiver (URLs, their tokens, signing secrets), so a
  vendor's message in a reason never carries one;
- every outcome is logged once, naming the receiver and the delivery id, never a URL;
- a body cut to fit a vendor's limit ends with the truncation marker in the receiver's language, and
  a JSON body fits its byte limit after escaping (`fit_payload`);
- the configured URL is never modified: per-attempt parameters (signatures, `wait=true`) go on a copy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sentinel.config import Mention, ReceiverConfig
from sentinel.notify.answers import REDIRECT_DELAY, Code, Reply, classify_coded, classify_status
from sentinel.notify.base import Delivered, Failed, Message, Outcome, RetryAfter, Syntax
from sentinel.notify.escape import truncate_bytes, truncate_chars, utf8_len
from sentinel.notify.redact import Scrubber, webhook_url_secrets
from sentinel.notify.transport import HttpClient
from sentinel.units import Rate

log = logging.getLogger("sentinel.notify")


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
        secrets = [s for u in self._urls for s in (u.get(), *webhook_url_secrets(u.get()))]
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

    def post_json(
        self, url: str, payload: object, headers: Mapping[str, str] | None = None
    ) -> Reply | RetryAfter | Failed:
        return self.http.post(
            url, dump(payload), {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        )

    def status_outcome(self, reply: Reply) -> Outcome | None:
        return classify_status(reply, self.scrub, self.redirect_delay)

    @property
    def truncated_marker(self) -> str:
        return "…（内容过长，已截断）" if self.zh else "… (truncated)"

    def fit_text(self, head: str, body: str, tail: str, limit: int, sep: str = "\n", *, chars: bool = False) -> str:
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

    def fit_payload(self, build: Callable[[str], object], body: str, limit: int) -> bytes:
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

    def classify_coded(
        self,
        reply: Reply,
        vendor: str,
        table: Mapping[int, Code],
        code_keys: tuple[str, ...],
        msg_keys: tuple[str, ...],
    ) -> Outcome:
        """WeCom, DingTalk and Feishu answer HTTP 200 with a code in the JSON body: the code decides
        (`answers.classify_coded`, with this receiver's scrubber and redirect delay)."""
        return classify_coded(reply, vendor, table, code_keys, msg_keys, self.scrub, self.redirect_delay)


def with_query(url: str, params: Mapping[str, str]) -> str:
    """A new URL string: `url` with `params` set (replacing any same-named ones), encoded once.

    The configured URL is never modified, so signing parameters cannot pile up across attempts.
    """
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def dump(payload: object) -> bytes:
    """Compact UTF-8 JSON (Chinese stays 3 bytes, not a 6-byte \\u escape)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _log(receiver: str, kind: str, delivery: str, url_index: int, outcome: Outcome) -> None:
    match outcome:
        case Delivered():
            log.debug("receiver %s (%s): delivered %s via URL #%d", receiver, kind, delivery, url_index)
        case RetryAfter(seconds=seconds, reason=reason):
            log.warning("receiver %s (%s): %s will be retried in %.0f s: %s", receiver, kind, delivery, seconds, reason)
        case Failed(code=code, reason=reason):
            log.error("receiver %s (%s): %s failed permanently (%s): %s", receiver, kind, delivery, code, reason)
