"""The layout's two rules that are not about imports (those are `test_imports.py`): no module longer than
a newcomer reads in one sitting, and every module drawn in the README's Layout section, so the map a
newcomer starts from is the tree they find."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sentinel"
MAX_MODULE_LINES = 500  # issue 13: past this a module holds two concerns


def oversized(root: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    """The package's modules longer than `limit` lines, with their length."""
    out = []
    for path in sorted(root.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(root.parent)}: {n} lines")
    return out


def undrawn(root: Path, readme: str) -> list[str]:
    """The package's modules whose name the README's Layout section does not mention (a face
    `__init__.py` and the Alembic migrations, which the section names as a folder, aside)."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", section))
    return [
        str(path.relative_to(root.parent))
        for path in sorted(root.rglob("*.py"))
        if path.name != "__init__.py" and "migrations" not in path.parts and path.stem not in words
    ]


def undocumented(root: Path) -> list[str]:
    """The package's modules that do not open with a docstring (what the module guarantees, and why)."""
    return [
        str(path.relative_to(root.parent))
        for path in sorted(root.rglob("*.py"))
        if "migrations" not in path.parts and ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) is None
    ]


def test_every_module_says_what_it_is_for() -> None:
    assert undocumented(PACKAGE) == []


def test_no_module_is_longer_than_a_sitting() -> None:
    assert oversized(PACKAGE) == []


def test_the_readme_draws_every_module() -> None:
    assert undrawn(PACKAGE, (ROOT / "README.md").read_text(encoding="utf-8")) == []


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    root = tmp_path / "sentinel"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("", encoding="utf-8")
    (root / "short.py").write_text("x = 1\n" * 500, encoding="utf-8")
    (root / "sub" / "long.py").write_text("x = 1\n" * 501, encoding="utf-8")
    assert oversized(root) == ["sentinel/sub/long.py: 501 lines"]
    readme = "# X\n\n## Layout\n\n```\nsentinel/  short.py\n```\n\n## Next\n\nlong.py\n"
    assert undrawn(root, readme) == ["sentinel/sub/long.py"]
    (root / "documented.py").write_text('"""Why."""\n', encoding="utf-8")
    assert undocumented(root) == ["sentinel/__init__.py", "sentinel/short.py", "sentinel/sub/long.py"]
