"""The status page's Chinese font: served at a digest-named address with its content type and a year's
cache, the last source of the page's `@font-face` (after the system CJK fonts), allowed by its
Content-Security-Policy, and covering, within its `unicode-range`, every Chinese character the page
prints. What a real browser makes of it: tests/web/test_browser.py."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont

from sentinel.http import Server
from sentinel.web import static
from sentinel.web.catalogue import ZH
from tests.web.builders import PHONE, Scene, T, scene
from tests.web.test_status_page import call, page

FONT = static.FONTS_DIR / static.CJK_FONT


def test_the_font_is_served_with_its_type_and_cached_for_a_year(world: Scene) -> None:
    status, headers, body = call(world.daemon.app, static.font_url())
    assert status == 200
    assert headers["Content-Type"] == "font/ttf"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert list(headers).count("Cache-Control") == 1
    assert body == FONT.read_bytes() and int(headers["Content-Length"]) == FONT.stat().st_size
    status, headers, body = call(world.daemon.app, static.font_url(), method="HEAD")
    assert status == 200 and body == b"" and headers["Content-Type"] == "font/ttf"


def test_the_page_itself_is_still_never_cached(world: Scene) -> None:
    _status, headers, _body = call(world.daemon.app)
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "path",
    [
        "/static/fonts/0123456789abcdef/" + static.CJK_FONT,  # an old digest: not this file
        f"/static/fonts/{static.digest(static.CJK_FONT)}/OFL.txt",  # beside it, but not an asset
        f"/static/fonts/{static.digest(static.CJK_FONT)}/README.md",
        f"/static/fonts/{static.digest(static.CJK_FONT)}/..",
        "/static/fonts/" + static.CJK_FONT,
        "/static/fonts/../../config.py",
    ],
)
def test_nothing_else_is_served(world: Scene, path: str) -> None:
    assert call(world.daemon.app, path)[0] == 404


def test_the_address_changes_with_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A year's cache is safe only because another font is another address."""
    other = tmp_path / static.CJK_FONT
    other.write_bytes(FONT.read_bytes() + b"\0")
    before = static.font_url()
    monkeypatch.setattr(static, "FONTS_DIR", tmp_path)
    static.digest.cache_clear()
    try:
        assert static.font_url() != before
    finally:
        monkeypatch.undo()
        static.digest.cache_clear()
    assert static.font_url() == before


def test_the_page_asks_for_the_system_cjk_fonts_first_and_then_the_served_one(world: Scene) -> None:
    status, headers, body = call(world.daemon.app)
    assert status == 200 and "font-src 'self'" in headers["Content-Security-Policy"]
    html = body.decode("utf-8")
    style = html[html.index("<style>") : html.index("</style>")]
    face = re.search(
        r'@font-face \{ font-family: "([^"]+)"; src: ([^;]+); font-display: swap; '
        r"unicode-range: ([^;]+); \}",
        style,
    )
    assert face is not None, style[:600]  # unescaped: a style element's text is not HTML
    assert face.group(1) == static.CJK_FAMILY
    sources = [s.strip() for s in face.group(2).split(", ")]
    assert sources[-1] == f'url("{static.font_url()}") format("truetype")'
    assert sources[:-1] == [f'local("{name}")' for name in static.SYSTEM_CJK_FONTS]
    assert {'local("Noto Sans CJK SC")', 'local("Microsoft YaHei")', 'local("PingFang SC")'} <= set(sources)
    body_font = re.search(r"body \{ font: 14px/1.45 ([^;]+);", style)
    assert body_font is not None
    families = [f.strip().strip('"') for f in body_font.group(1).split(",")]
    assert families[0] == static.CJK_FAMILY and families[-1] == "sans-serif"  # CJK only: its unicode-range


def _in_ranges(ch: str) -> bool:
    for part in static.CJK_RANGES.split(","):
        lo, _, hi = part.strip().removeprefix("U+").partition("-")
        if int(lo, 16) <= ord(ch) <= int(hi or lo, 16):
            return True
    return False


def test_the_font_has_every_chinese_character_the_page_prints(tmp_path: Path) -> None:
    """Every character of the zh_CN page (the catalogue's words, the page as rendered with Chinese type
    and channel names) that is outside ASCII and Latin-1 falls in the `unicode-range` and is in the font,
    so the browser never needs the font for a Latin page and never finds a box in it for a Chinese one."""
    world = scene(tmp_path, locale="zh_CN")
    try:
        html = page(world)
    finally:
        world.daemon.stop()
    words = "".join(v if isinstance(v, str) else "".join(v) for v in ZH.values()) + T + PHONE
    text = re.sub(r"<[^>]+>", "", html) + words
    cjk = {ch for ch in text if 0x3000 <= ord(ch) <= 0xFFEF}
    assert len(cjk) > 100  # the page is Chinese
    cmap = TTFont(str(FONT)).getBestCmap()
    assert sorted(ch for ch in cjk if ord(ch) not in cmap) == []
    assert sorted(ch for ch in cjk if not _in_ranges(ch)) == []
    assert not any(_in_ranges(ch) for ch in "Sentinel status: 12 open alerts, p = 1.0e-04 — “ok” · ×")


def test_served_through_the_real_http_server(world: Scene) -> None:
    server = Server(world.daemon.app, "127.0.0.1:0")
    server.start()
    try:
        with urllib.request.urlopen(server.url + static.font_url(), timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "font/ttf"
            assert resp.headers["Cache-Control"] == static.CACHE_FOREVER
            assert resp.read() == FONT.read_bytes()
    finally:
        server.stop()
