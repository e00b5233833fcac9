"""Escaping: no data string may mention, link or break the layout, in any syntax."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sentinel.notify.base import Syntax
from sentinel.notify.escape import (
    FIELD_MAX_CHARS,
    clean,
    escape,
    escape_for,
    escape_markdown,
    escape_slack,
    escape_text,
    markdown_to_text,
    safe_id,
    truncate_bytes,
    truncate_chars,
    utf8_len,
)

from .builders import HOSTILE

BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# What would make a mention, a link, or markup in one of the syntaxes, as regular expressions.
DANGER = {
    Syntax.MARKDOWN: [
        r"@",
        r"<",
        r">",
        r"\[",
        r"\]\(",
        r"\*",
        r"_",
        r"`",
        r"~",
        r"#",
        r"\|",
        r"\\",
        r"://",
        r"(?i)www\.",
        r"(?i)mailto:",
        r"(?i)javascript:",
    ],
    Syntax.SLACK: [r"@", r"<", r">", r"&(?!amp;|lt;|gt;)", r"\*", r"_", r"`", r"~", r"://", r"(?i)mailto:"],
    Syntax.TEXT: [r"@", r"<", r">", r"\[", r"\]", r"\*", r"~", r"://", r"(?i)www\."],
}


def assert_inert(syntax: Syntax, out: str) -> None:
    for pattern in DANGER[syntax]:
        assert not re.search(pattern, out), f"{pattern!r} survived in {out[:120]!r}"
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in out), out[:120]
    assert not BIDI & set(out)
    assert "\n" not in out and "\r" not in out
    out.encode("utf-8")  # no lone surrogate


@pytest.mark.parametrize("syntax", list(Syntax))
@pytest.mark.parametrize("value", HOSTILE, ids=[h[:20] for h in HOSTILE])
def test_hostile_strings_are_inert(syntax: Syntax, value: str) -> None:
    out = escape(syntax, value)
    assert_inert(syntax, out)
    assert out.strip()  # something readable is left


@pytest.mark.parametrize("syntax", list(Syntax))
def test_a_10000_character_name_is_capped(syntax: Syntax) -> None:
    out = escape(syntax, "N" * 10_000)
    assert len(out) == FIELD_MAX_CHARS
    assert out.endswith("…")
    assert len(escape(syntax, "N" * 10_000, 30)) == 30
    assert escape(syntax, "N" * 10_000, None) == "N" * 10_000


@given(st.text(max_size=400))
def test_any_text_is_inert_in_every_syntax(value: str) -> None:
    for syntax in Syntax:
        out = escape(syntax, value)
        assert_inert(syntax, out)
        assert len(clean(value)) <= FIELD_MAX_CHARS


def test_readable_data_is_unchanged() -> None:
    for syntax in Syntax:
        assert escape(syntax, "物流配送延误") == "物流配送延误"
        assert escape(syntax, "电话 渠道 1.51 倍") == "电话 渠道 1.51 倍"


def test_specific_forms() -> None:
    assert escape_markdown("[x](http://evil)") == "［x］（http：//evil）"
    assert escape_markdown("@all") == "＠all"
    assert escape_markdown("<@zhangsan>") == "＜＠zhangsan＞"
    assert escape_markdown("- item") == "－ item"
    assert escape_markdown("1. item") == "1． item"
    assert escape_slack("<!channel> & <@U123>") == "&lt;!channel&gt; &amp; &lt;＠U123&gt;"
    assert escape_text('<at user_id="all">x</at>') == '＜at user_id="all"＞x＜/at＞'
    assert escape_text("see evil.example or www.evil.com") == "see evil․example or www․evil․com"
    assert escape_for(Syntax.SLACK) is escape_slack
    assert escape_for(Syntax.TEXT) is escape_text


def test_clean_removes_controls_and_overrides_and_joins_lines() -> None:
    assert clean("a\nb\r\n\tc\x00d\x1b[31m\u2028e") == "a b c d [31m e"
    assert clean("\u202egnp.exe\u202c") == "gnp.exe"
    assert clean("  zero\u200bwidth \ufeff ") == "zerowidth"
    assert clean("bad \ud800 surrogate") == "bad surrogate"


def test_safe_id_cannot_close_a_tag() -> None:
    assert safe_id('ou_1"><at user_id="all') == "ou_1atuser_idall"
    assert safe_id("zhangsan") == "zhangsan"
    assert safe_id("+86-138 0013 8000") == "+86-13800138000"


# --- truncation ------------------------------------------------------------------------------------


def test_truncate_bytes_cuts_on_a_character_boundary() -> None:
    text = "物流配送延误" * 10  # 3 bytes each
    for limit in range(1, 70):
        out = truncate_bytes(text, limit, "…")
        assert utf8_len(out) <= limit
        assert "\ufffd" not in out
        out.encode("utf-8").decode("utf-8")
    assert truncate_bytes(text, 10, "…") == "物流…"  # 6 + 3 bytes; a third character would make 12
    assert truncate_bytes(text, 1000) == text


def test_truncate_bytes_with_a_marker_longer_than_the_limit() -> None:
    assert truncate_bytes("abcdef", 4, "…（已截断）") == "…"
    assert truncate_bytes("abcdef", 2, "…（已截断）") == ""


@given(st.text(min_size=0, max_size=300), st.integers(min_value=0, max_value=400))
def test_truncate_bytes_never_exceeds(value: str, limit: int) -> None:
    out = truncate_bytes(value, limit, "…")  # hypothesis' text has no lone surrogates
    assert utf8_len(out) <= limit
    if utf8_len(value) <= limit:
        assert out == value
    else:
        assert out.endswith("…") or limit < 3


def test_truncate_chars() -> None:
    assert truncate_chars("abcdef", 4) == "abc…"
    assert truncate_chars("abcdef", 6) == "abcdef"
    assert truncate_chars("abcdef", 4, "[cut]") == "[cut"


def test_markdown_to_text_drops_template_markup() -> None:
    md = '### **预警** 物流\n> 当前 <font color="warning">151</font> 件\n[详情](https://s.example/a/1) `x`'
    assert markdown_to_text(md) == "预警 物流\n当前 151 件\n详情 (https://s.example/a/1) x"
