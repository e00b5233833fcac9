"""`sentinel bench` from any directory: its `python -c` children import the running interpreter's `sentinel`,
not a `sentinel/` folder that happens to be in the working directory, and a child that fails is reported
with its own error output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.bench.common import BenchError, python_child, run_child
from sentinel.bench.delivery import RemoteSink
from sentinel.bench.engine import BENCH_RULES, peak_rss_of_backtest, write_input


@pytest.fixture
def beside_a_decoy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory holds a `sentinel/` package that cannot be imported (the parent of a checkout
    named `sentinel`, say)."""
    decoy = tmp_path / "sentinel"
    decoy.mkdir()
    (decoy / "__init__.py").write_text(
        "raise ImportError('the decoy in the working directory was imported')\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_decoy_is_what_a_plain_python_c_child_imports(beside_a_decoy: Path) -> None:
    """The fixture's trap is real: without `-P` the child imports the folder, which is the bug."""
    out = subprocess.run([sys.executable, "-c", "import sentinel"], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "the decoy in the working directory was imported" in out.stderr


def test_the_backtest_child_imports_the_running_package(beside_a_decoy: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "bench.toml"
    cfg.write_text(BENCH_RULES, encoding="utf-8")
    data = tmp_path / "complaints.csv"
    write_input(data, 2_000, 10, 5)
    seconds, rss_mb = peak_rss_of_backtest(cfg, data)
    assert seconds > 0 and rss_mb > 10


def test_the_delivery_sink_child_imports_the_running_package(beside_a_decoy: Path) -> None:
    sink = RemoteSink(threads=2)
    try:
        assert sink.base.startswith("http://127.0.0.1:")
        assert sink.delivery_ids() == {}
    finally:
        sink.close()


def test_a_failing_child_shows_its_own_error_output(beside_a_decoy: Path) -> None:
    code = "import sentinel, sys; sys.exit(f'no such input: {sys.argv[1]} (sentinel from ' + sentinel.__file__ + ')')"
    with pytest.raises(BenchError) as err:
        run_child("the backtest child", python_child(code, "/nowhere.csv"))
    message = str(err.value)
    assert message.startswith("the backtest child exited with status 1:")
    assert "no such input: /nowhere.csv" in message
    assert str(beside_a_decoy) not in message.split("sentinel from ")[1]  # the running package, not the decoy


def test_the_running_package_wins_over_a_pythonpath_decoy(
    beside_a_decoy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(beside_a_decoy))
    out = run_child("child", python_child("import sentinel; print(sentinel.__file__)"))
    import sentinel

    assert Path(out.strip()) == Path(sentinel.__file__).resolve()
    assert os.environ["PYTHONPATH"] == str(beside_a_decoy)  # the parent's own environment is left alone


def test_the_startup_bench_times_the_commands_a_person_types(tmp_path: Path) -> None:
    """Figures, not a timed test: each command answered as expected (help; the API refused) and was timed."""
    out = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, "-m", "sentinel.cli", "bench", "startup", "--runs", "1", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text(encoding="utf-8"))["figures"]
    imports = {"import sentinel.client_config", "import sentinel.config"}
    assert set(figures) == {"--help", "status", "ack", "silence list"} | imports
    commands = [f for name, f in figures.items() if name not in imports]
    assert all(0 < f["min_s"] <= f["median_s"] and f["cpu_median_s"] > 0 for f in commands)
    assert all(figures[name]["ms"] > 0 for name in imports)
    assert "sentinel status" in done.stdout


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_startup_bench_counts_instructions_under_callgrind(tmp_path: Path) -> None:
    """The load-proof figure: the count grows with the work the command does."""
    from sentinel.bench.startup import instructions

    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    small = instructions([sys.executable, "-c", "print('done')"], env, str(tmp_path), "done")
    large = instructions(
        [sys.executable, "-c", "import json, tomllib; sum(range(10**6)); print('done')"], env, str(tmp_path), "done"
    )
    assert small is not None and large is not None and 0 < small < large
