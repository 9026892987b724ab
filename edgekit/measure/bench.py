"""The one measuring path: convert candidates, then measure them side by side on a device.

Every command that compares models (``prune``/``cluster``/``distill``/``qat`` reports, ``run``,
``optimize``, ``compare``) goes through :class:`Bench`:

1. :meth:`Bench.add` takes a :class:`Candidate` (a Keras model to convert with a
   :class:`~edgekit.export.convert.Conversion`, TFLite bytes, or an existing file), writes the
   ``.tflite`` into the bench folder, and measures its size (bytes, gzip) and its accuracy on the
   validation data (and the agreement of its outputs with the reference's), on the device;
2. :meth:`Bench.time` measures the latency of several measurements in interleaved rounds
   (A, B, C, A, B, C...) so the background load of a shared machine hits all alike.

Conversion always goes through :func:`edgekit.export.convert.convert_model`, so the same model,
calibration sample and conversion give the same bytes whichever command asks.

Example:
    >>> bench = Bench(folder, val=val, calibration=calib, device=load_profile("local"))  # doctest: +SKIP
    >>> ref = bench.add(Candidate("float32", keras=model, conversion=Conversion(QuantMode.FLOAT32)))  # doctest: +SKIP
    >>> int8 = bench.add(Candidate("int8", keras=model, conversion=Conversion(QuantMode.INT8)))  # doctest: +SKIP
    >>> ref, int8 = bench.time([ref, int8])  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import Calibration
from edgekit.core.datatypes import AccuracyResult, Dataset, LatencyStats, Serializable, SizeInfo
from edgekit.core.errors import InputError
from edgekit.core.fsutil import sha256_file, size_info, write_bytes_atomic
from edgekit.core.io_order import feed_for, in_model_order, output_order
from edgekit.core.tasks import OutputTask, detect_tasks, tflite_output_activations, with_tasks
from edgekit.core.tflite_file import parse_tflite_bytes
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.run import run_model
from edgekit.export.convert import Conversion, convert_model
from edgekit.measure.noise import LatencySpread, spread_of
from edgekit.measure.task_metrics import evaluate
from edgekit.runtime.local import pool_latency

MAX_SAMPLES_IN_REPORT = 400  # raw latency samples kept per artifact (the distribution plot)


@dataclass(frozen=True)
class MeasureSettings(Serializable):
    """How latency is measured: ``runs`` timed runs per round, after ``warmup``, in ``rounds`` rounds."""

    runs: int = 50
    warmup: int = 5
    rounds: int = 3
    threads: int | None = None  # None: the device profile's threads

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise InputError(f"runs must be at least 1, got {self.runs}", hint="e.g. runs 50")
        if self.warmup < 0:
            raise InputError(f"warmup cannot be negative, got {self.warmup}", hint="e.g. warmup 5")
        if self.rounds < 1:
            raise InputError(f"rounds must be at least 1, got {self.rounds}", hint="e.g. rounds 3")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be at least 1, got {self.threads}", hint="e.g. threads 1")


@dataclass(frozen=True)
class Candidate:
    """A model to measure: give exactly one of ``keras`` (with ``conversion``), ``tflite`` or ``path``."""

    name: str
    keras: Any = None
    conversion: Conversion | None = None
    tflite: bytes | None = None
    path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.keras, self.tflite, self.path))
        if given != 1:
            raise ValueError(f"candidate {self.name}: give exactly one of keras, tflite or path")
        if self.keras is not None and self.conversion is None:
            raise ValueError(f"candidate {self.name}: a Keras model needs a conversion")


@dataclass(frozen=True)
class Measurement(Serializable):
    """One artifact measured: size, accuracy on the validation data, agreement, latency."""

    name: str
    path: str
    sha256: str
    size: SizeInfo
    mode: str | None = None
    weights: str | None = None  # int8 weight granularity chosen for the conversion (per-channel/per-tensor)
    weights_reason: str | None = None
    accuracy: AccuracyResult | None = None
    agreement: float | None = None  # % of samples with the reference's top-1
    latency: LatencyStats | None = None
    spread: LatencySpread | None = None  # p50/p90 intervals over the interleaved rounds (measure/noise.py)
    samples_ms: tuple[float, ...] = ()
    device: dict[str, Any] | None = None

    def metric(self, percentile: str = "p50") -> float | None:
        """The latency percentile used by gates and budgets (p50 or p90), None if not timed."""
        if self.latency is None:
            return None
        return self.latency.p90_ms if percentile == "p90" else self.latency.p50_ms

    def interval(self, percentile: str = "p50") -> tuple[float, float] | None:
        """(low, high) of the percentile's interval over the interleaved rounds, None if not timed so."""
        if self.spread is None:
            return None
        iv = self.spread.of(percentile)
        return iv.low, iv.high

    def moved(self, path: str | os.PathLike[str]) -> Measurement:
        """The same measurement, for the file at its final place."""
        return replace(self, path=str(path))

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["latency_samples_ms"] = [round(v, 5) for v in self.samples_ms[:MAX_SAMPLES_IN_REPORT]]
        data["agreement_with_reference"] = data.pop("agreement")
        del data["samples_ms"], data["device"]  # the device report has its own section
        return data


def _fit_channels(x: np.ndarray, path: Path) -> np.ndarray:
    """Gray images for a model with an RGB front end (``export --target mediapipe``): three equal channels."""
    info = parse_tflite_bytes(path.read_bytes(), str(path))
    if not info.inputs or x.ndim != 4:
        return x
    want = tuple(info.inputs[0].shape)
    if len(want) == 4 and want[-1] == 3 and x.shape[-1] == 1 and tuple(x.shape[1:3]) == want[1:3]:
        return np.repeat(x, 3, axis=-1)
    return x


def _slug(name: str) -> str:
    return re.sub(r"-+", "-", "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)).strip("-") or "model"


class Bench:
    """Measures candidates side by side on one device; see the module docstring.

    Args:
        folder: where the candidates' ``.tflite`` files are written (``NN-name.tflite``).
        val: the data accuracy is measured on (None: no accuracy).
        calibration: preprocessed inputs for conversions that need calibration (int8, int16x8).
        device: the device profile every run uses (``load_profile("local")`` for this machine).
        settings: latency settings.
        progress: called with a short message before each conversion and timed round.
    """

    def __init__(self, folder: str | os.PathLike[str], *, val: Dataset | None, calibration: Calibration | None,
                 device: DeviceProfile, settings: MeasureSettings | None = None,
                 progress: Callable[[str], None] | None = None, tasks: list[OutputTask] | None = None) -> None:
        self.folder = Path(folder)
        self.val = val
        self.calibration = calibration
        self.device = device
        self.settings = settings or MeasureSettings()
        self.progress = progress or (lambda _m: None)
        self.count = 0
        #: runs a file on the device (``run_model``'s signature); ``optimize --ray`` puts in a Ray task asking for the device
        self.runner: Callable[..., Any] = run_model
        #: each output's task (None: detected from the first scored file's ops and the validation targets)
        self.tasks: list[OutputTask] | None = tasks
        self.reference_outputs: np.ndarray | None = None
        #: each scored candidate's outputs on the validation data (N, -1), by candidate name
        self.outputs: dict[str, np.ndarray] = {}

    def output_names(self, count: int) -> list[str]:
        names = list(self.val.output_names) if self.val is not None else []
        return names if len(names) == count else [f"output_{i}" for i in range(count)]

    @property
    def threads(self) -> int:
        return self.settings.threads if self.settings.threads is not None else self.device.threads

    def write(self, candidate: Candidate) -> tuple[Path, str | None, str | None, str | None]:
        """Converts (if needed) and writes a candidate; returns (path, mode, weights, weights reason)."""
        if candidate.path is not None:
            return Path(candidate.path), None, None, None
        self.count += 1
        target = self.folder / f"{self.count:02d}-{_slug(candidate.name)}.tflite"
        mode = weights = reason = None
        if candidate.keras is not None:
            assert candidate.conversion is not None
            self.progress(f"converting {candidate.name} ({candidate.conversion.mode.value})")
            converted = convert_model(candidate.keras, candidate.conversion, calibration=self.calibration)
            flatbuffer, mode, weights, reason = converted.flatbuffer, candidate.conversion.mode.value, converted.weights, converted.weights_reason
        else:
            flatbuffer = candidate.tflite  # type: ignore[assignment]
        write_bytes_atomic(target, flatbuffer)
        return target, mode, weights, reason

    def add(self, candidate: Candidate, *, reference: bool = False) -> Measurement:
        """Writes a candidate and measures its size and accuracy (outputs on the validation data).

        With ``reference`` its outputs become what later candidates' agreement is measured against
        (the first candidate added is the reference by default).
        """
        path, mode, weights, reason = self.write(candidate)
        measurement = Measurement(name=candidate.name, path=str(path), sha256=sha256_file(path), size=size_info(path), mode=mode,
                                  weights=weights, weights_reason=reason)
        return self.score(measurement, reference=reference)

    def score(self, measurement: Measurement, *, reference: bool = False) -> Measurement:
        """Accuracy (and agreement with the reference) of an already written artifact on the validation data."""
        if self.val is None:
            return measurement
        self.progress(f"accuracy of {measurement.name}")
        path = Path(measurement.path)
        info = parse_tflite_bytes(path.read_bytes(), str(path))
        feed = feed_for(info, self.val)
        feed = _fit_channels(feed, path) if isinstance(feed, np.ndarray) else feed
        done = self.runner(self.device, path, feed, threads=self.threads, runs=1, warmup=0)
        outputs = in_model_order(info, done.run.outputs)
        if self.tasks is None:
            self.tasks = detect_tasks([(name, (None, *o.shape[1:])) for name, o in zip(self.output_names(len(outputs)), outputs, strict=True)],
                                      activations=tflite_output_activations(info, output_order(info)), targets=self.val.targets)
            self.val = with_tasks(self.val, self.tasks, [(None, *o.shape[1:]) for o in outputs])
        first = outputs[0]
        # categorical outputs with a spatial map (segmentation) agree per pixel: (N*pixels, classes)
        out = first.reshape(-1, first.shape[-1]) if first.ndim > 2 else first.reshape(len(self.val), -1)
        self.outputs[measurement.name] = out
        acc = evaluate(self.tasks, outputs, self.val.targets) if self.val.labelled else None
        if reference or self.reference_outputs is None:
            self.reference_outputs = out
        agreement = None
        categorical = self.tasks[0].task.categorical if self.tasks else out.shape[1] > 1
        if categorical and self.reference_outputs is not None and out.shape == self.reference_outputs.shape:
            agreement = float((out.argmax(1) == self.reference_outputs.argmax(1)).mean() * 100.0)
        return replace(measurement, accuracy=acc, agreement=agreement, device=done.report)

    def time(self, measurements: Sequence[Measurement], *, settings: MeasureSettings | None = None) -> list[Measurement]:
        """Latency of every measurement in interleaved rounds; returns them with ``latency`` filled in.

        Each measurement's statistics pool the timed runs of all rounds.
        """
        s = settings or self.settings
        threads = s.threads if s.threads is not None else self.device.threads
        pooled: list[list[Any]] = [[] for _ in measurements]
        reports: list[dict[str, Any] | None] = [m.device for m in measurements]
        for r in range(s.rounds):
            for i, m in enumerate(measurements):
                self.progress(f"latency round {r + 1}/{s.rounds}: {m.name}")
                done = self.runner(self.device, Path(m.path), None, threads=threads, runs=s.runs, warmup=s.warmup)
                pooled[i].append(done.run)
                reports[i] = done.report
        timed = []
        for m, runs, report in zip(measurements, pooled, reports, strict=True):
            latency = pool_latency(runs)
            spread = spread_of([run.timings_ms for run in runs])
            timed.append(replace(m, latency=latency, spread=spread, samples_ms=tuple(t for run in runs for t in run.timings_ms),
                                 device=report))
        return timed


def measure_candidates(candidates: Sequence[Candidate], folder: str | os.PathLike[str], *, val: Dataset | None,
                       calibration: Calibration | None, device: DeviceProfile, settings: MeasureSettings | None = None,
                       progress: Callable[[str], None] | None = None) -> list[Measurement]:
    """Converts, scores and times ``candidates`` side by side; the first one is the reference."""
    bench = Bench(folder, val=val, calibration=calibration, device=device, settings=settings, progress=progress)
    measured = [bench.add(c, reference=i == 0) for i, c in enumerate(candidates)]
    return bench.time(measured)
