"""The import rules of the layout (README, "Layout"), read from the code itself with `ast`:

- detection is pure: nothing under `sentinel/detect/` imports the store, the notifiers, the sources, the
  metrics, the command line or any other runtime part, nor a database, network or clock library;
- no two parts of the package import each other, directly or round a longer loop (a part is a
  subpackage, such as `sentinel/store/`, or a top-level module, such as `sentinel/loader.py`).

Every import counts: at the top, inside a function, under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sentinel"

DETECT_MUST_NOT_IMPORT = (
    # the parts named by the rule
    "sentinel.store",
    "sentinel.notify",
    "sentinel.sources",
    "sentinel.metrics",
    "sentinel.cli",
    # the rest of the runtime: detection is what they call, never what calls them
    "sentinel.detection",
    "sentinel.daemon",
    "sentinel.service",
    "sentinel.ingest",
    "sentinel.alerting",
    "sentinel.web",
    "sentinel.api",
    "sentinel.api_v2",
    "sentinel.http",
    "sentinel.loader",
    "sentinel.clock",
    "sentinel.backtest",
    "sentinel.demo",
    "sentinel.bench",
    # what the store, the network and the clock are made of
    "sqlalchemy",
    "psycopg",
    "pymysql",
    "requests",
    "urllib3",
    "socket",
    "http",
    "prometheus_client",
    "time",
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the file, relative ones resolved, `from a import b` giving
    both `a` and `a.b` (b may be a module)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def part_of(module: str, root: Path) -> str | None:
    """The part of the package a module belongs to (`store`, `config`), or None outside the package."""
    head, _, rest = module.partition(".")
    if head != root.name or not rest:
        return None
    first = rest.split(".")[0]
    return first if (root / first).is_dir() or (root / f"{first}.py").is_file() else None


def detect_violations(root: Path) -> list[str]:
    out = []
    for path in sorted((root / "detect").rglob("*.py")):
        for line, module in imports(path, root):
            if any(module == bad or module.startswith(bad + ".") for bad in DETECT_MUST_NOT_IMPORT):
                out.append(f"{path.relative_to(root.parent)}:{line} imports {module}")
    return sorted(set(out))


def part_graph(root: Path) -> dict[str, dict[str, set[str]]]:
    """part -> part it imports -> the files (with line) that do."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(root.rglob("*.py")):
        me = part_of(module_name(path, root), root)
        if me is None:
            continue
        graph.setdefault(me, {})
        for line, module in imports(path, root):
            other = part_of(module, root)
            if other is not None and other != me:
                graph[me].setdefault(other, set()).add(f"{path.relative_to(root.parent)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one part (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def describe(graph: dict[str, dict[str, set[str]]], component: list[str]) -> str:
    ties = [
        f"{a} -> {b} ({', '.join(sorted(graph[a][b]))})" for a in component for b in component if b in graph.get(a, {})
    ]
    return "; ".join(ties)


def test_detection_imports_nothing_of_the_runtime() -> None:
    assert detect_violations(PACKAGE) == []


def test_no_two_parts_of_the_package_import_each_other() -> None:
    graph = part_graph(PACKAGE)
    assert {"detect", "store", "notify", "config", "detection"} <= set(graph)  # the walk saw the package
    assert [describe(graph, c) for c in cycles(graph)] == []


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A package that breaks both rules: detect reads the store and the clock, config and notify import
    each other, and a -> b -> c -> a."""
    root = tmp_path / "sentinel"
    files = {
        "__init__.py": "",
        "detect/__init__.py": "",
        "detect/rule.py": "from sentinel.store import alerts\n\ndef f():\n    import time\n",
        "store/__init__.py": "",
        "store/alerts.py": "from sentinel.model import Event\n",
        "model.py": "",
        "config.py": "def load():\n    from sentinel.notify.render import check\n",
        "notify/__init__.py": "from ..config import load\n",
        "notify/render.py": "",
        "a.py": "import sentinel.b\n",
        "b.py": "from sentinel import c\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sentinel.a import x\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_the_rules_catch_what_they_forbid(broken: Path) -> None:
    assert detect_violations(broken) == [
        "sentinel/detect/rule.py:1 imports sentinel.store",
        "sentinel/detect/rule.py:1 imports sentinel.store.alerts",
        "sentinel/detect/rule.py:4 imports time",
    ]
    graph = part_graph(broken)
    assert cycles(graph) == [["a", "b", "c"], ["config", "notify"]]
    assert describe(graph, ["config", "notify"]) == (
        "config -> notify (sentinel/config.py:2); notify -> config (sentinel/notify/__init__.py:1)"
    )
