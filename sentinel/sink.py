"""A local chat sink for the demo: a WeCom-style group robot on 127.0.0.1 that prints each message
the way the chat group would show it (markdown rendered in the terminal) and answers errcode 0."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any

SINK_KEY = "demo"


class ChatSink:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.count = 0
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._answer({"errcode": 40001, "errmsg": "invalid json"})
                    return
                sink.show(body)
                self._answer({"errcode": 0, "errmsg": "ok"})

            def _answer(self, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name="chat-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/cgi-bin/webhook/send?key={SINK_KEY}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def show(self, body: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.markdown import Markdown
        from rich.panel import Panel

        kind = body.get("msgtype", "?")
        part = body.get(kind, {}) if isinstance(body.get(kind), dict) else {}
        content = str(part.get("content", ""))
        mentions = [*part.get("mentioned_list", []), *part.get("mentioned_mobile_list", [])]
        with self._lock:
            self.count += 1
            self.messages.append(body)
            console = Console(file=self.out, width=100, highlight=False, soft_wrap=False)
            rendered = Markdown(content) if kind == "markdown" else content
            title = f"企业微信群机器人 · message {self.count} ({kind})"
            if mentions:
                title += " · @" + " @".join(str(m) for m in mentions)
            console.print(Panel(rendered, title=title, title_align="left", border_style="cyan"))
