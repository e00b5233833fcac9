"""`sentinel backtest` through the real command line on generated files: JSON lines with the design's
keys, the summary, any order or compression of the same records giving the same events, event time
as the clock, errors with exit 2, `--plot`, and the progress bar only on a terminal."""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import random
import re
import shutil
import sys
import types
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sentinel import cli
from sentinel.model import from_datetime
from sentinel.sources import files

SH = ZoneInfo("Asia/Shanghai")
START = datetime(2021, 3, 1, tzinfo=SH)  # long ago: an event dated now would be the wall clock
HISTORY_DAYS = 7
SURGE_DAY = START + timedelta(days=HISTORY_DAYS)
DAILY = {"系统操作错误": 12, "服务态度": 10, "物流配送延误": 9, "产品相关": 5, "其他": 4}
CHANNELS = ["官网客服", "微信公众号", "电话热线", "其他渠道"]
SURGE_TYPE = "物流配送延误"

CONFIG = """
timezone = "Asia/Shanghai"

[[rules]]
name = "type-surge"
kind = "threshold"
group_by = ["type"]
tiers = { moderate = 2.0, severe = 3.0 }

[[rules]]
name = "same-type-streak"
kind = "streak"
length = 5
hold = "1h"
"""

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESIGN_KEYS = {
    "at",
    "rule",
    "kind",
    "state",
    "tier",
    "labels",
    "value",
    "baseline",
    "ratio",
    "p",
    "fingerprint",
    "instance",
}
STREAK_KEYS = {"length", "chance", "expected_per_day"}


@dataclass(frozen=True)
class Row:
    id: int
    at: datetime
    type: str
    channel: str
    customer: str

    def csv(self) -> list[str]:
        return [str(self.id), self.at.strftime("%Y-%m-%d %H:%M:%S"), self.type, self.channel, self.customer]

    def json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "created_at": self.at.isoformat(),
                "type": self.type,
                "channel": self.channel,
                "customer": self.customer,
            },
            ensure_ascii=False,
        )


def complaints(seed: int = 7) -> list[Row]:
    """A week of ordinary days, then a day on which 物流配送延误 runs at six times its average, with a
    run of eight of them in a row in the morning. In (created_at, id) order."""
    rnd = random.Random(seed)
    stamped: list[tuple[datetime, str, str]] = []
    for d in range(HISTORY_DAYS + 1):
        day = START + timedelta(days=d)
        for typ, n in DAILY.items():
            for _ in range(n * (6 if d == HISTORY_DAYS and typ == SURGE_TYPE else 1)):
                stamped.append((day + timedelta(seconds=rnd.randrange(86_400)), typ, rnd.choice(CHANNELS)))
    run_at = SURGE_DAY + timedelta(hours=3)
    stamped = [s for s in stamped if not run_at <= s[0] < run_at + timedelta(minutes=10)]
    stamped += [(run_at + timedelta(minutes=i), SURGE_TYPE, "电话热线") for i in range(8)]
    stamped.sort()
    return [Row(i, at, typ, chan, f"客户{rnd.randrange(40)}") for i, (at, typ, chan) in enumerate(stamped, 1)]


def write_csv(path: Path, rows: list[Row], extra: str = "") -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "created_at", "type", "channel", "customer"])
    w.writerows(r.csv() for r in rows)
    data = (buf.getvalue() + extra).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_jsonl(path: Path, rows: list[Row]) -> Path:
    data = "".join(r.json() + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sentinel.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def rows() -> list[Row]:
    return complaints()


@pytest.fixture
def data(tmp_path: Path, rows: list[Row]) -> Path:
    return write_csv(tmp_path / "complaints.csv", rows)


@dataclass
class Run:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        return [
            d for d in map(json.loads, (x for x in self.out.splitlines() if x.startswith("{"))) if "summary" not in d
        ]

    def summary(self) -> dict[str, Any]:
        """The output's last line: the summary as JSON."""
        last = json.loads(self.out.splitlines()[-1])
        assert set(last) == {"summary"}
        return last["summary"]  # type: ignore[no-any-return]


def file_events(path: Path) -> list[dict[str, Any]]:
    """The events of an --output file (its last line is the summary)."""
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert set(lines[-1]) == {"summary"} and all("summary" not in d for d in lines[:-1])
    return lines[:-1]


def backtest(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Run:
    try:
        code = cli.main(["backtest", *map(str, args)])
    except SystemExit as exc:  # configuration errors leave through SystemExit(2)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return Run(code, out, err)


def comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without their sample ids (an illustration for the message, from the batch that made it)."""
    return [{k: v for k, v in e.items() if k != "samples"} for e in events]


# --- output ----------------------------------------------------------------------------------------


def test_a_backtest_needs_no_receiver_secret(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying a file sends nothing, so a chat robot's unset `${VAR}` must not stop it (it stops `check`)."""
    monkeypatch.delenv("T_UNSET_ROBOT_URL", raising=False)
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[[receivers]]\nname = "cs"\nkind = "wecom"\n'
        'url = "${T_UNSET_ROBOT_URL}"\n',
        encoding="utf-8",
    )
    expected = backtest(capsys, "--config", config, "--input", data)
    assert expected.code == 0, expected.err
    assert expected.events()
    with pytest.raises(SystemExit):
        cli.main(["check", "--config", str(config)])
    assert "environment variable T_UNSET_ROBOT_URL is not set" in capsys.readouterr().err


def test_events_are_json_lines_with_the_design_keys(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path
) -> None:
    run = backtest(capsys, "--config", config, "--input", data)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines and all(line.startswith("{") and line.endswith("}") for line in lines)  # nothing else
    events = run.events()
    for e in events:
        assert e.keys() >= DESIGN_KEYS
        assert e["state"] in ("firing", "upgraded", "resolved")
        assert e["tier"] in ("light", "moderate", "severe")
        assert e["at"].endswith("+08:00")
        assert datetime.fromisoformat(e["at"]).utcoffset() == timedelta(hours=8)
    surge = [e for e in events if e["rule"] == "type-surge"]
    assert surge and surge[0]["state"] == "firing"
    assert surge[0]["kind"] == "threshold"
    assert surge[0]["labels"] == {"type": SURGE_TYPE}
    assert surge[0]["at"].startswith(SURGE_DAY.date().isoformat())
    assert surge[0]["value"] > 1.5 * surge[0]["baseline"] and surge[0]["value"] >= 10
    assert surge[0]["ratio"] == pytest.approx(surge[0]["value"] / surge[0]["baseline"], abs=1e-3)
    assert {e["tier"] for e in surge} >= {"light", "moderate"}  # six times the average climbs the tiers
    streaks = [e for e in events if e["rule"] == "same-type-streak"]
    assert streaks and all(e["kind"] == "streak" and e["length"] >= 5 for e in streaks)
    opened = [e for e in streaks if e["state"] != "resolved"]
    assert opened and all(e.keys() >= STREAK_KEYS for e in opened)
    assert all(0 < e["chance"] < 1 and e["expected_per_day"] > 0 for e in opened)
    run8 = [e for e in streaks if e["labels"] == {"type": SURGE_TYPE} and e["length"] == 8]
    assert run8 and run8[0]["tier"] == "moderate"  # the planted run of eight reached tiers.moderate = 8
    # without --output the summary goes to stderr
    assert "Alerts opened per rule, tier and day" in run.err
    assert "type-surge" in run.err and "same-type-streak" in run.err
    assert "alerts per day overall" in run.err


def test_output_file_gets_the_same_events_and_stdout_the_summary(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    to_stdout = backtest(capsys, "--config", config, "--input", data)
    out_file = tmp_path / "events.jsonl"
    to_file = backtest(capsys, "--config", config, "--input", data, "--output", out_file)
    assert to_file.code == 0, to_file.err
    assert out_file.read_text(encoding="utf-8") == to_stdout.out
    assert "{" not in to_file.out and "{" not in to_file.err  # no event on either stream
    assert "Alerts opened per rule, tier and day" in to_file.out
    assert "alerts per day overall" in to_file.out
    assert to_file.err == ""


def test_the_summary_counts_alerts_per_rule_tier_and_day(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    run = backtest(capsys, "--config", config, "--input", data, "--output", tmp_path / "e.jsonl")
    events = file_events(tmp_path / "e.jsonl")
    opened = [e for e in events if e["state"] == "firing"]
    day = SURGE_DAY.date().isoformat()
    surge_opened = sum(1 for e in opened if e["rule"] == "type-surge" and e["at"].startswith(day))
    row = re.search(rf"{day}\s*│\s*type-surge\s*│\s*light\s*│\s*(\d+)", run.out)
    assert row is not None, run.out
    assert int(row.group(1)) == surge_opened
    # the overall rate: alerts opened over the days the input covers, on one line
    per_day = re.search(r"alerts per day overall: ([0-9.]+)", run.out)
    assert per_day is not None, run.out
    assert float(per_day.group(1)) == pytest.approx(len(opened) / (HISTORY_DAYS + 1), abs=0.005)
    assert re.search(rf"records: {len(complaints()):,} over {HISTORY_DAYS + 1} day", run.out)


def test_the_early_warning_report_pairs_each_surge_with_the_streak_before_it(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    """The planted run of eight 物流配送延误 on the surge day warns before the surge: the report gives
    that lead, the streak rule's precision, and both in the summary line at the end of --output."""
    later = tmp_path / "later.toml"  # the surge fires at its 20th complaint of the day, hours after the run
    later.write_text(
        config.read_text(encoding="utf-8").replace('group_by = ["type"]', 'group_by = ["type"]\nmin_count = 20'),
        encoding="utf-8",
    )
    run = backtest(capsys, "--config", later, "--input", data, "--output", tmp_path / "e.jsonl")
    assert run.code == 0, run.out
    events = file_events(tmp_path / "e.jsonl")
    summary = json.loads((tmp_path / "e.jsonl").read_text(encoding="utf-8").splitlines()[-1])["summary"]

    def at(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["at"])

    surges = [e for e in events if e["rule"] == "type-surge" and e["state"] == "firing"]
    streaks = [e for e in events if e["rule"] == "same-type-streak" and e["state"] == "firing"]
    window = timedelta(hours=24)
    planted = [e for e in surges if e["labels"] == {"type": SURGE_TYPE}]
    assert planted
    first_streak = min(
        (
            s
            for s in streaks
            if s["labels"] == {"type": SURGE_TYPE} and at(planted[0]) - window <= at(s) <= at(planted[0])
        ),
        key=at,
    )
    ew = summary["early_warning"]
    assert ew["surge_rules"] == ["type-surge"] and ew["warning_rules"] == ["same-type-streak"]
    assert ew["window_s"] == 86400 and ew["surges"] == len(surges) == len(ew["alerts"])
    row = next(a for a in ew["alerts"] if a["labels"] == {"type": SURGE_TYPE})
    assert row["warned_by"] == "same-type-streak" and row["warned_at"] == first_streak["at"]
    assert row["lead_s"] == (at(planted[0]) - at(first_streak)).total_seconds() > 0
    for a in ew["alerts"]:  # a surge of a type no streak preceded is listed as not warned
        before = [s for s in streaks if s["labels"] == a["labels"] and at(a) - window <= at(s) <= at(a)]
        assert (a["warned_by"] is None) == (not before), a
    followed = sum(
        1 for s in streaks if any(t["labels"] == s["labels"] and at(s) <= at(t) <= at(s) + window for t in surges)
    )
    assert 0 < followed < len(streaks)  # some streaks are noise: the precision is a real share
    assert ew["precision"] == {
        "same-type-streak": {
            "alerts": len(streaks),
            "followed": followed,
            "precision": round(followed / len(streaks), 4),
        }
    }
    assert summary["rules"]["same-type-streak"]["alerts"] == len(streaks)
    # the table says the same
    assert "Early warning: did a warning come first (within 24 h)?" in run.out
    assert re.search(
        rf"same-type-streak\s*│\s*{len(streaks)}\s*│\s*{followed}\s*│\s*"
        rf"{round(100 * followed / len(streaks))}%",
        run.out,
    ), run.out
    lead = int(row["lead_s"]) // 60
    assert re.search(rf"{SURGE_TYPE}.*same-type-streak\s*│\s*{lead // 60}:{lead % 60:02d}", run.out), run.out


def test_a_pace_rule_next_to_a_day_rule_is_a_warning(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    """`pace` fires hours before `day` on a morning surge: beside a day-mode rule it is an early warning,
    paired with the day rule's surge like a streak; alone it is the surge."""
    both = tmp_path / "pace.toml"
    both.write_text(
        config.read_text(encoding="utf-8") + '\n[[rules]]\nname = "type-pace"\nkind = "threshold"\nmode = "pace"\n',
        encoding="utf-8",
    )
    run = backtest(capsys, "--config", both, "--input", data)
    ew = run.summary()["early_warning"]
    assert ew["surge_rules"] == ["type-surge"] and ew["warning_rules"] == ["same-type-streak", "type-pace"]
    assert set(ew["precision"]) == {"same-type-streak", "type-pace"}
    assert ew["precision"]["type-pace"]["alerts"] == sum(
        1 for e in run.events() if e["rule"] == "type-pace" and e["state"] == "firing"
    )
    alone = tmp_path / "alone.toml"
    alone.write_text('[[rules]]\nname = "type-pace"\nkind = "threshold"\nmode = "pace"\n', encoding="utf-8")
    ew = backtest(capsys, "--config", alone, "--input", data).summary()["early_warning"]
    assert ew["surge_rules"] == ["type-pace"] and ew["warning_rules"] == [] and ew["precision"] == {}


def test_rejected_records_are_counted_in_the_summary(
    capsys: pytest.CaptureFixture[str], config: Path, rows: list[Row], tmp_path: Path
) -> None:
    bad = "9001,2021-03-03 10:00:00,,电话热线,\n9002,yesterday,其他,电话热线,\n"
    run = backtest(capsys, "--config", config, "--input", write_csv(tmp_path / "bad.csv", rows, bad))
    assert run.code == 0
    assert "bad_time=1" in run.err and "missing_type=1" in run.err
    clean = backtest(capsys, "--config", config, "--input", write_csv(tmp_path / "clean.csv", rows))
    assert comparable(run.events()) == comparable(clean.events())


# --- order and compression -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant", ["shuffled.csv", "sorted.csv.gz", "shuffled.csv.gz", "sorted.jsonl", "shuffled.jsonl.gz"]
)
def test_any_order_or_compression_gives_the_same_events(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, rows: list[Row], tmp_path: Path, variant: str
) -> None:
    reference = backtest(capsys, "--config", config, "--input", data)
    assert reference.code == 0 and reference.events()
    mine = list(rows)
    if variant.startswith("shuffled"):
        random.Random(3).shuffle(mine)
    path = tmp_path / variant
    (write_jsonl if ".jsonl" in variant else write_csv)(path, mine)
    run = backtest(capsys, "--config", config, "--input", path)
    assert run.code == 0, run.err
    assert comparable(run.events()) == comparable(reference.events())
    if ".csv" in variant:  # (a JSONL file this small is one block, sorted as it is read: no note)
        assert ("sorted first" in run.err) == variant.startswith("shuffled")


def test_shuffled_across_many_blocks_gives_the_same_events(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: Path,
    data: Path,
    rows: list[Row],
    tmp_path: Path,
) -> None:
    reference = backtest(capsys, "--config", config, "--input", data)
    monkeypatch.setattr(files, "BLOCK_BYTES", 2048)  # dozens of blocks: the sort spans them all
    mine = list(rows)
    random.Random(11).shuffle(mine)
    run = backtest(capsys, "--config", config, "--input", write_csv(tmp_path / "s.csv", mine))
    assert comparable(run.events()) == comparable(reference.events())


def test_ties_in_time_are_ordered_by_id_across_blocks(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Records are ordered by (created_at, id). A file in time order whose equal times are not in id order
    is not sorted: a streak must see the id order even where a block boundary splits the tie."""
    cfg = tmp_path / "streak.toml"
    cfg.write_text('[[rules]]\nname = "run3"\nkind = "streak"\nlength = 3\n', encoding="utf-8")
    t0 = datetime(2021, 3, 1, 9, tzinfo=SH)
    before = [Row(i, t0 + timedelta(minutes=i), "其他" if i % 2 else "服务态度", "电话热线", "") for i in range(1, 40)]
    tie = t0 + timedelta(hours=2)
    # by id the tie reads A A B A A: no run of three; in file order it reads A A A A B
    tied = {101: "A", 102: "A", 103: "B", 104: "A", 105: "A"}
    file_order = [104, 105, 101, 102, 103]
    rows = before + [Row(i, tie, tied[i], "电话热线", "") for i in file_order]
    monkeypatch.setattr(files, "BLOCK_BYTES", 128)  # a few rows a block
    run = backtest(capsys, "--config", cfg, "--input", write_csv(tmp_path / "ties.csv", rows))
    assert run.code == 0, run.err
    by_id = before + [Row(i, tie, tied[i], "电话热线", "") for i in sorted(tied)]
    reference = backtest(capsys, "--config", cfg, "--input", write_csv(tmp_path / "by_id.csv", by_id))
    assert [e for e in reference.events() if e["labels"] == {"type": "A"}] == []
    assert comparable(run.events()) == comparable(reference.events())


# --- event time ------------------------------------------------------------------------------------


def test_event_times_are_the_records_times(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, rows: list[Row]
) -> None:
    run = backtest(capsys, "--config", config, "--input", data)
    record_times = {from_datetime(r.at) for r in rows}
    first, last = min(record_times), max(record_times)
    events = run.events()
    assert events
    for e in events:
        at = from_datetime(datetime.fromisoformat(e["at"]))
        assert first <= at <= last + 24 * 3600 * 1_000_000, e  # never the wall clock (years later)
        if e["state"] in ("firing", "upgraded"):
            assert at in record_times, e  # opened and upgraded by a record: that record's time
    # a streak resolves when its hold (1 h) expires after the record that broke the run: at that
    # deadline in the data's time, not when the replay happened to read past it
    resolved = [e for e in events if e["rule"] == "same-type-streak" and e["state"] == "resolved"]
    assert resolved
    for e in resolved:
        at = from_datetime(datetime.fromisoformat(e["at"]))
        assert at - 3600 * 1_000_000 in record_times, e


# --- errors ----------------------------------------------------------------------------------------


def test_a_missing_input_file_is_exit_2(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    run = backtest(capsys, "--config", config, "--input", tmp_path / "absent.csv")
    assert run.code == 2
    assert "absent.csv" in run.err and "not found" in run.err
    assert run.out == ""


def test_a_missing_column_is_exit_2_naming_it(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    path = tmp_path / "nochannel.csv"
    path.write_text("id,created_at,type\n1,2021-03-01 10:00,其他\n", encoding="utf-8")
    run = backtest(capsys, "--config", config, "--input", path)
    assert run.code == 2
    assert "missing column" in run.err and "channel" in run.err
    assert "Traceback" not in run.err


def test_an_unknown_encoding_is_exit_2(capsys: pytest.CaptureFixture[str], config: Path, data: Path) -> None:
    run = backtest(capsys, "--config", config, "--input", data, "--encoding", "klingon-8")
    assert run.code == 2
    assert "--encoding" in run.err and "klingon-8" in run.err


def test_an_unknown_extension_is_exit_2(capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path) -> None:
    path = tmp_path / "complaints.xlsx"
    path.write_bytes(b"PK\x03\x04")
    run = backtest(capsys, "--config", config, "--input", path)
    assert run.code == 2 and "unknown format" in run.err


def test_a_config_without_rules_is_exit_2(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "norules.toml"
    empty.write_text('timezone = "Asia/Shanghai"\n', encoding="utf-8")
    run = backtest(capsys, "--config", empty, "--input", data)
    assert run.code == 2
    assert "no rules" in run.err and "norules.toml" in run.err


def test_a_broken_config_is_exit_2(capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "x"\nkind = "threshold"\nfactor = "lots"\n', encoding="utf-8")
    run = backtest(capsys, "--config", bad, "--input", data)
    assert run.code == 2
    assert "bad.toml" in run.err and "factor" in run.err


def test_an_encoded_input_gives_the_utf8_events(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(data.read_text(encoding="utf-8").encode("gbk"))
    run = backtest(capsys, "--config", config, "--input", gbk, "--encoding", "gbk")
    reference = backtest(capsys, "--config", config, "--input", data)
    assert run.code == 0 and comparable(run.events()) == comparable(reference.events())


# --- plot ------------------------------------------------------------------------------------------


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _have_matplotlib(), reason="matplotlib is not installed here (optional extra `plot`)")
def test_plot_writes_a_png_with_the_alerted_series(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    png = tmp_path / "plot.png"
    run = backtest(capsys, "--config", config, "--input", data, "--plot", png)
    assert run.code == 0, run.err
    blob = png.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(blob) > 10_000
    series = re.search(r"plot: .*plot\.png \((\d+) series\)", run.err)
    assert series is not None and int(series.group(1)) >= 1


@pytest.mark.skipif(not _have_matplotlib(), reason="matplotlib is not installed here (optional extra `plot`)")
def test_backtest_plot_of_chinese_types_warns_of_no_missing_glyph(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    """The fixture's types are Chinese (其他, …): the shipped font draws them."""
    import warnings

    import matplotlib

    png = tmp_path / "plot.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = backtest(capsys, "--config", config, "--input", data, "--plot", png)
    assert run.code == 0, run.err
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    assert "Glyph" not in run.err
    assert matplotlib.rcParams["font.family"] == ["sans-serif"]  # the chain was for the plot only


@pytest.mark.skipif(not _have_matplotlib(), reason="matplotlib is not installed here (optional extra `plot`)")
def test_the_zh_cn_plot_draws_its_chinese_legend_and_labels_without_a_missing_glyph(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path, data: Path, tmp_path: Path
) -> None:
    """Real matplotlib, the default locale: the figure's title, legend and axis labels are the Chinese
    ones, and drawing them (saving the PNG) raises no missing-glyph warning."""
    import warnings

    import matplotlib.pyplot as plt

    figures: list[Any] = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (figures.append(fig), close(fig)))
    png = tmp_path / "plot.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = backtest(capsys, "--config", config, "--input", data, "--plot", png)
    assert run.code == 0, run.err
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    (fig,) = figures
    ax = fig.axes[0]
    words = PLOT_WORDS["zh_CN"]
    assert ax.get_title() == words["title"] and ax.get_ylabel() == words["ylabel"]
    assert fig.axes[-1].get_xlabel() == words["xlabel"]
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[:2] == words["lines"] and legend[-1] == words["count"]  # matplotlib lists bars last
    assert set(words["surges"]) <= set(legend) and words["streak"] in legend
    assert not any(w in " ".join(legend) for w in ("baseline", "threshold", "daily count", "light", "severe"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(png, ARTIFACTS / "backtest-plot-zh.png")


@pytest.mark.skipif(_have_matplotlib(), reason="matplotlib is installed here: the PNG test runs instead")
def test_plot_without_matplotlib_is_exit_1_with_the_install_hint(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path, tmp_path: Path
) -> None:
    png = tmp_path / "plot.png"
    run = backtest(capsys, "--config", config, "--input", data, "--plot", png)
    assert run.code == 1
    assert "matplotlib" in run.err and "pip install 'sentinel-cs[plot]'" in run.err
    assert not png.exists()


def test_plot_without_matplotlib_when_it_is_hidden(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path, data: Path, tmp_path: Path
) -> None:
    """Whether or not it is installed: with matplotlib unimportable the command says how to get it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    run = backtest(capsys, "--config", config, "--input", data, "--plot", tmp_path / "p.png")
    assert run.code == 1 and "pip install 'sentinel-cs[plot]'" in run.err


class _FakeAxes:
    def __init__(self) -> None:
        self.bars: list[tuple[list[date], list[int]]] = []
        self.lines: dict[str, list[float]] = {}
        self.marks: list[tuple[date, str]] = []
        self.mark_labels: list[str] = []
        self.title = ""
        self.ylabel = self.xlabel = ""
        self.bar_labels: list[str] = []

    def bar(self, x: list[date], heights: list[int], **kw: Any) -> None:
        self.bars.append((list(x), list(heights)))
        self.bar_labels.append(kw["label"])

    def plot(self, x: list[date], y: list[float], **kw: Any) -> None:
        self.lines[kw["label"]] = list(y)

    def axvline(self, x: date, **kw: Any) -> None:
        self.marks.append((x, kw["color"]))
        self.mark_labels.append(kw.get("label", "_nolegend_"))

    def set_title(self, title: str, **kw: Any) -> None:
        self.title = title

    def set_ylabel(self, label: str, **kw: Any) -> None:
        self.ylabel = label

    def set_xlabel(self, label: str, **kw: Any) -> None:
        self.xlabel = label

    def legend(self, **kw: Any) -> None:
        pass


def _fake_matplotlib(monkeypatch: pytest.MonkeyPatch) -> list[_FakeAxes]:
    """Stands in for matplotlib and records what `sentinel.plot` draws."""
    drawn: list[_FakeAxes] = []

    class Figure:
        def tight_layout(self) -> None:
            pass

        def savefig(self, path: str, dpi: int) -> None:
            Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")

    def subplots(rows: int, cols: int, **kw: Any) -> tuple[Figure, Any]:
        import numpy as np

        axes = np.empty((rows, cols), dtype=object)
        for i in range(rows):
            axes[i, 0] = _FakeAxes()
            drawn.append(axes[i, 0])
        return Figure(), axes

    class FontManager:  # the shipped font is registered with it
        def __init__(self) -> None:
            self.ttflist: list[Any] = []

        def addfont(self, path: str) -> None:
            self.ttflist.append(types.SimpleNamespace(name="Sentinel Noto Sans SC", fname=path))

    mpl = types.ModuleType("matplotlib")
    mpl.use = lambda backend: None  # type: ignore[attr-defined]
    mpl.rc_context = lambda rc: contextlib.nullcontext()  # type: ignore[attr-defined]
    font_manager = types.ModuleType("matplotlib.font_manager")
    font_manager.fontManager = FontManager()  # type: ignore[attr-defined]
    mpl.font_manager = font_manager  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matplotlib.font_manager", font_manager)
    pyplot = types.ModuleType("matplotlib.pyplot")
    pyplot.subplots = subplots  # type: ignore[attr-defined]
    pyplot.close = lambda fig: None  # type: ignore[attr-defined]
    mpl.pyplot = pyplot  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    return drawn


# the plot's words in each locale, spelled out (not read back from the catalogue the plot uses)
PLOT_WORDS = {
    "en": {
        "title": f"type-surge type={SURGE_TYPE}",
        "count": "daily count",
        "lines": ["baseline", "threshold"],
        "surges": ["type-surge light", "type-surge moderate", "type-surge severe"],
        "streak": "same-type-streak (streak)",
        "ylabel": "complaints a day",
        "xlabel": "day (Asia/Shanghai)",
    },
    "zh_CN": {
        "title": f"type-surge 类型={SURGE_TYPE}",
        "count": "每日数量",
        "lines": ["基线", "阈值"],
        "surges": ["type-surge 轻度", "type-surge 中度", "type-surge 重度"],
        "streak": "same-type-streak（连续同类）",
        "ylabel": "每日投诉数",
        "xlabel": "日期（Asia/Shanghai）",
    },
}


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_plot_draws_each_alerted_series_against_its_baseline(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, rows: list[Row], tmp_path: Path, locale: str
) -> None:
    """What the chart shows, whatever draws it: the alerted series' daily counts, the baseline (mean of
    the previous days), the threshold (factor x baseline, at least min_count) and the alerts marked, each
    named in the configured `locale`."""
    drawn = _fake_matplotlib(monkeypatch)
    config = tmp_path / "sentinel.toml"
    config.write_text(f'locale = "{locale}"\n' + CONFIG, encoding="utf-8")
    words = PLOT_WORDS[locale]
    mine = list(rows)
    random.Random(5).shuffle(mine)  # the sorted replay keeps the daily counts too
    run = backtest(
        capsys, "--config", config, "--input", write_csv(tmp_path / "s.csv", mine), "--plot", tmp_path / "p.png"
    )
    assert run.code == 0, run.err
    assert "plot: " in run.err and "(1 series)" in run.err  # one threshold series alerted; streaks not charted
    (ax,) = drawn
    assert ax.title == words["title"]
    assert (ax.bar_labels, list(ax.lines), ax.ylabel, ax.xlabel) == (
        [words["count"]],
        words["lines"],
        words["ylabel"],
        words["xlabel"],
    )
    baseline, threshold = words["lines"]
    ((days, counts),) = ax.bars
    want = [DAILY[SURGE_TYPE]] * HISTORY_DAYS + [
        sum(1 for r in rows if r.type == SURGE_TYPE and r.at.date() == SURGE_DAY.date())
    ]
    assert days == [(START + timedelta(days=d)).date() for d in range(HISTORY_DAYS + 1)]
    assert counts == want
    assert ax.lines[baseline][-1] == pytest.approx(DAILY[SURGE_TYPE])  # the 7 days before
    assert ax.lines[threshold][-1] == pytest.approx(max(1.5 * DAILY[SURGE_TYPE], 10))
    assert {d for d, _ in ax.marks} == {SURGE_DAY.date()}
    surge_marks = [lab for lab in ax.mark_labels if not lab.startswith(("same-type-streak", "_"))]
    assert surge_marks == words["surges"]  # opened, upgraded x2
    # the streak alerts on the same type are marked too, with one legend entry for all of them
    streaks = [
        e
        for e in run.events()
        if e["rule"] == "same-type-streak" and e["state"] == "firing" and e["labels"] == {"type": SURGE_TYPE}
    ]
    assert streaks
    streak_marks = [c for (_, c) in ax.marks if c == "#31a354"]
    assert len(streak_marks) == len(streaks)
    assert ax.mark_labels.count(words["streak"]) == 1
    assert len(ax.marks) == 3 + len(streaks)
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")


def test_plot_of_a_new_type_shows_its_zero_days_and_a_zero_baseline(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path, rows: list[Row], tmp_path: Path
) -> None:
    """A type first seen on the surge day had zero complaints on the earlier days (design: "Records,
    time and history"); the engine fires on its count against a zero baseline, and the chart shows that."""
    drawn = _fake_matplotlib(monkeypatch)
    new = [Row(10_000 + i, SURGE_DAY + timedelta(hours=12, minutes=i), "新类型", "电话热线", "") for i in range(15)]
    run = backtest(
        capsys, "--config", config, "--input", write_csv(tmp_path / "n.csv", rows + new), "--plot", tmp_path / "p.png"
    )
    assert run.code == 0, run.err
    (ax,) = [a for a in drawn if a.title == "type-surge 类型=新类型"]  # the default locale, zh_CN
    ((days, counts),) = ax.bars
    assert days[0] == START.date() and counts == [0] * HISTORY_DAYS + [15]
    assert ax.lines["基线"][-1] == 0.0
    assert ax.lines["阈值"][-1] == 10  # min_count decides over a zero baseline


# --- progress --------------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_progress_output_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str], config: Path, data: Path
) -> None:
    run = backtest(capsys, "--config", config, "--input", data)
    assert "replaying" not in run.err and "replaying" not in run.out
    assert "\x1b[" not in run.err and "\x1b[" not in run.out  # no cursor movement, no colours
    assert all(line.startswith("{") for line in run.out.splitlines())


def test_a_progress_bar_on_a_terminal_goes_to_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path, data: Path
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    run = backtest(capsys, "--config", config, "--input", data)
    assert run.code == 0
    assert "replaying" in terminal.getvalue()
    # stdout carries the events only, even when stdout is the same terminal or a file
    assert run.out and all(line.startswith("{") for line in run.out.splitlines())
