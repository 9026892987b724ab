"""What ``edgekit optimize`` searches with: trials, the budget, verdicts and the Pareto front.

A :class:`Trial` is one candidate model, described by the recipe passes that build it (the same
pass configs ``edgekit run`` validates), and measured through :class:`~edgekit.measure.bench.Bench`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from edgekit.core.datatypes import Serializable, format_metric
from edgekit.core.errors import InputError
from edgekit.measure.bench import Measurement
from edgekit.measure.gates import accuracy_drop, drop_unit, row
from edgekit.measure.noise import compare_speed

EFFORTS = ("quick", "auto", "full")
PREFERENCES = ("size", "latency")
SLOWER_TOLERANCE = 1.10  # without interleaved-round intervals, "not slower than float32" allows 10% for noise


@dataclass(frozen=True)
class Trial(Serializable):
    """One model the search built (or chose not to build), with the recipe passes that reproduce it."""

    name: str
    family: str  # reference, ptq, equalize, mixed, qat, prune
    passes: list[dict[str, Any]]
    measurement: Measurement | None = None
    status: str = "pending"  # reference, recommended, feasible, rejected, failed, skipped
    reasons: tuple[str, ...] = ()
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    pareto: bool = False

    def with_(self, **changes: Any) -> Trial:
        return replace(self, **changes)

    def row(self, reference: Measurement) -> dict[str, Any]:
        """The report row: the measurement's columns plus the search's."""
        base: dict[str, Any] = {"name": self.name, "family": self.family, "status": self.status, "reasons": list(self.reasons),
                                "passes": [dict(p) for p in self.passes], "seconds": round(self.seconds, 2), "details": self.details,
                                "pareto": self.pareto}
        if self.measurement is not None:
            base = {**row(self.measurement, reference, self.status), **base}
        return base


@dataclass(frozen=True)
class Budget(Serializable):
    """The limits a recommended model must meet."""

    max_drop: float
    relative: bool = False
    max_latency_ms: float | None = None
    percentile: str = "p50"
    max_size_bytes: int | None = None
    size_metric: str = "bytes"  # bytes or gzip
    allow_slower: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "drop_unit": "% of float32 top-1" if self.relative else "points",
                "max_latency_ms": self.max_latency_ms, "percentile": self.percentile, "max_size_bytes": self.max_size_bytes,
                "size_metric": self.size_metric, "allow_slower": self.allow_slower}

    def size_of(self, m: Measurement) -> int:
        return m.size.gzip_bytes if self.size_metric == "gzip" else m.size.bytes

    def accuracy_reasons(self, ref: Measurement, m: Measurement) -> list[str]:
        drop = accuracy_drop(ref, m, self.relative)
        if drop is None:
            return ["accuracy not measured (no labels)"]
        if drop > self.max_drop + 1e-9:
            unit = drop_unit(ref, self.relative)
            amount = f"{drop:.2f}" if unit == "points" or self.relative else f"{drop:.4g}"
            return [f"accuracy drop {amount} {unit} > {self.max_drop:g} ({m.accuracy.text()} vs float32 "  # type: ignore[union-attr]
                    f"{format_metric(ref.accuracy.metric, ref.accuracy.value)})"]  # type: ignore[union-attr]
        return []

    def other_reasons(self, ref: Measurement, m: Measurement) -> list[str]:
        reasons = []
        if self.max_size_bytes is not None and self.size_of(m) > self.max_size_bytes:
            reasons.append(f"size {self.size_of(m):,} {self.size_metric} > {self.max_size_bytes:,}")
        value, ref_value = m.metric(self.percentile), ref.metric(self.percentile)
        if self.max_latency_ms is not None and value is not None and value > self.max_latency_ms:
            reasons.append(f"latency {self.percentile} {value:.4f} ms > {self.max_latency_ms:g} ms")
        if not self.allow_slower and value is not None and ref_value is not None and self.slower(ref, m):
            reasons.append(f"slower than float32: {self.percentile} {_timed(m, self.percentile)} vs {_timed(ref, self.percentile)}")
        return reasons

    def slower(self, ref: Measurement, m: Measurement) -> bool:
        """Slower than the reference beyond noise: the intervals over interleaved rounds do not overlap.

        Without intervals (a latency from one round) a ratio above ``SLOWER_TOLERANCE`` counts.
        """
        if m.spread is not None and ref.spread is not None:
            return compare_speed(m.spread, ref.spread, self.percentile).verdict == "slower"
        value, ref_value = m.metric(self.percentile), ref.metric(self.percentile)
        return value is not None and ref_value is not None and value > ref_value * SLOWER_TOLERANCE

    def reasons(self, ref: Measurement, m: Measurement) -> list[str]:
        return self.accuracy_reasons(ref, m) + self.other_reasons(ref, m)


def _timed(m: Measurement, percentile: str) -> str:
    if m.spread is not None:
        return m.spread.of(percentile).text()
    value = m.metric(percentile)
    return f"{value:.4f} ms" if value is not None else "not timed"


def check_options(max_drop: float, budget_minutes: float | None, effort: str, prefer: str, size_metric: str, percentile: str,
                  epochs: int, max_latency_ms: float | None, max_size_bytes: int | None) -> None:
    """Rejects impossible search settings before any work."""
    def bad(setting: str, message: str, hint: str) -> InputError:
        return InputError(message, hint=hint, settings=(setting,))

    if not (max_drop >= 0 and math.isfinite(max_drop)):
        raise bad("max_drop", f"max_drop must be a number >= 0, got {max_drop}", "e.g. max_drop 1.0 (points of top-1)")
    if budget_minutes is not None and not budget_minutes > 0:
        raise bad("budget_minutes", f"budget_minutes must be positive, got {budget_minutes}", "e.g. budget_minutes 10")
    if effort not in EFFORTS:
        raise bad("effort", f"effort must be one of {', '.join(EFFORTS)}, got '{effort}'", "e.g. effort auto")
    if prefer not in PREFERENCES:
        raise bad("prefer", f"prefer must be size or latency, got '{prefer}'", "e.g. prefer size")
    if size_metric not in ("bytes", "gzip"):
        raise bad("size_metric", f"size_metric must be bytes or gzip, got '{size_metric}'", "e.g. size_metric bytes")
    if percentile not in ("p50", "p90"):
        raise bad("percentile", f"percentile must be p50 or p90, got '{percentile}'", "e.g. percentile p90")
    if epochs < 1:
        raise bad("epochs", f"epochs must be at least 1, got {epochs}", "fine-tuning candidates train for this many epochs")
    if max_latency_ms is not None and not max_latency_ms > 0:
        raise bad("max_latency_ms", f"max_latency_ms must be positive, got {max_latency_ms}", "e.g. max_latency_ms 10")
    if max_size_bytes is not None and max_size_bytes < 1:
        raise bad("max_kb", f"the size limit must be positive, got {max_size_bytes}", "e.g. max_kb 300")


def mark_pareto(pool: list[Trial], budget: Budget, percentile: str) -> list[Trial]:
    """The trials with ``pareto`` set: not dominated in (size, latency, accuracy drop)."""
    ref = pool[0].measurement
    assert ref is not None

    def key(t: Trial) -> tuple[float, float, float]:
        m = t.measurement
        assert m is not None
        return budget.size_of(m), m.metric(percentile) or math.inf, max(0.0, accuracy_drop(ref, m, False) or 0.0)

    keys = [key(t) for t in pool]
    out = []
    for i, t in enumerate(pool):
        dominated = any(all(o <= s for o, s in zip(keys[j], keys[i], strict=True)) and keys[j] != keys[i]
                        for j in range(len(pool)) if j != i)
        out.append(t.with_(pareto=not dominated))
    return out


def recommend(feasible: list[Trial], budget: Budget, prefer: str, percentile: str) -> tuple[Trial | None, str]:
    """The recommended trial among the feasible ones and why (smallest within 1%, or fastest within 3%)."""
    if not feasible:
        return None, ""
    ref_size = {t.name: budget.size_of(t.measurement) for t in feasible}  # type: ignore[arg-type]
    lat = {t.name: t.measurement.metric(percentile) or math.inf for t in feasible}  # type: ignore[union-attr]
    if prefer == "size":
        smallest = min(ref_size.values())
        near = [t for t in feasible if ref_size[t.name] <= smallest * 1.01]
        best = min(near, key=lambda t: lat[t.name])
        why = (f"the smallest feasible candidate ({ref_size[best.name]:,} {budget.size_metric})"
               + (f"; {len(near) - 1} other(s) within 1% of its size were slower" if len(near) > 1 else ""))
    else:
        fastest = min(lat.values())
        quickest = min(feasible, key=lambda t: lat[t.name])
        near = [t for t in feasible if _same_speed(t, quickest, percentile) or lat[t.name] <= fastest * 1.03]
        best = min(near, key=lambda t: ref_size[t.name])
        why = (f"the fastest feasible candidate ({percentile} {lat[best.name]:.4f} ms)"
               + (f"; the smallest of {len(near)} within noise of that latency" if len(near) > 1 else ""))
    return best, why


def _same_speed(a: Trial, b: Trial, percentile: str) -> bool:
    ma, mb = a.measurement, b.measurement
    if ma is None or mb is None or ma.spread is None or mb.spread is None:
        return False
    return compare_speed(ma.spread, mb.spread, percentile).verdict == "same speed"


def closest_per_limit(measured: list[Trial], ref: Measurement, budget: Budget) -> list[str]:
    """For each limit some candidate failed: the candidate closest to meeting it, and by how much it misses.

    Each limit is judged on its own (a candidate far over the size limit can still be the closest to
    the accuracy budget), so a failed search says what to relax or what to try next.
    """
    out: list[str] = []
    ms = [(t, t.measurement) for t in measured if t.measurement is not None]
    drops = [(accuracy_drop(ref, m, budget.relative), t) for t, m in ms]
    drops_known = [(d, t) for d, t in drops if d is not None]
    if drops_known and any(d > budget.max_drop + 1e-9 for d, _ in drops_known):
        d, t = min(drops_known, key=lambda dt: dt[0])
        unit = "% of float32 top-1" if budget.relative else "points"
        out.append(f"accuracy: {t.name} drops {d:.2f} {unit} (limit {budget.max_drop:g})"
                   + ("" if d > budget.max_drop + 1e-9 else ", within it"))
    if budget.max_size_bytes is not None and any(budget.size_of(m) > budget.max_size_bytes for _, m in ms):
        t, m = min(ms, key=lambda tm: budget.size_of(tm[1]))
        size = budget.size_of(m)
        out.append(f"size: {t.name} is {size:,} {budget.size_metric} (limit {budget.max_size_bytes:,}"
                   + (f", x{size / budget.max_size_bytes:.2f} over)" if size > budget.max_size_bytes else ", within it)"))
    timed = [(m.metric(budget.percentile), t) for t, m in ms]
    timed_known = [(v, t) for v, t in timed if v is not None]
    if budget.max_latency_ms is not None and timed_known and any(v > budget.max_latency_ms for v, _ in timed_known):
        v, t = min(timed_known, key=lambda vt: vt[0])
        out.append(f"latency: {t.name} at {budget.percentile} {v:.4f} ms (limit {budget.max_latency_ms:g} ms"
                   + (f", x{v / budget.max_latency_ms:.2f} over)" if v > budget.max_latency_ms else ", within it)"))
    return out


def why_not(trial: Trial, best: Trial, budget: Budget, prefer: str, percentile: str) -> str:
    """Why a feasible trial was not the recommendation."""
    if prefer != "size":
        return f"feasible, but {best.name} is faster or as fast and smaller"
    b, t = best.measurement, trial.measurement
    assert b is not None and t is not None
    if budget.size_of(b) < budget.size_of(t):
        return f"feasible, but {best.name} is smaller ({budget.size_of(b):,} vs {budget.size_of(t):,} {budget.size_metric})"
    return f"feasible, but {best.name} is as small and faster ({b.metric(percentile) or 0:.4f} vs {t.metric(percentile) or 0:.4f} ms)"
