"""`sentinel bench delivery`: how fast a burst leaves the outbox (printed and written, never asserted).

A storm fills the outbox faster than people read it; what matters then is that the delivery worker
is not the bottleneck. The benchmark measures exactly the production path: a real SQLite state
store (WAL, `synchronous=FULL`), the real `DeliveryWorker` with its wake-ups and threads, the generic
`webhook` adapter, and a local HTTP sink on 127.0.0.1 that answers 200 at once, with no rate limit.
It fills the outbox with `messages` messages per receiver, wakes the worker as the dispatcher does,
and reports messages per second from the wake-up to the sink's last request (the sink runs in its
own process, as a chat tool would), for 1 and 10 receivers
by default. `measure_throughput` is the same measurement for other benchmarks to import.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel.http import CHAT_PEER, App, Request, Response, Server

if TYPE_CHECKING:  # the rest inside the functions: the CLI imports this module to build its options
    from sentinel.notify.views import AlertView
    from sentinel.store import Store

DEFAULT_MESSAGES = 300
DEFAULT_RECEIVERS = (1, 10)
TIMEOUT_S = 600.0
ANSWER = b'{"ok":true}'


class Sink:
    """A local webhook endpoint that records requests per path and answers 200 with a small JSON body.

    Served by `sentinel.http` (waitress): keep-alive, as a chat tool's front end offers, and TCP_NODELAY on
    its sockets. With Nagle on, a reply's body would wait out the client's 40 ms delayed ACK; the benchmark
    would then measure that stall (about 20 messages/s whatever the worker does), not the worker."""

    def __init__(self, threads: int) -> None:
        self.delivery_ids: dict[str, list[str]] = {}
        self.total = 0
        self._cond = threading.Condition()
        app = App()
        app.route("POST", "/<receiver>", self._post)
        # one thread per receiver: no request queues
        self.server = Server(app, "127.0.0.1:0", threads=threads, limits=CHAT_PEER)

    def _post(self, req: Request) -> Response:
        self.seen(req.path, req.headers.get("x-sentinel-delivery", ""))
        return Response(200, ANSWER, "application/json")

    @property
    def port(self) -> int:
        return self.server.port

    def seen(self, path: str, delivery_id: str) -> None:
        with self._cond:
            self.delivery_ids.setdefault(path, []).append(delivery_id)
            self.total += 1
            self._cond.notify_all()

    def wait_total(self, n: int, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.total >= n, timeout_s)

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.stop()


def serve_stdio(threads: int) -> None:
    """The sink's own process: the chat tool is not in the daemon's process, so its request handling
    must not compete with the worker for the interpreter lock. It prints its port, then answers one
    JSON line per command line on stdin: `wait N` (true once N requests arrived), `ids`, `stop`."""
    s = Sink(threads)
    s.start()
    print(s.port, flush=True)
    try:
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "wait":
                print(json.dumps(s.wait_total(int(arg), TIMEOUT_S)), flush=True)
            elif cmd == "ids":
                with s._cond:
                    print(json.dumps(s.delivery_ids), flush=True)
            else:
                return
    finally:
        s.close()


class RemoteSink:
    """The parent's handle on the sink process (a plain subprocess: importing this module from any
    script, with or without a `__main__` guard, works)."""

    def __init__(self, threads: int) -> None:
        code = f"from sentinel.bench.delivery import serve_stdio; serve_stdio({int(threads)})"
        from sentinel.bench.common import child_env, python_child

        self._proc = subprocess.Popen(
            python_child(code),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=child_env(),
        )
        self.base = f"http://127.0.0.1:{int(self._read())}"

    def _read(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark's sink process ended")
        return line

    def _ask(self, command: str) -> str:
        """The sink process's answer to `command`: one line of JSON."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._read()

    def wait_total(self, n: int) -> bool:
        return bool(json.loads(self._ask(f"wait {n}")))

    def delivery_ids(self) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = json.loads(self._ask("ids"))  # the sink writes {receiver: [ids]}
        return ids

    def close(self) -> None:
        with suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.write("stop\n")
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


@contextmanager
def daemon_logging(path: Path) -> Iterator[None]:
    """The daemon's JSON log lines, written to a file: their cost belongs to every delivered message."""
    from sentinel.logs import JsonFormatter

    logger = logging.getLogger("sentinel")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


@contextmanager
def sink(threads: int) -> Iterator[RemoteSink]:
    s = RemoteSink(threads)
    try:
        yield s
    finally:
        s.close()


def _view(i: int) -> AlertView:
    """A typical firing alert: one complaint type surging, with samples, as the dispatcher writes it."""
    from sentinel.model import Tier
    from sentinel.notify.views import AlertView

    at = datetime(2025, 7, 8, 10, 0, tzinfo=UTC)
    return AlertView(
        rule="type-surge",
        kind="threshold",
        state="firing",
        tier=Tier.LIGHT,
        labels={"type": f"物流配送延误{i % 50}"},
        value=61.0,
        baseline=40.0,
        ratio=1.525,
        started=at,
        at=at,
        instance=f"inst{i:08d}",
        fingerprint=f"fp{i:08d}",
        p=1e-6,
        mode="day",
        peak=61.0,
        samples=(("101", None), ("102", None)),
    )


def _fill(store: Store, names: list[str], messages: int) -> None:
    """`messages` per receiver, interleaved as a storm over several receivers would queue them."""
    from sentinel.model import Tier
    from sentinel.notify import outbox

    now = int(time.time() * 1_000_000)
    with store.transaction() as conn:
        for i in range(messages):
            for name in names:
                outbox.enqueue(
                    conn,
                    name,
                    "alert",
                    Tier.LIGHT,
                    [_view(i)],
                    event_at_us=now,
                    now_us=now,
                    extra={"group_key": f"g{i}", "group_labels": {"type": f"t{i}"}, "status": "firing"},
                )


def measure_throughput(receivers: int, messages: int) -> dict[str, float]:
    """Deliver `messages` per receiver to `receivers` generic webhooks; messages/s from wake-up to the
    last arrival; also per receiver, the worker process's CPU time per message (a loaded machine disturbs
    it less than the wall clock), the claim transactions per message (below 1 when receivers share
    commits), and whether every message arrived once and in order."""
    from sentinel.config import Config, ReceiverConfig
    from sentinel.metrics import Metrics
    from sentinel.notify import outbox
    from sentinel.notify.worker import DeliveryWorker
    from sentinel.store import Store

    with (
        tempfile.TemporaryDirectory(prefix="sentinel-bench-delivery-") as tmp,
        sink(receivers) as s,
        daemon_logging(Path(tmp) / "sentinel.log"),
    ):
        names = [f"hook{i}" for i in range(receivers)]
        cfg = Config(
            state_url=f"sqlite:///{Path(tmp) / 'state.db'}",
            locale="en",
            receivers=[ReceiverConfig(name=n, kind="webhook", url=f"{s.base}/{n}") for n in names],
        )
        assert cfg.state_url is not None
        store = Store(cfg.state_url.get())
        store.upgrade()
        worker = DeliveryWorker(cfg, store, Metrics())
        try:
            _fill(store, names, messages)
            order: dict[str, list[str]] = {}  # per sink path, the outbox order each receiver must keep
            with store.reading() as conn:
                for m in reversed(outbox.recent(conn, (outbox.PENDING,), limit=receivers * messages + 1)):
                    order.setdefault(f"/{m.receiver}", []).append(m.delivery_id)
            total = receivers * messages
            started, cpu = time.perf_counter(), time.process_time()
            worker.start()  # wakes the worker, as the dispatcher does after committing messages
            worker.waker.start()
            arrived = s.wait_total(total)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            worker.stop()
            store.close()
        seen = s.delivery_ids()
        in_order = seen == order
        arrived_n = sum(len(ids) for ids in seen.values())
        return {
            "receivers": float(receivers),
            "messages_per_receiver": float(messages),
            "total": float(total),
            "arrived": float(arrived_n),
            "complete": float(arrived and in_order),
            "seconds": seconds,
            "messages_per_s": arrived_n / seconds if seconds > 0 else 0.0,
            "per_receiver_per_s": arrived_n / seconds / receivers if seconds > 0 else 0.0,
            "cpu_ms_per_message": 1000 * cpu / max(1, arrived_n),
            "claim_transactions_per_message": worker.claim_transactions / max(1, arrived_n),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, help="messages per receiver (300)")
    parser.add_argument(
        "--receivers",
        type=int,
        action="append",
        default=None,
        help="receivers in one run; repeat for several runs (default: 1 and 10)",
    )
    parser.add_argument("--output", default="bench-results-delivery.json", help="where the figures go as JSON")


def run(args: argparse.Namespace) -> int:
    results = []
    for receivers in args.receivers or list(DEFAULT_RECEIVERS):
        r = measure_throughput(receivers, args.messages)
        results.append(r)
        ok = "" if r["complete"] else "  (INCOMPLETE: not every message arrived once and in order)"
        print(
            f"delivery, {receivers} receiver(s) x {args.messages} messages: {r['messages_per_s']:.1f} messages/s "
            f"({r['per_receiver_per_s']:.1f} per receiver, {r['seconds']:.2f} s, "
            f"{r['cpu_ms_per_message']:.2f} ms CPU and {r['claim_transactions_per_message']:.2f} claim transactions "
            f"per message){ok}",
            flush=True,
        )
    Path(args.output).write_text(json.dumps({"bench": "delivery", "runs": results}, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.output}")
    return 0 if all(r["complete"] for r in results) else 1
