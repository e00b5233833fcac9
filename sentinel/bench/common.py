"""What the benchmarks that run a real `sentinel run` share: the quick start's complaint table and
configuration, and starting, waiting for and stopping processes (each in its own process group).

Standard library only at the top: the CLI imports every benchmark module, `sentinel run` included.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, Protocol, TypeAlias, TypedDict

ConfigValue: TypeAlias = "str | int | float | bool | list[ConfigValue] | dict[str, ConfigValue]"
"""A value of a Sentinel configuration as `to_toml` writes it (and as an override's TOML reads)."""

SURGE_RULE = "type-surge"
STREAK_RULE = "same-type-streak"


class BenchError(Exception):
    """Something the benchmark needs did not work; the message says what, with the process log tail."""


DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def libpq_url(url: str) -> str:
    """`postgresql+psycopg://user@host:port/db` -> a libpq URL, refusing any host but this machine."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise BenchError(
            f"--pg-url must point at 127.0.0.1 (the benchmark talks to this machine only), not {parts.hostname!r}"
        )
    return urllib.parse.urlunsplit(("postgresql", *parts[1:]))


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    created_at: datetime  # naive UTC, as many CRMs keep it (the quick start's `timezone = "UTC"`)
    type: str
    channel: str


class Table(Protocol):
    url: str  # what Sentinel's `[source] url` says
    name: str

    def insert(self, rows: Sequence[Row]) -> float:
        """Insert and commit; return `time.time()` right after the COMMIT."""
        ...

    def close(self) -> None: ...


class SqliteTable:
    """The quick start's complaint table as a CRM keeps it: naive UTC text timestamps, indexed on
    (created_at, id). One connection, used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.name = "complaints"
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)  # a feeder thread may insert
        self._db.execute(
            "CREATE TABLE complaints (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, category TEXT, channel TEXT)"
        )
        self._db.execute("CREATE INDEX ix_complaints_created_at_id ON complaints (created_at, id)")
        self._db.commit()

    def insert(self, rows: Sequence[Row]) -> float:
        self._db.executemany(
            "INSERT INTO complaints VALUES (?, ?, ?, ?)",
            [(r.id, r.created_at.isoformat(sep=" ", timespec="microseconds"), r.type, r.channel) for r in rows],
        )
        self._db.commit()
        return time.time()

    def close(self) -> None:
        self._db.close()


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() else json.dumps(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are valid in TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(cfg: Mapping[str, ConfigValue]) -> str:
    """The few shapes a Sentinel config needs: scalars, tables of scalars/inline tables, arrays of tables."""
    head, tables, arrays = [], [], []
    for key, value in cfg.items():
        if isinstance(value, dict):
            tables.append(f"\n[{_toml_key(key)}]")
            tables += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in (v for v in value if isinstance(v, dict)):  # every one (the test above)
                arrays.append(f"\n[[{_toml_key(key)}]]")
                arrays += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in item.items()]
        elif isinstance(value, list) and not value:
            continue  # an empty list of tables is the default
        else:
            head.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(head + tables + arrays) + "\n"


def quickstart_config(
    source_url: str,
    table: str,
    state_url: str,
    receiver: dict[str, ConfigValue],
    *,
    listen: str = "127.0.0.1:0",
    surge_group_by: Sequence[str] | None = None,
) -> dict[str, ConfigValue]:
    """README "Quick start against your own database" with this machine's source, state store, port and
    receiver (for `to_toml`); `surge_group_by` sets the threshold rule's `group_by`."""
    surge: dict[str, ConfigValue] = {"name": SURGE_RULE, "kind": "threshold"}
    if surge_group_by is not None:
        surge["group_by"] = list(surge_group_by)
    return {
        "timezone": "Asia/Shanghai",
        "state_url": state_url,
        "listen": listen,
        "source": {
            "url": source_url,
            "table": table,
            "columns": {"id": "id", "created_at": "created_at", "type": "category", "channel": "channel"},
            "timezone": "UTC",
        },
        "rules": [surge, {"name": STREAK_RULE, "kind": "streak"}],
        "receivers": [receiver],
    }


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def tail(self, chars: int = 3000) -> str:
        self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_path.read_text(encoding="utf-8", errors="replace"):
                return
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited with status {self.popen.returncode}:\n{self.tail()}")
            time.sleep(0.1)
        raise BenchError(f"{self.name}: no {needle!r} in its log within {timeout:.0f} s:\n{self.tail()}")


class Processes:
    """Every process the benchmark starts, each in its own process group, so stopping one stops whatever it
    started too. `stop_all` is safe to call more than once (and from `finally`)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        log_path = self.workdir / f"{name}.log"
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError:
            log.close()
            raise
        proc = Proc(name, popen, log_path, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(10)
        with contextlib.suppress(ProcessLookupError):  # anything the process left behind in its group
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.log.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc)


def wait_http(url: str, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if proc is not None and proc.popen.poll() is not None:
            raise BenchError(f"{proc.name} exited with status {proc.popen.returncode}:\n{proc.tail()}")
        time.sleep(0.1)
    raise BenchError(f"{url} not ready within {timeout:.0f} s" + (f":\n{proc.tail()}" if proc else ""))


def package_root() -> str:
    """The folder holding the `sentinel` package this process runs (site-packages, or a checkout)."""
    import sentinel

    return str(Path(sentinel.__file__).resolve().parent.parent)


def python_child(code: str, *args: str) -> list[str]:
    """`python -P -c CODE ARGS`: a child that imports this process's `sentinel`. Plain `-c` puts the working
    directory first on `sys.path`, so a benchmark started from a folder that holds some `sentinel/` directory
    (the parent of a checkout named so) would import that instead; `-P` leaves it out, and `child_env` puts
    the running package's folder first, so a checkout run without installing works too."""
    return [sys.executable, "-P", "-c", code, *args]


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with the running package's folder first on PYTHONPATH."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), out.get("PYTHONPATH")) if p)
    return out


def run_child(what: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run a benchmark child to its end and return its stdout; a failure is a `BenchError` with the child's
    own error output, not a bare `CalledProcessError`."""
    out = subprocess.run(list(argv), capture_output=True, text=True, env=child_env(env), check=False)
    if out.returncode != 0:
        said = (out.stderr.strip() or out.stdout.strip())[-3000:] or "(no output)"
        raise BenchError(f"{what} exited with status {out.returncode}:\n{said}")
    return out.stdout


def sentinel_command() -> list[str]:
    """The installed `sentinel` script next to this interpreter, as the README runs it."""
    script = Path(sys.executable).with_name("sentinel")
    if script.exists():
        return [str(script)]
    return python_child("import sys; from sentinel.cli import main; sys.exit(main())")


def sentinel_env() -> dict[str, str]:
    """The environment without `SENTINEL_*` (those would override keys of the benchmark's config file), with
    the running package first on PYTHONPATH (see `python_child`)."""
    return child_env(
        {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    )


def start_sentinel(procs: Processes, name: str, config: Path, timeout: float) -> Proc:
    """`sentinel run --config FILE`, returned once its first start's backfill has finished."""
    proc = procs.start(name, [*sentinel_command(), "run", "--config", str(config)], sentinel_env())
    proc.wait_for_log("backfill finished", timeout)
    return proc


class Machine(TypedDict):
    """Where a benchmark ran, as its report says it."""

    nproc: int | None
    cpu_model: str
    python: str
    platform: str
    loadavg_at_start: list[float]


def machine() -> Machine:
    """This machine, taken before a run: the load average says how busy the shared machine was."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every `finally` runs and every process is stopped."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
