"""`sentinel bench startup`: how long the commands a person types take to answer, from process start to exit.

`--help`, `status`, `ack` and `silence list` run as the installed `sentinel` script would, against a
configuration whose `listen` nobody serves (so the figure is the start-up, the configuration and a refused
connection, not a daemon's work). Each is run `--runs` times; the median and the minimum wall time are
reported (a loaded machine only ever adds time), and the median CPU time (user + system) the command
itself used, which other engineers' jobs on a shared machine disturb far less. `--instructions` also
counts each command's instructions once under valgrind's callgrind (when valgrind is installed): the
figure that does not move with the machine's load at all. Also the import times (`python -X importtime`)
of `sentinel.client_config`, what `status`, `ack` and `silence` read their configuration with, and of
`sentinel.config`, the full configuration the other commands need.

Standard library only at the top: the CLI imports this module to build its options.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sentinel.bench.common import BenchError, python_child, sentinel_command, sentinel_env

GOAL_S = 0.2

CONFIG = """
listen = "127.0.0.1:{port}"
[[rules]]
name = "type-surge"
kind = "threshold"
[[receivers]]
name = "cs-team"
kind = "wecom"
url = "${{T_BENCH_UNSET_ROBOT_URL}}"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=7, help="runs per command (default 7)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each command's instructions under valgrind (slow; needs valgrind)",
    )
    parser.add_argument(
        "--output",
        default="bench-results-startup.json",
        metavar="FILE",
        help="where to write the figures as JSON (default bench-results-startup.json)",
    )


def _closed_port() -> int:
    """A port nothing listens on (bound, then released), so the commands' API call is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _check(argv: list[str], out: subprocess.CompletedProcess[str], expect: str) -> None:
    """The answer must be the expected one (`expect` in its output), or a command that failed early on,
    say, its configuration would pass for a fast one."""
    if expect not in out.stdout + out.stderr:
        raise BenchError(
            f"{' '.join(argv[-4:])}: expected {expect!r}, got (status {out.returncode}):\n"
            f"{(out.stderr or out.stdout)[-2000:]}"
        )


def _timed(argv: list[str], env: dict[str, str], cwd: str, expect: str) -> tuple[float, float]:
    """(wall seconds from start to exit, CPU seconds the command used)."""
    cpu = _children_cpu_s()
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=120)
    took = time.perf_counter() - start
    _check(argv, out, expect)
    return took, _children_cpu_s() - cpu


def instructions(argv: list[str], env: dict[str, str], cwd: str, expect: str) -> int | None:
    """The instructions `argv` executes, counted by valgrind's callgrind (about 30 times slower than a
    plain run); None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    full = [valgrind, "--tool=callgrind", f"--callgrind-out-file={os.devnull}", *argv]
    out = subprocess.run(full, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=600)
    _check(argv, out, expect)
    found = re.search(r"^==\d+== Collected : (\d+)$", out.stderr, re.MULTILINE)
    if found is None:
        raise BenchError(f"callgrind reported no instruction count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def import_ms(module: str, env: dict[str, str], cwd: str) -> float:
    """Cumulative `-X importtime` of `module` (ms)."""
    child = python_child(f"import {module}")
    out = subprocess.run(
        [child[0], "-X", "importtime", *child[1:]],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=120,
    )
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    return float("nan")


IMPORTS = ("sentinel.client_config", "sentinel.config")


def measure_startup(runs: int, count_instructions: bool = False) -> dict[str, dict[str, float]]:
    """{command: {median_s, min_s, cpu_median_s[, instructions]}} for each command a person types, and
    {"import MODULE": {ms}} for the configuration readers."""
    env = sentinel_env()
    env.pop("T_BENCH_UNSET_ROBOT_URL", None)  # a robot's secret the person on call does not hold
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-startup-") as tmp:
        cfg = Path(tmp) / "sentinel.toml"
        cfg.write_text(CONFIG.format(port=_closed_port()), encoding="utf-8")
        refused = "cannot reach the daemon"
        commands = {
            "--help": (["--help"], "usage: sentinel"),
            "status": (["status", "--config", str(cfg)], refused),
            "ack": (["ack", "x", "--config", str(cfg)], refused),
            "silence list": (["silence", "list", "--config", str(cfg)], refused),
        }
        figures: dict[str, dict[str, float]] = {}
        for name, (args, expect) in commands.items():
            argv = [*sentinel_command(), *args]
            timed = [_timed(argv, env, tmp, expect) for _ in range(max(1, runs))]
            walls = [wall for wall, _ in timed]
            figures[name] = {
                "median_s": statistics.median(walls),
                "min_s": min(walls),
                "cpu_median_s": statistics.median(cpu for _, cpu in timed),
            }
            if count_instructions and (n := instructions(argv, env, tmp, expect)) is not None:
                figures[name]["instructions"] = n
        for module in IMPORTS:
            figures[f"import {module}"] = {"ms": import_ms(module, env, tmp)}
    return figures


def run(args: argparse.Namespace) -> int:
    load = os.getloadavg()[0]
    figures = measure_startup(args.runs, args.instructions)
    if args.instructions and shutil.which("valgrind") is None:
        print("note: --instructions needs valgrind, which is not installed")
    print(
        f"CLI start-up, {args.runs} runs each (goal: at most {GOAL_S} s), load average "
        f"{load:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPU"
    )
    for name, f in figures.items():
        if "ms" in f:
            print(f"  {name:<29} {f['ms']:6.0f} ms (python -X importtime, cumulative)")
        else:
            counted = f", {f['instructions'] / 1e6:,.0f} M instructions" if "instructions" in f else ""
            print(
                f"  sentinel {name:<13} median {f['median_s']:6.3f} s, min {f['min_s']:6.3f} s, "
                f"CPU {f['cpu_median_s']:6.3f} s{counted}"
            )
    Path(args.output).write_text(
        json.dumps({"bench": "startup", "runs": args.runs, "figures": figures}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"written: {args.output}")
    return 0
