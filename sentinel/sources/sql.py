"""SQL source: incremental reads of a complaint table (or a user SELECT) through its index.

Guarantees:
- Every read is one range query on `(created_at, id)` that starts at the watermark, so a poll costs what
  the new rows cost, not what the table holds (given the index that `check()` asks for).
- `since_us` is written in the column's own representation (naive or aware datetime, the stored text
  layout, the stored epoch unit), because a comparison the database has to convert cannot use the index
  and, for naive columns, would silently shift by the session's time zone.
- Values come back raw; `RowNormaliser` judges them. One bad row never breaks a fetch (on SQLite,
  text that is not UTF-8 comes back as bytes instead of raising inside the driver).
- Reconciliation (`Reconcilable`): `count_range` counts the rows of several time ranges in one range
  scan, `read_range` reads one range, `read_strays` the rows no `created_at > since` read can see (NULL,
  empty, before 1970-01-02); range bounds are written exactly like `since_us`, so a row falls in the range
  of its parsed time wherever the column's representation allows it.
- Any database failure is `SourceUnavailable` whose message names the problem and never a password.
  Pooled connections are pinged before use, so a restarted database is picked up by the next read.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.sql.elements import quoted_name

from sentinel.config import SourceConfig
from sentinel.model import US
from sentinel.sources import Page, SourceUnavailable
from sentinel.sources.rows import TIME_FLOOR_US, BadValue, IdType, RawRow, parse_time

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 120
SAMPLE_ROWS = 50
LOW_NUMBER = -(2**62)
"""Below every epoch number; on SQLite also below every text value, so it finds the first rows whatever
their storage class."""

Category = Literal["naive", "aware", "utc", "number", "text"]
"""What the driver says about a column: datetimes need no sample; numbers and text need one stored value
to learn the unit or layout. "utc" is a MySQL TIMESTAMP, shown in the session zone we pin to UTC."""

_PG_TYPES: dict[int, Category] = {1114: "naive", 1082: "naive", 1184: "aware", 20: "number", 21: "number",
                                  23: "number", 700: "number", 701: "number", 1700: "number", 25: "text",
                                  1043: "text", 1042: "text"}
_MYSQL_TYPES: dict[int, Category] = {12: "naive", 10: "naive", 7: "utc", 0: "number", 1: "number",
                                     2: "number", 3: "number", 4: "number", 5: "number", 8: "number",
                                     9: "number", 246: "number", 15: "text", 253: "text", 254: "text"}
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:([T ])\d{2}:\d{2}(:\d{2})?(?:\.(\d+))?)?(Z|[+-]\d{2}(?::?\d{2})?)?")
_PARAM = re.compile(r"(?<![:\w]):(since_ts|since_id)\b")
ALL_ROWS = 1_000_000_000_000
"""The `:limit` given to a query-mode SELECT wrapped as a derived table: the outer query bounds it."""
STRAYS_LIMIT = 10_000
"""Rows without a usable created_at read per reconciliation (they are rejected once and remembered)."""


@dataclass(frozen=True, slots=True)
class TimeCodec:
    """How to write an instant so the database compares it with `created_at` natively."""

    kind: Literal["naive", "aware", "utc", "text", "epoch"]
    zone: tzinfo = UTC
    sep: str = " "
    seconds: bool = True
    digits: int = 6
    suffix: str = ""
    scale: int = US
    number: type = int

    def bind(self, since_us: int) -> Any:
        at = EPOCH + timedelta(microseconds=since_us)
        if self.kind == "aware":
            return at
        if self.kind == "utc":
            return at.replace(tzinfo=None)
        if self.kind == "naive":
            return at.astimezone(self.zone).replace(tzinfo=None)
        if self.kind == "text":
            return self._text(at.astimezone(self.zone))
        if self.number is int:  # S > x  <=>  S > floor(x) for integer S: no cast, the index still serves
            return since_us // self.scale
        if self.number is Decimal:
            return Decimal(since_us) / self.scale
        return since_us / self.scale

    def _text(self, dt: datetime) -> str:
        # A naive layout is written with seconds and six digits: ISO text without a zone sorts like time
        # whatever fraction the stored values carry, so the bound is right for all of them.
        text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{self.sep}{dt.hour:02d}:{dt.minute:02d}"
        if self.seconds:
            text += f":{dt.second:02d}"
        if self.digits:
            text += "." + f"{dt.microsecond:06d}{'0' * self.digits}"[: self.digits]
        return text + self.suffix

    def fixer(self) -> Callable[[Any], Any] | None:
        if self.kind == "utc":
            return _attach_utc
        if self.kind == "epoch" and self.number is Decimal:
            return _plain_number
        return None

    def describe(self) -> str:
        if self.kind == "naive":
            return f"naive datetime in {self.zone}"
        if self.kind == "text":
            return f"text like {self._text(EPOCH.astimezone(self.zone))!r}"
        if self.kind == "epoch":
            unit = {US: "s", 1000: "ms", 1: "µs"}[self.scale]
            return f"epoch {unit} ({self.number.__name__})"
        return {"aware": "datetime with time zone", "utc": "TIMESTAMP read in UTC"}[self.kind]


def codec_for(category: Category | None, naive_tz: ZoneInfo) -> TimeCodec | None:
    if category in ("aware", "utc"):
        return TimeCodec(category)
    if category == "naive":
        return TimeCodec("naive", naive_tz)
    return None


def codec_from_sample(value: Any, naive_tz: ZoneInfo) -> TimeCodec | None:
    """The codec for a stored value, or None when it says nothing (bad value, bytes, NULL)."""
    if isinstance(value, datetime):
        return TimeCodec("aware") if value.tzinfo is not None else TimeCodec("naive", naive_tz)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        mag = abs(float(value))
        if not math.isfinite(mag):
            return None
        scale = US if mag < 1e11 else 1000 if mag < 1e14 else 1  # parse_time's magnitudes: bind and parse agree
        number = int if isinstance(value, int) else Decimal if isinstance(value, Decimal) else float
        return TimeCodec("epoch", scale=scale, number=number)
    if not isinstance(value, str):
        return None
    text = value.strip()
    m = _ISO.fullmatch(text)
    if m is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    sep = m.group(1) or " "
    if parsed.tzinfo is None or not m.group(4):
        return TimeCodec("text", naive_tz, sep=sep)
    # Zoned text sorts like time only with one fixed layout: copy the sample's exactly.
    return TimeCodec("text", parsed.tzinfo, sep=sep, seconds=bool(m.group(2)), digits=len(m.group(3) or ""),
                     suffix=m.group(4))


def _attach_utc(value: Any) -> Any:
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def _plain_number(value: Any) -> Any:
    if isinstance(value, Decimal) and value.is_finite():
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _sqlite_text(raw: bytes) -> str | bytes:
    """Valid UTF-8 as str, anything else as bytes for RowNormaliser to reject ("bad_encoding")."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def did_you_mean(wanted: str, names: Sequence[str], what: str = "") -> str:
    """`; did you mean 'complaints'?` for a mistyped name, listing the close ones (case ignored), or ""."""
    import difflib

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


def _category(dialect: str, type_code: Any) -> Category | None:
    if dialect == "postgresql":
        return _PG_TYPES.get(type_code)
    if dialect in ("mysql", "mariadb"):
        return _MYSQL_TYPES.get(type_code)
    return None


def _type_category(dialect: str, col_type: Any) -> Category | None:
    if dialect == "sqlite":  # declared types say nothing about what SQLite stores
        return "number" if isinstance(col_type, sa.Integer) else None
    if isinstance(col_type, sa.DateTime):
        if dialect in ("mysql", "mariadb") and isinstance(col_type, sa.TIMESTAMP):
            return "utc"
        return "aware" if col_type.timezone else "naive"
    if isinstance(col_type, sa.Date):
        return "naive"
    if isinstance(col_type, sa.Numeric | sa.Integer):
        return "number"
    if isinstance(col_type, sa.String):
        return "text"
    return None


def _bind(name: str, value: Any) -> sa.ColumnElement[Any]:
    param: sa.ColumnElement[Any] = sa.bindparam(name)
    # SQLite bytes bind as BLOB, which sorts after every TEXT; the cast keeps them in the text order.
    return sa.cast(param, sa.Text) if isinstance(value, bytes) else param


class _Table:
    """Statements for table mode, built from reflection with exactly quoted stored names."""

    def __init__(self, conn: Connection, cfg: SourceConfig, where: str) -> None:
        assert cfg.table is not None
        insp = sa.inspect(conn)
        schema_name, _, name = cfg.table.rpartition(".")
        schema = schema_name or None
        views = insp.get_view_names(schema=schema)
        actual = _pick(name, insp.get_table_names(schema=schema) + views)
        if actual is None:
            raise SourceUnavailable(f"{where}: table {cfg.table!r} does not exist"
                                    f"{did_you_mean(name, insp.get_table_names(schema=schema) + views)}")
        self.name, self.schema, self.is_view = actual, schema, actual in views
        columns = {c["name"]: c for c in insp.get_columns(actual, schema=schema)}
        wanted = [cfg.columns.id, cfg.columns.created_at, cfg.columns.type, cfg.columns.channel]
        if cfg.columns.customer is not None:
            wanted.append(cfg.columns.customer)
        found = [_pick(w, list(columns)) for w in wanted]
        missing = [w for w, f in zip(wanted, found, strict=True) if f is None]
        if missing:
            hints = "".join(did_you_mean(m, list(columns), f"for {m!r}") for m in missing)
            raise SourceUnavailable(f"{where}: table {actual!r} has no column {', '.join(map(repr, missing))}"
                                    f"{hints} (it has {', '.join(columns)})")
        names = [f for f in found if f is not None]
        dialect = conn.dialect.name
        self.id_name, self.ts_name = names[0], names[1]
        self.ts_category = _type_category(dialect, columns[names[1]]["type"])
        self.id_category = _type_category(dialect, columns[names[0]]["type"])
        self.has_time_index = self.is_view or self._time_index(insp)
        table = sa.table(quoted_name(actual, True), *(sa.column(quoted_name(n, True)) for n in names),
                         schema=quoted_name(schema, True) if schema else None)
        cols = list(table.c)
        self._id, self._ts = cols[0], cols[1]
        self._dialect = dialect
        self._base = sa.select(*cols).order_by(self._ts, self._id).limit(sa.bindparam("limit"))
        self._cols, self._table = cols, table
        self.first = self._base.where(self._ts > sa.bindparam("since_ts"))
        self._after: dict[tuple[bool, bool], sa.Select[Any]] = {}
        self._until: dict[tuple[bool, bool] | None, sa.Executable] = {}
        self.positions = (0, 1, 2, 3, 4 if len(cols) > 4 else -1)

    def _time_index(self, insp: sa.Inspector) -> bool:
        indexes = insp.get_indexes(self.name, schema=self.schema)
        leading: list[Sequence[str | None]] = [ix["column_names"] for ix in indexes]
        leading.append(insp.get_pk_constraint(self.name, schema=self.schema).get("constrained_columns") or [])
        return any(cols and cols[0] == self.ts_name for cols in leading)

    def after(self, ts: Any, rid: Any) -> sa.Executable:
        key = (isinstance(ts, bytes), isinstance(rid, bytes))
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

    def until(self, ts: Any, rid: Any, first: bool) -> sa.Executable:
        """`first` or `after(ts, rid)`, limited to created_at <= :until_ts."""
        key = None if first else (isinstance(ts, bytes), isinstance(rid, bytes))
        stmt = self._until.get(key)
        if stmt is None:
            base = self.first if first else self.after(ts, rid)
            assert isinstance(base, sa.Select)
            stmt = self._until[key] = base.where(self._ts <= sa.bindparam("until_ts"))
        return stmt

    def count(self, conn: Connection, lo: Any, edges: Sequence[Any]) -> list[int]:
        """Rows with lo < created_at <= edge, for each edge (cumulative)."""
        below = [sa.func.sum(sa.case((self._ts <= sa.bindparam(f"e{i}"), 1), else_=0)) for i in range(len(edges))]
        stmt = sa.select(*below).select_from(self._table).where(
            self._ts > sa.bindparam("lo"), self._ts <= sa.bindparam(f"e{len(edges) - 1}"))
        row = conn.execute(stmt, {"lo": lo, **{f"e{i}": e for i, e in enumerate(edges)}}).one()
        return [int(v or 0) for v in row]

    def strays(self, conn: Connection, floor: Any | None, limit: int) -> list[Any]:
        # two index range reads (an OR of both may scan the table)
        found = list(conn.execute(sa.select(*self._cols).where(self._ts.is_(None)).order_by(self._id).limit(limit)))
        if floor is not None and len(found) < limit:
            below = sa.select(*self._cols).where(self._ts < sa.bindparam("floor")).order_by(self._ts, self._id)
            found += conn.execute(below.limit(limit - len(found)), {"floor": floor}).all()
        return found

    def oldest(self, conn: Connection, since: Any) -> list[Any]:
        """created_at of the first rows after `since` (which keeps '' and such below it out)."""
        stmt = sa.select(self._ts).where(self._ts > sa.bindparam("since_ts")).order_by(self._ts)
        return list(conn.execute(stmt.limit(SAMPLE_ROWS), {"since_ts": since}).scalars())

    def sample(self, conn: Connection) -> list[Any]:
        # Both ends: bad text sorts above good ISO text on SQLite, empty strings below it.
        stmt = sa.select(self._ts).where(self._ts.is_not(None)).limit(SAMPLE_ROWS)
        return [v for order in (self._ts.desc(), self._ts) for v in conn.execute(stmt.order_by(order)).scalars()]

    def index_statement(self, dialect: sa.Dialect) -> str:
        q = dialect.identifier_preparer.quote
        target = f"{q(self.schema)}.{q(self.name)}" if self.schema else q(self.name)
        index = re.sub(r"\W", "_", f"{self.name}_{self.ts_name}_{self.id_name}_idx")[:63]
        concurrently = " CONCURRENTLY" if dialect.name == "postgresql" else ""
        return f"CREATE INDEX{concurrently} {q(index)} ON {target} ({q(self.ts_name)}, {q(self.id_name)});"


class _Query:
    """`_Table`'s interface over the user's SELECT; column kinds come from the driver's description of a
    `LIMIT 0` run, since there is no table to reflect."""

    def __init__(self, conn: Connection, cfg: SourceConfig, where: str) -> None:
        assert cfg.query is not None
        self._sql = cfg.query
        self.first: sa.Executable = sa.text(cfg.query)
        self._casts: dict[tuple[bool, bool], sa.Executable] = {(False, False): self.first}
        result = conn.execute(self.first, {"since_ts": None, "since_id": None, "limit": 0})
        description = result.cursor.description if result.cursor is not None else None
        keys = list(result.keys())
        result.close()
        c = cfg.columns
        wanted = [c.id, c.created_at, c.type, c.channel] + ([c.customer] if c.customer is not None else [])
        found = [_pick(w, keys) for w in wanted]
        missing = [w for w, f in zip(wanted, found, strict=True) if f is None]
        if missing:
            hints = "".join(did_you_mean(m, keys, f"for {m!r}") for m in missing)
            raise SourceUnavailable(f"{where}: the query returns no column {', '.join(map(repr, missing))}"
                                    f"{hints} (it returns {', '.join(keys)}); name them with AS")
        pos = [keys.index(f) for f in found if f is not None]
        self._quote = conn.dialect.identifier_preparer.quote
        self._id_key, self._ts_key = keys[pos[0]], keys[pos[1]]
        self.positions = (pos[0], pos[1], pos[2], pos[3], pos[4] if len(pos) > 4 else -1)
        dialect = conn.dialect.name
        codes = [d[1] for d in description] if description else [None] * len(keys)
        self.ts_category = _category(dialect, codes[pos[1]])
        self.id_category = _category(dialect, codes[pos[0]])

    def after(self, ts: Any, rid: Any) -> sa.Executable:
        key = (isinstance(ts, bytes), isinstance(rid, bytes))
        stmt = self._casts.get(key)
        if stmt is None:  # as in _Table: bytes (SQLite) must compare as TEXT
            cast = {"since_ts": key[0], "since_id": key[1]}
            stmt = self._casts[key] = sa.text(_PARAM.sub(
                lambda m: f"CAST(:{m[1]} AS TEXT)" if cast[m[1]] else m[0], self._sql))
        return stmt

    def until(self, ts: Any, rid: Any, first: bool) -> sa.Executable:
        """The user's SELECT as a derived table, limited to created_at <= :until_ts (its own :limit is
        `ALL_ROWS`; the outer query orders and limits)."""
        inner = self.first if first else self.after(ts, rid)
        assert isinstance(inner, sa.TextClause)
        q = self._quote
        ts_col, id_col = f"sentinel_q.{q(self._ts_key)}", f"sentinel_q.{q(self._id_key)}"
        return sa.text(f"SELECT * FROM ({inner.text}) AS sentinel_q WHERE {ts_col} <= :until_ts "
                       f"ORDER BY {ts_col}, {id_col} LIMIT :outer_limit")

    def count(self, conn: Connection, lo: Any, edges: Sequence[Any]) -> list[int]:
        ts_col = f"sentinel_q.{self._quote(self._ts_key)}"
        below = ", ".join(f"SUM(CASE WHEN {ts_col} <= :e{i} THEN 1 ELSE 0 END)" for i in range(len(edges)))
        stmt = sa.text(f"SELECT {below} FROM ({self._sql}) AS sentinel_q WHERE {ts_col} <= :e{len(edges) - 1}")
        params = {"since_ts": lo, "since_id": None, "limit": ALL_ROWS, **{f"e{i}": e for i, e in enumerate(edges)}}
        return [int(v or 0) for v in conn.execute(stmt, params).one()]

    def strays(self, conn: Connection, floor: Any | None, limit: int) -> list[Any]:
        return []  # the user's SELECT filters on created_at > :since_ts: a NULL never passes it

    def oldest(self, conn: Connection, since: Any) -> list[Any]:
        rows = conn.execute(self.first, {"since_ts": since, "since_id": None, "limit": SAMPLE_ROWS})
        return [row[self.positions[1]] for row in rows]

    def sample(self, conn: Connection) -> list[Any]:
        # A since below every value of the column's kind (on SQLite numbers sort below all text).
        return self.oldest(conn, "" if self.ts_category == "text" else LOW_NUMBER)


class SqlSource:
    """A `Source` over any SQLAlchemy URL; `cfg.table` (generated SQL) or `cfg.query` (the user's)."""

    def __init__(self, cfg: SourceConfig, naive_tz: ZoneInfo) -> None:
        self._cfg = cfg
        self._naive_tz = naive_tz
        self._url = make_url(cfg.url.get())
        self._secrets = url_secrets(self._url)
        self.engine = _make_engine(read_only(self._url))
        self._shape: _Table | _Query | None = None
        self._codec: TimeCodec | None = None
        self._sample_ids: list[Any] = []

    # --- the Source protocol --------------------------------------------------------------------

    def read(self, since_us: int, cursor: Any | None, limit: int) -> Page:
        return self._read(since_us, cursor, limit, None)

    def read_range(self, start_us: int, end_us: int, cursor: Any | None, limit: int) -> Page:
        """Rows with start_us <= created_at < end_us (cursor None), or after `cursor` within that range."""
        return self._read(start_us - 1, cursor, limit, end_us)

    def count_range(self, bounds: Sequence[int]) -> list[int]:
        """Rows in each [bounds[i], bounds[i+1]), in one range scan."""
        if len(bounds) < 2:
            return []
        with self._connect() as conn:
            shape = self._prepare(conn)
            codec = self._learn(conn, shape, None)
            if codec is None:
                return [0] * (len(bounds) - 1)
            # b - 1 µs, and <=: a stored value with fewer digits than the bound ("14:00:00" against
            # "14:00:00.000000") falls on the side of its parsed time
            cumulative = shape.count(conn, codec.bind(bounds[0] - 1), [codec.bind(b - 1) for b in bounds[1:]])
        return [n - prev for prev, n in zip([0, *cumulative[:-1]], cumulative, strict=True)]

    def read_strays(self, limit: int = STRAYS_LIMIT) -> Page:
        """Rows whose created_at is NULL or below 1970-01-02 in the column's order (empty text, year 0001,
        epoch 0): no watermark read ever returns them, so only this one can have them rejected."""
        with self._connect() as conn:
            shape = self._prepare(conn)
            codec = self._learn(conn, shape, None)
            floor = None if codec is None else codec.bind(TIME_FLOOR_US)
            rows = shape.strays(conn, floor, limit)
        if len(rows) >= limit:
            log.warning("%s: more than %d rows have no usable created_at; the first %d by id are judged",
                        self.describe(), limit, limit)
        return Page(self._raw_rows(shape, codec, rows), None)

    def _read(self, since_us: int, cursor: Any | None, limit: int, until_us: int | None) -> Page:
        with self._connect() as conn:
            shape = self._prepare(conn)
            codec = self._learn(conn, shape, cursor)
            if codec is None:  # no stored value yet tells the layout; nothing to read either
                return Page([], None)
            if cursor is None:
                stmt, params = shape.first, {"since_ts": codec.bind(since_us), "since_id": None, "limit": limit}
            else:
                ts, rid = cursor
                stmt, params = shape.after(ts, rid), {"since_ts": ts, "since_id": rid, "limit": limit}
            if until_us is not None:
                stmt = shape.until(cursor[0] if cursor else None, cursor[1] if cursor else None, cursor is None)
                params.update(until_ts=codec.bind(until_us - 1), outer_limit=limit)
                if isinstance(shape, _Query):
                    params["limit"] = ALL_ROWS
            rows = conn.execute(stmt, params).all()
        p_ts, p_id = shape.positions[1], shape.positions[0]
        out = self._raw_rows(shape, codec, rows)
        self._widen(out)
        if rows and not self._sample_ids:
            self._sample_ids = [rows[0][p_id]]
        nxt = (rows[-1][p_ts], rows[-1][p_id]) if rows and len(rows) >= limit else None
        return Page(out, nxt)

    def _widen(self, rows: Sequence[RawRow]) -> None:
        """Naive ISO text spelled both "2025-07-08 14:03" and "2025-07-08T14:03": bind with the lower
        separator (" "), or every row spelled the other way on the watermark's date sorts below the
        bound and is never read (with " ", "T" rows of that date are read again, and deduplicated)."""
        codec = self._codec
        if codec is None or codec.kind != "text" or codec.suffix:
            return
        for r in rows:
            v = r[1]
            if isinstance(v, str) and len(v) > 10 and v[10] in " Tt" and v[10] < codec.sep:
                self._codec = codec = replace(codec, sep=v[10])
                log.info("%s: created_at mixes date-time separators; reading with %r", self.describe(), v[10])

    def _raw_rows(self, shape: _Table | _Query, codec: TimeCodec | None, rows: Sequence[Any]) -> list[RawRow]:
        p_id, p_ts, p_type, p_chan, p_cust = shape.positions
        fix = codec.fixer() if codec is not None else None
        out: list[RawRow] = []
        for r in rows:
            rid = r[p_id]
            out.append((_plain_number(rid) if isinstance(rid, Decimal) else rid,
                        fix(r[p_ts]) if fix else r[p_ts], r[p_type], r[p_chan],
                        r[p_cust] if p_cust >= 0 else None))
        return out

    def first_record_time(self) -> int | None:
        with self._connect() as conn:
            shape = self._prepare(conn)
            codec = self._learn(conn, shape, None)
            if codec is None:
                return None
            fix = codec.fixer()
            values = shape.oldest(conn, codec.bind(0))
        for value in values:
            try:
                return parse_time(fix(value) if fix else value, self._naive_tz)
            except BadValue:
                continue
        return None

    def check(self) -> list[str]:
        with self._connect() as conn:
            shape = self._prepare(conn)
            self._learn(conn, shape, None)
            dialect = conn.dialect
        if isinstance(shape, _Query) or (shape.has_time_index and not shape.is_view):
            return []
        if shape.is_view:
            return [f"{self.describe()}: {shape.name!r} is a view; make sure the table behind it has an index "
                    f"on ({shape.ts_name}, {shape.id_name}), or every poll scans that table"]
        return [f"{self.describe()}: no index starts with {shape.ts_name!r}, so every poll scans the whole "
                f"table; create one: {shape.index_statement(dialect)}"]

    def describe(self) -> str:
        u = self._url
        if u.get_backend_name() == "sqlite":
            where = u.database or ":memory:"
        else:
            where = f"{u.host or 'localhost'}{f':{u.port}' if u.port else ''}/{u.database or ''}"
        what = f"table {self._cfg.table}" if self._cfg.table is not None else "query"
        return f"{u.get_backend_name()} {where} {what}"

    def close(self) -> None:
        self.engine.dispose()

    @property
    def id_type(self) -> IdType:
        """How ids compare: `source.id_type`, else the column's kind (numeric: int), "auto" until known."""
        if self._cfg.id_type != "auto":
            return self._cfg.id_type
        category = self._shape.id_category if self._shape is not None else None
        if category in ("number", "text"):
            return "int" if category == "number" else "str"
        if self._sample_ids:
            first = _plain_number(self._sample_ids[0])
            return "int" if isinstance(first, int) and not isinstance(first, bool) else "str"
        return "auto"

    # --- internals --------------------------------------------------------------------------------

    def _prepare(self, conn: Connection) -> _Table | _Query:
        if self._shape is None:
            cls = _Table if self._cfg.table is not None else _Query
            self._shape = cls(conn, self._cfg, self.describe())
        return self._shape

    def _learn(self, conn: Connection, shape: _Table | _Query, cursor: Any | None) -> TimeCodec | None:
        if self._codec is not None:
            return self._codec
        codec = codec_for(shape.ts_category, self._naive_tz)
        if codec is None:
            samples = ([cursor[0]] if cursor is not None else []) + shape.sample(conn)
            for value in samples:
                if (codec := codec_from_sample(value, self._naive_tz)) is not None:
                    break
            else:
                if samples:
                    raise SourceUnavailable(
                        f"{self.describe()}: cannot tell how {self._cfg.columns.created_at!r} is stored: values "
                        f"such as {str(samples[0])[:40]!r} are neither ISO 8601 text nor epoch numbers")
                return None
            if codec.kind == "text" and not codec.suffix:
                seps = {v.strip()[10] for v in samples if isinstance(v, str) and len(v.strip()) > 10}
                low = min(seps & {" ", "T", "t"}, default=codec.sep)
                codec = replace(codec, sep=min(low, codec.sep))
        self._codec = codec
        log.info("%s: created_at is %s, ids compare as %s", self.describe(), codec.describe(), self.id_type)
        return codec

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise SourceUnavailable(self._explain(exc)) from None

    def _explain(self, exc: sa.exc.SQLAlchemyError) -> str:
        missing = missing_sqlite_file(self._url)
        if missing is not None:
            return f"{self.describe()}: {missing}"
        return f"{self.describe()}: {driver_message(exc, self._secrets)}"


def _sqlite_path(url: URL) -> str | None:
    """The file an SQLite URL names (`file:` URIs included), None for other databases and `:memory:`."""
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    if db.startswith("file:"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(db).path) or None
    return db


def missing_sqlite_file(url: URL | str) -> str | None:
    """Why an SQLite source cannot be opened because its file is not there, or None. Said before any
    connection: SQLite would otherwise create an empty file and the next message would blame the table."""
    path = _sqlite_path(make_url(url) if isinstance(url, str) else url)
    if path is None:
        return None
    import os

    if os.path.isfile(path):
        return None
    if os.path.exists(path):
        return f"SQLite source {path} is not a file"
    return f"SQLite source file {path} does not exist (check source.url; sources are opened read-only, never created)"


def read_only(url: URL) -> URL:
    """An SQLite URL as a read-only `file:` URI (`mode=ro`): Sentinel only reads its source, so a typo in the
    path must not create an empty database, and no write can reach the CRM's file. A URL that already says
    `uri=true` is the user's own URI and is left alone, as are other databases."""
    path = _sqlite_path(url)
    if path is None or "uri" in url.query:
        return url
    return url.set(database="file:" + quote(path), query={**url.query, "mode": "ro", "uri": "true"})


def url_secrets(url: URL) -> tuple[str, ...]:
    """What no message may show: the password (as typed and as quoted in the URL) and the values of
    query parameters named like secrets."""
    found = [url.password, quote(str(url.password), safe="")] if url.password else []
    found += [v for k, vs in url.query.items() if re.search("pass|secret|token", k, re.I)
              for v in ([vs] if isinstance(vs, str) else vs)]
    return tuple(str(v) for v in found if v)


def driver_message(exc: BaseException, secrets: Sequence[str]) -> str:
    """The driver's own words on one line (not SQLAlchemy's, which append the statement and a help
    link), secrets masked."""
    orig: BaseException = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    text = str(orig).split("[SQL:")[0].split("(Background on this error")[0]
    detail = "; ".join(line.strip() for line in text.splitlines() if line.strip())[:400]
    message = f"{type(orig).__name__}: {detail}"
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


def postgres_connect_args(application_name: str) -> dict[str, Any]:
    """libpq settings for every connection to a PostgreSQL source; keepalives: a server that vanished
    without a FIN is noticed in about a minute, not hours."""
    return {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": application_name, "keepalives": 1,
            "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def _make_engine(url: URL) -> Engine:
    backend, driver = url.get_backend_name(), url.get_driver_name()
    args: dict[str, Any] = {}
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        args = postgres_connect_args("sentinel")
    elif backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb"):
        args = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                "write_timeout": READ_TIMEOUT_S}
    elif backend == "sqlite":
        args = {"timeout": CONNECT_TIMEOUT_S}
    args = {k: v for k, v in args.items() if k not in url.query}  # the URL wins
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=args, isolation_level="AUTOCOMMIT")
    if backend == "sqlite":
        sa.event.listen(engine, "connect", _on_sqlite_connect)
    elif backend in ("mysql", "mariadb"):
        sa.event.listen(engine, "connect", _on_mysql_connect)
    return engine


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.text_factory = _sqlite_text


def _on_mysql_connect(dbapi_conn: Any, _record: Any) -> None:
    # TIMESTAMP columns are then shown in UTC, exact whatever the server's zone (no DST ambiguity).
    cur = dbapi_conn.cursor()
    try:
        cur.execute("SET time_zone = '+00:00'")
    finally:
        cur.close()
