"""`sentinel bench failover`: two `sentinel run` on one PostgreSQL state store, the leader killed (or paused)
again and again while alerts are on their way.

Each round: five five-in-a-row streaks are committed and, at a random moment while their messages are being
sent (after the first reached the sink), the leader gets `kill -9` (`--how stop`: SIGSTOP, so the standby
must wait out the lease); right after, one more streak is committed. Measured per round:

- takeover: from the kill to the new leader's first poll (its log line "state reloaded from the store;
  detection resumes", which the poll follows at once);
- surge-to-message: from the COMMIT of the row completing the streak committed after the kill to its
  message at the local webhook sink (the takeover included);
- in flight: the outbox messages claimed and not confirmed at the kill (the only ones that may repeat).

Then the killed instance is started again (a paused one continued) and stands by for the next round. At the
end: lost streaks (no firing message at the sink) and duplicate deliveries (per delivery id) against the
messages in flight. The quick start's configuration and rules otherwise, `lease_ttl` as given (default 15 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict

from sentinel.bench.common import (
    DEFAULT_PG_URL,
    BenchError,
    Proc,
    Processes,
    Row,
    SqliteTable,
    libpq_url,
    quickstart_config,
    sentinel_command,
    sentinel_env,
    to_toml,
)

STREAK = 5
STREAKS_BEFORE = 5  # streaks committed before each failure, so that their messages are on their way at it
RESOLVED = "state reloaded from the store; detection resumes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--failovers", type=int, default=10, help="failovers to measure (default 10)")
    parser.add_argument(
        "--how",
        choices=("kill", "stop"),
        default="kill",
        help="kill -9 the leader (default), or SIGSTOP it (the standby waits out the lease)",
    )
    parser.add_argument("--lease-ttl", default="15s", help="[state] lease_ttl of both instances (default 15s)")
    parser.add_argument(
        "--sink-delay", type=float, default=0.2, help="seconds the sink takes to answer, like a chat tool (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the moments of the kills (default 1)")
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help=f"PostgreSQL server for the state store; a database is made and dropped (default {DEFAULT_PG_URL})",
    )
    parser.add_argument("--output", default="bench-failover.json", help="JSON report (default bench-failover.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")


# --- the sink ------------------------------------------------------------------------------------------
class Sink:
    """A webhook receiver that answers after `delay` seconds and records, per request, when it arrived, from
    which instance (the path), its delivery id and the firing alerts' types."""

    def __init__(self, delay: float) -> None:
        from sentinel.http import CHAT_PEER, App, Request, Response, Server

        self.delay = delay
        self.got: list[tuple[float, str, str, tuple[str, ...]]] = []
        self._lock = threading.Lock()
        app = App()

        def post(req: Request) -> Response:
            arrived = time.time()
            try:
                body = json.loads(req.body)
            except ValueError:
                body = {}
            types = tuple(
                str(a.get("labels", {}).get("type", "")) for a in body.get("alerts", []) if a.get("status") == "firing"
            )[:1]  # the alert the message tells comes first
            with self._lock:
                self.got.append((arrived, req.params["who"], req.headers.get("x-sentinel-delivery", ""), types))
            time.sleep(self.delay)
            return Response()

        app.route("POST", "/<who>", post)
        self.server = Server(app, "127.0.0.1:0", limits=CHAT_PEER)

    def first_firing(self, type_: str) -> float | None:
        with self._lock:
            return next((at for at, _, _, types in self.got if type_ in types), None)

    def deliveries(self) -> Counter[str]:
        with self._lock:
            return Counter(d for _, _, d, _ in self.got)


# --- the store -----------------------------------------------------------------------------------------


class StateDb:
    """A fresh PostgreSQL database for the shared state store, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        import psycopg

        self.admin = libpq_url(admin_url)
        self.name = f"sentinel_bench_failover_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.Error as exc:
            raise BenchError(f"cannot create the state store's database on {admin_url}: {exc}") from None
        parts = urllib.parse.urlsplit(admin_url)
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{self.name}", "", ""))
        self.libpq = libpq_url(self.url)

    def number(self, query: str) -> int:
        """The first column of the first row of `query` (a count, an epoch)."""
        import psycopg

        with psycopg.connect(self.libpq, autocommit=True, connect_timeout=5) as conn:
            rows = list(conn.execute(query).fetchall())
        return int(rows[0][0])

    def drop(self) -> None:
        import psycopg

        with contextlib.suppress(psycopg.Error), psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --- the instances -------------------------------------------------------------------------------------
@dataclass
class Instance:
    name: str
    config: Path
    url: str
    proc: Proc | None = None
    runs: int = 0

    def role(self) -> str | None:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/status", timeout=3) as reply:
                return str(json.load(reply)["leadership"]["role"])
        except (OSError, ValueError, KeyError):
            return None

    def ready_standby(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=3) as reply:
                return bool(reply.read().decode().startswith("ready: standby; the leader is"))
        except OSError:
            return False

    def log_time_after(self, needle: str, after: float) -> float | None:
        """Epoch seconds of the first log line containing `needle` written after `after`."""
        assert self.proc is not None
        for line in self.proc.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if needle in line:
                with contextlib.suppress(ValueError, KeyError):
                    at = datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
                    if at >= after:
                        return at
        return None


def wait(what: str, pred: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise BenchError(f"{what}: not within {timeout:.0f} s")


@dataclass
class Round:
    n: int
    leader: str
    in_flight: int
    takeover_s: float
    surge_to_message_s: float


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, procs: Processes, sink: Sink, db: StateDb) -> None:
        self.args, self.workdir, self.procs, self.sink, self.db = args, workdir, procs, sink, db
        self.crm = SqliteTable(workdir / "crm.db")
        self.next_id = 1
        self.types: list[str] = []
        self.rng = random.Random(args.seed)
        self.instances = [self._instance(n) for n in ("a", "b")]
        self.timeout = 120.0 + 4 * _seconds(args.lease_ttl)

    def _instance(self, name: str) -> Instance:
        from sentinel.demo import free_port

        port = free_port()
        cfg = quickstart_config(
            self.crm.url,
            self.crm.name,
            self.db.url,
            {"name": "sink", "kind": "webhook", "url": f"{self.sink.server.url}/{name}"},
            listen=f"127.0.0.1:{port}",
        )
        cfg["state"] = {"lease_ttl": self.args.lease_ttl}
        cfg["routes"] = [{"receivers": ["sink"], "group_by": ["rule", "type"]}]
        path = self.workdir / f"{name}.toml"
        path.write_text(to_toml(cfg), encoding="utf-8")
        return Instance(name, path, f"http://127.0.0.1:{port}")

    def start(self, inst: Instance) -> None:
        inst.runs += 1
        inst.proc = self.procs.start(
            f"{inst.name}{inst.runs}", [*sentinel_command(), "run", "--config", str(inst.config)], sentinel_env()
        )

    def streak(self, type_: str) -> float:
        """Five of a new type in a row, one COMMIT; returns when it committed."""
        now = datetime.now(UTC).replace(tzinfo=None) - timedelta(milliseconds=100)
        rows = [Row(self.next_id + i, now + timedelta(microseconds=100 * i), type_, "电话热线") for i in range(STREAK)]
        self.next_id += STREAK
        self.types.append(type_)
        return self.crm.insert(rows)

    def leader(self) -> Instance:
        found: list[Instance] = []

        def one() -> bool:
            found[:] = [i for i in self.instances if i.role() == "leader"]
            return len(found) == 1

        wait("one leader", one, self.timeout)
        return found[0]

    def in_flight(self) -> int:
        return self.db.number("SELECT count(*) FROM outbox WHERE status = 'sending'")

    def setup(self) -> None:
        a, b = self.instances
        self.start(a)
        assert a.proc is not None
        a.proc.wait_for_log("backfill finished", self.timeout)
        self.start(b)
        wait("the second instance standing by", b.ready_standby, self.timeout)
        self.streak("预热")  # one message through the whole path before measuring
        wait("the warm-up message", lambda: self.sink.first_firing("预热") is not None, self.timeout)

    def failover(self, n: int) -> Round:
        old = self.leader()
        new = next(i for i in self.instances if i is not old)
        assert old.proc is not None
        before = len(self.sink.got)
        for k in range(STREAKS_BEFORE):
            self.streak(f"故障{n}-{k}")
        # the failure comes while this round's messages are being sent (one in flight at a time per receiver)
        wait("this round's first message", lambda: len(self.sink.got) > before, self.timeout)
        time.sleep(self.rng.uniform(0.0, STREAKS_BEFORE * self.args.sink_delay))
        killed = time.time()
        old.proc.popen.send_signal(signal.SIGKILL if self.args.how == "kill" else signal.SIGSTOP)
        if self.args.how == "kill":
            old.proc.popen.wait(10)
        in_flight = self.in_flight()
        after = f"故障{n}-后"
        committed = self.streak(after)
        wait("the new leader's first poll", lambda: new.log_time_after(RESOLVED, killed) is not None, self.timeout)
        wait(
            "the message of the streak after the failover",
            lambda: self.sink.first_firing(after) is not None,
            self.timeout,
        )
        took = new.log_time_after(RESOLVED, killed)
        arrived = self.sink.first_firing(after)
        assert took is not None and arrived is not None
        if self.args.how == "kill":
            self.procs.stop(old.proc)
            self.start(old)
        else:
            old.proc.popen.send_signal(signal.SIGCONT)
        wait("the former leader standing by", old.ready_standby, self.timeout)
        return Round(n, old.name, in_flight, round(took - killed, 3), round(arrived - committed, 3))

    def finish(self) -> Finish:
        wait(
            "every message delivered",
            lambda: self.db.number("SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0,
            self.timeout,
        )
        time.sleep(1.0)
        lost = [t for t in self.types if self.sink.first_firing(t) is None]
        counts = self.sink.deliveries()
        return {
            "lost": lost,
            "duplicates": sum(n - 1 for n in counts.values()),
            "messages": len(counts),
            "epoch": self.db.number("SELECT epoch FROM leader_lease"),
        }


class Finish(TypedDict):
    """What the end of a run found: the types never told, and the sink's counts."""

    lost: list[str]
    duplicates: int
    messages: int
    epoch: int


def _seconds(duration: str) -> float:
    from sentinel.units import parse_duration

    return parse_duration(duration).total_seconds()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3), "min": round(min(values), 3)}


def run(args: argparse.Namespace) -> int:
    from sentinel.bench.common import machine, sigterm_unwinds

    if args.failovers < 1:
        print("error: --failovers must be at least 1", file=sys.stderr)
        return 2
    try:
        ttl = _seconds(args.lease_ttl)
    except ValueError as exc:
        print(f"error: --lease-ttl: {exc}", file=sys.stderr)
        return 2
    began = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-bench-failover-"))
    procs = Processes(workdir)
    sink = Sink(args.sink_delay)
    sink.server.start()
    host = machine()
    db: StateDb | None = None
    rounds: list[Round] = []
    try:
        with sigterm_unwinds():
            db = StateDb(args.pg_url)
            bench = Bench(args, workdir, procs, sink, db)
            bench.setup()
            for n in range(1, args.failovers + 1):
                r = bench.failover(n)
                rounds.append(r)
                print(
                    f"failover {n}: {r.leader} {'killed' if args.how == 'kill' else 'paused'}, takeover "
                    f"{r.takeover_s:.2f} s, surge to message {r.surge_to_message_s:.2f} s, in flight {r.in_flight}",
                    file=sys.stderr,
                )
            end = bench.finish()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: every process the benchmark started has been stopped", file=sys.stderr)
        return 130
    finally:
        for p in procs.procs:
            with contextlib.suppress(ProcessLookupError):
                p.popen.send_signal(signal.SIGCONT)
        procs.stop_all()
        sink.server.stop()
        if db is not None:
            db.drop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    from sentinel import __version__

    in_flight = sum(r.in_flight for r in rounds)
    takeover, surge = summary([r.takeover_s for r in rounds]), summary([r.surge_to_message_s for r in rounds])
    report = {
        "benchmark": "failover",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "sentinel_version": __version__,
        "duration_s": round(time.time() - began, 1),
        "machine": host,
        "workload": {
            "failovers": args.failovers,
            "how": args.how,
            "lease_ttl_s": ttl,
            "sink_delay_s": args.sink_delay,
            "seed": args.seed,
            "streaks_per_round": STREAKS_BEFORE + 1,
        },
        "takeover_s": takeover,
        "surge_to_message_s": surge,
        "lost": len(end["lost"]),
        "lost_types": end["lost"],
        "duplicates": end["duplicates"],
        "in_flight_at_failovers": in_flight,
        "messages": end["messages"],
        "final_epoch": end["epoch"],
        "rounds": [asdict(r) for r in rounds],
    }
    t, s = takeover, surge
    print(f"\nfailover ({args.how}, lease_ttl {ttl:g} s, {len(rounds)} failovers):")
    print(f"  takeover (failure -> first poll of the new leader): median {t['median']:.2f} s, max {t['max']:.2f} s")
    print(f"  surge to message across the failover:              median {s['median']:.2f} s, max {s['max']:.2f} s")
    print(
        f"  lost {report['lost']}; duplicate deliveries {report['duplicates']} (messages in flight at the "
        f"failovers: {in_flight}); {report['messages']} messages, final epoch {report['final_epoch']}"
    )
    Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwritten {args.output}")
    ok = not end["lost"] and end["duplicates"] <= in_flight and t["max"] <= ttl + 5
    return 0 if ok else 1
