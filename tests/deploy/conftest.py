"""Fixtures for the deploy tests: Sentinel's populated exposition text, and promtool (or a skip)."""

from __future__ import annotations

import shutil

import pytest

from tests.deploy.helpers import populated_metrics


@pytest.fixture(scope="session")
def rendered_metrics() -> str:
    return populated_metrics().render().decode("utf-8")


@pytest.fixture(scope="session")
def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (Debian package: prometheus; apt-get install prometheus)")
    return exe
