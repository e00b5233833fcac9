"""`sentinel run` loads only what the daemon uses: after the CLI has built and started the daemon and it
has polled, none of the backtest's, the benchmark's or the migration's libraries are imported, and
requests waits for the first message to send.

A correctness test of what is imported (in a fresh interpreter, through the real command line), not a
size or speed test: the figures are `sentinel bench footprint`'s job.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sentinel.bench import footprint
from sentinel.config import load_config
from sentinel.store import migrate

NOT_FOR_THE_DAEMON = ("pyarrow", "matplotlib", "rich", "jinja2", "alembic", "mako", "pygments", "requests")
HARNESS = ("sentinel.bench.", "sentinel.demo", "sentinel.simulate", "sentinel.sink")

RUN = r"""
import json, sys, time
from sentinel import cli
from sentinel.daemon import Daemon

def run_briefly(self):
    self.start()
    deadline = time.monotonic() + 60
    while not (self.state is not None and self.state.backfill_done) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert self.state is not None and self.state.backfill_done, "the daemon never finished its first poll"
    self.cycle()
    loaded = sorted(sys.modules)
    self.stop()
    print(json.dumps(loaded))
    return 0

Daemon.run_forever = run_briefly
sys.exit(cli.main(["run", "--config", sys.argv[1], "--log-level", "WARNING"]))
"""


def run_daemon_once(config: Path) -> set[str]:
    """Every module name loaded, and the top-level package names."""
    out = subprocess.run([sys.executable, "-c", RUN, str(config)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    names = set(json.loads(out.stdout.strip().splitlines()[-1]))
    return names | {name.split(".")[0] for name in names}


def quickstart(tmp_path: Path) -> Path:
    crm = footprint._Crm(tmp_path / "crm.db")
    crm.history(footprint.IDLE, datetime.now(UTC), random.Random(1))
    config = tmp_path / "sentinel.toml"
    config.write_text(footprint.quickstart_config(tmp_path, crm.path, "http://127.0.0.1:9/cgi-bin/webhook/send?key=k",
                                                  0), encoding="utf-8")
    return config


def test_run_loads_only_what_the_daemon_uses(tmp_path: Path) -> None:
    config = quickstart(tmp_path)
    first = run_daemon_once(config)  # a new store: the migration runs, and its libraries are let go
    assert {"numpy", "sqlalchemy", "sentinel"} <= first
    assert sorted(first & set(NOT_FOR_THE_DAEMON)) == []
    assert sorted(m for m in first if m.startswith(HARNESS)) == []
    again = run_daemon_once(config)  # a current store: no migration
    assert sorted(again & set(NOT_FOR_THE_DAEMON)) == []


def test_head_revision_without_alembic_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert migrate.head_revision() == ScriptDirectory.from_config(migrate._config()).get_current_head()


def test_the_benchmarks_configuration_is_the_quick_start(tmp_path: Path) -> None:
    cfg = load_config(quickstart(tmp_path))
    assert [r.kind for r in cfg.rules] == ["threshold", "streak"]
    assert [r.kind for r in cfg.receivers] == ["wecom"]
