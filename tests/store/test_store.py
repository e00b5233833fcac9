"""State store: migrations from empty, a first start's schema built without them, state surviving a restart,
one daemon per store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, inspect

from sentinel.days import Calendar
from sentinel.model import US, Batch, Vocab
from sentinel.store import StoreLocked, migrate, open_store
from sentinel.store import records as repo
from sentinel.store.migrate import current_revision, head_revision
from sentinel.store.schema import metadata


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("pg_url"))


def test_migrations_from_empty(state_url: str) -> None:
    store = open_store(state_url)
    try:
        assert current_revision(store.engine) == head_revision()
        tables = set(inspect(store.engine).get_table_names())
        assert {"source_state", "seen_ids", "hourly_buckets", "alembic_version"} <= tables
        before, after = store.upgrade()  # idempotent
        assert before == after == head_revision()
    finally:
        store.close()


def _entry(key: str, created_us: int, timed: bool = True) -> repo.LedgerEntry:
    return repo.LedgerEntry(key, f"d{key}", created_us, timed, created_us)


def test_state_survives_restart(state_url: str) -> None:
    cal = Calendar("Asia/Shanghai")
    vocab = Vocab()
    t0 = 1_751_900_000 * US
    batch = Batch(
        np.array([1, 2, 3]),
        np.array([t0, t0 + 60 * US, t0 + 7200 * US], dtype=np.int64),
        vocab.encode(["物流配送延误", "物流配送延误", "服务态度"]),
        vocab.encode(["电话热线"] * 3),
    )
    store = open_store(state_url)
    with store.transaction() as conn:
        repo.save_source_state(conn, repo.SourceState(t0 + 7200 * US, t0, t0 - 86400 * US, True, t0, t0 - 1), t0)
        repo.add_seen(
            conn,
            [
                _entry("1", t0),
                _entry("2", t0 + 60 * US),
                _entry("3", t0 + 7200 * US),
                _entry("bad", t0 + 120 * US, timed=False),
            ],
        )
        repo.add_buckets(conn, batch, cal, vocab)
        repo.add_buckets(conn, batch.take([0]), cal, vocab)  # upsert adds to the same bucket
    store.close()

    store = open_store(state_url)
    try:
        with store.reading() as conn:
            state = repo.load_source_state(conn)
            assert state is not None and state.watermark_us == t0 + 7200 * US and state.backfill_done
            assert state.ledger_start_us == t0 - 1
            assert repo.lookup_seen(conn, ["1", "3", "bad", "4"]) == {"1": "d1", "3": "d3", "bad": "dbad"}
            # untimed entries are in no range: only rows with a time are compared with the source's counts
            assert repo.seen_counts(conn, [t0, t0 + 61 * US, t0 + 7200 * US, t0 + 7201 * US]) == [2, 0, 1]
            buckets = sorted(repo.read_buckets(conn, 0))
        hour0 = cal.hour_start(t0)
        assert (hour0, "物流配送延误", "电话热线", 3) in buckets
        assert (cal.hour_start(t0 + 7200 * US), "服务态度", "电话热线", 1) in buckets
        with store.transaction() as conn:
            # only entries both created and first read before the cut are forgotten
            assert repo.prune_seen(conn, t0 + 61 * US) == 2
        with store.reading() as conn:
            assert set(repo.lookup_seen(conn, ["1", "2", "3", "bad"])) == {"3", "bad"}
    finally:
        store.close()


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        repo.add_seen(conn, [_entry("x", 1)])
        raise RuntimeError("crash in the middle of a cycle")
    with store.reading() as conn:
        assert repo.lookup_seen(conn, ["x"]) == {}
    store.close()


HOLDER = textwrap.dedent("""
    import sys, time
    from sentinel.store import open_store
    s = open_store(sys.argv[1], lock=True)
    print("locked", flush=True)
    time.sleep(600)
""")


def _hold_lock(url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_daemon_refused_then_kill9_does_not_block(state_url: str) -> None:
    holder = _hold_lock(state_url)
    try:
        with pytest.raises(StoreLocked) as err:
            open_store(state_url, lock=True)
        assert "another sentinel" in str(err.value)
        if state_url.startswith("sqlite"):
            assert f"pid {holder.pid}" in str(err.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    store = open_store(state_url, lock=True)  # the kernel released the dead process's lock
    store.close()


def test_unsupported_state_url() -> None:
    from sentinel.store import StoreError

    with pytest.raises(StoreError, match="not supported"):
        open_store("mysql+pymysql://root@127.0.0.1/test")
    with pytest.raises(StoreError, match="file path"):
        open_store("sqlite://")


def test_migrations_match_the_schema_the_code_uses(state_url: str) -> None:
    """Alembic's autogenerate finds nothing to add: the migrations build exactly `schema.metadata`."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    store = open_store(state_url, upgrade=False)
    try:
        migrate.run_migrations(store.engine)
        assert current_revision(store.engine) == head_revision()
        with store.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, metadata)
        assert diff == []
    finally:
        store.close()


def test_migration_0004_keeps_the_seen_ids_and_says_where_the_ledger_starts(state_url: str) -> None:
    """A store at 0003 with a watermark and seen ids: after 0004 the ids are the ledger (timed, first read at
    their created time, digest unknown) and the ledger is complete from just before the oldest of them."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from sentinel.store import migrate

    engine = create_engine(state_url)
    cfg = migrate._config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    t0 = 1_751_900_000 * US
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO source_state (key, watermark_us, coverage_start_us, backfill_start_us, "
                "backfill_done, started_us, updated_us) VALUES ('source', :w, :c, :c, :t, :c, :c)"
            ),
            {"w": t0 + 300 * US, "c": t0 - 86400 * US, "t": True},
        )
        conn.execute(
            text("INSERT INTO seen_ids (record_id, created_us) VALUES (:r, :c)"),
            [{"r": "41", "c": t0 + 10 * US}, {"r": "42", "c": t0 + 20 * US}],
        )
    engine.dispose()
    store = open_store(state_url)
    try:
        with store.reading() as conn:
            state = repo.load_source_state(conn)
            assert state is not None and state.ledger_start_us == t0 + 10 * US - 1
            assert repo.lookup_seen(conn, ["41", "42"]) == {"41": None, "42": None}
            assert repo.seen_counts(conn, [t0, t0 + 15 * US, t0 + 30 * US]) == [1, 1]
        with store.transaction() as conn:  # first read at their created time: pruned with them
            assert repo.prune_seen(conn, t0 + 15 * US) == 1
    finally:
        store.close()


def schema_of(engine: Engine) -> dict[str, dict[str, object]]:
    """Everything the database says about each table, as SQLAlchemy reflects it (columns in order)."""
    insp = inspect(engine)
    out: dict[str, dict[str, object]] = {}
    for table in sorted(insp.get_table_names()):
        out[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                for c in insp.get_columns(table)
            ],
            "primary key": insp.get_pk_constraint(table),
            "foreign keys": sorted(insp.get_foreign_keys(table), key=repr),
            "indexes": sorted(insp.get_indexes(table), key=repr),
            "unique": sorted(insp.get_unique_constraints(table), key=repr),
            "checks": sorted(insp.get_check_constraints(table), key=repr),
        }
    return out


def test_a_first_start_builds_the_schema_the_migrations_build(state_url: str) -> None:
    """An empty store is built from `schema.metadata` and stamped (no Alembic at a first start): table for
    table, column for column, the same store the migrations make, at the same revision."""
    store = open_store(state_url, upgrade=False)
    try:
        migrate.run_migrations(store.engine)
        migrated = schema_of(store.engine)
        with store.engine.begin() as conn:
            metadata.drop_all(conn)
            migrate._version_table().drop(conn)
        assert inspect(store.engine).get_table_names() == []
        before, after = store.upgrade()
        assert (before, after) == (None, head_revision())
        assert current_revision(store.engine) == head_revision()
        assert schema_of(store.engine) == migrated
        assert set(migrated) == {*metadata.tables, "alembic_version"}
        assert store.upgrade() == (head_revision(), head_revision())  # current: nothing to do
    finally:
        store.close()


def test_a_store_with_some_tables_is_left_to_the_migrations(state_url: str) -> None:
    """Only a store with none of the tables is built from scratch: one that has some (a half-built or foreign
    store) is not touched by it, and the migrations decide (here: they refuse, the table exists)."""
    store = open_store(state_url, upgrade=False)
    try:
        with store.engine.begin() as conn:
            metadata.tables["source_state"].create(conn)
        assert migrate.build_from_scratch(store.engine, head_revision()) is False
        assert inspect(store.engine).get_table_names() == ["source_state"]
        with pytest.raises(Exception, match="source_state"):
            store.upgrade()
        assert current_revision(store.engine) is None
    finally:
        store.close()
