"""`sentinel bench NAME`: measured figures, printed and written to a JSON file (never asserted by tests).

Each benchmark is a module here with `add_arguments(parser)` and `run(args) -> int`; `BENCHES` names
them for the command line (`common` and the `latency_*` modules are their parts, not benchmarks).
`sentinel bench` alone runs `engine`. The CLI imports every benchmark module to build its options when the
command is `bench`, so a module's heavy imports (pyarrow, ...) belong inside the functions that use them,
never at its top.
"""

from __future__ import annotations

BENCHES: dict[str, tuple[str, str]] = {
    "engine": ("sentinel.bench.engine", "the detection engine: records/s, backtest vs csv parse, RSS, live cycle"),
    "footprint": ("sentinel.bench.footprint", "a running daemon's RSS and CPU-s per hour, idle and at 1,000 series"),
    "latency": ("sentinel.bench.latency", "commit to chat message, Sentinel vs Prometheus + Alertmanager"),
    "delivery": ("sentinel.bench.delivery", "the delivery worker: messages/s from the outbox to local webhooks"),
    "startup": ("sentinel.bench.startup", "how long --help, status, ack and silence take from start to answer"),
    "failover": (
        "sentinel.bench.failover",
        "two instances on one PostgreSQL store: takeover and surge-to-message "
        "across 10 failovers, lost and duplicated messages",
    ),
}
