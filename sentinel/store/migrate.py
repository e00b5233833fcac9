"""Alembic migrations, applied programmatically at start and by `sentinel db upgrade`.

Alembic (with Mako and Pygments behind it) is imported only when a migration actually runs: every
start asks the store for its revision with one plain query and compares it with the newest revision
file, so a daemon whose store is current never loads it. An empty store (a first start) is built from
`schema.metadata` and stamped with the head revision, without Alembic either. After a migration of an
older store the modules are released again (`_release_alembic`), because a daemon runs for months and
should not carry the migration machinery the whole time (some of it stays referenced; see
`build_from_scratch`).
"""

from __future__ import annotations

import gc
import re
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Engine, MetaData, PrimaryKeyConstraint, String, Table, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"
PG_MIGRATION_KEY = 0x53454E54494E4D  # "SENTINM": instances sharing a PostgreSQL store migrate one at a time
_RELEASED = ("alembic", "mako", "pygments")
_PYGMENTS_PLUGIN = "mako.ext.pygmentplugin"
_REVISION = re.compile(r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(None|[\"']([^\"']+)[\"'])", re.MULTILINE)


def _config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@cache
def head_revision() -> str:
    """The newest revision, read from the revision files' `revision` / `down_revision` lines.

    The same answer as Alembic's `ScriptDirectory.get_current_head()` (a test holds them equal) without
    importing Alembic; the history is linear, so exactly one revision is nobody's parent.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS / "versions").glob("*.py")):
        found = {m.group(1): m.group(3) for m in _REVISION.finditer(path.read_text(encoding="utf-8"))}
        if found.get("revision"):
            revisions.add(found["revision"])
        if found.get("down_revision"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"migrations: expected one head revision, found {sorted(heads) or 'none'}")
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The store's revision (None for an empty store), from Alembic's version table."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        row = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
        return None if row is None else str(row[0])


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the store to the newest schema; returns (before, after) revisions."""
    before = current_revision(engine)
    head = head_revision()
    if before == head:
        return before, head
    if before is None and build_from_scratch(engine, head):
        return before, head
    run_migrations(engine)
    return before, head


def run_migrations(engine: Engine) -> None:
    """Alembic's `upgrade head` on the store, its modules released afterwards."""
    loaded = set(sys.modules)
    # Mako highlights its HTML error pages with Pygments when it can, loading ~600 lexer rules we never
    # use; an absent plugin makes it take its documented plain fallback.
    blocked = _PYGMENTS_PLUGIN not in sys.modules
    if blocked:
        sys.modules[_PYGMENTS_PLUGIN] = None  # type: ignore[assignment]
    try:
        from alembic import command

        cfg = _config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        if blocked and sys.modules.get(_PYGMENTS_PLUGIN, 0) is None:
            del sys.modules[_PYGMENTS_PLUGIN]
        _release_alembic(loaded)


def _version_table() -> Table:
    """Alembic's version table, as `alembic.ddl.impl.DefaultImpl.version_table_impl` defines it."""
    table = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), nullable=False))
    table.append_constraint(PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))
    return table


def build_from_scratch(engine: Engine, head: str) -> bool:
    """A store without any of Sentinel's tables gets the newest schema straight from `schema.metadata`, then
    is stamped with the head revision, in one transaction: Alembic's recipe for building a database from
    scratch. It is the schema the migrations build (tests/store compares the two, table by table), made
    without importing Alembic, whose modules a daemon would otherwise carry for months after its first start
    (about 5 MB: they cannot all be let go, SQLAlchemy's compiler registry and `typing`'s overload registry
    keep references to them). False, touching nothing, when one of the tables is already there: then only
    the migrations know what to do."""
    from sentinel.store.schema import metadata

    version = _version_table()
    with engine.begin() as conn:
        present = set(inspect(conn).get_table_names())
        if present & {*metadata.tables, VERSION_TABLE}:
            return False
        metadata.create_all(conn)
        version.create(conn)
        conn.execute(version.insert().values(version_num=head))
    return True


def _release_alembic(loaded_before: set[str]) -> None:
    """Forget the Alembic, Mako and Pygments modules the migration loaded (not ones loaded before it, which
    someone else holds), so their code objects and tables can be freed."""
    for name in [m for m in sys.modules if m not in loaded_before and m.split(".", 1)[0] in _RELEASED]:
        del sys.modules[name]
    gc.collect()
