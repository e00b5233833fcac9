"""A webhook URL is a password: what keeps its secrets out of reasons and logs.

Guarantees:
- `webhook_url_secrets` finds every part of a webhook URL that grants access (query values, the
  password, token-like path segments), so a receiver's `Scrubber` knows them all;
- a `Scrubber` replaces each of those secrets (longest first, so no secret leaves a tail of a longer
  one) in any text that came from outside - a vendor's message - and cleans and caps it;
- from the moment this module is imported (the HTTP client imports it), urllib3's debug lines - which
  carry the full request line - lose their paths and queries, where webhook tokens live.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from sentinel.notify.escape import clean


def webhook_url_secrets(url: str) -> list[str]:
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
