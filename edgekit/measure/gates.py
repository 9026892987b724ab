"""Gates: the limits a final artifact must meet, and their verdicts (recipes and ``optimize``).

The gate settings are pydantic models (a recipe's ``gates:`` section validates into
:class:`Gates`); :func:`check_gates` compares the final :class:`~edgekit.measure.bench.Measurement`
with the reference's and returns frozen :class:`GateResult` verdicts.

Example:
    >>> gates = Gates(accuracy=AccuracyGate(max_drop=1.0))
    >>> [g.passed for g in check_gates(gates, reference, final, "local")]  # doctest: +SKIP
    [True]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgekit.core.datatypes import Serializable, format_metric
from edgekit.measure.bench import Measurement


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AccuracyGate(_Strict):
    """Top-1 of the final artifact against the float32 model, on the validation data."""

    max_drop: float = Field(ge=0.0, description="Points of top-1 (or percent of the float top-1 with relative: true).")
    relative: bool = False


class LatencyGate(_Strict):
    max_ms: float = Field(gt=0.0)
    percentile: Literal["p50", "p90"] = "p50"
    device: str | None = Field(None, description="A device profile; --device overrides it; default: this machine.")


class SizeGate(_Strict):
    max_bytes: int | None = Field(None, ge=1)
    max_kb: float | None = Field(None, gt=0)
    compressed: bool = Field(False, description="Compare the gzip size instead of the bytes on disk.")

    @model_validator(mode="after")
    def _one(self) -> SizeGate:
        if (self.max_bytes is None) == (self.max_kb is None):
            raise ValueError("give exactly one of max_bytes or max_kb")
        return self

    @property
    def limit_bytes(self) -> int:
        return int(self.max_bytes if self.max_bytes is not None else round(self.max_kb * 1024))  # type: ignore[operator]


class Gates(_Strict):
    accuracy: AccuracyGate | None = None
    latency: LatencyGate | None = None
    size: SizeGate | None = None


@dataclass(frozen=True)
class GateResult(Serializable):
    """One gate's verdict."""

    gate: str
    passed: bool
    value: float | None
    limit: float
    unit: str
    detail: str


def accuracy_drop(reference: Measurement, final: Measurement, relative: bool = False) -> float | None:
    """How much worse ``final``'s primary metric is than the reference's: top-1 points for a classifier,
    the metric's own units otherwise (MAE up, mean IoU points down...), or percent of the reference
    with ``relative``; None without labels."""
    if reference.accuracy is None or final.accuracy is None:
        return None
    return final.accuracy.drop_from(reference.accuracy, relative=relative)


def drop_unit(reference: Measurement, relative: bool) -> str:
    """The unit a drop of ``reference``'s primary metric is counted in."""
    acc = reference.accuracy
    if relative:
        return f"% of the reference {acc.label if acc else 'top-1'}"
    return acc.unit if acc is not None else "points"


def check_gates(gates: Gates, reference: Measurement, final: Measurement, device_name: str) -> list[GateResult]:
    """The verdict of every gate that is set, in the order accuracy, latency, size."""
    out = []
    if gates.accuracy is not None:
        g = gates.accuracy
        drop = accuracy_drop(reference, final, g.relative)
        unit = drop_unit(reference, g.relative)
        if drop is None:
            out.append(GateResult("accuracy", False, None, g.max_drop, unit, "no labels to measure accuracy"))
        else:
            out.append(GateResult("accuracy", drop <= g.max_drop + 1e-9, round(drop, 4), g.max_drop, unit,
                                  f"{final.accuracy.text()} vs float32 {format_metric(reference.accuracy.metric, reference.accuracy.value)}: "  # type: ignore[union-attr]
                                  f"drop {(f'{drop:.2f}' if unit == 'points' else f'{drop:.4g}')} {unit} (max {g.max_drop:g})"))
    if gates.latency is not None:
        lg = gates.latency
        value = final.metric(lg.percentile)
        out.append(GateResult("latency", value is not None and value <= lg.max_ms, round(value, 5) if value is not None else None,
                              lg.max_ms, "ms", f"{lg.percentile} {value:.4f} ms on {device_name} (max {lg.max_ms:g} ms)"
                              if value is not None else "latency not measured"))
    if gates.size is not None:
        sg = gates.size
        size = final.size.gzip_bytes if sg.compressed else final.size.bytes
        kind = "gzip bytes" if sg.compressed else "bytes"
        out.append(GateResult("size", size <= sg.limit_bytes, size, sg.limit_bytes, kind, f"{size:,} {kind} (max {sg.limit_bytes:,})"))
    return out


def row(m: Measurement, reference: Measurement, role: str) -> dict[str, object]:
    """One artifact as a report table row: its measurement plus drop, size ratio and speed-up vs the reference."""
    drop = accuracy_drop(reference, m, False)
    speed = (reference.latency.p50_ms / m.latency.p50_ms) if m.latency and reference.latency and m.latency.p50_ms > 0 else None
    return {
        **m.to_dict(), "role": role,
        "top1": m.accuracy.top1 if m.accuracy else None,
        "metric": m.accuracy.metric if m.accuracy else None,
        "value": m.accuracy.value if m.accuracy else None,
        "drop": round(drop, 4) if drop is not None else None,
        "p50_ms": m.latency.p50_ms if m.latency else None,
        "p90_ms": m.latency.p90_ms if m.latency else None,
        "bytes": m.size.bytes, "gzip_bytes": m.size.gzip_bytes,
        "smaller_than_reference": round(reference.size.bytes / m.size.bytes, 4) if m.size.bytes else None,
        "faster_than_reference": round(speed, 4) if speed else None,
    }
