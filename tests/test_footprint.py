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
from sentinel.store import migrate, open_store

NOT_FOR_THE_DAEMON = ("pyarrow", "matplotlib", "rich", "jinja2", "alembic", "mako", "pygments", "requests")
HARNESS = ("sentinel.bench.", "sentinel.demo", "sentinel.simulate", "sentinel.sink")

RUN = r"""
import json, sys, time
imported = set()
sys.addaudithook(lambda event, args: imported.add(args[0]) if event == "import" else None)
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
    print(json.dumps({"loaded": loaded, "ever": sorted(imported)}))
    return 0

Daemon.run_forever = run_briefly
sys.exit(cli.main(["run", "--config", sys.argv[1], "--log-level", "WARNING"]))
"""


def run_daemon_once(config: Path) -> tuple[set[str], set[str]]:
    """The modules loaded once the daemon has polled, and those ever imported since the interpreter began
    (both with their top-level package names)."""
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(config)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    loaded, ever = set(found["loaded"]), set(found["ever"])
    return loaded | {name.split(".")[0] for name in loaded}, ever | {name.split(".")[0] for name in ever}


def quickstart(tmp_path: Path) -> Path:
    crm = footprint._Crm(tmp_path / "crm.db")
    crm.history(footprint.IDLE, datetime.now(UTC), random.Random(1))
    config = tmp_path / "sentinel.toml"
    config.write_text(
        footprint.quickstart_config(tmp_path, crm.path, "http://127.0.0.1:9/cgi-bin/webhook/send?key=k", 0),
        encoding="utf-8",
    )
    return config


def test_run_loads_only_what_the_daemon_uses(tmp_path: Path) -> None:
    config = quickstart(tmp_path)
    first, ever = run_daemon_once(config)  # a new store: built from the schema, Alembic never imported
    assert {"numpy", "sqlalchemy", "sentinel"} <= first
    assert sorted(first & set(NOT_FOR_THE_DAEMON)) == []
    assert sorted(m for m in first if m.startswith(HARNESS)) == []
    assert sorted(ever & {"alembic", "mako"}) == []
    again, ever = run_daemon_once(config)  # a current store: no migration
    assert sorted(again & set(NOT_FOR_THE_DAEMON)) == []
    assert sorted(ever & {"alembic", "mako"}) == []


def test_a_migration_lets_its_libraries_go(tmp_path: Path) -> None:
    """A store one revision behind is migrated by Alembic at start; its modules are released afterwards."""
    config = quickstart(tmp_path)
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = migrate._config()
    newest = ScriptDirectory.from_config(cfg).get_revision(migrate.head_revision())
    assert newest is not None and isinstance(newest.down_revision, str)
    store = open_store(f"sqlite:///{tmp_path}/state.db", upgrade=False)
    try:
        with store.engine.begin() as conn:  # as the release before the newest migration left it
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, newest.down_revision)
        assert migrate.current_revision(store.engine) == newest.down_revision
    finally:
        store.close()
    loaded, ever = run_daemon_once(config)
    assert "alembic" in ever
    assert sorted(loaded & set(NOT_FOR_THE_DAEMON)) == []
    store = open_store(f"sqlite:///{tmp_path}/state.db", upgrade=False)
    try:
        assert migrate.current_revision(store.engine) == migrate.head_revision()
    finally:
        store.close()


def test_head_revision_without_alembic_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    assert migrate.head_revision() == ScriptDirectory.from_config(migrate._config()).get_current_head()


def test_the_benchmarks_configuration_is_the_quick_start(tmp_path: Path) -> None:
    cfg = load_config(quickstart(tmp_path))
    assert [r.kind for r in cfg.rules] == ["threshold", "streak"]
    assert [r.kind for r in cfg.receivers] == ["wecom"]
