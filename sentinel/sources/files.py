"""CSV and JSONL files (optionally gzipped) as columnar batches, for the backtest and the benchmark.

Columns: `id,created_at,type,channel[,customer]`. pyarrow parses and validates a block at a time
(C++ speed, bounded memory); the rare block holding a bad value falls back to per-row parsing so the
bad record is rejected with its reason and the rest of the block is kept. Records must be in time
order for streaming; `read_sorted` sorts a file that is not.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from sentinel.days import DAY_US, Calendar
from sentinel.model import Batch, IntArray, Vocab
from sentinel.sources.rows import (
    MAX_FIELD_CHARS,
    UNKNOWN_CHANNEL,
    BadValue,
    IdType,
    RawRow,
    Rejected,
    RowNormaliser,
)

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

REQUIRED = ("id", "created_at", "type", "channel")
BLOCK_BYTES = 1 << 19
USE_THREADS = False
CODED_COLUMNS = ("type", "channel", "customer")
CODED = pa.dictionary(pa.int32(), pa.binary())
"""Few distinct values per block: pyarrow's parser dictionary-encodes them as it converts (cheaper than
encoding the parsed column again), and normalisation runs once per distinct value."""


def _encoded(column: pa.Array) -> pa.DictionaryArray:  # pyarrow has no stubs: unchecked
    """The column as a dictionary array (the parser's, or encoded here)."""
    return column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)


class _RawCodes:
    """A column's raw values (bytes as in the file) -> vocab codes: the dict that grows, and the same as a
    pyarrow value set with the codes in its order, for a vectorised look-up."""

    def __init__(self) -> None:
        self.cache: dict[bytes | None, int] = {}
        self.keys: pa.Array | None = None
        self.codes: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self.indexed = 0  # len(cache) when keys were built

    def index(self) -> None:
        known = [(k, c) for k, c in self.cache.items() if k is not None]  # a null never matches: slow path
        self.keys = pa.array([k for k, _ in known], type=pa.binary())
        self.codes = np.asarray([c for _, c in known], dtype=np.int32)
        self.indexed = len(self.cache)


class InputError(Exception):
    """The file cannot be read as complaints at all (missing column, unknown format)."""


@dataclass(slots=True)
class Block:
    batch: Batch
    rejected: list[Rejected]
    rows: int
    bytes_read: int


def _open_binary(path: Path) -> IO[bytes]:
    raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed by it
    if path.suffix == ".gz":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


class _Transcoder(io.RawIOBase):
    """Re-encodes a stream from `encoding` to UTF-8; undecodable bytes become U+FFFD (then rejected)."""

    def __init__(self, raw: IO[bytes], encoding: str) -> None:
        self._raw = raw
        self._dec = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: WriteableBuffer) -> int:
        while not self._buf:
            chunk = self._raw.read(1 << 16)
            self._buf = self._dec.decode(chunk, final=not chunk).encode("utf-8")
            if not chunk:
                break
        view = memoryview(b).cast("B")
        n = min(len(view), len(self._buf))
        view[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def format_of(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise InputError(f"{path}: unknown format (use .csv or .jsonl, optionally .gz)")


class FileReader:
    """Streams a complaints file as validated batches (in file order)."""

    def __init__(
        self, path: str | Path, vocab: Vocab, naive_tz: ZoneInfo, encoding: str = "utf-8", id_type: IdType = "auto"
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: file not found")
        self.vocab = vocab
        self.naive_tz = naive_tz
        self.calendar = Calendar(naive_tz)
        self.encoding = codecs.lookup(encoding).name
        self.id_type = id_type
        self.format = format_of(self.path)
        self.rows_normaliser = RowNormaliser(vocab, naive_tz, id_type, max_future_us=None)
        self.size = self.path.stat().st_size
        self._type_codes = _RawCodes()  # raw bytes in the file -> vocab code
        self._channel_codes = _RawCodes()

    def _stream(self) -> IO[bytes]:
        raw = _open_binary(self.path)
        if self.encoding != "utf-8":
            return io.BufferedReader(_Transcoder(raw, self.encoding), buffer_size=1 << 16)
        return raw

    def __iter__(self) -> Iterator[Block]:
        if self.format == "csv":
            yield from self._csv()
        else:
            yield from self._jsonl()

    # --- CSV ---------------------------------------------------------------------------------------
    def _csv(self) -> Iterator[Block]:
        stream = self._stream()
        invalid: list[tuple[int | None, str]] = []  # rows with the wrong number of fields, skipped

        def on_invalid(row: pcsv.InvalidRow) -> str:
            invalid.append((row.number, row.text))
            return "skip"

        try:
            try:
                reader = pcsv.open_csv(
                    stream,
                    read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=USE_THREADS),
                    parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
                    convert_options=pcsv.ConvertOptions(
                        column_types={**{c: pa.binary() for c in REQUIRED}, **{c: CODED for c in CODED_COLUMNS}},
                        strings_can_be_null=False,
                        quoted_strings_can_be_null=False,
                    ),
                )
            except pa.ArrowInvalid as exc:
                raise InputError(f"{self.path}: not a CSV file with a header: {exc}") from None
            names = reader.schema.names
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise InputError(
                    f"{self.path}: missing column(s) {', '.join(missing)} "
                    f"(need {','.join(REQUIRED)}[,customer]; found {','.join(names)})"
                )
            has_customer = "customer" in names
            while True:
                try:
                    rb = reader.read_next_batch()
                except StopIteration:
                    break
                except pa.ArrowInvalid as exc:
                    raise InputError(f"{self.path}: {exc}") from None
                cols = {c: rb.column(names.index(c)) for c in (*REQUIRED, *(("customer",) if has_customer else ()))}
                pos = _tell(stream)
                block = self._block(cols, rb.num_rows, pos)
                if invalid:  # parsed a little ahead: counted with this block, never twice
                    block.rejected[:0] = [_invalid_row(n, text, names) for n, text in invalid]
                    block.rows += len(invalid)
                    invalid.clear()
                yield block
            if invalid:
                yield Block(
                    Batch.empty(), [_invalid_row(n, text, names) for n, text in invalid], len(invalid), _tell(stream)
                )
        finally:
            stream.close()

    def _block(self, cols: dict[str, pa.Array], n: int, pos: int) -> Block:
        try:
            return self._fast_block(cols, n, pos)
        except (pa.ArrowInvalid, UnicodeDecodeError, _SlowPath):
            return self._slow_block(cols, n, pos)

    def _fast_block(self, cols: dict[str, pa.Array], n: int, pos: int) -> Block:
        """Vectorised: each text column is dictionary-encoded first, so validation and normalisation run
        once per distinct value (a few hundred), not once per row. Any bad value sends the block to the
        row-by-row path, which rejects just that record."""
        type_codes = self._coded(cols["type"], self._type_codes, required=True)
        chan_codes = self._coded(cols["channel"], self._channel_codes, required=False)
        ids = pc.utf8_trim_whitespace(pc.cast(cols["id"], pa.string()))  # raises on invalid UTF-8
        id_len = pc.min_max(pc.utf8_length(ids)).as_py()  # one pass: an empty id or an over-long one
        if id_len["min"] == 0 or (id_len["max"] or 0) > MAX_FIELD_CHARS:
            raise _SlowPath
        ts = self._times(pc.utf8_trim_whitespace(pc.cast(cols["created_at"], pa.string())))
        id_arr = self._ids(ids)
        cust = cust_values = None
        if "customer" in cols:
            cd = _encoded(cols["customer"])
            text = self._normalised(cd.dictionary)
            empty = np.asarray(pc.utf8_length(text).to_numpy()) == 0  # no nulls left: zero-copy
            remap = np.where(empty, -1, np.arange(len(text))).astype(np.int32)
            cust = remap[cd.indices.to_numpy()] if len(remap) else np.full(n, -1, dtype=np.int32)
            cust_values = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)  # str objects, in C
        batch = Batch(id_arr, ts, type_codes, chan_codes, cust, cust_values)
        return Block(batch, [], n, pos)

    def _normalised(self, dictionary: pa.Array) -> pa.Array:
        """A dictionary's values validated (UTF-8, length) and normalised (NFC, stripped) by pyarrow."""
        text = pc.utf8_normalize(pc.utf8_trim_whitespace(pc.cast(dictionary, pa.string())), form="NFC")
        if len(text) and (pc.max(pc.utf8_length(text)).as_py() or 0) > MAX_FIELD_CHARS:
            raise _SlowPath
        if self.encoding != "utf-8" and len(text) and pc.any(pc.match_substring(text, "\ufffd")).as_py():
            raise _SlowPath
        return pc.fill_null(text, "")

    def _coded(self, column: pa.Array, codes: _RawCodes, required: bool) -> npt.NDArray[np.int32]:
        """Vocab codes of a type or channel column (channel: empty means unknown). Raw values seen before
        skip normalisation: a cache from the bytes in the file to the code, looked up by pyarrow over the
        block's distinct values when every one is known (the usual block: no Python per value)."""
        d = _encoded(column)
        if codes.keys is not None and len(d.dictionary):
            pos = pc.index_in(d.dictionary, value_set=codes.keys)
            if pos.null_count == 0:
                return np.asarray(codes.codes[pos.to_numpy()][d.indices.to_numpy()], dtype=np.int32)
        cache = codes.cache
        raw = d.dictionary.to_pylist()
        if any(v not in cache for v in raw):
            text = self._normalised(d.dictionary).to_pylist()
            for r, v in zip(raw, text, strict=True):
                if not v and required:
                    raise _SlowPath
                cache[r] = self.vocab.code(v or UNKNOWN_CHANNEL)
        mapping = np.fromiter((cache[v] for v in raw), dtype=np.int32, count=len(raw))
        if len(cache) != codes.indexed:
            codes.index()
        return mapping[d.indices.to_numpy()] if len(mapping) else np.zeros(0, dtype=np.int32)

    def _ids(self, ids: pa.Array) -> npt.NDArray[np.int64] | npt.NDArray[np.object_]:
        if self.id_type != "str":
            try:
                return np.asarray(pc.cast(ids, pa.int64()).to_numpy(), dtype=np.int64)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                if self.id_type == "int":
                    raise _SlowPath from None
        return np.asarray(ids.to_pylist(), dtype=object)

    def _times(self, text: pa.Array) -> IntArray:
        try:
            return np.asarray(pc.cast(text, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(), dtype=np.int64)
        except pa.ArrowInvalid:
            pass
        try:
            local = np.asarray(pc.cast(text, pa.timestamp("us")).cast(pa.int64()).to_numpy(), dtype=np.int64)
        except pa.ArrowInvalid:
            raise _SlowPath from None
        return self.local_to_utc(local)

    def local_to_utc(self, local: IntArray) -> IntArray:
        """Naive wall-clock instants in `naive_tz` to UTC, as Python reads them (fold=0): the earlier
        reading of a repeated hour, and a skipped wall-clock time read with the offset before the change
        (02:30 in a 02:00 -> 03:00 spring-forward is 03:30, never 01:30 - nor the day before when the
        zone skips midnight). The row-by-row path reads them the same way."""
        offsets_of = self.calendar.offsets_of
        before = offsets_of(local - DAY_US)  # the offsets in force a day either side (zones change
        after = offsets_of(local + DAY_US)  # offset at most once in two days)
        utc = np.asarray(local - before, dtype=np.int64)
        near = np.flatnonzero(before != after)  # within a day of a change: the few that need a look
        if len(near):
            early, late = utc[near], local[near] - after[near]
            early_ok = offsets_of(early) == before[near]
            late_ok = offsets_of(late) == after[near]
            utc[near] = np.where(early_ok | ~late_ok, early, late)
        return utc

    def _slow_block(self, cols: dict[str, pa.Array], n: int, pos: int) -> Block:
        py = {c: a.to_pylist() for c, a in cols.items()}
        rows: list[list[object]] = []
        pre_rejected: list[Rejected] = []
        for i in range(n):
            raw_id = py["id"][i]
            vals: list[object] = []
            bad = None
            for c in ("id", "created_at", "type", "channel", "customer"):
                v = py[c][i] if c in py else None
                if isinstance(v, bytes):
                    try:
                        s = v.decode("utf-8")
                    except UnicodeDecodeError:
                        bad = BadValue("bad_encoding", f"{c} is not valid {self.encoding}")
                        break
                    if self.encoding != "utf-8" and "\ufffd" in s:
                        bad = BadValue("bad_encoding", f"{c} is not valid {self.encoding}")
                        break
                    v = s if s.strip() else None
                vals.append(v)
            if bad is not None:
                shown = raw_id.decode("utf-8", "replace")[:60] if isinstance(raw_id, bytes) else None
                pre_rejected.append(Rejected(shown, bad.reason, bad.detail))
                continue
            rows.append(vals)
        if self.id_type == "auto":
            _numeric_ids(rows)
        norm = self.rows_normaliser.normalise(rows)  # type: ignore[arg-type]
        batch = norm.batch
        return Block(batch, pre_rejected + norm.rejected, n, pos)

    # --- JSONL -------------------------------------------------------------------------------------
    def _jsonl(self) -> Iterator[Block]:
        stream = self._stream()
        try:
            buf: list[RawRow] = []
            rejected: list[Rejected] = []
            count = 0
            transcoded = self.encoding != "utf-8"  # undecodable bytes arrive as U+FFFD
            for lineno, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                count += 1
                try:
                    obj = json.loads(line)
                except UnicodeDecodeError:
                    rejected.append(self._bad_line(line, lineno))
                    continue
                except json.JSONDecodeError as exc:
                    rejected.append(Rejected(f"line {lineno}", "bad_record", f"not a JSON object: {exc}"[:120]))
                    continue
                if not isinstance(obj, dict):
                    rejected.append(Rejected(f"line {lineno}", "bad_record", "not a JSON object"))
                    continue
                if transcoded and _REPLACEMENT in line:
                    rejected.append(self._bad_line(line, lineno))
                    continue
                if lineno == 1 or (not buf and count == 1):
                    missing = [c for c in REQUIRED if c not in obj]
                    if missing:
                        raise InputError(f"{self.path}: line {lineno} lacks {', '.join(missing)}")
                buf.append(
                    (obj.get("id"), obj.get("created_at"), obj.get("type"), obj.get("channel"), obj.get("customer"))
                )
                if len(buf) >= 100_000:
                    yield self._rows_block(buf, rejected, count, _tell(stream))
                    buf, rejected, count = [], [], 0
            if buf or rejected:
                yield self._rows_block(buf, rejected, count, _tell(stream))
        finally:
            stream.close()

    def _bad_line(self, line: bytes, lineno: int) -> Rejected:
        """A JSONL line with bytes that are not valid in the file's encoding: rejected with its record id
        when the rest of the line still tells it, else with its line number."""
        shown = f"line {lineno}"
        try:
            obj = json.loads(line.decode("utf-8", "replace"))
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("id") is not None:
            shown = str(obj["id"])[:60]
        return Rejected(shown, "bad_encoding", f"line {lineno} is not valid {self.encoding}")

    def _rows_block(self, rows: list[RawRow], rejected: list[Rejected], n: int, pos: int) -> Block:
        norm = self.rows_normaliser.normalise(rows)
        return Block(norm.batch, rejected + norm.rejected, n, pos)


def _invalid_row(number: int | None, text: str, names: list[str]) -> Rejected:
    """A CSV row with the wrong number of fields (an unquoted comma, a cut line): a bad record."""
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        fields = []
    at = names.index("id")
    shown = fields[at].strip()[:60] if at < len(fields) and fields[at].strip() else None
    where = f"row {number}" if number is not None else "a row"
    return Rejected(shown, "bad_record", f"{where} has {len(fields)} fields, the header {len(names)}")


def _numeric_ids(rows: list[list[object]]) -> None:
    """Ids that are all integers (in int64) become ints, in place: as the fast path reads the block, so a
    block with one bad row still has a numeric id column (ties ordered by number, not as text)."""
    ints: list[int | None] = []
    for row in rows:
        text = row[0]
        if text is None:
            ints.append(None)
            continue
        if not isinstance(text, str):  # the slow path decodes every id (bytes in the file) to text
            return
        text = text.strip()
        if len(text) > 20 or not _INTEGER.fullmatch(text):
            return
        value = int(text)
        if not _INT64_MIN <= value <= _INT64_MAX:
            return
        ints.append(value)
    for row, number in zip(rows, ints, strict=True):
        row[0] = number


_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_REPLACEMENT = "\ufffd".encode()  # what the transcoder makes of bytes that are not in the encoding


class _SlowPath(Exception):
    """This block has a bad value somewhere: parse it row by row."""


def _tell(stream: IO[bytes]) -> int:
    try:
        return int(getattr(stream, "fileobj", stream).tell())
    except (OSError, ValueError, AttributeError):
        return 0
