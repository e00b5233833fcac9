"""The response tiers, apart from `sentinel.model` (numpy): the configuration needs them, and the commands
that only read it (`status`, `ack`, `silence`) should start without loading numpy."""

from __future__ import annotations

from enum import IntEnum


class Tier(IntEnum):
    """Response tiers of seed 004: light 轻度 (level III), moderate 中度 (II), severe 重度 (I)."""

    LIGHT = 1
    MODERATE = 2
    SEVERE = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def zh(self) -> str:
        return {1: "轻度", 2: "中度", 3: "重度"}[self.value]

    @property
    def response_zh(self) -> str:
        return {1: "三级响应", 2: "二级响应", 3: "一级响应"}[self.value]

    @property
    def response_en(self) -> str:
        return {1: "level III response", 2: "level II response", 3: "level I response"}[self.value]

    @classmethod
    def parse(cls, name: str) -> Tier:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown tier {name!r} (light, moderate, severe)") from None
