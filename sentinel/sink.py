"""A local chat sink for the demo: a WeCom-style group robot on 127.0.0.1 that prints each message
the way the chat group would show it (markdown rendered in the terminal) and answers errcode 0."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import IO

from sentinel.http import CHAT_PEER, App, Request, Response, Server
from sentinel.model import JsonObject, JsonValue

SINK_KEY = "demo"
PATH = "/cgi-bin/webhook/send"


class ChatSink:
    """`explain(n, content)` gives the line printed above message `n`'s panel (what it is, why it fired)."""

    def __init__(
        self, out: IO[str], listen: str = "127.0.0.1:0", explain: Callable[[int, str], str | None] | None = None
    ) -> None:
        self.out = out
        self.explain = explain
        self.count = 0
        self.messages: list[JsonObject] = []
        self._lock = threading.Lock()
        app = App()
        app.route("POST", PATH, self._post)
        self.server = Server(app, listen, limits=CHAT_PEER)

    def _post(self, req: Request) -> Response:
        try:
            body: JsonObject = json.loads(req.body or b"{}")  # the robot API's body is an object
        except json.JSONDecodeError:
            return Response.json({"errcode": 40001, "errmsg": "invalid json"})
        self.show(body)
        return Response.json({"errcode": 0, "errmsg": "ok"})

    @property
    def url(self) -> str:
        return f"{self.server.url}{PATH}?key={SINK_KEY}"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def show(self, body: JsonObject) -> None:
        from rich.console import Console, Group
        from rich.markdown import Markdown
        from rich.panel import Panel
        from rich.text import Text

        kind = body.get("msgtype", "?")
        got = body.get(kind) if isinstance(kind, str) else None  # JSON keys are strings: no other kind matches
        part: JsonObject = got if isinstance(got, dict) else {}
        content = str(part.get("content", ""))
        mentions = [*_listed(part.get("mentioned_list")), *_listed(part.get("mentioned_mobile_list"))]
        with self._lock:
            self.count += 1
            self.messages.append(body)
            console = Console(file=self.out, width=100, highlight=False, soft_wrap=False)
            # WeCom breaks the line at every newline (the bold title sits on a line of its own above the
            # body); CommonMark would join single-newline lines, so they become hard breaks here
            rendered = Markdown(content.replace("\n", "  \n")) if kind == "markdown" else content
            line = self.explain(self.count, content) if self.explain is not None else None
            title = f"企业微信群机器人 · message {self.count} ({kind})"
            if mentions:
                title += " · @" + " @".join(str(m) for m in mentions)
            panel = Panel(rendered, title=title, title_align="left", border_style="cyan")
            # one print, one write: the demo's own narration (another thread) never lands in between
            console.print(Group(Text(line), panel) if line else panel)


def _listed(value: JsonValue) -> list[JsonValue]:
    """A mention list as the robot API gives it (absent: none)."""
    return value if isinstance(value, list) else []
