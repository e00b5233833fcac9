"""`sentinel bench startup`: how long the commands a person types take to answer, from process start to exit.

`--help`, `status`, `ack` and `silence list` run as the installed `sentinel` script would, against a
configuration whose `listen` nobody serves (so the figure is the start-up, the configuration and a refused
connection, not a daemon's work). Each is run `--runs` times; the median and the minimum are reported (a
loaded machine only ever adds time). Also the import time of `sentinel.config`, the bulk of what the
configuration-reading commands load (`python -X importtime`).

Standard library only at the top: the CLI imports this module to build its options.
"""

from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--output", default="bench-results-startup.json", metavar="FILE",
                        help="where to write the figures as JSON (default bench-results-startup.json)")


def _closed_port() -> int:
    """A port nothing listens on (bound, then released), so the commands' API call is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed(argv: list[str], env: dict[str, str], cwd: str, expect: str) -> float:
    """Seconds from start to exit; the answer must be the expected one (`expect` in its output), or a
    command that failed early on, say, its configuration would pass for a fast one."""
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=120)
    took = time.perf_counter() - start
    if expect not in out.stdout + out.stderr:
        raise BenchError(f"{' '.join(argv[-4:])}: expected {expect!r}, got (status {out.returncode}):\n"
                         f"{(out.stderr or out.stdout)[-2000:]}")
    return took


def config_import_ms(env: dict[str, str], cwd: str) -> float:
    """Cumulative `-X importtime` of `sentinel.config` (ms), the import every command but `--help` needs."""
    child = python_child("import sentinel.config")
    out = subprocess.run([child[0], "-X", "importtime", *child[1:]], capture_output=True, text=True, env=env,
                         cwd=cwd, check=False, timeout=120)
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "sentinel.config":
            return int(parts[1]) / 1000
    return float("nan")


def measure_startup(runs: int) -> dict[str, dict[str, float]]:
    """{command: {median_s, min_s}} for each command a person types, and the config import."""
    env = sentinel_env()
    env.pop("T_BENCH_UNSET_ROBOT_URL", None)  # a robot's secret the person on call does not hold
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-startup-") as tmp:
        cfg = Path(tmp) / "sentinel.toml"
        cfg.write_text(CONFIG.format(port=_closed_port()), encoding="utf-8")
        refused = "cannot reach the daemon"
        commands = {"--help": (["--help"], "usage: sentinel"), "status": (["status", "--config", str(cfg)], refused),
                    "ack": (["ack", "x", "--config", str(cfg)], refused),
                    "silence list": (["silence", "list", "--config", str(cfg)], refused)}
        figures: dict[str, dict[str, float]] = {}
        for name, (args, expect) in commands.items():
            times = [_timed([*sentinel_command(), *args], env, tmp, expect) for _ in range(max(1, runs))]
            figures[name] = {"median_s": statistics.median(times), "min_s": min(times)}
        figures["import sentinel.config"] = {"ms": config_import_ms(env, tmp)}
    return figures


def run(args: argparse.Namespace) -> int:
    figures = measure_startup(args.runs)
    print(f"CLI start-up, {args.runs} runs each (goal: at most {GOAL_S} s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU")
    for name, f in figures.items():
        if "ms" in f:
            print(f"  {name:<22} {f['ms']:8.0f} ms (python -X importtime, cumulative)")
        else:
            print(f"  sentinel {name:<13} median {f['median_s']:6.3f} s, min {f['min_s']:6.3f} s")
    Path(args.output).write_text(json.dumps({"bench": "startup", "runs": args.runs, "figures": figures},
                                            indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.output}")
    return 0
