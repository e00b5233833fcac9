"""The status page in a real headless browser (Debian's `chromium`): the DOM it builds holds every
alert and not one element injected by hostile type names, and it paints a real page (the screenshot is
kept in `test-artifacts/` at the repository root)."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from sentinel.http import Server
from sentinel.store.schema import alerts
from tests.web.builders import IMG, SCRIPT, Scene, T

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1280, 1600

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="chromium is not installed at /usr/bin/chromium (Debian: apt-get install chromium)"),
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
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
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
