"""Alert views → (title, body) for one receiver's syntax, through Jinja2 templates.

What this stage guarantees, whatever a template (ours or an operator's override) says:
- every `{{ value }}` is escaped for the target syntax by the environment's `finalize`, unless it is a
  `Safe` string made by one of the helpers below (`bold`, `link`, `num`, `ts`, …), which escape their
  own inputs. Jinja's `|safe` gives a `Markup`, not a `Safe`, so it cannot switch escaping off;
- links are made only by `link()`, from http(s) URLs that are validated and percent-encoded so they
  cannot close the surrounding markup; data never becomes a link, a mention or a line break;
- the body is at most `max_bytes` UTF-8 bytes (and `max_chars` characters): a digest lists whole alert
  entries, most severe first, and counts the rest with a status-page link ("… 还有 12 条预警"); only
  as a last resort is the text cut on a character boundary;
- the title is one line of plain text (< 100 characters, no URL); adapters escape it for their syntax.

Templates live in `templates/<locale>/` (`title.j2`, `alert.j2`, `digest.j2`, `entry.j2`); a
`templates_dir` overrides them file by file. Templates write one fact per line; the renderer drops
blank lines and joins lines with "\\n\\n" in Markdown (DingTalk and Teams need a blank line to break a
line; WeCom and Discord show it as a paragraph gap) and "\\n" elsewhere.
"""

from __future__ import annotations

import functools
import re
import traceback
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from sentinel.config import ReceiverConfig
from sentinel.model import Tier
from sentinel.notify.base import Adapter, Syntax
from sentinel.notify.escape import (
    FIELD_MAX_CHARS,
    clean,
    escape_for,
    truncate_bytes,
    truncate_chars,
    utf8_len,
)
from sentinel.notify.views import MESSAGE_KINDS, AlertView

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"
LOCALES = ("zh_CN", "en")
TITLE, ALERT, DIGEST, ENTRY = "title.j2", "alert.j2", "digest.j2", "entry.j2"
TEMPLATES = (TITLE, ALERT, DIGEST, ENTRY)
TITLE_MAX_CHARS = 99
SERIES_MAX_CHARS = 100  # one label value in a body; titles and digest entries pass less

LABEL_NAMES: Mapping[str, Mapping[str, str]] = {
    "zh_CN": {"type": "类型", "channel": "渠道", "customer": "客户", "rule": "规则"},
    "en": {"type": "type", "channel": "channel", "customer": "customer", "rule": "rule"},
}
ALL_SERIES = {"zh_CN": "全部投诉", "en": "all complaints"}


class TemplateError(ValueError):
    """A template could not be loaded or rendered; the message names the file (and line)."""


class Safe(str):
    """Text already in the target syntax, made by a helper that escaped its inputs.

    `finalize` passes it through unchanged. Any str operation on it (concatenation, `~`, slicing)
    yields a plain `str`, which is escaped again: forgetting to mark something costs looks, not safety.
    """

    __slots__ = ()


# --- URLs ------------------------------------------------------------------------------------------

_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]"
)
_URL_SAFE = "/:=&?;,+!$%~.-_"  # everything else (( ) < > | [ ] * @ ' " and non-ASCII) is percent-encoded


def safe_url(url: str) -> str | None:
    """`url` if it is an absolute http(s) URL that can sit inside `[t](…)`, `<…|t>` or "t (…)".

    Why so strict: a URL that carries `)`, `|`, `>` or a space would end the link early and turn the
    rest into markup, and one with user-info would post credentials to a chat. Such characters in the
    path or query are percent-encoded; a bad scheme, host, user-info or any control or space character
    rejects the URL (the caller shows the text without a link).
    """
    url = url.strip()
    if not url or any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in url):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if parts.scheme.lower() not in ("http", "https") or not _HOST.fullmatch(host):
        return None
    out = f"{parts.scheme.lower()}://{parts.netloc}{quote(parts.path, safe=_URL_SAFE)}"
    if parts.query:
        out += "?" + quote(parts.query, safe=_URL_SAFE)
    if parts.fragment:
        out += "#" + quote(parts.fragment, safe=_URL_SAFE)
    return out


# --- formatting (locale-independent digits, so safe in every syntax) ---------------------------------


def num(value: float | None, digits: int | None = None) -> Safe:
    """151.0 → "151", 1.512 → "1.51"; `digits` fixes the decimals ("100.0" for a baseline)."""
    if value is None:
        return Safe("–")
    if digits is not None:
        return Safe(f"{float(value):.{int(digits)}f}")
    if float(value).is_integer():
        return Safe(str(int(value)))
    return Safe(f"{float(value):.2f}".rstrip("0").rstrip("."))


def sci(value: float | None) -> Safe:
    """A probability in scientific notation: 2.1e-06 (p-values span many orders of magnitude)."""
    if value is None:
        return Safe("–")
    return Safe("0" if value == 0 else f"{float(value):.1e}")


def sig(value: float | None, digits: int = 2) -> Safe:
    """Two significant digits: 0.031, 4.2, 130 (expected runs per day)."""
    if value is None:
        return Safe("–")
    v = float(value)
    return Safe(f"{v:.0f}" if abs(v) >= 10**digits else f"{v:.{digits}g}")


_TS = {"full": "%Y-%m-%d %H:%M", "short": "%m-%d %H:%M", "time": "%H:%M"}


def ts(dt: datetime, style: str = "full") -> Safe:
    """Views are already in the reader's zone, so no conversion: "2025-07-08 14:03" / "07-08 14:03"."""
    return Safe(dt.strftime(_TS[style]))


def human_duration(seconds: float, locale: str) -> str:
    """The two largest units, for people reading a message: "2小时15分" / "2h15m", "1天3小时" / "1d3h", "45秒" /
    "45s" (`sentinel.units.format_duration` writes a configuration value instead: "1m30s")."""
    s = max(0, int(seconds))
    d, h, m = s // 86400, s // 3600 % 24, s // 60 % 60
    names = ("天", "小时", "分", "秒") if locale == "zh_CN" else ("d", "h", "m", "s")
    units = [(d, names[0]), (h, names[1]), (m, names[2])] if s >= 60 else [(s, names[3])]
    while len(units) > 1 and units[0][0] == 0:
        units.pop(0)
    kept = units[:2]
    while len(kept) > 1 and kept[-1][0] == 0:
        kept.pop()
    return "".join(f"{n}{u}" for n, u in kept)


# --- the environment ---------------------------------------------------------------------------------


class _Escape(Protocol):
    def __call__(self, value: object, max_chars: int | None = FIELD_MAX_CHARS, /) -> str: ...


def _escaper(syntax: Syntax) -> _Escape:
    esc = escape_for(syntax)

    def escape_value(value: object, max_chars: int | None = FIELD_MAX_CHARS, /) -> str:
        return value if isinstance(value, Safe) else esc(str(value), max_chars)

    return escape_value


def _finalize(syntax: Syntax) -> Callable[[object], object]:
    escape_value = _escaper(syntax)

    def finalize(value: object) -> object:
        """Every `{{ }}` passes here: data is escaped, numbers and times get the house format."""
        if isinstance(value, Safe):
            return value
        if value is None:
            return ""
        if isinstance(value, Tier):  # an IntEnum: before the number case
            return value.label
        if isinstance(value, int | float) and not isinstance(value, bool):
            return num(value)
        if isinstance(value, datetime):
            return ts(value)
        return escape_value(value)

    return finalize


def _helpers(syntax: Syntax) -> dict[str, object]:  # the templates' globals: helpers and `tiers`
    escape_value = _escaper(syntax)

    def bold(text: object) -> Safe:
        inner = escape_value(text).strip()
        if not inner or syntax is Syntax.TEXT:
            return Safe(inner)
        return Safe(f"**{inner}**" if syntax is Syntax.MARKDOWN else f"*{inner}*")

    def link(text: object, url: object = None) -> Safe:
        label = escape_value(text, 80)
        href = safe_url(url) if isinstance(url, str) else None
        if href is None:
            return Safe(label)
        if syntax is Syntax.MARKDOWN:
            return Safe(f"[{label}]({href})")
        if syntax is Syntax.SLACK:
            return Safe(f"<{href.replace('&', '&amp;')}|{label}>")
        return Safe(f"{label} ({href})")

    @jinja2.pass_context
    def series(
        ctx: jinja2.runtime.Context, a: AlertView, max_chars: int = SERIES_MAX_CHARS, names: bool = True
    ) -> Safe:
        """The alert's labels: "类型 物流配送延误 · 渠道 电话热线" (values only with `names=False`)."""
        locale = str(ctx.get("locale", "en"))
        if not a.labels:
            return Safe(escape_value(ALL_SERIES.get(locale, ALL_SERIES["en"])))
        label_names = LABEL_NAMES.get(locale, {})
        parts = [escape_value(v, max_chars) for v in a.labels.values()]
        if names:
            parts = [f"{escape_value(label_names.get(k, k), 40)} {v}" for k, v in zip(a.labels, parts, strict=True)]
        return Safe(" · ".join(parts))

    @jinja2.pass_context
    def duration(ctx: jinja2.runtime.Context, value: float | timedelta | None) -> Safe:
        if value is None:
            return Safe("–")
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
        return Safe(human_duration(seconds, str(ctx.get("locale", "en"))))

    return {
        "bold": bold,
        "link": link,
        "series": series,
        "duration": duration,
        "num": num,
        "sci": sci,
        "sig": sig,
        "ts": ts,
        "tiers": sorted(Tier, reverse=True),
    }


@functools.lru_cache(maxsize=32)
def environment(syntax: Syntax, templates_dir: Path | None = None) -> SandboxedEnvironment:
    """One environment per (syntax, templates_dir): the operator's directory first, then ours.

    Sandboxed because templates come from a configuration directory, not from code review;
    `auto_reload` (Jinja's default) recompiles a file whose mtime changed, so a SIGHUP needs no flush.
    """
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES)))
    env = SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize(syntax),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )
    env.globals.update(_helpers(syntax))
    return env


def _template_frame(exc: BaseException) -> str | None:
    """ "file, line N" of the innermost template frame (Jinja rewrites tracebacks to template lines)."""
    where = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if not name.endswith(".py") and not name.startswith("<"):  # Python frames are .py files
            where = f"{name}, line {line}"
    return where


def _render(env: SandboxedEnvironment, name: str, context: Mapping[str, object]) -> str:
    try:
        template = env.get_template(name)
        return template.render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.filename or exc.name}, line {exc.lineno}: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(f"template {exc.name} not found (needed by {name})") from exc
    except Exception as exc:
        where = _template_frame(exc) or name
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from exc


def _layout(text: str, syntax: Syntax) -> str:
    """One fact per line; Markdown needs a blank line between lines for DingTalk and Teams."""
    lines = [line.strip() for line in text.splitlines()]
    return ("\n\n" if syntax is Syntax.MARKDOWN else "\n").join(line for line in lines if line)


def _fits(text: str, max_bytes: int, max_chars: int | None) -> bool:
    return utf8_len(text) <= max_bytes and (max_chars is None or len(text) <= max_chars)


def _cap(text: str, max_bytes: int, max_chars: int | None) -> str:
    if max_chars is not None:
        text = truncate_chars(text, max_chars)
    return truncate_bytes(text, max_bytes)


def locale_dir(locale: str, templates_dir: Path | None = None) -> str:
    """The template folder for `locale`: an operator's own folder by that name, else zh_CN or en."""
    if templates_dir is not None and locale and (templates_dir / locale).is_dir():
        return locale
    norm = locale.replace("-", "_").lower()
    if norm.startswith("zh"):
        return "zh_CN"
    if norm.startswith("en"):
        return "en"
    raise ValueError(f"unknown locale {locale!r} (zh_CN, en, or a folder of that name in templates_dir)")


def _order(a: AlertView) -> tuple[int, bool, float]:
    """Most severe first; open before resolved within a tier; then most recent."""
    return (-int(a.tier), a.state == "resolved", -a.at.timestamp())


def render(
    views: Sequence[AlertView],
    *,
    syntax: Syntax,
    locale: str = "zh_CN",
    max_bytes: int,
    status_url: str,
    kind: str = "alert",
    note: str | None = None,
    templates_dir: Path | None = None,
    max_chars: int | None = None,
) -> tuple[str, str]:
    """(title, body): title is PLAIN TEXT built from data (adapters escape it); body is in `syntax`
    with every data-derived string escaped, at most `max_bytes` UTF-8 bytes (and `max_chars`
    characters when given, for Discord).

    One view is a single-alert message; several (or `kind="digest"`) are a digest. `kind` is one of
    `MESSAGE_KINDS`: "repeat" and "escalation" change the heading, "test" marks a sample. Raises
    `TemplateError` for a broken template and `ValueError` for bad arguments.
    """
    if not views:
        raise ValueError("render needs at least one alert view")
    if kind not in MESSAGE_KINDS:
        raise ValueError(f"unknown message kind {kind!r} ({', '.join(MESSAGE_KINDS)})")
    if max_bytes <= 0 or (max_chars is not None and max_chars <= 0):
        raise ValueError("max_bytes and max_chars must be positive")
    loc = locale_dir(locale, templates_dir)
    ordered = sorted(views, key=_order)
    counts = {t.label: sum(1 for a in views if a.tier is t) for t in Tier}
    context: dict[str, object] = {
        "locale": loc,
        "kind": kind,
        "note": note,
        "status_url": status_url,
        "a": ordered[0],
        "digest": len(views) > 1 or kind == "digest",
        "total": len(views),
        "counts": counts,
        "resolved": sum(1 for a in views if a.state == "resolved"),
    }
    title = _render(environment(Syntax.TEXT, templates_dir), f"{loc}/{TITLE}", context)
    title = truncate_chars(clean(title, None), TITLE_MAX_CHARS)

    env = environment(syntax, templates_dir)
    if not context["digest"]:
        body = _layout(_render(env, f"{loc}/{ALERT}", context), syntax)
        return title, _cap(body, max_bytes, max_chars)

    entries = [Safe(_render(env, f"{loc}/{ENTRY}", {**context, "a": a})) for a in ordered]

    def digest(k: int) -> str:
        return _layout(
            _render(env, f"{loc}/{DIGEST}", {**context, "entries": entries[:k], "more": len(entries) - k}), syntax
        )

    body = digest(len(entries))
    if not _fits(body, max_bytes, max_chars):
        # Size grows with k below len(entries): binary-search the most whole entries that fit.
        lo, hi = 0, len(entries) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _fits(digest(mid), max_bytes, max_chars):
                lo = mid
            else:
                hi = mid - 1
        body = digest(lo)
    return title, _cap(body, max_bytes, max_chars)


TITLE_RESERVE_BYTES = 640
"""Room an adapter needs around the body for the title: < 100 characters of at most 5 bytes each once
escaped (Slack's `&amp;`), plus its markup, separators and DingTalk's `#### `."""
TITLE_RESERVE_CHARS = 128


def body_budget(adapter: Adapter, receiver: ReceiverConfig, tier: Tier) -> tuple[int, int | None]:
    """(max_bytes, max_chars) for `render`, so that the adapter never has to cut the body.

    Adapters put the title, the configured mentions and a keyword around the body and cap the whole
    at their limit; cutting there would drop a digest's last line, the count of alerts that did not
    fit. WeCom sends a tier that mentions everyone or by mobile as a text message with a smaller limit
    (`max_text_bytes`); Discord counts characters too (`max_chars`). Both are facts of the adapter class.
    """
    m = receiver.mention.for_tier(tier)
    limit = adapter.max_bytes
    if m is not None and (m.all or m.mobiles) and adapter.max_text_bytes is not None:
        limit = min(limit, adapter.max_text_bytes)
    ids = [*m.users, *m.mobiles] if m is not None else []
    tail = " ".join([f"<@{i}>" for i in ids] + ([receiver.keyword] if receiver.keyword else []))
    extra = utf8_len(tail) + 64 * bool(m is not None and m.all)  # `<at user_id="all">所有人</at>`, `<!channel>`
    max_chars = adapter.max_chars
    chars = max(max_chars - TITLE_RESERVE_CHARS - len(tail) - 64, 1) if max_chars is not None else None
    return max(limit - TITLE_RESERVE_BYTES - extra, 1), chars
