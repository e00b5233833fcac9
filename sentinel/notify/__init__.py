"""Chat-tool adapters: one module per vendor, each registering one adapter class by `kind`.

Importing this package registers every vendor in `ADAPTERS`; the delivery worker calls `create`
with a receiver's configuration and knows nothing of any vendor.
"""

from __future__ import annotations

from sentinel.config import ReceiverConfig
from sentinel.notify.base import ADAPTERS, Adapter, Delivered, Failed, Message, Outcome, RetryAfter
from sentinel.notify.dingtalk import DingTalkAdapter
from sentinel.notify.discord import DiscordAdapter
from sentinel.notify.feishu import FeishuAdapter, LarkAdapter
from sentinel.notify.slack import SlackAdapter
from sentinel.notify.teams import TeamsAdapter
from sentinel.notify.webhook import WebhookAdapter
from sentinel.notify.wecom import WeComAdapter

_CONFORMS: tuple[type[Adapter], ...] = (DingTalkAdapter, DiscordAdapter, FeishuAdapter, LarkAdapter, SlackAdapter,
                                        TeamsAdapter, WebhookAdapter, WeComAdapter)
"""mypy checks here that every adapter satisfies the `Adapter` protocol."""


def create(config: ReceiverConfig) -> Adapter:
    """The adapter for one receiver (its own connection pools; call `close` when the receiver goes)."""
    adapter: Adapter = ADAPTERS[config.kind](config)
    return adapter


__all__ = ["ADAPTERS", "Adapter", "Delivered", "Failed", "Message", "Outcome", "RetryAfter", "create"]
