"""`[[rules]]`: the three kinds of rule (threshold, streak, quiet), told apart by `kind`.

Each rule's own limits are checked here (tiers above the factor or the length, no field listed twice), so
a rule that parsed can be built by `sentinel.detect` without further checks; what a rule refers to
outside itself (a column of the source, a duplicate name) is `Config.cross_check`'s.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from sentinel.config.values import NAME_PATTERN, Duration, Gap, Model, exact

Field_ = Literal["type", "channel"]


def _each_once(fields: list[Field_]) -> list[Field_]:
    if len(set(fields)) != len(fields):
        raise ValueError("lists a field twice")
    return fields


GroupBy = Annotated[list[Field_], AfterValidator(_each_once)]  # a rule's series: each field at most once


class Filter(Model):
    type: list[str] = []
    channel: list[str] = []

    @field_validator("type", "channel")
    @classmethod
    def _normalise(cls, v: list[str]) -> list[str]:
        """Compared with data that is NFC-normalised and stripped, so the values must be too."""
        import unicodedata

        return [unicodedata.normalize("NFC", x).strip() for x in v]


class ThresholdTiers(Model):
    moderate: float = 2.0
    severe: float = 3.0


class StreakTiers(Model):
    moderate: int = 8
    severe: int = 12


class ThresholdRuleConfig(Model):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["threshold"]
    group_by: GroupBy = ["type"]
    factor: float = Field(1.5, gt=0)
    baseline_days: int = Field(7, ge=1, le=366)
    min_history_days: int = Field(3, ge=0, le=366)
    baseline: Literal["mean", "median"] = "mean"
    mode: Literal["day", "pace", "rolling"] = "day"
    min_count: int = Field(10, ge=1)
    max_p: float | None = Field(None, gt=0, lt=1)
    tiers: ThresholdTiers = ThresholdTiers()
    resolve_below: float | None = Field(None, gt=0)
    resolve_after: Duration = timedelta(hours=1)
    where: Filter = Filter()
    where_not: Filter = Filter()
    max_series: int = Field(10_000, ge=1)
    baseline_by: Literal["all", "day_kind", "weekday"] = "all"
    baseline_weeks: int = Field(4, ge=1, le=52)

    @model_validator(mode="after")
    def _tiers_above_factor(self) -> ThresholdRuleConfig:
        f, m, s = exact(self.factor), exact(self.tiers.moderate), exact(self.tiers.severe)
        if m <= f:
            raise ValueError(f"tiers.moderate ({self.tiers.moderate}) must be above factor ({self.factor})")
        if s <= m:
            raise ValueError(f"tiers.severe ({self.tiers.severe}) must be above tiers.moderate ({self.tiers.moderate})")
        return self


class StreakRuleConfig(Model):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["streak"]
    field: Field_ = "type"
    scope: list[Field_] = []
    length: int = Field(5, ge=2)
    tiers: StreakTiers = StreakTiers()
    distinct: Literal["customer"] | None = None
    # a pause this long ends a run: a quiet night is not "in a row", and a run that never ended would keep
    # a dominant type's streak open for days ("off" restores that)
    max_gap: Gap = timedelta(hours=2)
    hold: Duration = timedelta(hours=1)
    max_expected_per_day: float | None = Field(None, gt=0)
    history_days: int = Field(7, ge=1, le=366)
    prior_days: float = Field(7.0, ge=0, le=366)
    where: Filter = Filter()
    where_not: Filter = Filter()

    @model_validator(mode="after")
    def _check(self) -> StreakRuleConfig:
        if self.field in self.scope:
            raise ValueError(f"scope must not contain the streak's own field {self.field!r}")
        if len(set(self.scope)) != len(self.scope):
            raise ValueError("scope lists a field twice")
        if self.tiers.moderate <= self.length:
            raise ValueError(f"tiers.moderate ({self.tiers.moderate}) must be above length ({self.length})")
        if self.tiers.severe <= self.tiers.moderate:
            raise ValueError(f"tiers.severe ({self.tiers.severe}) must be above tiers.moderate ({self.tiers.moderate})")
        if self.max_gap is not None and self.max_gap <= timedelta(0):
            raise ValueError("max_gap must be positive")
        return self


class QuietRuleConfig(Model):
    """A series that normally has traffic has had nothing for longer than chance explains (an intake
    channel whose sync broke while the others still flow)."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["quiet"]
    group_by: GroupBy = ["channel"]
    max_p: float = Field(1e-6, gt=0, lt=1)  # Poisson chance of no complaint in the silence, given its profile
    min_expected: float = Field(5.0, gt=0)  # and at least this many expected in it
    baseline_days: int = Field(7, ge=1, le=366)
    min_history_days: int = Field(3, ge=0, le=366)
    # a weekend is not a workday's silence: compared with days of its kind unless told otherwise
    baseline_by: Literal["all", "day_kind", "weekday"] = "day_kind"
    baseline_weeks: int = Field(4, ge=1, le=52)
    tier: Literal["light", "moderate", "severe"] = "moderate"
    where: Filter = Filter()
    where_not: Filter = Filter()
    max_series: int = Field(1_000, ge=1)


RuleConfig = Annotated[ThresholdRuleConfig | StreakRuleConfig | QuietRuleConfig, Field(discriminator="kind")]
