"""FileReader on real files: CSV and JSONL, plain and gzipped, encodings, time zones, every reject
reason with its record id, normalisation, and block boundaries that lose and repeat nothing.

Many tests run twice: once on blocks that pyarrow takes whole (the fast path) and once with a bad row
added to the block (the row-by-row slow path). Both paths must read the good records identically."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from sentinel.days import Calendar
from sentinel.model import Vocab, from_datetime
from sentinel.sources import files
from sentinel.sources.files import Block, FileReader, InputError
from sentinel.sources.rows import IdType, Rejected

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
HEADER = ["id", "created_at", "type", "channel", "customer"]
JULY8_10H_SH = from_datetime(datetime(2025, 7, 8, 10, 0, tzinfo=SH))
JULY8_10H_UTC = from_datetime(datetime(2025, 7, 8, 10, 0, tzinfo=UTC))

Row = tuple[Any, ...]
Record = tuple[Any, int, str, str, str | None]
"""(id, created_at µs, type, channel, customer) as read back."""

BAD_ROW: Row = ("999", "2025-07-08 10:00", "", "电话热线", "")
"""Empty type: rejected, and it sends its whole block down the row-by-row path."""


@dataclass
class Read:
    records: list[Record]
    rejected: list[Rejected]
    blocks: list[Block]
    vocab: Vocab

    def reasons(self) -> dict[str | None, str]:
        return {r.id: r.reason for r in self.rejected}


def write_csv(path: Path, rows: list[Row], header: list[str] | None = None, encoding: str = "utf-8") -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = header or HEADER[: len(rows[0]) if rows else 4]
    w.writerow(cols)
    w.writerows(rows)
    return write_bytes(path, buf.getvalue().encode(encoding))


def write_jsonl(path: Path, rows: list[Row], encoding: str = "utf-8") -> Path:
    lines = [json.dumps(dict(zip(HEADER, r, strict=False)), ensure_ascii=False) for r in rows]
    return write_bytes(path, ("\n".join(lines) + "\n").encode(encoding))


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write(path: Path, rows: list[Row], encoding: str = "utf-8") -> Path:
    if files.format_of(path) == "jsonl":
        return write_jsonl(path, rows, encoding)
    return write_csv(path, rows, encoding=encoding)


def read(path: Path, tz: ZoneInfo = SH, encoding: str = "utf-8", id_type: IdType = "auto") -> Read:
    vocab = Vocab()
    blocks = list(FileReader(path, vocab, tz, encoding, id_type))
    records: list[Record] = []
    for b in blocks:
        batch = b.batch
        for i in range(len(batch)):
            rid = batch.ids[i]
            records.append(
                (
                    rid.item() if isinstance(rid, np.generic) else rid,
                    int(batch.ts[i]),
                    vocab.decode(int(batch.type[i])),
                    vocab.decode(int(batch.channel[i])),
                    batch.customer_of(i),
                )
            )
    return Read(records, [r for b in blocks for r in b.rejected], blocks, vocab)


def good_rows(with_customer: bool) -> list[Row]:
    rows: list[Row] = [
        ("1", "2025-07-08T10:00:00+08:00", "物流配送延误", "电话热线", "c1"),
        ("2", "2025-07-08T10:05:00+08:00", "服务态度", "微信公众号", ""),
        ("3", "2025-07-08T10:10:00+08:00", "物流配送延误", "官网客服", "c1"),
    ]
    return rows if with_customer else [r[:4] for r in rows]


def expected(with_customer: bool) -> list[Record]:
    minute = 60_000_000
    out: list[Record] = [
        (1, JULY8_10H_SH, "物流配送延误", "电话热线", "c1"),
        (2, JULY8_10H_SH + 5 * minute, "服务态度", "微信公众号", None),
        (3, JULY8_10H_SH + 10 * minute, "物流配送延误", "官网客服", "c1"),
    ]
    return out if with_customer else [(*r[:4], None) for r in out]


# --- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c.csv", "c.csv.gz", "c.jsonl", "c.jsonl.gz", "c.ndjson"])
@pytest.mark.parametrize("with_customer", [True, False], ids=["customer", "no-customer"])
def test_every_format_reads_the_same_records(tmp_path: Path, name: str, with_customer: bool) -> None:
    rows = good_rows(with_customer)
    if files.format_of(Path(name)) == "jsonl":
        rows = [(int(r[0]), *r[1:]) for r in rows]  # JSON numbers: a numeric id column
    got = read(write(tmp_path / name, rows))
    assert got.records == expected(with_customer)
    assert got.rejected == []
    assert all(b.batch.ids.dtype == np.int64 for b in got.blocks)
    if not with_customer:
        assert all(b.batch.customer is None for b in got.blocks)


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
def test_numeric_ids_are_an_int64_array_on_both_paths(tmp_path: Path, slow: bool) -> None:
    rows = [
        ("7", "2025-07-08 10:00", "A", "X"),
        ("10", "2025-07-08 10:00", "A", "X"),
        ("9", "2025-07-08 10:00", "A", "X"),
    ]
    got = read(write_csv(tmp_path / "n.csv", rows + ([BAD_ROW[:4]] if slow else [])))
    (block,) = got.blocks
    assert block.batch.ids.dtype == np.int64
    # ties in created_at are ordered by the id as a number (9 before 10), not as text
    assert block.batch.sorted().ids.tolist() == [7, 9, 10]
    assert got.reasons() == ({"999": "missing_type"} if slow else {})


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
@pytest.mark.parametrize("name", ["t.csv", "t.jsonl"])
def test_textual_ids_stay_text(tmp_path: Path, slow: bool, name: str) -> None:
    rows: list[Row] = [
        ("CS-0001", "2025-07-08 10:00", "A", "X"),
        ("CS-0002", "2025-07-08 10:01", "A", "X"),
        ("12", "2025-07-08 10:02", "A", "X"),
    ]
    got = read(write(tmp_path / name, rows + ([BAD_ROW[:4]] if slow else [])))
    assert [r[0] for r in got.records] == ["CS-0001", "CS-0002", "12"]
    assert all(b.batch.ids.dtype == object for b in got.blocks if len(b.batch))


def test_id_type_int_rejects_a_textual_id_and_keeps_the_rest(tmp_path: Path) -> None:
    rows: list[Row] = [("abc", "2025-07-08 10:00", "A", "X"), ("2", "2025-07-08 10:01", "A", "X")]
    got = read(write_csv(tmp_path / "i.csv", rows), id_type="int")
    assert [r[0] for r in got.records] == [2]
    assert got.reasons() == {"abc": "bad_id"}


# --- time ------------------------------------------------------------------------------------------

TIMES = [
    ("2025-07-08T10:00:00+08:00", JULY8_10H_SH),
    ("2025-07-08T10:00:00Z", JULY8_10H_UTC),
    ("2025-07-08T02:00:00.250+00:00", JULY8_10H_SH + 250_000),
    ("2025-07-08 10:00:00", JULY8_10H_SH),  # naive: read in the given zone
    ("2025-07-08T10:00:00.123456", JULY8_10H_SH + 123_456),
    ("2025-07-08 10:00", JULY8_10H_SH),
]


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
@pytest.mark.parametrize(("text", "us"), TIMES, ids=[t for t, _ in TIMES])
def test_timestamp_forms(tmp_path: Path, text: str, us: int, slow: bool) -> None:
    rows: list[Row] = [("1", text, "A", "X")] + ([BAD_ROW[:4]] if slow else [])
    got = read(write_csv(tmp_path / "t.csv", rows))
    assert [r[1] for r in got.records] == [us]


def test_a_block_mixing_offsets_and_naive_times_reads_each_right(tmp_path: Path) -> None:
    rows = [(str(i + 1), text, "A", "X") for i, (text, _) in enumerate(TIMES)]
    got = read(write_csv(tmp_path / "m.csv", rows))
    assert sorted(r[1] for r in got.records) == sorted(us for _, us in TIMES)
    assert got.rejected == []


def test_epoch_numbers_in_the_slow_path(tmp_path: Path) -> None:
    rows: list[Row] = [
        ("1", "1751940000", "A", "X"),
        ("2", "1751940000250", "A", "X"),
        ("3", "1751940000.5", "A", "X"),
        BAD_ROW[:4],
    ]
    got = read(write_csv(tmp_path / "e.csv", rows))
    assert [r[1] for r in got.records] == [JULY8_10H_SH, JULY8_10H_SH + 250_000, JULY8_10H_SH + 500_000]


def test_epoch_numbers_in_jsonl(tmp_path: Path) -> None:
    rows: list[Row] = [(1, 1751940000, "A", "X"), (2, 1751940000250, "A", "X"), (3, 1751940000.5, "A", "X")]
    got = read(write_jsonl(tmp_path / "e.jsonl", rows))
    assert [r[1] for r in got.records] == [JULY8_10H_SH, JULY8_10H_SH + 250_000, JULY8_10H_SH + 500_000]


NY_CASES = [
    # fall back 2025-11-02 02:00 EDT -> 01:00 EST: 01:30 happens twice, the earlier reading is taken
    ("2025-11-02 00:30", datetime(2025, 11, 2, 4, 30, tzinfo=UTC)),
    ("2025-11-02 01:30", datetime(2025, 11, 2, 5, 30, tzinfo=UTC)),
    ("2025-11-02 02:30", datetime(2025, 11, 2, 7, 30, tzinfo=UTC)),
    # spring forward 2025-03-09 02:00 EST -> 03:00 EDT: 02:30 does not exist; read with the offset
    # before the change, as Python does (fold=0), so it lands after 01:59 EST, never before it
    ("2025-03-09 01:30", datetime(2025, 3, 9, 6, 30, tzinfo=UTC)),
    ("2025-03-09 02:30", datetime(2025, 3, 9, 7, 30, tzinfo=UTC)),
    ("2025-03-09 03:30", datetime(2025, 3, 9, 7, 30, tzinfo=UTC)),
    ("2025-07-08 10:00", datetime(2025, 7, 8, 14, 0, tzinfo=UTC)),
]


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
def test_naive_times_across_daylight_saving_changes(tmp_path: Path, slow: bool) -> None:
    rows = [(str(i + 1), text, "A", "X") for i, (text, _) in enumerate(NY_CASES)]
    got = read(write_csv(tmp_path / "ny.csv", rows + ([BAD_ROW[:4]] if slow else [])), tz=NY)
    by_id = {r[0]: r[1] for r in got.records}
    for i, (text, want) in enumerate(NY_CASES):
        assert by_id[i + 1] == from_datetime(want), text
        # the same reading as Python's own for that wall-clock time
        assert by_id[i + 1] == from_datetime(datetime.fromisoformat(text).replace(tzinfo=NY)), text


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
def test_a_repeated_hour_east_of_greenwich_takes_the_earlier_reading(tmp_path: Path, slow: bool) -> None:
    """Europe/Berlin fell back 2025-10-26 03:00 CEST -> 02:00 CET: 02:30 is first read as CEST."""
    berlin = ZoneInfo("Europe/Berlin")
    rows: list[Row] = [
        ("1", "2025-10-26 02:30", "A", "X"),
        ("2", "2025-10-26 03:30", "A", "X"),
        ("3", "2025-03-30 02:30", "A", "X"),
    ]  # skipped in spring: read as CET
    got = read(write_csv(tmp_path / "de.csv", rows + ([BAD_ROW[:4]] if slow else [])), tz=berlin)
    assert {r[0]: r[1] for r in got.records} == {
        1: from_datetime(datetime(2025, 10, 26, 0, 30, tzinfo=UTC)),
        2: from_datetime(datetime(2025, 10, 26, 2, 30, tzinfo=UTC)),
        3: from_datetime(datetime(2025, 3, 30, 1, 30, tzinfo=UTC)),
    }


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
def test_a_skipped_midnight_keeps_the_record_on_its_own_day(tmp_path: Path, slow: bool) -> None:
    """America/Santiago skipped 2024-09-08 00:00-01:00: a naive 00:30 belongs to 8 September, never the
    day before (the wrong day would change that day's counts and baselines)."""
    zone = ZoneInfo("America/Santiago")
    rows: list[Row] = [("1", "2024-09-08 00:30", "A", "X"), ("2", "2024-09-07 23:30", "A", "X")]
    got = read(write_csv(tmp_path / "cl.csv", rows + ([BAD_ROW[:4]] if slow else [])), tz=zone)
    cal = Calendar(zone)
    days = {r[0]: cal.date_of(cal.day_of(r[1])) for r in got.records}
    assert days == {1: date(2024, 9, 8), 2: date(2024, 9, 7)}


def test_naive_times_in_utc_when_the_source_says_so(tmp_path: Path) -> None:
    got = read(write_csv(tmp_path / "u.csv", [("1", "2025-07-08 10:00", "A", "X")]), tz=ZoneInfo("UTC"))
    assert got.records[0][1] == JULY8_10H_UTC


# --- encodings -------------------------------------------------------------------------------------

ZH_ROWS: list[Row] = [
    ("1", "2025-07-08 10:00", "物流配送延误", "电话热线", "客户甲"),
    ("2", "2025-07-08 10:01", "系统操作错误", "微信公众号", "客户乙"),
    ("3", "2025-07-08 10:02", "服务态度", "官网客服", ""),
]


@pytest.mark.parametrize("encoding", ["gbk", "utf-16", "gb18030"])
@pytest.mark.parametrize("name", ["z.csv", "z.jsonl", "z.csv.gz"])
def test_an_encoded_file_reads_like_its_utf8_twin(tmp_path: Path, encoding: str, name: str) -> None:
    twin = read(write(tmp_path / f"utf8-{name}", ZH_ROWS))
    got = read(write(tmp_path / name, ZH_ROWS, encoding=encoding), encoding=encoding)
    assert got.records == twin.records
    assert len(got.records) == 3
    assert got.rejected == []


def test_invalid_utf8_rejects_only_that_record(tmp_path: Path) -> None:
    good = [f"{i},2025-07-08 10:0{i},物流配送延误,电话热线\n".encode() for i in range(1, 6)]
    data = (
        b"id,created_at,type,channel\n"
        + b"".join(good[:2])
        + b"42,2025-07-08 10:00,\xe7\x89\xa9\xff,X\n"
        + b"43,2025-07-08 10:00,A,\xc3(\n"
        + b"".join(good[2:])
    )
    got = read(write_bytes(tmp_path / "bad.csv", data))
    assert got.reasons() == {"42": "bad_encoding", "43": "bad_encoding"}
    assert sorted(r[0] for r in got.records) == [1, 2, 3, 4, 5]
    assert {r[2] for r in got.records} == {"物流配送延误"}


def test_invalid_utf8_in_a_jsonl_line_rejects_it_with_its_id(tmp_path: Path) -> None:
    data = (
        b'{"id": 1, "created_at": "2025-07-08 10:00", "type": "A", "channel": "X"}\n'
        b'{"id": 2, "created_at": "2025-07-08 10:00", "type": "\xff\xfe", "channel": "X"}\n'
        b'{"id": 3, "created_at": "2025-07-08 10:00", "type": "A", "channel": "X"}\n'
    )
    got = read(write_bytes(tmp_path / "bad.jsonl", data))
    assert [r[0] for r in got.records] == [1, 3]
    assert got.reasons() == {"2": "bad_encoding"}


@pytest.mark.parametrize("name", ["g.csv", "g.jsonl"])
def test_bytes_that_are_not_gbk_reject_only_that_record(tmp_path: Path, name: str) -> None:
    good = write(tmp_path / name, ZH_ROWS, encoding="gbk").read_bytes()
    lines = good.split(b"\n")
    # 0x80 and 0xFF are not valid GBK lead bytes
    broken = (
        json.dumps({"id": "9", "created_at": "2025-07-08 10:00", "type": "X", "channel": "Y"}).encode()
        if name.endswith(".jsonl")
        else b"9,2025-07-08 10:00,X,Y,"
    ).replace(b"X", b"\x80\xff")
    lines.insert(2, broken)
    got = read(write_bytes(tmp_path / name, b"\n".join(lines)), encoding="gbk")
    assert got.reasons() == {"9": "bad_encoding"}
    assert sorted(str(r[0]) for r in got.records) == ["1", "2", "3"]
    assert {r[2] for r in got.records} == {"物流配送延误", "系统操作错误", "服务态度"}


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    data = "\ufeffid,created_at,type,channel\n1,2025-07-08 10:00,A,X\n".encode()
    got = read(write_bytes(tmp_path / "bom.csv", data))
    assert [r[0] for r in got.records] == [1]


# --- reject reasons --------------------------------------------------------------------------------


def test_each_reject_reason_with_its_record_id_and_the_rest_of_the_block_kept(tmp_path: Path) -> None:
    rows: list[Row] = [
        ("1", "2025-07-08 10:00", "物流配送延误", "电话热线"),
        ("2", "2025-07-08 10:00", "", "电话热线"),  # empty type
        ("3", "2025-07-08 10:00", "   ", "电话热线"),  # blank type
        ("4", "not a time", "物流配送延误", "电话热线"),
        ("", "2025-07-08 10:00", "物流配送延误", "电话热线"),  # empty id
        ("6", "2025-07-08 10:00", "T" * 201, "电话热线"),  # over-long type
        ("7", "2025-07-08 10:00", "物流配送延误", "C" * 201),  # over-long channel
        ("8", "2025-07-08 10:00", "T" * 200, "电话热线"),  # at the limit: kept
        ("9", "", "物流配送延误", "电话热线"),  # empty time
        ("10", "2025-07-08 10:00", "物流配送延误", "电话热线"),
    ]
    got = read(write_csv(tmp_path / "r.csv", rows))
    assert got.reasons() == {
        "2": "missing_type",
        "3": "missing_type",
        "4": "bad_time",
        None: "missing_id",
        "6": "oversized_field",
        "7": "oversized_field",
        "9": "bad_time",
    }
    assert sorted(r[0] for r in got.records) == [1, 8, 10]
    assert got.blocks[0].batch.ids.dtype == np.int64


def test_an_over_long_customer_or_id_is_rejected(tmp_path: Path) -> None:
    rows: list[Row] = [
        ("1", "2025-07-08 10:00", "A", "X", "c" * 201),
        ("9" * 201, "2025-07-08 10:00", "A", "X", ""),
        ("3", "2025-07-08 10:00", "A", "X", "c" * 200),
    ]
    got = read(write_csv(tmp_path / "o.csv", rows))
    assert Counter(r.reason for r in got.rejected) == {"oversized_field": 2}
    assert "1" in got.reasons()
    assert [str(r[0]) for r in got.records] == ["3"]  # an id column holding a 201-digit id is text


def test_jsonl_reject_reasons(tmp_path: Path) -> None:
    lines = [
        {"id": 1, "created_at": "2025-07-08 10:00", "type": "A", "channel": "X"},
        {"id": 2, "created_at": "2025-07-08 10:00", "channel": "X"},  # no type at all
        {"id": 3, "created_at": "2025-07-08 10:00", "type": "  ", "channel": "X"},  # empty type
        {"id": 4, "created_at": "yesterday", "type": "A", "channel": "X"},
        {"id": None, "created_at": "2025-07-08 10:00", "type": "A", "channel": "X"},
        {"id": 6, "created_at": "2025-07-08 10:00", "type": "A" * 201, "channel": "X"},
        {"id": 7, "created_at": "2025-07-08 10:00", "type": "A", "channel": "X"},
    ]
    text = (
        "\n".join(json.dumps(x) for x in lines[:3])
        + "\n{not json\n[1, 2]\n\n"
        + "\n".join(json.dumps(x) for x in lines[3:])
        + "\n"
    )
    got = read(write_bytes(tmp_path / "r.jsonl", text.encode()))
    assert got.reasons() == {
        "2": "missing_type",
        "3": "missing_type",
        "line 4": "bad_record",
        "line 5": "bad_record",
        "4": "bad_time",
        None: "missing_id",
        "6": "oversized_field",
    }
    assert [r[0] for r in got.records] == [1, 7]


def test_a_json_id_beyond_int64_is_rejected_not_a_crash(tmp_path: Path) -> None:
    rows: list[Row] = [(2**70, "2025-07-08 10:00", "A", "X"), (2, "2025-07-08 10:00", "A", "X")]
    got = read(write_jsonl(tmp_path / "big.jsonl", rows))
    assert [r[0] for r in got.records] == [2]
    assert [r.reason for r in got.rejected] == ["bad_id"]


def test_a_csv_row_with_the_wrong_number_of_fields_is_a_bad_record(tmp_path: Path) -> None:
    data = (
        "id,created_at,type,channel\n"
        "1,2025-07-08 10:00,物流配送延误,电话热线\n"
        "2,2025-07-08 10:00,物流,配送延误,电话热线\n"  # an unquoted comma in the type
        "3,2025-07-08 10:00\n"
        "4,2025-07-08 10:00,物流配送延误,电话热线\n"
    )
    got = read(write_bytes(tmp_path / "w.csv", data.encode()))
    assert got.reasons() == {"2": "bad_record", "3": "bad_record"}
    assert [r[0] for r in got.records] == [1, 4]


# --- normalisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("slow", [False, True], ids=["fast", "slow"])
@pytest.mark.parametrize("name", ["nfc.csv", "nfc.jsonl"])
def test_nfc_and_stripping_give_one_vocab_code(tmp_path: Path, slow: bool, name: str) -> None:
    # U+F9CA is a CJK compatibility ideograph whose canonical decomposition is 流 (U+6D41)
    decomposed = " 物\uf9ca配送延误\t"
    assert decomposed.strip() != "物流配送延误"
    rows: list[Row] = [
        ("1", "2025-07-08 10:00", decomposed, " 电话热线 "),
        ("2", "2025-07-08 10:01", "物流配送延误", "电话热线"),
        ("3", "2025-07-08 10:02", "Cafe\u0301", ""),  # e + combining acute; channel empty in the file
        ("4", "2025-07-08 10:03", "Café", "   "),
    ]
    got = read(write(tmp_path / name, rows + ([BAD_ROW[:4]] if slow else [])))
    assert [r[2:4] for r in got.records] == [
        ("物流配送延误", "电话热线"),
        ("物流配送延误", "电话热线"),
        ("Café", "unknown"),
        ("Café", "unknown"),
    ]
    codes = [int(c) for b in got.blocks for c in b.batch.type]
    assert codes[0] == codes[1] and codes[2] == codes[3]
    assert sorted(got.vocab.values) == sorted(["物流配送延误", "电话热线", "Café", "unknown"])


def test_a_missing_or_null_channel_in_jsonl_is_unknown(tmp_path: Path) -> None:
    lines = [
        {"id": 1, "created_at": "2025-07-08 10:00", "type": "A", "channel": "X"},
        {"id": 2, "created_at": "2025-07-08 10:00", "type": "A"},
        {"id": 3, "created_at": "2025-07-08 10:00", "type": "A", "channel": None},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    got = read(write_bytes(tmp_path / "c.jsonl", text.encode()))
    assert [r[3] for r in got.records] == ["X", "unknown", "unknown"]


def test_customers_are_normalised_and_empty_means_none(tmp_path: Path) -> None:
    rows: list[Row] = [
        ("1", "2025-07-08 10:00", "A", "X", " 客户甲 "),
        ("2", "2025-07-08 10:01", "A", "X", ""),
        ("3", "2025-07-08 10:02", "A", "X", "客户甲"),
    ]
    for slow in (False, True):
        got = read(write_csv(tmp_path / f"cust{slow}.csv", rows + ([BAD_ROW] if slow else [])))
        assert [r[4] for r in got.records] == ["客户甲", None, "客户甲"]


def test_raw_spellings_across_blocks_read_as_on_the_row_by_row_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small blocks: a block whose raw values were all seen before is coded by a vectorised look-up, one
    with a new spelling (added blocks later) goes through normalisation; both agree with the row path."""
    monkeypatch.setattr(files, "BLOCK_BYTES", 256)
    spellings = ["物流配送延误", " 物\uf9ca配送延误\t", "Cafe\u0301", "Café"]
    channels = ["电话热线", " 电话热线 ", "", "   "]
    rows: list[Row] = [
        (
            str(i),
            f"2025-07-08 10:{i % 60:02d}",
            spellings[(i // 30) % 4],
            channels[(i // 40) % 4],
            [" c1 ", "", "c1", f"c{i % 7}"][i % 4],
        )
        for i in range(1, 300)
    ]
    fast = read(write_csv(tmp_path / "fast.csv", rows))
    slow = read(write_csv(tmp_path / "slow.csv", [BAD_ROW, *rows]))  # the bad row: the first block goes row by row
    assert len(fast.blocks) > 10
    assert fast.records == [r for r in slow.records if r[0] != 999]
    assert {r[2] for r in fast.records} == {"物流配送延误", "Café"}
    assert {r[3] for r in fast.records} == {"电话热线", "unknown"}
    assert [r[4] for r in fast.records] == [row[4].strip() or None for row in rows]


# --- whole-file errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.csv", "m.csv.gz", "m.jsonl"])
def test_a_missing_required_column_names_the_columns(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if ".csv" in name:
        data = b"id,created_at,category\n1,2025-07-08 10:00,A\n"
    else:
        data = b'{"id": 1, "created_at": "2025-07-08 10:00", "category": "A"}\n'
    write_bytes(path, data)
    with pytest.raises(InputError) as err:
        read(path)
    assert "type" in str(err.value) and "channel" in str(err.value)
    assert "created_at" not in str(err.value).split("lacks")[-1].split("(need")[0]


@pytest.mark.parametrize("name", ["data.txt", "data.xlsx", "data.gz", "data.csv.bz2"])
def test_an_unknown_extension_is_an_input_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"id,created_at,type,channel\n")
    with pytest.raises(InputError, match="unknown format"):
        read(path)


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read(tmp_path / "absent.csv")


def test_an_empty_csv_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read(write_bytes(tmp_path / "empty.csv", b""))


def test_a_header_only_csv_has_no_records(tmp_path: Path) -> None:
    got = read(write_bytes(tmp_path / "h.csv", b"id,created_at,type,channel\n"))
    assert got.records == [] and got.rejected == []


# --- block boundaries ------------------------------------------------------------------------------

N_LARGE = 200_000
TYPES = ["系统操作错误", "服务态度", "物流配送延误", "产品相关", "其他"]
CHANNELS = ["官网客服", "微信公众号", "电话热线", "其他渠道"]


def large_csv(path: Path, bad_every: int = 0) -> tuple[set[int], set[int]]:
    """N_LARGE rows; every `bad_every`-th has an empty type. Returns (good ids, bad ids)."""
    t0 = from_datetime(datetime(2025, 7, 1, tzinfo=SH)) // 1_000_000
    out = ["id,created_at,type,channel,customer\n"]
    good: set[int] = set()
    bad: set[int] = set()
    for i in range(1, N_LARGE + 1):
        is_bad = bad_every and i % bad_every == 0
        (bad if is_bad else good).add(i)
        when = datetime.fromtimestamp(t0 + i * 3, SH).strftime("%Y-%m-%dT%H:%M:%S+08:00")
        typ = "" if is_bad else TYPES[i % 5]
        out.append(f"{i},{when},{typ},{CHANNELS[i % 4]},c{i % 977}\n")
    write_bytes(path, "".join(out).encode())
    return good, bad


@pytest.mark.parametrize("name", ["big.csv", "big.csv.gz"])
def test_many_blocks_lose_and_repeat_nothing(tmp_path: Path, name: str) -> None:
    good, _ = large_csv(tmp_path / name)
    got = read(tmp_path / name)
    assert len(got.blocks) > 5  # really several pyarrow blocks
    ids = [r[0] for r in got.records]
    assert len(ids) == N_LARGE and set(ids) == good
    assert sum(b.rows for b in got.blocks) == N_LARGE
    assert all(b.batch.ids.dtype == np.int64 for b in got.blocks)
    assert Counter(r[2] for r in got.records) == {t: N_LARGE // 5 for t in TYPES}
    assert got.records[-1][4] == f"c{N_LARGE % 977}"
    assert all(a[1] < b[1] for a, b in zip(got.records, got.records[1:], strict=False))


def test_bad_rows_in_many_blocks_reject_only_themselves(tmp_path: Path) -> None:
    good, bad = large_csv(tmp_path / "bad.csv", bad_every=9_973)
    got = read(tmp_path / "bad.csv")
    assert {r[0] for r in got.records} == good
    assert len(got.records) == len(good)
    assert got.reasons() == {str(i): "missing_type" for i in bad}
    assert all(b.batch.ids.dtype == np.int64 for b in got.blocks)


def test_small_blocks_in_a_transcoded_file_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "BLOCK_BYTES", 256)
    rows = [(str(i), f"2025-07-08 10:{i % 60:02d}", TYPES[i % 5], CHANNELS[i % 4], "") for i in range(1, 400)]
    got = read(write_csv(tmp_path / "s.csv", rows, encoding="gbk"), encoding="gbk")
    assert len(got.blocks) > 10
    assert sorted(r[0] for r in got.records) == list(range(1, 400))
    assert [r[2] for r in sorted(got.records)] == [TYPES[i % 5] for i in range(1, 400)]


def test_a_large_jsonl_file_loses_and_repeats_nothing(tmp_path: Path) -> None:
    n = 120_000  # more than one JSONL batch
    lines = [
        json.dumps({"id": i, "created_at": 1751940000 + i, "type": TYPES[i % 5], "channel": "X"}) for i in range(n)
    ]
    got = read(write_bytes(tmp_path / "big.jsonl.gz", ("\n".join(lines) + "\n").encode()))
    assert len(got.blocks) >= 2
    assert sorted(r[0] for r in got.records) == list(range(n))
