"""The statements an SQL source runs: range reads on `(created_at, id)` for a table or the user's SELECT.

Guarantees:
- Every read is one range query that starts at the watermark or at the page cursor, ordered by
  `(created_at, id)`, so a poll costs what the new rows cost, not what the table holds (given the index
  `TableShape.index_statement` proposes). The cursor condition is the one each dialect turns into an
  index range: a row comparison on PostgreSQL, two ranges on MySQL/MariaDB, a range from the
  cursor's time with its ties filtered on the others (SQLite).
- Table mode reflects the table and quotes the stored names exactly; a configured table or column is
  found case-insensitively when that is unambiguous, and a missing one is named with the close matches.
- Query mode runs the user's SELECT with `:since_ts`, `:since_id` and `:limit` and learns its columns
  from a `LIMIT 0` run; its text is never edited except to cast a bytes parameter (bounded reads and
  counts wrap it as a derived table).
- On SQLite, bytes parameters are compared as TEXT, so a cursor read back as bytes keeps its place in
  the text order.
- Both shapes return values raw, in the positions `positions` names.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import quoted_name

from sentinel.config import SourceConfig
from sentinel.sources import SourceUnavailable
from sentinel.sources.sql_time import BoundTime, Category, category_of_code, category_of_type

SAMPLE_ROWS = 50
LOW_NUMBER = -(2**62)
"""Below every epoch number; on SQLite also below every text value, so it finds the first rows whatever
their storage class."""
ALL_ROWS = 1_000_000_000_000
"""The `:limit` given to a query-mode SELECT wrapped as a derived table: the outer query bounds it."""
_PARAM = re.compile(r"(?<![:\w]):(since_ts|since_id)\b")

DbRow = Row[*tuple[object, ...]]
"""One fetched row, values as the driver returned them."""
Positions = tuple[int, int, int, int, int]
"""Where (id, created_at, type, channel, customer) are in a fetched row; customer -1 when not configured."""
_CastKey = tuple[bool, bool]
"""Whether (since_ts, since_id) are bytes, so must be cast to TEXT (SQLite)."""


def close_names_hint(wanted: str, names: Sequence[str], what: str = "") -> str:
    """`; did you mean 'complaints'?` for a mistyped name, listing the close ones (case ignored), or ""."""
    folded = {n.casefold(): n for n in names}
    close = [folded[c] for c in difflib.get_close_matches(wanted.casefold(), list(folded), n=3, cutoff=0.6)]
    if not close:
        return ""
    return f"; did you mean {' or '.join(map(repr, close))}{' ' + what if what else ''}?"


def _pick(wanted: str, names: Sequence[str]) -> str | None:
    """The stored name for a configured one: exact, else the only case-insensitive match (unquoted
    identifiers fold to lower case in PostgreSQL, while people write them as they think of them)."""
    if wanted in names:
        return wanted
    folded = [n for n in names if n.casefold() == wanted.casefold()]
    return folded[0] if len(folded) == 1 else None


def _bind(name: str, value: object) -> sa.ColumnElement[object]:
    param: sa.ColumnElement[object] = sa.bindparam(name)
    # SQLite bytes bind as BLOB, which sorts after every TEXT; the cast keeps them in the text order.
    return sa.cast(param, sa.Text) if isinstance(value, bytes) else param


def _cast_key(ts: object, rid: object) -> _CastKey:
    return isinstance(ts, bytes), isinstance(rid, bytes)


class TableShape:
    """Statements for table mode, built from reflection with exactly quoted stored names."""

    def __init__(self, conn: Connection, cfg: SourceConfig, where: str) -> None:
        assert cfg.table is not None
        insp = sa.inspect(conn)
        schema_name, _, name = cfg.table.rpartition(".")
        schema = schema_name or None
        views = insp.get_view_names(schema=schema)
        actual = _pick(name, insp.get_table_names(schema=schema) + views)
        if actual is None:
            raise SourceUnavailable(
                f"{where}: table {cfg.table!r} does not exist"
                f"{close_names_hint(name, insp.get_table_names(schema=schema) + views)}"
            )
        self.name, self.schema, self.is_view = actual, schema, actual in views
        columns = {c["name"]: c for c in insp.get_columns(actual, schema=schema)}
        wanted = [cfg.columns.id, cfg.columns.created_at, cfg.columns.type, cfg.columns.channel]
        if cfg.columns.customer is not None:
            wanted.append(cfg.columns.customer)
        found = [_pick(w, list(columns)) for w in wanted]
        missing = [w for w, f in zip(wanted, found, strict=True) if f is None]
        if missing:
            hints = "".join(close_names_hint(m, list(columns), f"for {m!r}") for m in missing)
            raise SourceUnavailable(
                f"{where}: table {actual!r} has no column {', '.join(map(repr, missing))}"
                f"{hints} (it has {', '.join(columns)})"
            )
        names = [f for f in found if f is not None]
        dialect = conn.dialect.name
        self.id_name, self.ts_name = names[0], names[1]
        self.ts_category: Category | None = category_of_type(dialect, columns[names[1]]["type"])
        self.id_category: Category | None = category_of_type(dialect, columns[names[0]]["type"])
        self.has_time_index = self.is_view or self._time_index(insp)
        table = sa.table(
            quoted_name(actual, True),
            *(sa.column(quoted_name(n, True)) for n in names),
            schema=quoted_name(schema, True) if schema else None,
        )
        cols = list(table.c)
        self._id, self._ts = cols[0], cols[1]
        self._dialect = dialect
        self._base = sa.select(*cols).order_by(self._ts, self._id).limit(sa.bindparam("limit"))
        self._cols, self._table = cols, table
        self.first: sa.Select[*tuple[object, ...]] = self._base.where(self._ts > sa.bindparam("since_ts"))
        self._after: dict[_CastKey, sa.Select[*tuple[object, ...]]] = {}
        self._until: dict[_CastKey | None, sa.Select[*tuple[object, ...]]] = {}
        self.positions: Positions = (0, 1, 2, 3, 4 if len(cols) > 4 else -1)

    def _time_index(self, insp: sa.Inspector) -> bool:
        indexes = insp.get_indexes(self.name, schema=self.schema)
        leading: list[Sequence[str | None]] = [ix["column_names"] for ix in indexes]
        leading.append(insp.get_pk_constraint(self.name, schema=self.schema).get("constrained_columns") or [])
        return any(cols and cols[0] == self.ts_name for cols in leading)

    def after(self, ts: object, rid: object) -> sa.Select[*tuple[object, ...]]:
        key = _cast_key(ts, rid)
        stmt = self._after.get(key)
        if stmt is None:
            t, i, c_ts, c_id = _bind("since_ts", ts), _bind("since_id", rid), self._ts, self._id
            if self._dialect == "postgresql":  # a row comparison is an Index Cond on both columns
                cond = sa.tuple_(c_ts, c_id) > sa.tuple_(t, i)
            elif self._dialect in ("mysql", "mariadb"):  # MariaDB makes two ranges of this, not of rows
                cond = sa.or_(c_ts > t, sa.and_(c_ts == t, c_id > i))
            else:  # portable: a range from the cursor's time, ties filtered
                cond = sa.and_(c_ts >= t, sa.or_(c_ts > t, c_id > i))
            stmt = self._after[key] = self._base.where(cond)
        return stmt

    def until(self, ts: object, rid: object, first: bool) -> sa.Select[*tuple[object, ...]]:
        """`first` or `after(ts, rid)`, limited to created_at <= :until_ts."""
        key = None if first else _cast_key(ts, rid)
        stmt = self._until.get(key)
        if stmt is None:
            base = self.first if first else self.after(ts, rid)
            stmt = self._until[key] = base.where(self._ts <= sa.bindparam("until_ts"))
        return stmt

    def count(self, conn: Connection, lo: BoundTime, edges: Sequence[BoundTime]) -> list[int]:
        """Rows with lo < created_at <= edge, for each edge (cumulative)."""
        below = [sa.func.sum(sa.case((self._ts <= sa.bindparam(f"e{i}"), 1), else_=0)) for i in range(len(edges))]
        stmt = (
            sa.select(*below)
            .select_from(self._table)
            .where(self._ts > sa.bindparam("lo"), self._ts <= sa.bindparam(f"e{len(edges) - 1}"))
        )
        row = conn.execute(stmt, {"lo": lo, **{f"e{i}": e for i, e in enumerate(edges)}}).one()
        return [int(v or 0) for v in row]

    def strays(self, conn: Connection, floor: BoundTime | None, limit: int) -> list[DbRow]:
        # two index range reads (an OR of both may scan the table)
        found: list[DbRow] = list(
            conn.execute(sa.select(*self._cols).where(self._ts.is_(None)).order_by(self._id).limit(limit))
        )
        if floor is not None and len(found) < limit:
            below = sa.select(*self._cols).where(self._ts < sa.bindparam("floor")).order_by(self._ts, self._id)
            found += conn.execute(below.limit(limit - len(found)), {"floor": floor}).all()
        return found

    def oldest(self, conn: Connection, since: BoundTime) -> list[object]:
        """created_at of the first rows after `since` (which keeps '' and such below it out)."""
        stmt = sa.select(self._ts).where(self._ts > sa.bindparam("since_ts")).order_by(self._ts)
        return list(conn.execute(stmt.limit(SAMPLE_ROWS), {"since_ts": since}).scalars())

    def sample(self, conn: Connection) -> list[object]:
        # Both ends: bad text sorts above good ISO text on SQLite, empty strings below it.
        stmt = sa.select(self._ts).where(self._ts.is_not(None)).limit(SAMPLE_ROWS)
        return [v for order in (self._ts.desc(), self._ts) for v in conn.execute(stmt.order_by(order)).scalars()]

    def index_statement(self, dialect: sa.Dialect) -> str:
        q = dialect.identifier_preparer.quote
        target = f"{q(self.schema)}.{q(self.name)}" if self.schema else q(self.name)
        index = re.sub(r"\W", "_", f"{self.name}_{self.ts_name}_{self.id_name}_idx")[:63]
        concurrently = " CONCURRENTLY" if dialect.name == "postgresql" else ""
        return f"CREATE INDEX{concurrently} {q(index)} ON {target} ({q(self.ts_name)}, {q(self.id_name)});"


class QueryShape:
    """`TableShape`'s interface over the user's SELECT; column kinds come from the driver's description of a
    `LIMIT 0` run, since there is no table to reflect."""

    def __init__(self, conn: Connection, cfg: SourceConfig, where: str) -> None:
        assert cfg.query is not None
        self._sql = cfg.query
        self.first = sa.text(cfg.query)
        self._casts: dict[_CastKey, sa.TextClause] = {(False, False): self.first}
        result = conn.execute(self.first, {"since_ts": None, "since_id": None, "limit": 0})
        description = result.cursor.description if result.cursor is not None else None
        keys = list(result.keys())
        result.close()
        c = cfg.columns
        wanted = [c.id, c.created_at, c.type, c.channel] + ([c.customer] if c.customer is not None else [])
        found = [_pick(w, keys) for w in wanted]
        missing = [w for w, f in zip(wanted, found, strict=True) if f is None]
        if missing:
            hints = "".join(close_names_hint(m, keys, f"for {m!r}") for m in missing)
            raise SourceUnavailable(
                f"{where}: the query returns no column {', '.join(map(repr, missing))}"
                f"{hints} (it returns {', '.join(keys)}); name them with AS"
            )
        pos = [keys.index(f) for f in found if f is not None]
        self._quote: Callable[[str], str] = conn.dialect.identifier_preparer.quote
        self._id_key, self._ts_key = keys[pos[0]], keys[pos[1]]
        self.positions: Positions = (pos[0], pos[1], pos[2], pos[3], pos[4] if len(pos) > 4 else -1)
        dialect = conn.dialect.name
        codes: list[object] = [d[1] for d in description] if description else [None] * len(keys)
        self.ts_category = category_of_code(dialect, codes[pos[1]])
        self.id_category = category_of_code(dialect, codes[pos[0]])

    def after(self, ts: object, rid: object) -> sa.TextClause:
        key = _cast_key(ts, rid)
        stmt = self._casts.get(key)
        if stmt is None:  # as in TableShape: bytes (SQLite) must compare as TEXT
            cast = {"since_ts": key[0], "since_id": key[1]}
            stmt = self._casts[key] = sa.text(
                _PARAM.sub(lambda m: f"CAST(:{m[1]} AS TEXT)" if cast[m[1]] else m[0], self._sql)
            )
        return stmt

    def until(self, ts: object, rid: object, first: bool) -> sa.TextClause:
        """The user's SELECT as a derived table, limited to created_at <= :until_ts (its own :limit is
        `ALL_ROWS`; the outer query orders and limits)."""
        inner = self.first if first else self.after(ts, rid)
        q = self._quote
        ts_col, id_col = f"sentinel_q.{q(self._ts_key)}", f"sentinel_q.{q(self._id_key)}"
        return sa.text(
            f"SELECT * FROM ({inner.text}) AS sentinel_q WHERE {ts_col} <= :until_ts "
            f"ORDER BY {ts_col}, {id_col} LIMIT :outer_limit"
        )

    def count(self, conn: Connection, lo: BoundTime, edges: Sequence[BoundTime]) -> list[int]:
        ts_col = f"sentinel_q.{self._quote(self._ts_key)}"
        below = ", ".join(f"SUM(CASE WHEN {ts_col} <= :e{i} THEN 1 ELSE 0 END)" for i in range(len(edges)))
        stmt = sa.text(f"SELECT {below} FROM ({self._sql}) AS sentinel_q WHERE {ts_col} <= :e{len(edges) - 1}")
        params = {"since_ts": lo, "since_id": None, "limit": ALL_ROWS, **{f"e{i}": e for i, e in enumerate(edges)}}
        return [int(v or 0) for v in conn.execute(stmt, params).one()]

    def strays(self, conn: Connection, floor: BoundTime | None, limit: int) -> list[DbRow]:
        return []  # the user's SELECT filters on created_at > :since_ts: a NULL never passes it

    def oldest(self, conn: Connection, since: BoundTime) -> list[object]:
        rows = conn.execute(self.first, {"since_ts": since, "since_id": None, "limit": SAMPLE_ROWS})
        return [row[self.positions[1]] for row in rows]

    def sample(self, conn: Connection) -> list[object]:
        # A since below every value of the column's kind (on SQLite numbers sort below all text).
        return self.oldest(conn, "" if self.ts_category == "text" else LOW_NUMBER)


Shape = TableShape | QueryShape
"""The statements of one source, by mode (`source.table` or `source.query`)."""
