"""``edgekit prune`` and ``edgekit cluster`` end to end: one-pass pipelines, then what they bought.

Each command loads the model (compiled, for its loss) and the data, runs its pass through the
pipeline (:func:`edgekit.passes.pipeline.run_passes`: every check before any training, the
input model verified untouched), saves the plain ``.keras`` result, measures the original and the
compressed model after TFLite export side by side through the one measuring path
(:class:`edgekit.measure.bench.Bench`: size on disk and gzipped, accuracy, latency in
interleaved rounds on this machine) and writes ``OUT.prune.report.json / OUT.cluster.report.json`` from a frozen
:class:`CompressionResult`.

Example:
    >>> result = prune("model.keras", "pruned.keras", data="train.npz", sparsity=0.8, epochs=2,
    ...                preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.layers[0].sparsity, result.export.compressed.size.gzip_bytes  # doctest: +SKIP
    (0.8, 21532)
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edgekit.core.data import Calibration, calibration_sample, load_dataset
from edgekit.core.datatypes import AccuracyResult, Dataset, LatencyStats, Preprocessing, QuantMode, SizeInfo
from edgekit.core.errors import InputError, ModelError
from edgekit.core.fsutil import check_output_path, require_file, save_keras_atomic, write_json_atomic
from edgekit.core.keras_graph import unsupported_layers
from edgekit.core.manifest import report_path_for, versions
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.safe_yaml import load_bounded_file
from edgekit.devices.profiles import load_profile
from edgekit.export.convert import Conversion
from edgekit.measure.bench import Bench, Candidate, Measurement, MeasureSettings
from edgekit.measure.verdict import compression_verdict
from edgekit.passes.base import ModelState, Pass, PassContext
from edgekit.passes.cluster import ClusterConfig, ClusterPass
from edgekit.passes.compression import LayerReport
from edgekit.passes.distribute import WorkerDone, resolve_strategy
from edgekit.passes.pipeline import run_passes
from edgekit.passes.prune import LayerTarget, PruneConfig, PrunePass, Structure
from edgekit.passes.training import check_training_data
from edgekit.workflows.inputs import conform, keras_quality, model_tasks

CALIBRATION_SAMPLES = 100  # the int8 comparison export's calibration sample (seed 0)
MAX_ROUNDS, MIN_RUNS_PER_ROUND, WARMUP = 5, 20, 3  # latency: `runs` timed runs in up to 5 rounds of >= 20
CLUSTER_NOTE = ("clustered weights are still stored as float32/int8 tensors: the file shrinks only when compressed (gzip) "
                "or when the runtime codes weights by cluster index")

# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelExport:
    """One model converted to TFLite and measured."""

    mode: str
    size: SizeInfo
    latency: LatencyStats | None = None
    top1: float | None = None
    weights: str | None = None  # per-channel / per-tensor int8 weights (edgekit.export.convert.choose_weights)
    accuracy: AccuracyResult | None = None  # the task's primary metric (top-1 for a classifier)

    @classmethod
    def of(cls, m: Measurement) -> ModelExport:
        """The report's view of a measurement from :class:`~edgekit.measure.bench.Bench`."""
        return cls(str(m.mode), m.size, m.latency, m.accuracy.top1 if m.accuracy else None, m.weights, m.accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "size": self.size.to_dict(), "latency": self.latency.to_dict() if self.latency else None,
                "top1": self.top1, "metric": self.accuracy.metric if self.accuracy else None,
                "value": self.accuracy.value if self.accuracy else None, "weights": self.weights}


@dataclass(frozen=True)
class ExportComparison:
    """The original and the compressed model after export, measured side by side."""

    original_float32: ModelExport
    original: ModelExport
    compressed: ModelExport
    verdict: tuple[str, ...] = ()

    @property
    def gzip_ratio_vs_float32(self) -> float:
        return self.original_float32.size.gzip_bytes / self.compressed.size.gzip_bytes

    @property
    def gzip_ratio_vs_original(self) -> float:
        return self.original.size.gzip_bytes / self.compressed.size.gzip_bytes

    @property
    def speedup(self) -> float | None:
        if self.original.latency is None or self.compressed.latency is None:
            return None
        return self.original.latency.p50_ms / self.compressed.latency.p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_float32": self.original_float32.to_dict(),
            "original": self.original.to_dict(),
            "compressed": self.compressed.to_dict(),
            "gzip_ratio_vs_float32": round(self.gzip_ratio_vs_float32, 3),
            "gzip_ratio_vs_original_same_mode": round(self.gzip_ratio_vs_original, 3),
            "p50_speedup": round(self.speedup, 3) if self.speedup is not None else None,
            "verdict": list(self.verdict),
        }


@dataclass(frozen=True)
class CompressionResult:
    """What ``edgekit prune`` / ``edgekit cluster`` produced and measured."""

    kind: str
    output: str
    report_path: str
    config: dict[str, Any]
    layers: tuple[LayerReport, ...]
    unsupported: tuple[tuple[str, str], ...]
    parameters_before: int
    parameters_after: int
    top1_before: float | None
    top1_after: float | None
    export: ExportComparison | None
    history: dict[str, list[float]]
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    quality_before: AccuracyResult | None = None  # the task's primary metric (and the others), Keras, on --val
    quality_after: AccuracyResult | None = None
    tasks: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        drop = (self.top1_before - self.top1_after) if self.top1_before is not None and self.top1_after is not None else None
        after = self.quality_after
        return {
            "tasks": list(self.tasks),
            "quality": {"metric": after.metric, "before": self.quality_before.value if self.quality_before else None,
                        "after": after.value, "drop": after.drop_from(self.quality_before)} if after is not None else None,
            "kind": self.kind,
            "output": self.output,
            "config": self.config,
            "parameters": {"before": self.parameters_before, "after": self.parameters_after},
            "top1": {"before": self.top1_before, "after": self.top1_after, "drop": drop},
            "layers": [r.to_dict() for r in self.layers],
            "unsupported_layers": [{"path": p, "class": c} for p, c in self.unsupported],
            "export": self.export.to_dict() if self.export else None,
            "history": self.history,
            "seconds": round(self.seconds, 1),
            "notes": list(self.notes),
            "versions": versions(),
        }

    def save(self) -> None:
        """Writes the report (``OUT.prune.report.json / OUT.cluster.report.json`` beside the model), atomically."""
        write_json_atomic(self.report_path, self.to_dict())


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def load_targets(path: str | os.PathLike[str]) -> tuple[LayerTarget, ...]:
    """Reads per-layer targets from YAML: ``targets: [{layers: REGEX, sparsity: 0.9}, ...]``."""
    p = require_file(path, "targets file")
    raw = load_bounded_file(p, "targets file")
    if not isinstance(raw, dict) or set(raw) != {"targets"} or not isinstance(raw["targets"], list):
        raise InputError(f"targets file {p} must hold exactly one key 'targets' with a list", hint="e.g. targets: [{layers: 'fc1', sparsity: 0.9}]")
    try:
        return tuple(LayerTarget.model_validate(entry) for entry in raw["targets"])
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err.get("loc", ()))
        raise InputError(f"targets file {p}: {where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}",
                         hint="each entry needs 'layers' (regex) and 'sparsity' in [0, 1)") from None


def make_config(config_type: type[BaseModel], values: dict[str, Any]) -> Any:
    """A pass config from Python keyword arguments; a rejected value becomes a one-line InputError naming its setting."""
    try:
        return config_type(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx = err.get("ctx") or {}
        message = err["msg"].removeprefix("Value error, ")
        where = str(err["loc"][0]) if err.get("loc") else ""
        if ctx.get("settings"):
            raise InputError(message, hint=ctx.get("hint"), settings=tuple(ctx["settings"])) from None
        raise InputError(f"{where}: {message}" if where else message, hint=f"fix {where or 'the settings'}",
                         settings=(where,) if where else ()) from None


def load_inputs(kind: str, model: Any, output: Any, data: Any, val: Any, preprocessing: Preprocessing | None, force: bool,
                unsafe: bool, custom_objects: Any, x_key: str, y_key: str,
                tasks: tuple[str, ...] = ()) -> tuple[Path, LoadedModel, Dataset | None, Dataset | None]:
    """Checks the output path, loads the model (compiled) and the data: ``(output, model, train, val)``."""
    src = model.path if isinstance(model, LoadedModel) else model
    data_path = data.source if isinstance(data, Dataset) else data
    val_path = val.source if isinstance(val, Dataset) else val
    out = check_output_path(output, inputs=[src, data_path, val_path], force=force, suffixes=(".keras",), sidecars=[report_path_for(output, kind)])
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects, compile=True)
    if loaded.keras_model is None:
        raise ModelError(f"{loaded.path} is a SavedModel; pruning and clustering need the Keras model (.keras or .h5)", hint="pass the .keras file")
    if tasks:
        loaded.choose_tasks(tasks)
    pre = preprocessing or Preprocessing()

    def dataset(d: Any) -> Dataset | None:
        if d is None or isinstance(d, Dataset):
            return d
        return load_dataset(d, signature=loaded.signature, preprocessing=pre, x_key=x_key, y_key=y_key)

    output_tasks = model_tasks(loaded)
    return out, loaded, conform(loaded, dataset(data), output_tasks, "--data"), conform(loaded, dataset(val), output_tasks, "--val")


def check_latency_options(runs: int, threads: int) -> None:
    """Rejects latency settings no measurement can use, before any work."""
    if runs < 1:
        raise InputError(f"runs must be at least 1, got {runs}", hint="e.g. runs 60", settings=("runs",))
    if threads < 1:
        raise InputError(f"threads must be at least 1, got {threads}", hint="e.g. threads 1", settings=("threads",))


def latency_settings(runs: int, threads: int) -> MeasureSettings:
    """``runs`` timed runs per model split over up to 5 interleaved rounds of at least 20 (one round for a few runs)."""
    rounds = max(1, min(MAX_ROUNDS, runs // MIN_RUNS_PER_ROUND))
    return MeasureSettings(runs=max(1, runs // rounds), warmup=WARMUP, rounds=rounds, threads=threads)


# ----------------------------------------------------------------------------------------------
# Measuring and reporting
# ----------------------------------------------------------------------------------------------


def compare_exports(original: Any, compressed: Any, calibration: Calibration, *, val: Dataset | None, mode: str, runs: int,
                    threads: int, structure: str | None) -> ExportComparison:
    """Converts the original (float32 and ``mode``) and the compressed model (``mode``) and measures them on this machine.

    Int8 weight scales are chosen as ``edgekit quantize --weights auto`` would (per-tensor for a
    model clustered with one codebook per layer), so the sizes are those the user gets; latency
    alternates between the two ``mode`` models so background load hits both alike.
    """
    qmode = QuantMode(mode)
    with tempfile.TemporaryDirectory(prefix="edgekit-compress-") as tmp:
        bench = Bench(tmp, val=val, calibration=calibration, device=load_profile("local"), settings=latency_settings(runs, threads))
        float32 = bench.add(Candidate("float32", keras=original, conversion=Conversion(QuantMode.FLOAT32)))
        before = bench.add(Candidate("original", keras=original, conversion=Conversion(qmode)))
        after = bench.add(Candidate("compressed", keras=compressed, conversion=Conversion(qmode)))
        before, after = bench.time([before, after])
    return ExportComparison(ModelExport.of(float32), ModelExport.of(before), ModelExport.of(after),
                            tuple(compression_verdict(float32, before, after, structure)))


def finish(kind: str, source: Any, final: Any, out: Path, config: dict[str, Any], layers: tuple[LayerReport, ...],
           train: Dataset | None, val: Dataset | None, history: dict[str, list[float]], started: float, *, export: bool,
           export_mode: str, runs: int, threads: int, structure: str | None, notes: list[str],
           task_overrides: dict[str, Any] | None = None) -> CompressionResult:
    """Saves the model, measures it against the source, writes the report."""
    save_keras_atomic(final, out)
    tasks = model_tasks(source, val, task_overrides)
    before, after = keras_quality(source, val, tasks), keras_quality(final, val, tasks)
    comparison = None
    if export:
        calib_source = train if train is not None else val
        if calib_source is None:
            notes.append("no data to calibrate int8 export; export comparison skipped")
        else:
            comparison = compare_exports(source, final, calibration_sample(calib_source, CALIBRATION_SAMPLES, 0), val=val,
                                         mode=export_mode, runs=runs, threads=threads, structure=structure)
    result = CompressionResult(
        kind=kind, output=str(out), report_path=str(report_path_for(out, kind)), config=config, layers=layers,
        unsupported=tuple(unsupported_layers(source)), parameters_before=int(source.count_params()),
        parameters_after=int(final.count_params()), top1_before=before.top1 if before else None, top1_after=after.top1 if after else None,
        export=comparison, history=history, seconds=time.perf_counter() - started, notes=tuple(notes), quality_before=before,
        quality_after=after, tasks=tuple(t.to_dict() for t in tasks),
    )
    result.save()
    return result


# ----------------------------------------------------------------------------------------------
# The commands
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """How a command loads, measures and reports (the options that are not the pass's config)."""

    data: Any
    val: Any = None
    seed: int = 0
    preprocessing: Preprocessing | None = None
    export: bool = True
    export_mode: str = "int8"
    runs: int = 60
    threads: int = 1
    force: bool = False
    unsafe: bool = False
    custom_objects: Any = None
    x_key: str = "x"
    y_key: str = "y"
    progress: bool = False
    tasks: tuple[str, ...] = ()


def _compress(kind: str, model: Any, output: Any, compression: Pass, run: _Run, structure: str, notes: list[str]) -> CompressionResult | WorkerDone:
    """Runs one compression pass as a pipeline, then saves, measures and reports (``kind``: prune or cluster)."""
    try:
        QuantMode(run.export_mode)
    except ValueError:
        raise InputError(f"export_mode '{run.export_mode}' is not a quantization mode", hint="e.g. export_mode int8",
                         settings=("export_mode",)) from None
    if run.export:
        check_latency_options(run.runs, run.threads)
    started = time.perf_counter()
    dist = resolve_strategy(compression.config.strategy)  # first: a multi-worker strategy configures TensorFlow's runtime
    out, loaded, train, val = load_inputs(kind, model, output, run.data, run.val, run.preprocessing, run.force, run.unsafe, run.custom_objects,
                                          run.x_key, run.y_key, run.tasks)
    source = loaded.keras_model
    check_training_data(source, val, what="val", need_labels=False)
    ctx = PassContext(train=train, val=val, seed=run.seed, teacher=source, show_training=run.progress, tasks=tuple(model_tasks(loaded)),
                      preprocessing=train.preprocessing if train is not None else Preprocessing(), distribution=dist)
    done = run_passes([compression], ModelState(keras=source, source=str(loaded.path)), ctx)
    if not dist.is_chief:
        return WorkerDone(kind, dist, str(out))
    step = done.steps[0]
    layers = tuple(LayerReport.from_dict(d) for d in step.details["layers"])
    if kind == "prune":
        skipped = [r for r in layers if r.status == "skipped"]
        if skipped:
            notes.append("skipped: " + "; ".join(f"{r.path} ({r.reason})" for r in skipped))
    config = {**compression.config.model_dump(mode="json", exclude={"pass_"}), "seed": run.seed}
    return finish(kind, source, done.state.keras, out, config, layers, train, val, dict(step.details["history"]), started,
                  export=run.export, export_mode=run.export_mode, runs=run.runs, threads=run.threads, structure=structure, notes=notes,
                  task_overrides=loaded.task_overrides)


def prune(model: str | os.PathLike[str] | LoadedModel, output: str | os.PathLike[str], config: PruneConfig | None = None, *,
          data: str | os.PathLike[str] | Dataset | None, val: str | os.PathLike[str] | Dataset | None = None, seed: int = 0,
          preprocessing: Preprocessing | None = None, export: bool = True, export_mode: str = "int8", runs: int = 60, threads: int = 1,
          force: bool = False, unsafe: bool = False, custom_objects: str | os.PathLike[str] | None = None, x_key: str = "x",
          y_key: str = "y", progress: bool = False, tasks: tuple[str, ...] = (), **settings: Any) -> CompressionResult | WorkerDone:
    """Prunes ``model``, fine-tunes it on ``data`` and writes ``output`` (.keras) and its report.

    The pass is set by ``config``, or by its settings as keyword arguments (``sparsity=0.8,
    schedule="polynomial", epochs=2``; ``targets`` may be a YAML file). Every check (paths,
    settings, regexes, model, data against the model) runs before training. ``export`` converts
    the original and the pruned model to ``export_mode`` TFLite and measures size (on disk, gzip)
    and latency side by side; the report says plainly when it is not faster.
    """
    if config is None:
        if isinstance(settings.get("targets"), (str, os.PathLike)):
            settings["targets"] = load_targets(settings["targets"])
        config = make_config(PruneConfig, settings)
    elif settings:
        raise TypeError(f"give either a config or its settings, not both ({', '.join(settings)})")
    if "sparsity" not in config.model_fields_set and config.structure is not Structure.TWO_FOUR:
        raise InputError(f"sparsity is required for structure {config.structure.value}", hint="e.g. sparsity 0.8",
                         settings=("sparsity", "structure"))
    run = _Run(data, val, seed, preprocessing, export, export_mode, runs, threads, force, unsafe, custom_objects, x_key, y_key, progress,
               tuple(tasks))
    return _compress("prune", model, output, PrunePass(config), run, config.structure.value, [])


def cluster(model: str | os.PathLike[str] | LoadedModel, output: str | os.PathLike[str], config: ClusterConfig | None = None, *,
            data: str | os.PathLike[str] | Dataset | None, val: str | os.PathLike[str] | Dataset | None = None, seed: int = 0,
            preprocessing: Preprocessing | None = None, export: bool = True, export_mode: str = "int8", runs: int = 60, threads: int = 1,
            force: bool = False, unsafe: bool = False, custom_objects: str | os.PathLike[str] | None = None, x_key: str = "x",
            y_key: str = "y", progress: bool = False, tasks: tuple[str, ...] = (), **settings: Any) -> CompressionResult | WorkerDone:
    """Clusters ``model``'s weights, fine-tunes on ``data`` and writes ``output`` (.keras) and its report.

    The pass is set by ``config`` or its settings as keyword arguments (``clusters=16``). Every
    check runs before any work; the report has per-layer distinct values and, with ``export``,
    the size/gzip/latency of the original and clustered models after export side by side.
    """
    if config is None:
        config = make_config(ClusterConfig, settings)
    elif settings:
        raise TypeError(f"give either a config or its settings, not both ({', '.join(settings)})")
    run = _Run(data, val, seed, preprocessing, export, export_mode, runs, threads, force, unsafe, custom_objects, x_key, y_key, progress,
               tuple(tasks))
    return _compress("cluster", model, output, ClusterPass(config), run, "cluster", [CLUSTER_NOTE])
