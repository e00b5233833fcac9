"""Baselines and the exact arithmetic of "more than 1.5 x the daily average".

Counts are integers and the factor is the decimal the user wrote (1.5 = 3/2), so thresholds are
computed as integers: 151 against a baseline of 100 fires and 150 does not, with no floating-point
error at the boundary. The Poisson tail gives the optional significance gate (`max_p`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from sentinel.model import IntArray

NEVER = np.iinfo(np.int64).max // 4
"""A count no series reaches: the threshold of a rule still warming up."""


@dataclass(frozen=True, slots=True)
class Baselines:
    """Per-series baseline as an exact fraction num/den (den shared: days for a mean, 2 for a median)."""

    num: IntArray
    den: int

    def value(self, i: int) -> float:
        return float(self.num[i]) / self.den

    def exact(self, i: int) -> Fraction:
        return Fraction(int(self.num[i]), self.den)


def baselines(daily: IntArray, method: str) -> Baselines:
    """`daily` is [series, days] counts of the baseline days (empty days are zeros)."""
    n = daily.shape[1]
    if n == 0:
        return Baselines(np.zeros(daily.shape[0], dtype=np.int64), 1)
    if method == "median":
        s = np.sort(daily, axis=1)
        if n % 2:
            return Baselines(2 * s[:, n // 2], 2)
        return Baselines(s[:, n // 2 - 1] + s[:, n // 2], 2)
    return Baselines(daily.sum(axis=1), n)


def above_threshold(b: Baselines, factor: Fraction) -> IntArray:
    """Smallest count strictly greater than factor x baseline, per series."""
    return (factor.numerator * b.num) // (factor.denominator * b.den) + 1


def at_least(b: Baselines, mult: Fraction) -> IntArray:
    """Smallest count >= mult x baseline, per series."""
    p, q = mult.numerator * b.num, mult.denominator * b.den
    return -((-p) // q)


def poisson_sf(c: int, lam: float) -> float:
    """P(X >= c) for X ~ Poisson(lam): the chance of seeing at least `c` complaints by chance."""
    if c <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    if c > lam:
        # upper tail summed directly: accurate for tiny probabilities
        log_term = -lam + c * math.log(lam) - math.lgamma(c + 1)
        total = 0.0
        k = c
        term = math.exp(log_term)
        while True:
            total += term
            k += 1
            term *= lam / k
            if term < total * 1e-17 or k > c + 10_000:
                break
        return min(1.0, total)
    # lower part summed, complement taken (the tail is not small here)
    term = math.exp(-lam)
    cdf = term
    for k in range(1, c):
        term *= lam / k
        cdf += term
    return max(0.0, 1.0 - cdf)


def poisson_threshold(start: int, lam: float, max_p: float) -> int:
    """Smallest count >= start whose Poisson tail is <= max_p."""
    if lam <= 0:
        return max(start, 1)
    c = max(start, 1)
    sf = poisson_sf(c, lam)
    if sf <= max_p:
        return c
    # walk upward: sf(c + 1) = sf(c) - pmf(c)
    pmf = math.exp(-lam + c * math.log(lam) - math.lgamma(c + 1))
    limit = c + int(lam + 50 * math.sqrt(lam) + 200)
    while sf > max_p and c < limit:
        sf -= pmf
        c += 1
        pmf *= lam / c
        if sf < 1e-6:  # re-anchor to keep precision deep in the tail
            sf = poisson_sf(c, lam)
    return c
