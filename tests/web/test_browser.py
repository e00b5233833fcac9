"""The status page in a real headless browser (Debian's `chromium`): the DOM it builds holds every
alert and not one element injected by hostile type names, and it paints a real page (the screenshot is
kept in `test-artifacts/` at the repository root); on this machine, which has no CJK font, it paints the
Chinese page with the font the daemon serves, and a machine with a CJK font uses its own (chromium
driven over its DevTools pipe, `tests/web/cdp.py`, asked which font painted each element)."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import select

from sentinel.http import HTTPError, Request, Response, Server
from sentinel.store.schema import alerts
from sentinel.web import static
from tests.web import cdp
from tests.web.builders import IMG, SCRIPT, Scene, T, scene

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH, HEIGHT = 1280, 1600

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="chromium is not installed at /usr/bin/chromium (Debian: apt-get install chromium)",
    ),
]


def chromium(user_data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run chromium in its own process group; whatever it leaves behind is killed with the group."""
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={user_data}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish in 120 s\nstderr:\n{err[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture
def url(world: Scene) -> Iterator[str]:
    server = Server(world.daemon.app, "127.0.0.1:0")
    server.start()
    try:
        yield server.url + "/"
    finally:
        server.stop()


def png_facts(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed scanlines) of a PNG; asserts its structure on the way."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
        if kind == b"IEND":
            break
    width, height, depth, colour = struct.unpack(">IIBB", ihdr[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + width * (3 if colour == 2 else 4))
    return width, height, raw


def test_rendered_dom_has_the_alerts_and_nothing_injected(world: Scene, url: str, tmp_path: Path) -> None:
    proc = chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = proc.stdout
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "status-page.dom.html").write_text(dom, encoding="utf-8")
    with world.daemon.store.reading() as conn:
        instances = conn.execute(select(alerts.c.instance).where(alerts.c.status == "open")).scalars().all()
    assert len(instances) == 9
    for inst in instances:
        assert f'id="alert-{inst}"' in dom
    # the hostile names are there, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert '"&gt;&lt;img src=x onerror=alert(1)&gt;' in dom
    assert T in dom
    # and not as elements: no <img>, no script, no event handler attribute anywhere in the live DOM
    assert '<img src="x"' not in dom and "<img" not in dom
    assert "<script>alert" not in dom and "<script" not in dom
    assert "onerror=" not in dom.replace("onerror=alert(1)&gt;", "").replace("onerror=alert(2)&gt;", "")
    assert SCRIPT not in dom and IMG not in dom
    assert dom.count("<svg") == 6  # one chart per alerted threshold series


def test_screenshot_is_a_real_page(url: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    proc = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert shot.exists(), proc.stderr[-3000:]
    data = shot.read_bytes()
    width, height, raw = png_facts(data)
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(data) > 30_000, f"{len(data)} bytes: an (almost) empty page"
    assert len(set(raw)) > 64, "too few distinct byte values for a page with text, colours and charts"


# --- the Chinese font, for a browser on a machine without one -----------------------------------------

ELEMENTS = ["h2", "h3", ".pill", "header.top", ".alert", "form.filter b", "form.filter button", "th"]
# the page's text left with only its Chinese characters (CJK punctuation and full-width forms included),
# so that every glyph painted in an element is one of them
CHINESE_ONLY = r"""(() => {
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  let left = 0;
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    n.data = (n.data.match(/[\u3000-\u9fff\uff00-\uffef]/g) || []).join("");
    left += n.data.length;
  }
  return left;
})()"""


@pytest.fixture
def zh_url(tmp_path: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """The zh_CN page's address and the (path, status) of every request the server answers."""
    world = scene(tmp_path, locale="zh_CN")
    seen: list[tuple[str, int]] = []
    dispatch = world.daemon.app.dispatch

    def recorded(req: Request) -> Response:
        try:
            resp = dispatch(req)
        except HTTPError as err:
            seen.append((req.path, err.status))
            raise
        seen.append((req.path, resp.status))
        return resp

    world.daemon.app.dispatch = recorded  # type: ignore[method-assign]
    server = Server(world.daemon.app, "127.0.0.1:0")
    server.start()
    try:
        yield server.url + "/", seen
    finally:
        server.stop()
        world.daemon.stop()


def _painted(
    url: str, profile: Path, env: dict[str, str] | None = None, shot: str | None = None
) -> dict[str, set[str]]:
    """{selector: the fonts that paint its Chinese characters, a web font marked with "*"}, asked of
    chromium once the page's fonts are ready and its other characters are taken out of the text."""
    out = {}
    with cdp.browser(CHROMIUM, FLAGS, profile, env) as b:
        page = b.page(url)
        assert page.evaluate("document.fonts.ready.then(() => document.fonts.size)") >= 1
        if shot is not None:
            ARTIFACTS.mkdir(exist_ok=True)
            png_facts(page.screenshot(ARTIFACTS / shot, WIDTH, HEIGHT))
        assert page.evaluate(CHINESE_ONLY) > 200
        for selector in ELEMENTS:
            out[selector] = {f["postScriptName"] + ("*" if f["isCustomFont"] else "") for f in page.fonts_of(selector)}
            assert out[selector], f"{selector}: no Chinese text"
    return out


def _fontconfig(tmp_path: Path, extra: Path | None = None) -> dict[str, str]:
    """An environment whose fontconfig is the system's with every installed CJK font rejected (CI installs
    one for the plots), plus `extra`'s fonts: a machine without a CJK font, or with exactly ours."""
    cjk = subprocess.run(["fc-list", ":charset=4e00", "file"], capture_output=True, text=True, check=True).stdout
    files = sorted({line.split(":")[0].strip() for line in cjk.splitlines() if line.strip()})
    rejects = "".join(f"<glob>{escape(f)}</glob>" for f in files)
    conf = tmp_path / ("fonts-extra.conf" if extra else "fonts.conf")
    conf.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        '<include ignore_missing="yes">/etc/fonts/fonts.conf</include>'
        + (f"<dir>{escape(str(extra))}</dir>" if extra else "")
        + f"<selectfont><rejectfont>{rejects}</rejectfont></selectfont>"
        f"<cachedir>{escape(str(tmp_path / 'fc-cache'))}</cachedir></fontconfig>",
        encoding="utf-8",
    )
    return {**os.environ, "FONTCONFIG_FILE": str(conf)}


def _cjk_families(env: dict[str, str]) -> str:
    return subprocess.run(
        ["fc-list", ":charset=4e00", "family"], capture_output=True, text=True, env=env, check=True
    ).stdout


def test_without_a_cjk_font_the_page_paints_chinese_with_the_served_one(
    zh_url: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    """With no CJK font (the installed ones rejected, asserted): every Chinese character of the headings,
    pills, the filter form and the alerts is painted by the served font, fetched once; none by a missing
    glyph."""
    env = _fontconfig(tmp_path)
    assert not _cjk_families(env).strip()
    url, seen = zh_url
    painted = _painted(url, tmp_path / "profile-font", env, shot="status-page-zh.png")
    assert painted == {selector: {"SentinelNotoSansSC-Regular*"} for selector in ELEMENTS}
    assert [s for s in seen if s[0].startswith("/static/")] == [(static.font_url(), 200)]


def test_without_the_served_font_the_same_page_has_boxes(
    zh_url: tuple[str, list[tuple[str, int]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The contrast that makes the test above mean something: with the font's address not found, the
    same characters are painted by fonts that have no such glyphs."""
    monkeypatch.setattr(static, "FONT_TYPES", {})
    url, seen = zh_url
    painted = _painted(url, tmp_path / "profile-nofont", _fontconfig(tmp_path))
    assert all(not any(f.endswith("*") for f in fonts) for fonts in painted.values()), painted
    assert [s for s in seen if s[0].startswith("/static/")] == [(static.font_url(), 404)]


def test_a_machine_with_a_cjk_font_uses_it_and_downloads_nothing(
    zh_url: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    """The system's CJK fonts come first: a fontconfig folder holding a font named Noto Sans CJK SC (our
    subset renamed), and chromium paints with it and never asks for the served one."""
    from fontTools.ttLib import TTFont

    fonts = tmp_path / "fonts"
    fonts.mkdir()
    font = TTFont(str(static.FONTS_DIR / static.CJK_FONT))
    for nid, value in (
        (1, "Noto Sans CJK SC"),
        (4, "Noto Sans CJK SC"),
        (6, "NotoSansCJKsc-Regular"),
        (3, "NotoSansCJKsc-Regular"),
    ):
        font["name"].setName(value, nid, 3, 1, 0x409)
        font["name"].setName(value, nid, 1, 0, 0)
    font.save(str(fonts / "NotoSansCJKsc-Regular.ttf"))
    env = _fontconfig(tmp_path, fonts)  # the machine's own CJK fonts rejected: ours is the only one
    listed = _cjk_families(env)
    assert "Noto Sans CJK SC" in listed and "WenQuanYi" not in listed, listed
    url, seen = zh_url
    painted = _painted(url, tmp_path / "profile-system", env)
    # The system's CJK font paints every element and the served one none (a Latin font may still paint
    # a punctuation mark of a bold heading: which one fontconfig picks for those varies between runs).
    assert all(
        "NotoSansCJKsc-Regular" in fonts and not any(f.endswith("*") for f in fonts) for fonts in painted.values()
    ), painted
    assert [s for s in seen if s[0].startswith("/static/")] == []
