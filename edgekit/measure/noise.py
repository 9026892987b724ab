"""Latency intervals and noise-aware speed verdicts.

A latency measured on a shared machine moves from run to run. Two candidates are only "faster" or
"slower" than each other when their intervals do not overlap; otherwise they are "the same speed".

The interval of a percentile (p50 or p90) is the widest of:

- the spread of that percentile over the interleaved rounds (each round times every candidate once,
  so background load hits all alike and the rounds show how much the figure moves);
- a bootstrap 95% interval of the percentile over the pooled timed runs (seeded, so reports are
  reproducible);
- a noise floor of ``NOISE_FLOOR`` (±3%) around the pooled value: below that, timer resolution,
  frequency scaling and cache state decide, not the model.

Example:
    >>> a = spread_of([[1.00, 1.01, 0.99], [1.02, 1.00, 1.01]])
    >>> b = spread_of([[1.01, 1.00, 1.02], [0.99, 1.00, 1.01]])
    >>> compare_speed(a, b).verdict
    'same speed'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgekit.core.datatypes import Serializable

NOISE_FLOOR = 0.03  # ±3% around the pooled value is always "the same"
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0

Verdict = Literal["faster", "slower", "same speed"]


@dataclass(frozen=True)
class Interval(Serializable):
    """A latency percentile (ms) and the interval it is known within."""

    value: float
    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self) -> str:
        return f"{self.value:.4f} ms [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class LatencySpread(Serializable):
    """p50 and p90 with their intervals over ``rounds`` interleaved rounds of ``runs`` timed runs."""

    p50: Interval
    p90: Interval
    rounds: int
    runs: int

    def of(self, percentile: str) -> Interval:
        return self.p90 if percentile == "p90" else self.p50


def _interval(rounds: Sequence[np.ndarray], pooled: np.ndarray, q: float, rng: np.random.Generator) -> Interval:
    value = float(np.percentile(pooled, q))
    per_round = [float(np.percentile(r, q)) for r in rounds if len(r)]
    boot = np.percentile(rng.choice(pooled, size=(BOOTSTRAP_RESAMPLES, len(pooled)), replace=True), q, axis=1)
    low = min([*per_round, float(np.percentile(boot, 2.5)), value * (1 - NOISE_FLOOR)])
    high = max([*per_round, float(np.percentile(boot, 97.5)), value * (1 + NOISE_FLOOR)])
    return Interval(value=value, low=low, high=high)


def spread_of(rounds: Sequence[Sequence[float]]) -> LatencySpread:
    """The p50/p90 intervals of timings grouped by round (each inner sequence: one round's timed runs)."""
    arrays = [np.asarray(r, dtype=np.float64) for r in rounds]
    pooled = np.concatenate([a for a in arrays if a.size]) if any(a.size for a in arrays) else np.zeros(0)
    if pooled.size == 0:
        raise ValueError("no timed runs to compute a latency spread from")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    return LatencySpread(p50=_interval(arrays, pooled, 50, rng), p90=_interval(arrays, pooled, 90, rng),
                         rounds=len(arrays), runs=int(pooled.size))


@dataclass(frozen=True)
class SpeedComparison(Serializable):
    """How ``candidate`` compares with ``baseline`` at one percentile."""

    verdict: Verdict
    ratio: float  # baseline / candidate: above 1 means the candidate is faster
    candidate: Interval
    baseline: Interval
    percentile: str = "p50"

    def sentence(self, candidate: str = "candidate", baseline: str = "baseline") -> str:
        c, b = self.candidate, self.baseline
        if self.verdict == "same speed":
            return (f"{candidate} is the same speed as {baseline} within noise: {self.percentile} {c.text()} vs {b.text()} "
                    f"(x{self.ratio:.2f}, the intervals overlap)")
        return f"{candidate} is {self.verdict} than {baseline}: {self.percentile} {c.text()} vs {b.text()} (x{self.ratio:.2f})"


def compare_speed(candidate: LatencySpread, baseline: LatencySpread, percentile: str = "p50") -> SpeedComparison:
    """``faster``/``slower`` only when the intervals of ``percentile`` do not overlap, else ``same speed``."""
    c, b = candidate.of(percentile), baseline.of(percentile)
    if c.overlaps(b):
        verdict: Verdict = "same speed"
    else:
        verdict = "faster" if c.high < b.low else "slower"
    return SpeedComparison(verdict=verdict, ratio=b.value / c.value if c.value > 0 else float("inf"),
                           candidate=c, baseline=b, percentile=percentile)
