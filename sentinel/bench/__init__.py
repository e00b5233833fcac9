"""`sentinel bench NAME`: measured figures, printed and written to a JSON file (never asserted by tests).

Each benchmark is a module here with `add_arguments(parser)` and `run(args) -> int`; `BENCHES` names
them for the command line. `sentinel bench` alone runs `engine`.
"""

from __future__ import annotations

BENCHES: dict[str, tuple[str, str]] = {
    "engine": ("sentinel.bench.engine", "the detection engine: records/s, backtest vs csv parse, RSS, live cycle"),
    "delivery": ("sentinel.bench.delivery", "the delivery worker: messages/s from the outbox to local webhooks"),
}
