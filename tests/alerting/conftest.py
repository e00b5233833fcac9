"""Fixtures for alerting tests: `desk(config_body)`, the one dispatcher setup, and a bare store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sentinel.store import Store
from tests.alerting.builders import Desk, open_test_store

MakeDesk = Callable[[str], Desk]


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[MakeDesk]:
    """`desk(body)`: a Desk configured by the TOML `body` (after the time zone and external URL), on a
    store of its own that is closed afterwards."""
    made: list[Desk] = []

    def make(body: str) -> Desk:
        where = tmp_path / f"desk{len(made)}"
        where.mkdir()
        d = Desk.build(where, body)
        made.append(d)
        return d

    yield make
    for d in made:
        d.store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_test_store(tmp_path)
    yield s
    s.close()
