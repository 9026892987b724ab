"""Shared types that flow between edgekit's stages.

This module imports nothing heavier than numpy, so the CLI and any tool can use it without
loading TensorFlow. Everything here is a frozen dataclass with a ``to_dict`` for JSON reports.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class QuantMode(str, enum.Enum):
    """Post-training quantization modes offered by ``edgekit quantize``."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @property
    def needs_data(self) -> bool:
        """Whether the mode needs calibration data (a representative dataset)."""
        return self in (QuantMode.INT8, QuantMode.INT16X8)


class IOType(str, enum.Enum):
    """The dtype of a converted model's inputs and outputs."""

    FLOAT = "float"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"


def json_ready(value: Any) -> Any:
    """Makes a value JSON-safe: tuples to lists, numpy scalars to Python, non-finite to strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return value


class Serializable:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return json_ready(asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Preprocessing(Serializable):
    """How raw data becomes model input: ``((x * scale) - mean) / std``, per channel if a tuple.

    Declared once (at quantize time), recorded in the artifact manifest and applied again by
    ``validate`` so the float model, the artifact and the device see the same numbers.

    Example:
        >>> Preprocessing(scale=1 / 255).apply(np.array([255], np.uint8))
        array([1.], dtype=float32)
    """

    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def is_identity(self) -> bool:
        return self.scale is None and self.mean is None and self.std is None

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Returns ``x`` as float32 with scale, mean and std applied."""
        out: np.ndarray = np.asarray(x, dtype=np.float32)
        if self.scale is not None:
            out = out * np.float32(self.scale)
        if self.mean is not None:
            out = out - np.asarray(self.mean, dtype=np.float32)
        if self.std is not None:
            out = out / np.asarray(self.std, dtype=np.float32)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Preprocessing:
        data = data or {}
        mean, std = data.get("mean"), data.get("std")
        return cls(
            scale=data.get("scale"),
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None,
        )


@dataclass(frozen=True)
class QuantParams(Serializable):
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``; per channel on ``axis``."""

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int = 0


@dataclass(frozen=True)
class TensorSpec(Serializable):
    """A model input or output: name, shape (-1 for a dynamic dimension), dtype and quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: QuantParams | None = None


@dataclass(frozen=True)
class Dataset:
    """Samples ready for a model: ``x`` already preprocessed (float32), ``y`` integer class ids.

    ``x_raw`` keeps the data as read, for runners that apply the preprocessing themselves.
    """

    x: np.ndarray
    y: np.ndarray | None
    source: str
    sha256: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    labels: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class LatencyStats(Serializable):
    """Latency of timed runs (milliseconds) with the conditions they were taken under."""

    runs: int
    warmup: int
    threads: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_inference_ms: float
    init_ms: float
    peak_memory_mb: float | None  # the process's peak RSS (runtime, Python, libraries and the model)
    runtime: str
    # what the model adds on top of the loaded runtime (like benchmark_model's footprint figures):
    # at init (load + allocate) and overall (after the timed runs); None where not measured
    model_init_mb: float | None = None
    model_overall_mb: float | None = None

    @classmethod
    def from_samples(
        cls,
        samples_ms: list[float],
        *,
        warmup: int,
        threads: int,
        first_inference_ms: float,
        init_ms: float,
        peak_memory_mb: float | None,
        runtime: str,
        model_init_mb: float | None = None,
        model_overall_mb: float | None = None,
    ) -> LatencyStats:
        """Computes the statistics from raw per-run timings."""
        arr = np.asarray(samples_ms, dtype=np.float64)
        if arr.size == 0:
            raise ValueError("no timed runs")
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(
            runs=int(arr.size),
            warmup=warmup,
            threads=threads,
            mean_ms=float(arr.mean()),
            std_ms=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            min_ms=float(arr.min()),
            max_ms=float(arr.max()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            first_inference_ms=float(first_inference_ms),
            init_ms=float(init_ms),
            peak_memory_mb=peak_memory_mb,
            runtime=runtime,
            model_init_mb=model_init_mb,
            model_overall_mb=model_overall_mb,
        )


@dataclass(frozen=True)
class AccuracyResult(Serializable):
    """Accuracy against labels."""

    samples: int
    top1: float
    top5: float | None = None


@dataclass(frozen=True)
class OutputComparison(Serializable):
    """How one artifact output compares with the reference model's output."""

    output: str
    top1_agreement: float | None
    max_abs_error: float
    mean_abs_error: float
    cosine_similarity: float
    sqnr_db: float


@dataclass(frozen=True)
class SizeInfo(Serializable):
    """Size of a file on disk and gzip-compressed (level 9)."""

    bytes: int
    gzip_bytes: int


@dataclass(frozen=True)
class Artifact(Serializable):
    """A written model file with its hash and size."""

    path: str
    sha256: str
    size: SizeInfo
    manifest_path: str | None = None


NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_name(value: str) -> str:
    """Validates a recipe or device-profile name (lower-case letters, digits, . _ -; at most 64)."""
    if not NAME_PATTERN.match(value):
        raise ValueError(f"'{value}' must be lower-case letters, digits, '.', '_' or '-' (at most 64)")
    return value
