"""The status page's one static asset: the Chinese font, for browsers on machines without one.

Type names, and in `zh_CN` every word of the page, are Chinese; a browser on a machine with no CJK font
(a minimal Linux desktop, a kiosk, a container's headless browser) draws them as boxes. So the page's
font list starts with a `@font-face` family limited (`unicode-range`) to the CJK blocks, whose sources
are the usual system CJK fonts first (`local()`: Noto Sans CJK, Source Han Sans, PingFang, Microsoft
YaHei, ...) and only then the GB 2312 subset of Noto Sans SC that `backtest --plot` also draws with
(`sentinel/fonts/`, SIL OFL). A browser that has one of those fonts uses it and downloads nothing; one
that has none downloads ours once, and only for a page with Chinese on it; Latin text never uses it.

Why first in the list and not after the system families: measured with headless Chromium on a machine
without CJK fonts, a web font listed after `system-ui` was never reached for bold text (headings, the
tier pills, `<b>`): Chromium drew those with DejaVu Sans Bold's missing-glyph boxes, and regular text
only sometimes (see tests/web/test_browser.py, which asks the browser which font painted each element).

Its address carries the file's digest (`/static/fonts/<digest>/<file>`), so it is served as immutable and
cached for a year, and a new font in an upgrade is a new address; any other digest is not found. The
file (2.4 MB) is read from the package for each request rather than held in the daemon's memory: with
that caching a browser fetches it once.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel.http import HTTPError, Request, Response

if TYPE_CHECKING:
    from sentinel.http import App

FONTS_DIR = Path(__file__).resolve().parent.parent / "fonts"
CJK_FONT = "NotoSansSC-Regular-GB2312.ttf"
CJK_FAMILY = "Sentinel Noto Sans SC"  # the name inside the file (see sentinel/fonts/README.md)
FONT_TYPES = {CJK_FONT: "font/ttf"}  # RFC 8081; nothing else in the folder is served
CACHE_FOREVER = "public, max-age=31536000, immutable"
SYSTEM_CJK_FONTS = (
    "Noto Sans CJK SC",
    "NotoSansCJKsc-Regular",
    "Source Han Sans SC",
    "SourceHanSansSC-Regular",
    "Noto Sans SC",
    "NotoSansSC-Regular",
    "PingFang SC",
    "PingFangSC-Regular",
    "Hiragino Sans GB",
    "HiraginoSansGB-W3",
    "Microsoft YaHei",
    "MicrosoftYaHei",
    "WenQuanYi Micro Hei",
    "WenQuanYiMicroHei",
    "WenQuanYi Zen Hei",
)
"""The `local()` sources tried before ours, by full and PostScript name (browsers match either)."""
CJK_RANGES = "U+3000-30FF, U+3200-33FF, U+4E00-9FFF, U+F900-FAFF, U+FE30-FE4F, U+FF00-FFEF"
"""CJK punctuation, kana, enclosed and compatibility forms, the unified ideographs, full-width forms: the
blocks of the subset a Latin font lacks (GB 2312's Greek, Cyrillic and box drawing are left to those)."""


@functools.cache
def digest(name: str) -> str:
    """The first 16 hex digits of the file's SHA-256 (read once per process)."""
    return hashlib.sha256((FONTS_DIR / name).read_bytes()).hexdigest()[:16]


def font_url(name: str = CJK_FONT) -> str:
    return f"/static/fonts/{digest(name)}/{name}"


def font_face_css() -> str:
    """The `@font-face` rule the page's stylesheet starts with."""
    sources = ", ".join([*(f'local("{name}")' for name in SYSTEM_CJK_FONTS), f'url("{font_url()}") format("truetype")'])
    return (
        f'@font-face {{ font-family: "{CJK_FAMILY}"; src: {sources}; font-display: swap; '
        f"unicode-range: {CJK_RANGES}; }}"
    )


def serve_font(req: Request) -> Response:
    name, version = req.params["name"], req.params["digest"]
    if name not in FONT_TYPES or version != digest(name):
        raise HTTPError(404, "not found")
    return Response(200, (FONTS_DIR / name).read_bytes(), FONT_TYPES[name], headers={"Cache-Control": CACHE_FOREVER})


def register(app: App) -> None:
    app.route("GET", "/static/fonts/<digest>/<name>", serve_font)
