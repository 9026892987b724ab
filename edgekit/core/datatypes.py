"""Shared types that flow between edgekit's stages.

This module imports nothing heavier than numpy, so the CLI and any tool can use it without
loading TensorFlow. Everything here is a frozen dataclass with a ``to_dict`` for JSON reports.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from edgekit.core.diskarray import take_rows


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
    #: how image-folder images are fitted to the input (crop, stretch, pad; None: crop), bilinear
    resize: str | None = None

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
        resize = data.get("resize")
        return cls(
            scale=data.get("scale"),
            mean=tuple(mean) if mean is not None else None,
            std=tuple(std) if std is not None else None,
            resize=resize if isinstance(resize, str) else None,
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
class InputSpec(Serializable):
    """One model input as data must be given for it: name, shape (None = any, batch first), dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def integer(self) -> bool:
        return np.dtype(self.dtype).kind in "iub"


@dataclass(frozen=True)
class OutputSpec(Serializable):
    """One model output: name and shape (None = any, batch first)."""

    name: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class Signature(Serializable):
    """A model's inputs and outputs, in the model's order: what data is matched against."""

    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...] = ()

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @classmethod
    def single(cls, shape: tuple[int | None, ...], dtype: str = "float32", name: str = "x") -> Signature:
        return cls(inputs=(InputSpec(name, tuple(shape), dtype),))


@dataclass(frozen=True)
class Dataset:
    """Samples ready for a model: one array per model input, optional targets per model output.

    ``x`` is the first (or only) input, ``more_x`` the model's other inputs in the model's input
    order (``input_names``); float inputs are preprocessed float32, integer inputs (token ids) keep
    their integer dtype. ``y`` holds the targets of the first (or only) output (integer class ids
    for a classifier, real values for a regressor, masks for a segmenter...), ``more_y`` those of the
    model's other outputs (``output_names``), None where an output has no labels.
    """

    x: np.ndarray
    y: np.ndarray | None
    source: str
    sha256: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    labels: tuple[str, ...] | None = None
    more_x: tuple[np.ndarray, ...] = ()
    more_y: tuple[np.ndarray | None, ...] = ()
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def inputs(self) -> tuple[np.ndarray, ...]:
        """Every input array, in the model's input order."""
        return (self.x, *self.more_x)

    @property
    def targets(self) -> tuple[np.ndarray | None, ...]:
        """Every output's targets (None where unlabelled), in the model's output order."""
        return (self.y, *self.more_y)

    @property
    def labelled(self) -> bool:
        return any(t is not None for t in self.targets)

    @property
    def feed(self) -> Any:
        """What ``keras_model.predict``/``fit`` take: the array for one input, a list for several."""
        return self.x if not self.more_x else list(self.inputs)

    @property
    def fit_targets(self) -> Any:
        """What ``fit`` takes as ``y``: the array for one output, a list for several (all must be labelled)."""
        return self.y if not self.more_y else list(self.targets)

    def take(self, idx: np.ndarray, source: str | None = None) -> Dataset:
        """The samples at ``idx`` (every input and target), optionally under another source name."""
        return replace(self, x=take_rows(self.x, idx), y=None if self.y is None else self.y[idx], source=source or self.source,
                       more_x=tuple(take_rows(a, idx) for a in self.more_x), more_y=tuple(None if t is None else t[idx] for t in self.more_y))


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


LOWER_IS_BETTER = frozenset({"mae", "rmse"})
PERCENT_METRICS = frozenset({"top1", "top5", "accuracy", "pixel_accuracy", "mean_iou"})
METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "accuracy": "accuracy", "auc": "ROC AUC", "mae": "MAE", "rmse": "RMSE",
                 "r2": "R²", "pixel_accuracy": "pixel accuracy", "mean_iou": "mean IoU"}


def format_metric(metric: str, value: float | None) -> str:
    """``89.60%`` for a percentage, ``0.1234`` otherwise, ``-`` for None."""
    if value is None:
        return "-"
    return f"{value:.2f}%" if metric in PERCENT_METRICS else f"{value:.4g}"


@dataclass(frozen=True)
class AccuracyResult(Serializable):
    """How good a model's outputs are against labels: the primary metric of its task, and the others.

    For a classifier ``metric`` is ``top1`` and ``value == top1``; a regressor's is ``mae`` (lower
    is better), a segmenter's ``mean_iou``, a binary or multilabel model's ``accuracy`` (at 0.5).
    ``outputs`` holds every labelled output's metrics for a model with several outputs; the primary
    metric is the first labelled output's.
    """

    samples: int
    top1: float | None = None
    top5: float | None = None
    task: str = "classification"
    metric: str = "top1"
    value: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    output: str | None = None
    outputs: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.value is None and self.metric == "top1" and self.top1 is not None:
            object.__setattr__(self, "value", self.top1)

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def label(self) -> str:
        """The primary metric's display name (``top-1``, ``MAE``, ``mean IoU``...)."""
        return METRIC_LABELS.get(self.metric, self.metric)

    @property
    def unit(self) -> str:
        """``points`` for percentages, else the metric's own units."""
        return "points" if self.metric in PERCENT_METRICS else self.label

    def text(self) -> str:
        """``top-1 89.60%`` / ``MAE 0.123``."""
        return f"{self.label} {format_metric(self.metric, self.value)}"

    def drop_from(self, reference: AccuracyResult | None, *, relative: bool = False) -> float | None:
        """How much worse this result is than ``reference`` in the primary metric (positive = worse);
        in the metric's units, or percent of the reference with ``relative``. None if not comparable."""
        if reference is None or reference.metric != self.metric or reference.value is None or self.value is None:
            return None
        worse = (reference.value - self.value) if self.higher_is_better else (self.value - reference.value)
        if relative:
            return worse / abs(reference.value) * 100.0 if reference.value != 0 else (0.0 if worse == 0 else math.inf)
        return worse


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
