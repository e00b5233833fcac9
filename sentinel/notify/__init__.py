"""Chat-tool adapters: one module per vendor, each registering one adapter class by `kind`.

Importing this package registers every vendor in `ADAPTERS`; the delivery worker calls `create`
with a receiver's configuration and knows nothing of any vendor. What a vendor is (its size limits,
its published rate limits, which receiver keys it takes, whether its payload lists the whole group)
is written on its adapter class (see `Adapter`), and read from there by the worker, the renderer, the
dispatcher and the configuration check (`sentinel.notify.checks`).
"""

from __future__ import annotations

from sentinel.config import ReceiverConfig
from sentinel.notify import dingtalk, discord, feishu, slack, teams, webhook, wecom  # noqa: F401 - registering
from sentinel.notify.base import ADAPTERS, Adapter, Delivered, Failed, Message, Outcome, RetryAfter


def create(config: ReceiverConfig) -> Adapter:
    """The adapter for one receiver (its own connection pools; call `close` when the receiver goes)."""
    return ADAPTERS[config.kind](config)


__all__ = ["ADAPTERS", "Adapter", "Delivered", "Failed", "Message", "Outcome", "RetryAfter", "create"]
