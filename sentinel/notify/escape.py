"""Escaping of data-derived strings for each chat syntax, and size caps on character boundaries.

A complaint type is typed by whoever files the complaint, so it is hostile until escaped: it must never
mention anyone (`@all`, `<at user_id="all">`, `<!channel>`, `<@U123>`), add a link (`[x](http://evil)`,
a bare `http://evil`) or break the layout (newlines, control characters, right-to-left overrides, an
unclosed `**`, a name of 10,000 characters). Mentions and links come only from configuration.

Why look-alike characters rather than backslashes: WeCom and DingTalk markdown do not document
backslash escapes and Teams renders them inconsistently, so `\\[` could show a stray backslash on one
client and still make a link on another. A markup character from data is instead replaced by its
full-width form (`[` → `［`, `@` → `＠`, `<` → `＜`), which every client shows as the same glyph and none
parses. Slack is the exception: it documents exactly three entities (`&amp; &lt; &gt;`), and those
are used there. URLs are defanged (`http://` → `http：//`, `evil.example` → `evil․example`) because
clients auto-link them.

Every escape first cleans the string (see `clean`) and caps it at `max_chars` characters, so one field
can never push the rest of a message past a receiver's limit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from sentinel.notify.base import Syntax

FIELD_MAX_CHARS = 200
"""Default cap for one data-derived field (a complaint type, a channel name)."""

ELLIPSIS = "…"

_WHITESPACE = re.compile(r"\s+")
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,30}):(?=//)")  # http://, ftp://, javascript:// ...
_LINK_PREFIX = re.compile(r"(?i)\b(mailto|tel|javascript|data|file):")
_HOST_DOT = re.compile(r"(?<=[A-Za-z0-9-])\.(?=[A-Za-z][A-Za-z0-9-]*)")  # evil.example, not 1.51

# Markup characters of the CommonMark dialects (WeCom/DingTalk markdown, Discord, Teams) and the HTML
# they accept (WeCom `<font>`, `<@userid>`), mapped to their full-width forms.
_MARKDOWN_MAP = str.maketrans(
    {
        "\\": "＼",
        "`": "｀",
        "*": "＊",
        "_": "＿",
        "~": "～",
        "[": "［",
        "]": "］",
        "(": "（",
        ")": "）",
        "<": "＜",
        ">": "＞",
        "#": "＃",
        "|": "｜",
        "@": "＠",
        "&": "＆",
        "!": "！",
    }
)
# Slack: the three documented entities, plus look-alikes for its formatting characters, `@` and brackets.
_SLACK_MAP = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "*": "＊",
        "_": "＿",
        "~": "～",
        "`": "｀",
        "@": "＠",
        "[": "［",
        "]": "］",  # Slack's newer markdown blocks read [text](url)
    }
)
# Plain text (WeCom text, DingTalk text, Feishu/Lark text): no markup, except that Feishu/Lark parse
# `<at>` tags and a few styles (`**b**`, `~~s~~`, `[text](url)`) in text, and every client
# highlights `@name`.
_TEXT_MAP = str.maketrans({"<": "＜", ">": "＞", "@": "＠", "[": "［", "]": "］", "*": "＊", "~": "～"})
# A list marker or heading at the very start of a field would become layout if the field starts a line.
_LEADING = str.maketrans({"-": "－", "+": "＋", "=": "＝"})


def clean(value: str, max_chars: int | None = FIELD_MAX_CHARS) -> str:
    """One line of visible text: no control, format (RTL override, zero-width), surrogate or separator
    characters; whitespace runs become one space; at most `max_chars` characters (with "…").

    Format characters (category Cf) go entirely: they are invisible, and the bidi overrides among them
    can make `gnp.exe` read as `exe.png`.
    """
    out: list[str] = []
    for ch in value:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp") or ch.isspace():
            out.append(" ")
        elif cat in ("Cf", "Cs"):
            continue
        else:
            out.append(ch)
    text = _WHITESPACE.sub(" ", "".join(out)).strip()
    if max_chars is not None:
        text = truncate_chars(text, max_chars)
    return text


def _defang(text: str) -> str:
    text = _SCHEME.sub(r"\1：", text)
    text = _LINK_PREFIX.sub(r"\1：", text)
    return _HOST_DOT.sub("․", text)  # Slack, WeCom and Teams link a bare "evil.example"


def _leading(text: str) -> str:
    if text and text[0] in "-+=":
        return text[0].translate(_LEADING) + text[1:]
    m = re.match(r"\d{1,9}([.)])(?=\s|$)", text)  # "1. " / "1) " would start an ordered list
    if m:
        i = m.end(1) - 1
        return text[:i] + ("．" if m.group(1) == "." else "）") + text[i + 1 :]
    return text


def escape_markdown(value: str, max_chars: int | None = FIELD_MAX_CHARS) -> str:
    """For WeCom markdown, DingTalk markdown, Discord and Teams TextBlocks."""
    return _leading(_defang(clean(value, max_chars)).translate(_MARKDOWN_MAP))


def escape_slack(value: str, max_chars: int | None = FIELD_MAX_CHARS) -> str:
    """For Slack mrkdwn: `&`, `<`, `>` as entities, so `<!channel>` and `<http://x|y>` stay text."""
    return _leading(_defang(clean(value, max_chars)).translate(_SLACK_MAP))


def escape_text(value: str, max_chars: int | None = FIELD_MAX_CHARS) -> str:
    """For plain-text messages (WeCom text, DingTalk text, Feishu/Lark text).

    Safe for Feishu/Lark too: their text parses `<at user_id="…">` tags, and `<`/`>` never survive.
    """
    return _defang(clean(value, max_chars)).translate(_TEXT_MAP)


_ESCAPERS: dict[Syntax, Callable[[str, int | None], str]] = {
    Syntax.MARKDOWN: escape_markdown,
    Syntax.SLACK: escape_slack,
    Syntax.TEXT: escape_text,
}


def escape_for(syntax: Syntax) -> Callable[[str, int | None], str]:
    """The escape function of one syntax, for the renderer: `escape_for(adapter.syntax)(value, 200)`."""
    return _ESCAPERS[syntax]


def escape(syntax: Syntax, value: str, max_chars: int | None = FIELD_MAX_CHARS) -> str:
    return _ESCAPERS[syntax](value, max_chars)


_AT_ID = re.compile(r"[^\w.@:+-]")


def safe_id(value: str) -> str:
    """A user id or mobile number from configuration, reduced to characters that cannot close a tag
    or start markup (`<@id>`, `<at user_id="id">`): letters, digits and `_ . @ : + -`."""
    return _AT_ID.sub("", value)


# --- sizes -----------------------------------------------------------------------------------------


def utf8_len(value: str) -> int:
    return len(value.encode("utf-8"))


def truncate_bytes(value: str, max_bytes: int, marker: str = ELLIPSIS) -> str:
    """`value` if it fits in `max_bytes` UTF-8 bytes, else its longest prefix that fits together with
    `marker`, cut on a character boundary (never half a Chinese character)."""
    data = value.encode("utf-8")
    if len(data) <= max_bytes:
        return value
    mark = marker.encode("utf-8")
    if len(mark) > max_bytes:
        return truncate_bytes(marker, max_bytes, "")
    cut = data[: max_bytes - len(mark)]
    # Drop a partial multi-byte sequence at the end rather than decoding it to U+FFFD.
    return cut.decode("utf-8", errors="ignore") + marker


def truncate_chars(value: str, max_chars: int, marker: str = ELLIPSIS) -> str:
    """`value` if it has at most `max_chars` characters, else a prefix plus `marker` within that."""
    if len(value) <= max_chars:
        return value
    if len(marker) > max_chars:
        return marker[:max_chars]
    return value[: max_chars - len(marker)] + marker


_MD_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]*)\)")
_MD_TAG = re.compile(r"</?(?:font|b|i|u|strong|em)\b[^>]*>", re.IGNORECASE)
_MD_HEADING = re.compile(r"^\s{0,3}(?:#{1,6}|>)\s?", re.MULTILINE)
_MD_EMPHASIS = re.compile(r"(\*\*|__|~~|`)")


def markdown_to_text(body: str) -> str:
    """Markdown made by our own templates, shown as plain text (WeCom sends `@all` only as text).

    Data in the body was escaped to full-width look-alikes, so every ASCII markup character left is
    the template's own and can be dropped; links become "text (url)".
    """
    text = _MD_LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(2) else m.group(1), body)
    text = _MD_TAG.sub("", text)
    text = _MD_HEADING.sub("", text)
    return _MD_EMPHASIS.sub("", text)
