"""The documented install from a wheel: `python3 -m pip wheel --no-deps -w dist .` builds it, and an empty
virtualenv that installs it runs Sentinel from the installed files alone (migrations, templates, the
status page's templates are package data, so a file missing from the wheel fails here
while it would pass from a checkout).

The dependencies come from the test environment through a `.pth` line, so the test needs no package
index beyond the build's own `setuptools`; `.ci/run` also installs the wheel with its dependencies from
the index into a virtualenv of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTINEL_", "PYTHON"))}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)], cwd=dist)
    assert built.returncode == 0, built.stderr[-3000:]
    (whl,) = dist.glob("sentinel_cs-*-py3-none-any.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding only the wheel; returns its `bin/`."""
    venv = tmp_path_factory.mktemp("venv")
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=venv).returncode == 0
    purelib = Path(
        _run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv
        ).stdout.strip()
    )
    # The dependencies, not Sentinel: a plain path line does not run the editable install's own .pth.
    (purelib / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    done = _run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], cwd=venv)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def test_the_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"sentinel/py.typed", "sentinel/store/migrations/env.py"} <= names
    migrations = {n for n in names if re.fullmatch(r"sentinel/store/migrations/versions/\d{4}_\w+\.py", n)}
    in_tree = {
        f"sentinel/store/migrations/versions/{p.name}"
        for p in (ROOT / "sentinel/store/migrations/versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    }
    assert migrations == in_tree and in_tree
    assert any(n.startswith("sentinel/notify/templates/") for n in names)
    assert any(n.startswith("sentinel/web/") and not n.endswith(".py") for n in names)
    # the top-level rules/ folder (sentinel/rules links to it in a checkout), for the demo and for copying
    rules = {n for n in names if n.startswith("sentinel/rules/")}
    assert rules == {f"sentinel/rules/{p.relative_to(ROOT / 'rules')}" for p in (ROOT / "rules").glob("*/*.toml")}
    assert "sentinel/rules/seeds/type-surge.toml" in rules


@pytest.mark.slow
def test_an_empty_virtualenv_with_the_wheel_runs_sentinel(installed: Path, tmp_path: Path) -> None:
    where = _run([str(installed / "python"), "-c", "import sentinel; print(sentinel.__file__)"], cwd=tmp_path)
    assert where.stdout.startswith(str(installed.parent)), where  # the wheel's copy, not the checkout's
    version = _run([str(installed / "sentinel"), "--version"], cwd=tmp_path)
    assert version.returncode == 0 and re.search(r"\d+\.\d+\.\d+", version.stdout + version.stderr)

    demo = _run([str(installed / "sentinel"), "demo", "--duration", "20"], cwd=tmp_path, timeout=120)
    assert demo.returncode == 0, demo.stderr[-3000:]
    delivered = re.search(r"(\d+) message\(s\) delivered", demo.stdout)
    assert delivered and int(delivered.group(1)) >= 1, demo.stdout[-3000:]
    assert "Traceback" not in demo.stderr
    assert f"rules from {installed.parent}" in demo.stdout, demo.stdout[:2000]  # the wheel's copy of rules/seeds
