"""Runs a recipe: the passes in order, then the measurements and the gates.

``run_recipe(recipe, model, data, out_dir=...)`` checks everything first (the recipe, the model,
the data against the model, the labels the gates and training passes need, the device profile,
every pass's own ``check``, that each pass is available in this edgekit), then:

1. converts the model unchanged to float32 TFLite: the reference every gate compares against;
2. runs the passes, keeping the Keras model after each training pass (``steps/NN-pass.keras``)
   and the TFLite model after quantization (``steps/NN-quantize.tflite``);
3. writes the final artifact ``model.tflite`` with its manifest ``model.json`` (and, with an
   export pass, the embedded metadata and ``compatibility.json``);
4. measures the artifact and the float32 reference on the validation data (accuracy) and on the
   device or this machine (latency, interleaved rounds), checks the gates;
5. writes ``recipe.yaml`` (the resolved recipe: every default filled in, rerunnable),
   ``report.json`` and ``report.html``.

The output folder is assembled in a temporary folder beside it and renamed into place, so a
crash leaves nothing half-written; a failed gate still leaves the full output and then raises
:class:`~edgekit.core.errors.GateFailed` (exit code 8).

Example:
    >>> result = run_recipe("int8-cpu", "model.keras", "calib.npz", val="val.npz", out_dir="out",
    ...                     preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.passed, result.final.top1  # doctest: +SKIP
    (True, 89.6)
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.errors import DataError, EdgekitError, GateFailed, InputError, ModelError, RecipeError
from edgekit.core.fsutil import TMP_PREFIX, sha256_file, size_info, write_bytes_atomic, write_json_atomic
from edgekit.workflows.recipes import (
    ClusterSpec,
    DistillSpec,
    ExportSpec,
    PruneSpec,
    QatSpec,
    QuantizeSpec,
    Recipe,
    load_recipe,
    recipe_source,
)
from edgekit.core.datatypes import AccuracyResult, Dataset, LatencyStats, Preprocessing, SizeInfo

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
RECIPE_FILE = "recipe.yaml"
MODEL_FILE = "model.tflite"
STEPS_DIR = "steps"
MAX_SAMPLES_IN_REPORT = 400  # raw latency samples kept per artifact for the distribution plot

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Measurements shared with edgekit.workflows.optimize
# ----------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One artifact measured: size, accuracy on the validation data and latency."""

    name: str
    path: str
    sha256: str
    size: SizeInfo
    accuracy: AccuracyResult | None = None
    agreement: float | None = None  # % of samples with the reference's top-1
    latency: LatencyStats | None = None
    samples_ms: list[float] = field(default_factory=list)
    device: dict[str, Any] | None = None

    def metric(self, percentile: str = "p50") -> float | None:
        if self.latency is None:
            return None
        return self.latency.p90_ms if percentile == "p90" else self.latency.p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "sha256": self.sha256, "size": self.size.to_dict(),
            "accuracy": self.accuracy.to_dict() if self.accuracy else None, "agreement_with_reference": self.agreement,
            "latency": self.latency.to_dict() if self.latency else None,
            "latency_samples_ms": [round(v, 5) for v in self.samples_ms[:MAX_SAMPLES_IN_REPORT]],
        }


def _device_or_none(device: Any) -> Any:
    if device is None:
        return None
    from edgekit.devices.profiles import load_profile

    profile = load_profile(device)
    return None if profile.transport == "local" and profile.cpu_affinity is None and profile.runner is None else profile


def run_outputs(path: Path, x: np.ndarray, *, device: Any = None, threads: int = 1) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The artifact's first output on ``x`` (locally, or on ``device``) and the device report."""
    if device is None:
        from edgekit.runtime.local import run_local

        run = run_local(path, x, runs=1, warmup=0, threads=threads)
        return run.outputs[0].reshape(len(x), -1), None
    from edgekit.devices.run import run_on_device

    done = run_on_device(device, path, x, runs=1, warmup=0, threads=threads)
    return done.run.outputs[0].reshape(len(x), -1), done.report


def measure_accuracy(items: list[Measurement], val: Dataset, *, reference: np.ndarray | None = None, device: Any = None,
                     threads: int = 1) -> np.ndarray | None:
    """Fills ``accuracy`` (and ``agreement`` with ``reference`` outputs) of each item; returns the first item's outputs."""
    from edgekit.measure.metrics import accuracy

    first = None
    for item in items:
        out, report = run_outputs(Path(item.path), val.x, device=device, threads=threads)
        if first is None:
            first = out
        if val.y is not None and out.shape[1] > 1:
            item.accuracy = accuracy(out, val.y)
        ref = reference if reference is not None else first
        if ref is not None and out.shape == ref.shape:
            item.agreement = float((out.argmax(1) == ref.argmax(1)).mean() * 100.0)
        if report is not None:
            item.device = report
    return first


def measure_latency(items: list[Measurement], *, runs: int, warmup: int, threads: int, rounds: int, device: Any = None,
                    progress: Progress | None = None) -> dict[str, Any] | None:
    """Latency of every item, measured in ``rounds`` interleaved rounds (item A, B, C, A, B, C...).

    Interleaving spreads the machine's background load over all items, so ratios between them
    mean something on a shared machine. Each item's statistics pool the timed runs of all rounds.
    Returns the device report of the last run (None locally).
    """
    from edgekit.runtime.local import run_local
    from edgekit.runtime.local import latency_stats

    pooled: dict[int, list[Any]] = {i: [] for i in range(len(items))}
    device_report = None
    for r in range(rounds):
        for i, item in enumerate(items):
            if progress:
                progress(f"latency round {r + 1}/{rounds}: {item.name}")
            if device is None:
                pooled[i].append(run_local(Path(item.path), None, threads=threads, runs=runs, warmup=warmup))
            else:
                from edgekit.devices.run import run_on_device

                done = run_on_device(device, Path(item.path), None, threads=threads, runs=runs, warmup=warmup)
                pooled[i].append(done.run)
                device_report = done.report
    for i, item in enumerate(items):
        runs_ = pooled[i]
        samples = [t for run in runs_ for t in run.timings_ms]
        first = runs_[0]
        stats = latency_stats(first)
        item.latency = LatencyStats.from_samples(
            samples, warmup=first.warmup, threads=first.threads, first_inference_ms=stats.first_inference_ms,
            init_ms=stats.init_ms, peak_memory_mb=max((r.peak_rss_mb or 0.0) for r in runs_) or None, runtime=stats.runtime)
        item.samples_ms = samples
    return device_report


def measurement_of(name: str, path: Path) -> Measurement:
    return Measurement(name=name, path=str(path), sha256=sha256_file(path), size=size_info(path))


def local_device_report() -> dict[str, Any]:
    """This machine, probed (best effort: a failing probe is reported, not raised)."""
    try:
        from edgekit.devices.probe import probe_device

        probe = probe_device("local")
        return {"name": "local", "transport": "local", "address": "this machine", "probe": probe.to_dict()}
    except EdgekitError as exc:
        return {"name": "local", "transport": "local", "address": "this machine", "probe_error": exc.one_line()}


# ----------------------------------------------------------------------------------------------
# Helpers: models, data, output folder
# ----------------------------------------------------------------------------------------------


def as_loaded(keras_model: Any, source: str) -> Any:
    """A :class:`~edgekit.core.models.LoadedModel` around a Keras model built in this process."""
    from edgekit.core.models import LoadedModel

    inputs, outputs = keras_model.inputs, keras_model.outputs
    return LoadedModel(
        path=source, format="keras", sha256="", keras_model=keras_model, input_shape=tuple(inputs[0].shape),
        input_dtype=str(inputs[0].dtype), output_shapes=[tuple(o.shape) for o in outputs],
        output_names=[f"output_{i}" for i in range(len(outputs))], parameter_count=int(keras_model.count_params()),
    )


def preprocessing_of(recipe: Recipe, override: Preprocessing | None) -> Preprocessing:
    """The CLI's --scale/--mean/--std if given, else the recipe's ``data.preprocessing``."""
    if override is not None:
        return override
    spec = recipe.data.preprocessing
    if spec is None:
        return Preprocessing()

    def tup(v: Any) -> tuple[float, ...] | None:
        if v is None:
            return None
        return tuple(float(x) for x in (v if isinstance(v, list) else [v]))

    return Preprocessing(scale=spec.scale_value(), mean=tup(spec.mean), std=tup(spec.std))


def prepare_out_dir(out_dir: str | os.PathLike[str], *, force: bool, inputs: list[Any]) -> Path:
    """Checks the output folder before any work: absent, empty, or ``force``; never an input."""
    out = Path(out_dir)
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if src == out.resolve() or out.resolve() in src.parents:
            raise InputError(f"output folder {out} would contain or replace the input {given}", hint="choose another -o folder")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file, expected a folder", hint="give a folder path with -o")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"output folder {out} is not empty", hint="pass --force to replace it or choose another -o folder")
    if not out.parent.exists():
        raise InputError(f"the parent folder of {out} does not exist", hint=f"create it first: mkdir -p {out.parent}")
    return out


@contextlib.contextmanager
def staged_dir(out: Path):
    """Yields a temporary folder beside ``out``; moves it to ``out`` when the block ends (even on GateFailed)."""
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    moved = False
    try:
        try:
            yield tmp
        except GateFailed:
            _move(tmp, out)
            moved = True
            raise
        _move(tmp, out)
        moved = True
    finally:
        if not moved:
            shutil.rmtree(tmp, ignore_errors=True)


def _move(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(out.name + ".old-" + tmp.name[-8:])
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def classes_of(keras_model: Any) -> int | None:
    shape = tuple(keras_model.outputs[0].shape)
    return int(shape[-1]) if len(shape) == 2 and shape[-1] else None


def check_labels(ds: Dataset, classes: int | None, what: str) -> None:
    if ds.y is not None and classes and int(ds.y.max(initial=0)) >= classes:
        raise DataError(f"labels in {what} {ds.source} go up to {int(ds.y.max())}, but the model has {classes} classes",
                        hint="check the labels belong to this model's dataset")


def split_validation(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Holds out a seeded ``fraction`` of ``train`` as validation data."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_val = max(1, int(round(len(train) * fraction)))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    make = lambda idx, tag: Dataset(x=train.x[idx], y=train.y[idx] if train.y is not None else None,  # noqa: E731
                                    source=f"{train.source} ({tag})", sha256=train.sha256, preprocessing=train.preprocessing,
                                    labels=train.labels)
    return make(train_idx, f"{len(train_idx)} samples, training part"), make(val_idx, f"held-out {n_val} samples, seed {seed}")


def ensure_loss(keras_model: Any, loss: str | None) -> None:
    """Gives an uncompiled classifier a loss so the pruning/clustering passes can fine-tune it."""
    if loss is not None or getattr(keras_model, "loss", None) is not None:
        return
    from edgekit.passes.distill import compile_plain, detect_output_kind

    compile_plain(keras_model, detect_output_kind(keras_model).kind)


def save_keras(model: Any, path: Path) -> None:
    from edgekit.passes.compress import clone_model

    plain = clone_model(model)
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
        plain.save(path)


# ----------------------------------------------------------------------------------------------
# Gates
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float | None
    limit: float
    unit: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "value": self.value, "limit": self.limit, "unit": self.unit,
                "detail": self.detail}


def accuracy_drop(reference: Measurement, final: Measurement, relative: bool) -> float | None:
    """Points of top-1 lost (or percent of the reference top-1 with ``relative``); None without labels."""
    if reference.accuracy is None or final.accuracy is None:
        return None
    drop = reference.accuracy.top1 - final.accuracy.top1
    if relative:
        return drop / reference.accuracy.top1 * 100.0 if reference.accuracy.top1 > 0 else math.inf
    return drop


def check_gates(recipe: Recipe, reference: Measurement, final: Measurement, device_name: str) -> list[GateResult]:
    gates = recipe.gates
    out = []
    if gates.accuracy is not None:
        g = gates.accuracy
        drop = accuracy_drop(reference, final, g.relative)
        unit = "% of the reference top-1" if g.relative else "points"
        if drop is None:
            out.append(GateResult("accuracy", False, None, g.max_drop, unit, "no labels to measure accuracy"))
        else:
            out.append(GateResult("accuracy", drop <= g.max_drop + 1e-9, round(drop, 4), g.max_drop, unit,
                                  f"top-1 {final.accuracy.top1:.2f}% vs float32 {reference.accuracy.top1:.2f}%: "  # type: ignore[union-attr]
                                  f"drop {drop:.2f} {unit} (max {g.max_drop:g})"))
    if gates.latency is not None:
        g = gates.latency
        value = final.metric(g.percentile)
        out.append(GateResult("latency", value is not None and value <= g.max_ms, round(value, 5) if value is not None else None,
                              g.max_ms, "ms", f"{g.percentile} {value:.4f} ms on {device_name} (max {g.max_ms:g} ms)"
                              if value is not None else "latency not measured"))
    if gates.size is not None:
        g = gates.size
        value = final.size.gzip_bytes if g.compressed else final.size.bytes
        kind = "gzip bytes" if g.compressed else "bytes"
        out.append(GateResult("size", value <= g.limit_bytes, value, g.limit_bytes, kind,
                              f"{value:,} {kind} (max {g.limit_bytes:,})"))
    return out


# ----------------------------------------------------------------------------------------------
# Passes
# ----------------------------------------------------------------------------------------------


class PassUnavailable(RecipeError):
    """A recipe names a pass that this edgekit installation cannot run."""


def _import_pass(name: str) -> Any:
    module = {"prune": "edgekit.passes.prune", "cluster": "edgekit.passes.cluster", "distill": "edgekit.passes.distill", "qat": "edgekit.passes.qat"}[name]
    try:
        from importlib import import_module

        return import_module(module)
    except ImportError as exc:
        raise PassUnavailable(f"the recipe's {name} pass needs {module}, which this edgekit cannot import ({exc})",
                              hint=f"upgrade edgekit, or remove the {name} pass from the recipe") from None


@dataclass
class StepRecord:
    index: int
    name: str
    seconds: float = 0.0
    artifact: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "pass": self.name, "seconds": round(self.seconds, 2), "artifact": self.artifact,
                "details": self.details}


@dataclass
class _State:
    """What flows between passes."""

    keras_model: Any
    tflite: bytes | None = None
    tflite_kind: str | None = None  # mode (int8, float16, qat-int8, ...)
    layer_errors: list[dict[str, Any]] = field(default_factory=list)
    passes_done: list[str] = field(default_factory=list)
    compat: dict[str, Any] | None = None
    export_target: str | None = None
    warnings: list[str] = field(default_factory=list)


def _train_settings(spec: Any, seed: int, progress: bool) -> Any:
    from edgekit.passes.compress import TrainSettings

    return TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size, learning_rate=spec.learning_rate, loss=spec.loss,
                         lr_schedule=getattr(spec, "lr_schedule", "constant"),
                         seed=seed, progress=progress)


def _prune_config(spec: PruneSpec) -> Any:
    from edgekit.passes.prune import LayerTarget, make_config

    return make_config(sparsity=spec.sparsity, structure=spec.structure, schedule=spec.schedule,
                       initial_sparsity=spec.initial_sparsity, begin_epoch=spec.begin_epoch, end_epoch=spec.end_epoch,
                       layers=spec.layers, skip=spec.skip,
                       targets=tuple(LayerTarget(layers=t.layers, sparsity=t.sparsity) for t in spec.targets))


def _cluster_config(spec: ClusterSpec) -> Any:
    from edgekit.passes.cluster import make_config

    return make_config(clusters=spec.clusters, init=spec.init, preserve_sparsity=spec.preserve_sparsity,
                       per_channel=spec.per_channel, layers=spec.layers, skip=spec.skip)


def _student_path(spec: DistillSpec, recipe: Recipe) -> Path | None:
    if spec.student is None:
        return None
    path = Path(spec.student).expanduser()
    source = recipe_source(recipe)
    if not path.is_absolute() and source is not None and not path.exists():
        path = Path(source).parent / path
    return path


def precheck_passes(recipe: Recipe, keras_model: Any, train: Dataset | None, val: Dataset | None, calibration_ok: bool) -> None:
    """Everything a pass can check before any training: availability, options, data, layer selections."""
    for spec in recipe.passes:
        if spec.pass_ in ("prune", "cluster", "distill", "qat"):
            _import_pass(spec.pass_)
        if spec.pass_ in ("prune", "cluster", "distill", "qat") and getattr(spec, "epochs", 0) > 0:
            if train is None or train.y is None:
                raise DataError(f"the {spec.pass_} pass fine-tunes the model and needs labelled training data",
                                hint="pass --data TRAIN.npz with arrays x and y")
        if isinstance(spec, PruneSpec):
            from edgekit.passes.prune import PrunePass

            PrunePass(_prune_config(spec)).check(keras_model, train, _train_settings(spec, 0, False))
        elif isinstance(spec, ClusterSpec):
            from edgekit.passes.cluster import ClusterPass

            ClusterPass(_cluster_config(spec)).check(keras_model, train, _train_settings(spec, 0, False))
        elif isinstance(spec, DistillSpec):
            from edgekit.passes.distill import check_distill_options

            check_distill_options(epochs=spec.epochs, temperature=spec.temperature, alpha=spec.alpha, batch_size=spec.batch_size,
                                  learning_rate=spec.learning_rate, width=spec.width)
            student = _student_path(spec, recipe)
            if student is not None and not student.is_file():
                raise InputError(f"the distill pass's student {student} does not exist", hint="fix student: in the recipe")
        elif isinstance(spec, QatSpec):
            from edgekit.passes.qat import plan_qat

            if classes_of(keras_model) is None:
                raise ModelError("the qat pass trains classifiers with a (batch, classes) output", hint="use quantize instead")
            plan = plan_qat(keras_model)
            if not plan.quantized_count:
                raise ModelError("the qat pass found no layer it can quantize in this model", hint="use quantize instead")
        elif isinstance(spec, QuantizeSpec):
            if spec.mode in ("int8", "int16x8") and not calibration_ok:
                raise InputError(f"the quantize pass (mode {spec.mode}) needs calibration data", hint="pass --data FILE")
            if spec.mixed and spec.io_type != "float":
                raise RecipeError("float_layers/keep_sensitive_float need io_type float (mixed models keep float I/O)",
                                  hint="set io_type: float or drop the float layers")
            if spec.float_layers:
                from edgekit.export.sensitivity import keras_layer_names

                names = sorted(keras_layer_names(keras_model))
                import re

                for pattern in spec.float_layers:
                    if not any(re.fullmatch(pattern, n) for n in names):
                        raise RecipeError(f"float_layers entry '{pattern}' matches no layer of the model",
                                          hint=f"layers: {', '.join(names[:20])}")
        elif isinstance(spec, ExportSpec) and spec.npu is not None:
            from edgekit.export.npu import check_npu_ready

            check_npu_ready(spec.npu, spec.soc)


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


@dataclass
class PipelineResult:
    """What :func:`run_recipe` did and measured."""

    recipe: Recipe
    out_dir: str
    artifact: str
    reference: Measurement
    final: Measurement
    gates: list[GateResult]
    steps: list[StepRecord]
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return self.report


def _quantize_step(spec: QuantizeSpec, state: _State, calibration: np.ndarray | None, record: StepRecord, progress: Progress) -> None:
    from edgekit.export.convert import INT8_WEIGHT_MODES, choose_weights, convert
    from edgekit.core.datatypes import IOType, QuantMode

    keras_model = state.keras_model
    if spec.equalize:
        from edgekit.passes.equalize import equalize

        keras_model, pairs = equalize(keras_model)
        record.details["equalized"] = [p.to_dict() for p in pairs]
    loaded = as_loaded(keras_model, "model")
    mode = QuantMode(spec.mode)
    calib = calibration[: spec.calibration_samples] if calibration is not None and mode.needs_data else None
    requested = "auto" if spec.per_channel is None or mode not in INT8_WEIGHT_MODES else ("per-channel" if spec.per_channel else "per-tensor")
    granularity, _ = choose_weights(loaded, mode, requested)
    per_channel = granularity != "per-tensor"
    mixed = None
    if mode is QuantMode.INT8 and (spec.mixed or spec.layer_stats) and loaded.keras_model is not None:
        from edgekit.export.sensitivity import MixedInt8

        progress("quantize: per-layer int8 error (QuantizationDebugger)")
        mixed = MixedInt8(loaded, calib, per_channel=per_channel)
        state.layer_errors = [e.to_dict() for e in mixed.layer_errors()]
    if spec.mixed and mixed is not None:
        ranked = mixed.ranked_layers()
        chosen = list(dict.fromkeys([*spec.float_layers, *ranked[: spec.keep_sensitive_float]]))
        progress(f"quantize: int8 with {', '.join(chosen)} in float")
        state.tflite = mixed.quantize(chosen)
        record.details.update({"float_layers": chosen, "ranked_layers": ranked})
        state.tflite_kind = "int8-mixed"
    else:
        progress(f"quantize: {spec.mode}" + (f" ({granularity} weights)" if granularity else ""))
        state.tflite = convert(loaded, mode, calibration=calib, io_type=IOType(spec.io_type), per_channel=per_channel)
        state.tflite_kind = spec.mode
    record.details.update({"mode": spec.mode, "io_type": spec.io_type, "per_channel": per_channel if granularity else None, "equalize": spec.equalize,
                           "calibration_samples": int(len(calib)) if calib is not None else 0, "bytes": len(state.tflite)})


def _export_step(spec: ExportSpec, state: _State, calibration: np.ndarray | None, pre: Preprocessing, labels: list[str] | None,
                 out: Path, record: StepRecord, progress: Progress) -> Path:
    from edgekit.export.delegates import check_compatibility
    from edgekit.workflows.export import METADATA_NAME, METADATA_SCHEMA, REPORT_FILE, embed_metadata, resolve_settings
    from edgekit.export.sensitivity import keras_layer_names
    from edgekit.core.tflite_file import parse_tflite_bytes

    if state.tflite is None:
        from edgekit.export.convert import choose_weights, convert

        target, mode, io = resolve_settings(spec.target, None, None, calibration is not None)
        progress(f"export: converting for {target} ({mode.value})")
        loaded = as_loaded(state.keras_model, "model")
        weights, _ = choose_weights(loaded, mode)  # as edgekit export and edgekit quantize do
        state.tflite = convert(loaded, mode, calibration=calibration, io_type=io, per_channel=weights != "per-tensor")
        state.tflite_kind = mode.value
    info = parse_tflite_bytes(state.tflite, MODEL_FILE)
    payload = {"schema": METADATA_SCHEMA, "labels": labels, "preprocessing": pre.to_dict(),
               "inputs": [t.to_dict() for t in info.inputs], "outputs": [t.to_dict() for t in info.outputs],
               "target": spec.target, "mode": state.tflite_kind}
    flatbuffer = embed_metadata(state.tflite, payload)
    layers = keras_layer_names(state.keras_model)
    report = check_compatibility(parse_tflite_bytes(flatbuffer, MODEL_FILE), spec.target, api_level=spec.api_level, layers=layers,
                                 model_bytes=flatbuffer)
    write_json_atomic(out / REPORT_FILE, report.to_dict())
    state.tflite = flatbuffer
    state.compat = report.to_dict()
    state.export_target = spec.target
    state.warnings.extend(report.warnings)
    if report.unsupported:
        ops = sorted({n.op for n in report.unsupported})
        state.warnings.append(f"{len(report.unsupported)} of {report.summary.nodes} nodes stay off the {report.delegate} delegate "
                              f"({', '.join(ops)}); see {REPORT_FILE}")
    record.details.update({"target": spec.target, "metadata": METADATA_NAME, "compatibility": REPORT_FILE,
                           "delegated_node_share": report.summary.delegated_node_share, "full_coverage": report.full_coverage})
    model_path = out / MODEL_FILE
    write_bytes_atomic(model_path, flatbuffer)
    if spec.npu is not None:
        from edgekit.export.npu import check_npu_ready, npu_compile

        vendor, soc = check_npu_ready(spec.npu, spec.soc)
        progress(f"export: AOT-compiling for {vendor.name} {soc}")
        record.details["npu_models"] = npu_compile(model_path, vendor.name, soc, out / "npu")
    return model_path


def run_recipe(
    recipe: str | os.PathLike[str] | Recipe,
    model: str | os.PathLike[str],
    data: str | os.PathLike[str] | None,
    *,
    out_dir: str | os.PathLike[str],
    val: str | os.PathLike[str] | None = None,
    device: str | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
    recipes_dir: str | os.PathLike[str] | None = None,
    preprocessing: Preprocessing | None = None,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    training_progress: bool = False,
    html: bool = True,
) -> PipelineResult:
    """Runs ``recipe`` on ``model``; see the module docstring.

    Args:
        recipe: a bundled recipe name, a .yaml path or a :class:`~edgekit.workflows.recipes.Recipe`.
        model: the Keras model (.keras/.h5) to optimize.
        data: training/calibration data (.npz x/y, .npy or an image folder).
        out_dir: the output folder (absent or empty unless ``force``).
        val: validation data for accuracy; default: a held-out part of ``data`` when a pass trains, else ``data``.
        device: a device profile for latency (and accuracy); overrides the recipe's ``gates.latency.device``.
        preprocessing: overrides the recipe's ``data.preprocessing``.
        progress: called with a short message at each step (the CLI shows it).
        training_progress: show Keras training progress bars (rich, on stderr).

    Raises:
        RecipeError, InputError, ModelError, DataError: before any work.
        GateFailed: after everything is written, when a gate fails.
    """
    from edgekit.core.data import calibration_sample, load_dataset
    from edgekit.core.manifest import Manifest, command_line, manifest_path_for, versions
    from edgekit.core.models import load_model

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    rec = load_recipe(recipe, recipes_dir=recipes_dir)
    device_name = device or (rec.gates.latency.device if rec.gates.latency else None)
    profile = None
    if device_name is not None:
        from edgekit.devices.profiles import load_profile

        profile = load_profile(device_name, devices_dir=devices_dir)
    out = prepare_out_dir(out_dir, force=force, inputs=[model, data, val])
    if data is None and rec.needs_data:
        raise InputError(f"recipe {rec.name} needs data (calibration or training): pass --data", hint="e.g. --data calib.npz")
    say("loading the model and data")
    loaded = load_model(model, unsafe=unsafe, custom_objects=custom_objects, compile=rec.training)
    if loaded.keras_model is None and any(p.pass_ != "quantize" and p.pass_ != "export" for p in rec.passes):
        raise ModelError(f"{loaded.path} is a SavedModel; training passes need the Keras model", hint="pass the .keras file")
    pre = preprocessing_of(rec, preprocessing)
    ds_kw = {"input_shape": loaded.input_shape, "preprocessing": pre, "x_key": rec.data.x_key, "y_key": rec.data.y_key,
             "seed": rec.data.seed}
    train = load_dataset(data, limit=rec.data.train_samples, **ds_kw) if data is not None else None
    classes = classes_of(loaded.keras_model) if loaded.keras_model is not None else None
    notes: list[str] = []
    if val is not None:
        val_ds = load_dataset(val, limit=rec.data.val_samples, **ds_kw)
    elif train is not None and rec.training and len(train) >= 20:
        train, val_ds = split_validation(train, rec.data.val_fraction, rec.data.seed)
        notes.append(f"no --val: accuracy is measured on {val_ds.source}")
    elif train is not None:
        val_ds = train
        notes.append("no --val: accuracy is measured on the --data samples themselves")
    else:
        raise InputError("nothing to measure accuracy on: pass --val VAL.npz (or --data)", hint="e.g. --val val.npz")
    if rec.gates.accuracy is not None and val_ds.y is None:
        raise DataError(f"the recipe has an accuracy gate, but {val_ds.source} has no labels", hint="pass --val with arrays x and y")
    for ds, what in ((train, "--data"), (val_ds, "--val")):
        if ds is not None:
            check_labels(ds, classes, what)
    calibration = calibration_sample(train, 100000, rec.data.seed) if train is not None else None
    if loaded.keras_model is not None:
        precheck_passes(rec, loaded.keras_model, train, val_ds, calibration is not None)
    threads = rec.measure.threads or (profile.threads if profile is not None else 1)
    run_device = _device_or_none(profile) if profile is not None else None

    state = _State(keras_model=loaded.keras_model)
    steps: list[StepRecord] = []
    with staged_dir(out) as tmp:
        (tmp / STEPS_DIR).mkdir()
        say("converting the unchanged model to float32 (the reference)")
        from edgekit.export.convert import convert
        from edgekit.core.datatypes import QuantMode

        ref_path = tmp / STEPS_DIR / "00-float32.tflite"
        write_bytes_atomic(ref_path, convert(loaded, QuantMode.FLOAT32))
        for index, spec in enumerate(rec.passes, start=1):
            record = StepRecord(index, spec.pass_)
            t0 = time.perf_counter()
            say(f"[{index}/{len(rec.passes)}] {spec.pass_}")
            stem = tmp / STEPS_DIR / f"{index:02d}-{spec.pass_}"
            if isinstance(spec, PruneSpec | ClusterSpec):
                from edgekit.passes.compress import check_training_data

                ensure_loss(state.keras_model, spec.loss)
                if isinstance(spec, PruneSpec):
                    from edgekit.passes.prune import PrunePass

                    p: Any = PrunePass(_prune_config(spec))
                else:
                    from edgekit.passes.cluster import ClusterPass

                    p = ClusterPass(_cluster_config(spec))
                settings = _train_settings(spec, rec.data.seed, training_progress)
                check_training_data(state.keras_model, train, need_labels=spec.epochs > 0)
                p.check(state.keras_model, train, settings)
                new = p.finalize(p.apply(state.keras_model, train, settings, val_ds))
                if isinstance(spec, PruneSpec):
                    reports = p.layer_reports(state.keras_model, new)
                else:
                    reports = p.layer_reports(new)
                record.details["layers"] = [r.to_dict() for r in reports]
                record.details["history"] = p.history
                ensure_loss(new, spec.loss)
                state.keras_model = new
                save_keras(new, stem.with_suffix(".keras"))
                record.artifact = str(stem.with_suffix(".keras").relative_to(tmp))
            elif isinstance(spec, DistillSpec):
                from edgekit.passes.distill import check_pair, derive_student, fit_with_teacher

                teacher = state.keras_model
                student_file = _student_path(spec, rec)
                if student_file is not None:
                    student = load_model(student_file, unsafe=unsafe, custom_objects=custom_objects).keras_model
                    changes: list[Any] = []
                else:
                    student, changes = derive_student(teacher, spec.width, seed=rec.data.seed)  # type: ignore[arg-type]
                check_pair(teacher, student)
                fit = fit_with_teacher(student, teacher, train, val_ds if val_ds.y is not None else None, epochs=spec.epochs,  # type: ignore[arg-type]
                                       temperature=spec.temperature, alpha=spec.alpha, batch_size=spec.batch_size,
                                       learning_rate=spec.learning_rate or 1e-3, seed=rec.data.seed,
                                       on_epoch=lambda e, n, logs: say(f"distill epoch {e}/{n}: " + _fmt_logs(logs)))
                record.details.update({"teacher_parameters": int(teacher.count_params()), "student_parameters": int(student.count_params()),
                                       "width_changes": [c.__dict__ if hasattr(c, "__dict__") else str(c) for c in changes],
                                       "fit": fit.to_dict()})
                state.keras_model = student
                save_keras(student, stem.with_suffix(".keras"))
                record.artifact = str(stem.with_suffix(".keras").relative_to(tmp))
            elif isinstance(spec, QatSpec):
                from edgekit.passes.qat import qat

                preserve = spec.preserve
                if preserve == "auto":
                    done = state.passes_done
                    preserve = "clusters" if "cluster" in done else ("sparsity" if "prune" in done else "none")
                qat_out = stem.with_suffix(".tflite")
                result = qat(as_loaded(state.keras_model, f"step {index}"), qat_out, data=train, val=val_ds, epochs=spec.epochs,  # type: ignore[arg-type]
                             io_type=spec.io_type, preserve=None if preserve == "none" else preserve, preprocessing=pre,
                             lr=spec.learning_rate, batch_size=spec.batch_size, seed=rec.data.seed, compare_ptq=False,
                             progress=lambda e, logs, n=spec.epochs: say(f"qat epoch {e}/{n}: " + _fmt_logs(logs)))
                state.tflite = qat_out.read_bytes()
                state.tflite_kind = "qat-int8"
                state.warnings.extend(result.warnings)
                record.details.update({"preserve": preserve, "history": result.history, "float_ops": result.float_ops,
                                       "unsupported_layers": [p.to_dict() for p in result.unsupported]})
                record.artifact = str(qat_out.relative_to(tmp))
            elif isinstance(spec, QuantizeSpec):
                _quantize_step(spec, state, calibration, record, say)
                path = stem.with_suffix(".tflite")
                write_bytes_atomic(path, state.tflite)  # type: ignore[arg-type]
                record.artifact = str(path.relative_to(tmp))
            elif isinstance(spec, ExportSpec):
                _export_step(spec, state, calibration, pre, list(train.labels) if train is not None and train.labels else None,
                             tmp, record, say)
                record.artifact = MODEL_FILE
            state.passes_done.append(spec.pass_)
            record.seconds = time.perf_counter() - t0
            steps.append(record)

        final_path = tmp / MODEL_FILE
        if "export" not in state.passes_done:
            write_bytes_atomic(final_path, state.tflite)  # type: ignore[arg-type]
        from edgekit.core.tflite_file import parse_tflite_bytes

        info = parse_tflite_bytes(final_path.read_bytes(), str(final_path))
        digest, sizes = sha256_file(final_path), size_info(final_path)
        manifest = Manifest(
            artifact={"file": MODEL_FILE, "sha256": digest, "bytes": sizes.bytes, "gzip_bytes": sizes.gzip_bytes},
            inputs=[t.to_dict() for t in info.inputs], outputs=[t.to_dict() for t in info.outputs], preprocessing=pre.to_dict(),
            labels=list(train.labels) if train is not None and train.labels else None,
            source={"path": str(model), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
            data={"path": str(data), "sha256": train.sha256 if train is not None else None} if data is not None else None,
            options={"recipe": rec.name, "passes": rec.pass_names(), "mode": state.tflite_kind},
            extra={"recipe": RECIPE_FILE, "report": REPORT_JSON},
        )
        write_json_atomic(manifest_path_for(final_path), manifest.to_dict())

        say("measuring accuracy")
        reference = measurement_of("float32 (reference)", ref_path)
        final = measurement_of(f"{rec.name} ({state.tflite_kind})", final_path)
        ref_out = measure_accuracy([reference], val_ds, device=run_device, threads=threads)
        measure_accuracy([final], val_ds, reference=ref_out, device=run_device, threads=threads)
        say("measuring latency")
        dev_report = measure_latency([reference, final], runs=rec.measure.runs, warmup=rec.measure.warmup, threads=threads,
                                     rounds=rec.measure.rounds, device=run_device, progress=say)
        if dev_report is None:
            dev_report = final.device or (local_device_report() if profile is None or run_device is None else None)
        where = profile.name if profile is not None else "local"
        gates = check_gates(rec, reference, final, where)

        for m in (reference, final):
            m.path = str(out / Path(m.path).relative_to(tmp))
        if state.compat is None:
            from edgekit.export.delegates import check_compatibility

            state.compat = check_compatibility(info, "cpu", model_bytes=final_path.read_bytes()).to_dict()
        header = (f"Resolved recipe '{rec.name}' as run by edgekit (every default filled in).\n"
                  f"Rerun: edgekit run {RECIPE_FILE} --model MODEL --data DATA [--val VAL] -o OUT\n"
                  f"Command: {command_line()}")
        (tmp / RECIPE_FILE).write_text(rec.to_yaml(header=header), encoding="utf-8")
        warnings = [*notes, *state.warnings]
        for step in steps:
            if step.name == "prune" and not any(g.gate == "size" and g.unit == "gzip bytes" for g in gates):
                warnings.append("pruning zeros weights but the file on disk keeps them: compare gzip sizes "
                                "(size gate compressed: true) or use structure: channels to remove them")
                break
        report = {
            "kind": "run",
            "title": f"edgekit run {rec.name}",
            "recipe": rec.to_dict(),
            "recipe_source": recipe_source(rec),
            "model": {"path": str(model), "sha256": loaded.sha256, "format": loaded.format, "parameters": loaded.parameter_count},
            "data": {"path": str(data) if data is not None else None, "sha256": train.sha256 if train is not None else None,
                     "samples": len(train) if train is not None else 0},
            "val": {"source": val_ds.source, "sha256": val_ds.sha256, "samples": len(val_ds), "labelled": val_ds.y is not None},
            "preprocessing": pre.to_dict(),
            "artifact": {"path": str(out / MODEL_FILE), "sha256": digest, "size": sizes.to_dict(), "mode": state.tflite_kind},
            "steps": [s.to_dict() for s in steps],
            "candidates": [_row(reference, reference, "reference"), _row(final, reference, "final")],
            "gates": [g.to_dict() for g in gates],
            "passed": all(g.passed for g in gates),
            "layer_errors": state.layer_errors,
            "delegates": state.compat,
            "device": dev_report,
            "latency_conditions": {"runs": rec.measure.runs, "warmup": rec.measure.warmup, "rounds": rec.measure.rounds,
                                   "threads": threads, "where": where},
            "warnings": warnings,
            "versions": versions(),
            "command": command_line(),
            "seconds": round(time.perf_counter() - started, 1),
        }
        _write_reports(tmp, report, html)
        result = PipelineResult(recipe=rec, out_dir=str(out), artifact=str(out / MODEL_FILE), reference=reference, final=final,
                                gates=gates, steps=steps, report=report, warnings=warnings)
        failed = [g for g in gates if not g.passed]
        if failed:
            raise GateFailed(f"recipe {rec.name}: {len(failed)} gate(s) failed: " + "; ".join(f"{g.gate}: {g.detail}" for g in failed),
                             hint=f"the artifact and the report are in {out}; relax the gate or change the recipe")
    return result


def _fmt_logs(logs: dict[str, Any] | None) -> str:
    return "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_loss", "val_accuracy"))


def _row(m: Measurement, reference: Measurement, role: str) -> dict[str, Any]:
    """One artifact as a table row for reports (shared with optimize)."""
    drop = accuracy_drop(reference, m, False)
    speed = (reference.latency.p50_ms / m.latency.p50_ms) if m.latency and reference.latency and m.latency.p50_ms > 0 else None
    return {
        **m.to_dict(), "role": role,
        "top1": m.accuracy.top1 if m.accuracy else None,
        "drop": round(drop, 4) if drop is not None else None,
        "p50_ms": m.latency.p50_ms if m.latency else None,
        "p90_ms": m.latency.p90_ms if m.latency else None,
        "bytes": m.size.bytes, "gzip_bytes": m.size.gzip_bytes,
        "smaller_than_reference": round(reference.size.bytes / m.size.bytes, 4) if m.size.bytes else None,
        "faster_than_reference": round(speed, 4) if speed else None,
    }


def _write_reports(folder: Path, report: dict[str, Any], html: bool) -> None:
    from edgekit.core.datatypes import json_ready

    write_json_atomic(folder / REPORT_JSON, json_ready(report))
    if html:
        from edgekit.report.html import render_report

        write_bytes_atomic(folder / REPORT_HTML, render_report(json_ready(report)).encode("utf-8"))
