"""SQL source: incremental reads of a complaint table (or a user SELECT) through its index.

`SqlSource` is the `Source` (and `Reconcilable`) over any SQLAlchemy URL. The statements it runs are in
`sql_statements`, how `created_at` is stored and bound in `sql_time`, connections and messages in
`sql_connect`.

Guarantees:
- Every read is one range query on `(created_at, id)` that starts at the watermark, or at the page cursor
  (the last row's raw `(created_at, id)`, bound back as it was read), so a poll costs what the new rows
  cost, not what the table holds (given the index that `check()` asks for).
- `since_us` is written in the column's own representation, learnt once per source: from the column's
  type where it says enough, else from stored values (both ends of the column, and the cursor).
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from sentinel.config import SourceConfig
from sentinel.sources import Page, SourceUnavailable
from sentinel.sources.rows import TIME_FLOOR_US, BadValue, IdType, RawRow, parse_time
from sentinel.sources.sql_connect import driver_message, make_engine, missing_sqlite_file, read_only, url_secrets
from sentinel.sources.sql_statements import ALL_ROWS, DbRow, QueryShape, Shape, TableShape
from sentinel.sources.sql_time import TimeCodec, codec_for, codec_from_sample, plain_number

log = logging.getLogger(__name__)

STRAYS_LIMIT = 10_000
"""Rows without a usable created_at read per reconciliation (they are rejected once and remembered)."""

SqlCursor = tuple[object, object]
"""`Page.next` of an SQL source: the raw (created_at, id) of the last row read."""


class SqlSource:
    """A `Source` over any SQLAlchemy URL; `cfg.table` (generated SQL) or `cfg.query` (the user's)."""

    def __init__(self, cfg: SourceConfig, naive_tz: ZoneInfo) -> None:
        self._cfg = cfg
        self._naive_tz = naive_tz
        self._url = make_url(cfg.url.get())
        self._secrets = url_secrets(self._url)
        self.engine = make_engine(read_only(self._url))
        self._shape: Shape | None = None
        self._codec: TimeCodec | None = None
        self._sample_ids: list[object] = []

    # --- the Source protocol --------------------------------------------------------------------

    def read(self, since_us: int, cursor: SqlCursor | None, limit: int) -> Page:
        return self._read(since_us, cursor, limit, None)

    def read_range(self, start_us: int, end_us: int, cursor: SqlCursor | None, limit: int) -> Page:
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
            log.warning(
                "%s: more than %d rows have no usable created_at; the first %d by id are judged",
                self.describe(),
                limit,
                limit,
            )
        return Page(self._raw_rows(shape, codec, rows), None)

    def _read(self, since_us: int, cursor: SqlCursor | None, limit: int, until_us: int | None) -> Page:
        with self._connect() as conn:
            shape = self._prepare(conn)
            codec = self._learn(conn, shape, cursor)
            if codec is None:  # no stored value yet tells the layout; nothing to read either
                return Page([], None)
            stmt: sa.Executable
            params: dict[str, object]
            if cursor is None:
                stmt, params = shape.first, {"since_ts": codec.bind(since_us), "since_id": None, "limit": limit}
            else:
                ts, rid = cursor
                stmt, params = shape.after(ts, rid), {"since_ts": ts, "since_id": rid, "limit": limit}
            if until_us is not None:
                stmt = shape.until(cursor[0] if cursor else None, cursor[1] if cursor else None, cursor is None)
                params.update(until_ts=codec.bind(until_us - 1), outer_limit=limit)
                if isinstance(shape, QueryShape):
                    params["limit"] = ALL_ROWS
            rows = conn.execute(stmt, params).all()
        p_ts, p_id = shape.positions[1], shape.positions[0]
        out = self._raw_rows(shape, codec, rows)
        self._widen(out)
        if rows and not self._sample_ids:
            self._sample_ids = [rows[0][p_id]]
        nxt: SqlCursor | None = (rows[-1][p_ts], rows[-1][p_id]) if rows and len(rows) >= limit else None
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

    def _raw_rows(self, shape: Shape, codec: TimeCodec | None, rows: Sequence[DbRow]) -> list[RawRow]:
        p_id, p_ts, p_type, p_chan, p_cust = shape.positions
        fix = codec.fixer() if codec is not None else None
        out: list[RawRow] = []
        for r in rows:
            rid = r[p_id]
            out.append(
                (
                    plain_number(rid) if isinstance(rid, Decimal) else rid,
                    fix(r[p_ts]) if fix else r[p_ts],
                    r[p_type],
                    r[p_chan],
                    r[p_cust] if p_cust >= 0 else None,
                )
            )
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
        if isinstance(shape, QueryShape) or (shape.has_time_index and not shape.is_view):
            return []
        if shape.is_view:
            return [
                f"{self.describe()}: {shape.name!r} is a view; make sure the table behind it has an index "
                f"on ({shape.ts_name}, {shape.id_name}), or every poll scans that table"
            ]
        return [
            f"{self.describe()}: no index starts with {shape.ts_name!r}, so every poll scans the whole "
            f"table; create one: {shape.index_statement(dialect)}"
        ]

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
            first = plain_number(self._sample_ids[0])
            return "int" if isinstance(first, int) and not isinstance(first, bool) else "str"
        return "auto"

    # --- internals --------------------------------------------------------------------------------

    def _prepare(self, conn: Connection) -> Shape:
        if self._shape is None:
            cls = TableShape if self._cfg.table is not None else QueryShape
            self._shape = cls(conn, self._cfg, self.describe())
        return self._shape

    def _learn(self, conn: Connection, shape: Shape, cursor: SqlCursor | None) -> TimeCodec | None:
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
                        f"such as {str(samples[0])[:40]!r} are neither ISO 8601 text nor epoch numbers"
                    )
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
