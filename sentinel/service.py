"""Assembling the daemon from a configuration.

`build` makes the `Daemon` (which builds its `Pipeline`: ingest -> detection -> dispatch -> delivery),
hands the API and the status page the daemon and its typed pipeline, and gives a PostgreSQL source its
LISTEN/NOTIFY listener. Tests and the demo call it with their own clock, listen address or source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sentinel.clock import Clock
from sentinel.config import Config
from sentinel.daemon import Daemon
from sentinel.metrics import Metrics
from sentinel.sources import Source
from sentinel.store import Store

if TYPE_CHECKING:
    from sentinel.sources.pg_notify import Listener


def make_listener(daemon: Daemon, config_path: str | None) -> Listener | None:
    """A LISTEN/NOTIFY listener that wakes the poll, for a PostgreSQL source that wants one.

    None for other databases, with `listen_notify = false` (a pooler in transaction mode cannot hold a
    LISTEN), and for a query source without `notify_channel` (no table to derive a channel from)."""
    from sqlalchemy.engine import make_url

    src = daemon.cfg.source
    assert src is not None
    url = src.url.get()
    if not src.listen_notify or make_url(url).get_backend_name() != "postgresql":
        return None
    from sentinel.sources.pg_notify import Listener, Target, channel_for  # psycopg only where it is used

    channel = channel_for(src.table, src.notify_channel)
    if channel is None:
        return None
    gauge = daemon.metrics.source_listen_up
    return Listener(
        Target.from_url(url, "sentinel-listen"),
        channel,
        daemon.wake_poll,
        table=src.table,
        describe=daemon.source.describe(),
        fix_hint=f"sentinel db notify-trigger --config {config_path or 'FILE'} --apply",
        on_state=lambda up: gauge.set(1 if up else 0),
    )


def make_source(cfg: Config) -> Source:
    from sentinel.sources.sql import SqlSource

    assert cfg.source is not None
    return SqlSource(cfg.source, ZoneInfo(cfg.source.timezone or cfg.timezone))


def build(
    cfg: Config,
    *,
    config_path: str | None = None,
    clock: Clock | None = None,
    listen: str | None = None,
    source: Source | None = None,
    store: Store | None = None,
    metrics: Metrics | None = None,
    dry_run: bool = False,
) -> Daemon:
    if cfg.source is None:
        raise ValueError("[source] is required to run the daemon")
    if cfg.state_url is None:
        raise ValueError("state_url is required to run the daemon")
    store = store or Store(cfg.state_url.get(), lease_ttl_s=cfg.state.lease_ttl.total_seconds())
    daemon = Daemon(
        cfg,
        source=source or make_source(cfg),
        store=store,
        clock=clock,
        metrics=metrics,
        listen=listen,
        config_path=config_path,
        dry_run=dry_run or not cfg.notify,
    )
    from sentinel import api, api_v2

    api.register(daemon)
    api_v2.register(daemon)
    from sentinel.web import status_page

    status_page.register(daemon)
    daemon.pipeline.listener = make_listener(daemon, config_path)
    return daemon
