"""Fixtures for the status page tests: the scene of `builders.scene`, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.builders import Scene, scene


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Scene]:
    s = scene(tmp_path)
    try:
        yield s
    finally:
        s.daemon.stop()
