"""Fixtures for delivery tests: the fake vendors of `tests/notify` and pipelines on a real SQLite store."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sentinel.clock import ManualClock
from sentinel.config import ReceiverConfig, RouteConfig
from sentinel.notify.base import Adapter
from tests.delivery.builders import Pipeline, make_config, open_store
from tests.notify.conftest import (  # noqa: F401
    closed_url,
    dingtalk,
    discord,
    feishu,
    slack,
    teams,
    webhook,
    wecom,
)

MakePipeline = Callable[..., Pipeline]


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[MakePipeline]:
    """`pipeline(receivers, routes, clock=…, dry_run=…, **config)`: a Pipeline, closed afterwards."""
    made: list[Pipeline] = []

    def make(
        receivers: Sequence[ReceiverConfig],
        routes: Sequence[RouteConfig] = (),
        *,
        clock: ManualClock | None = None,
        dry_run: bool = False,
        adapter_factory: Callable[[ReceiverConfig], Adapter] | None = None,
        **kw: Any,
    ) -> Pipeline:
        cfg = make_config(tmp_path, receivers, routes, **kw)
        p = Pipeline(cfg, open_store(cfg), clock, dry_run=dry_run, adapter_factory=adapter_factory)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
        p.store.close()
