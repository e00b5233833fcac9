"""A small Chrome DevTools Protocol client over `--remote-debugging-pipe` (file descriptors 3 and 4,
NUL-terminated JSON), for the browser tests that need more than a screenshot taken whenever chromium's
`--screenshot` decides: wait for the page's fonts, ask which fonts painted an element's text, capture the
page after that. The standard library only; no websocket."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class CdpError(Exception):
    pass


class Browser:
    """One headless chromium driven through its pipe; `page(url)` opens a tab and attaches to it."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc, self._out, self._in = proc, to_browser, from_browser
        self._next = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None, timeout: float = 60.0
    ) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return dict(self.events.pop(i).get("params", {}))
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise CdpError("chromium did not answer in time")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise CdpError("chromium closed its pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(raw))

    def page(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.call("Page.enable")
        page.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", session)
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser, self.session = browser, session

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if a promise). DevTools' evaluation is not the
        page's script: the page's Content-Security-Policy, which forbids scripts, does not apply to it."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def fonts_of(self, selector: str) -> list[dict[str, Any]]:
        """The fonts that painted the text of the first element `selector` finds: [{familyName,
        isCustomFont, glyphCount}, ...] (a web font has `isCustomFont`)."""
        self.call("DOM.enable")
        self.call("CSS.enable")
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise CdpError(f"no element matches {selector!r}")
        return list(self.call("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"])

    def screenshot(self, path: Path, width: int, height: int) -> bytes:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
        path.write_bytes(data)
        return data


@contextlib.contextmanager
def browser(chromium: Path, flags: list[str], user_data: Path, env: dict[str, str] | None = None) -> Iterator[Browser]:
    """chromium in its own process group with its DevTools pipe on fds 3 (to it) and 4 (from it); the whole
    group is killed at the end, whatever it left behind."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes its answers
        ours = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_r, from_w)]  # clear of 3 and 4 first
        os.dup2(ours[0], 3)
        os.dup2(ours[1], 4)

    proc = subprocess.Popen(
        [str(chromium), *flags, f"--user-data-dir={user_data}", "--remote-debugging-pipe"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=wire,  # noqa: PLW1509
        pass_fds=(3, 4, to_r, from_w),
        start_new_session=True,
    )
    os.close(to_r)
    os.close(from_w)
    try:
        yield Browser(proc, to_w, from_r)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        os.close(to_w)
        os.close(from_r)
