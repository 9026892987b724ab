"""``edgekit qat``: quantization-aware fine-tuning to a full-int8 .tflite file, with a comparison report.

:func:`qat` loads the model and the data, runs :class:`~edgekit.passes.qat.QatPass` through the
pipeline, measures the float, post-training int8 and QAT int8 models side by side on the
validation data with :class:`~edgekit.measure.bench.Bench`, and writes the ``.tflite`` file, its
manifest (``.json``) and the report (``.qat.report.json``).

Example:
    >>> result = qat("model.keras", "model_qat.tflite", data="train.npz", val="val.npz",
    ...              epochs=2, preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> [(row.variant, row.top1) for row in result.comparison]  # doctest: +SKIP
    [('float', 88.9), ('ptq-int8', 88.7), ('qat-int8', 89.5), ('qat-keras', 89.5)]
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import DEFAULT_CALIBRATION_SAMPLES, calibration_sample, load_dataset, rows_of
from edgekit.core.datatypes import AccuracyResult, Artifact, Dataset, IOType, Preprocessing, QuantMode
from edgekit.core.errors import ConversionError, DataError, InputError, ModelError
from edgekit.core.fsutil import atomic_path, check_output_path, write_json_atomic
from edgekit.core.manifest import manifest_path_for, report_path_for, write_artifact
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tasks import OutputTask
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.core.tfshim import native_stderr_captured
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.export.convert import Conversion
from edgekit.export.standard import finalize
from edgekit.measure.bench import Bench, Candidate, Measurement
from edgekit.measure.task_metrics import evaluate
from edgekit.passes.base import EpochCallback, ModelState, PassContext, PassOutput
from edgekit.passes.distribute import NONE, WorkerDone, resolve_strategy
from edgekit.passes.pipeline import run_passes
from edgekit.passes.qat import LayerPlan, QatConfig, QatPass, check_qat_config
from edgekit.passes.qat.qat_pass import QAT_MODEL, check_classifier, check_labels
from edgekit.workflows.inputs import conform, model_tasks


@dataclass(frozen=True)
class VariantResult:
    """Accuracy of one variant (float, PTQ int8, QAT int8, QAT in Keras) on the validation data."""

    variant: str
    top1: float | None
    top5: float | None
    size_bytes: int | None
    agreement_with_float: float | None  # % of samples with the same top-1 class as the float model
    note: str = ""
    sha256: str | None = None  # of the TFLite file measured (None for the Keras row)
    accuracy: AccuracyResult | None = None  # the task's primary metric and the others

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "top1": self.top1, "top5": self.top5, "size_bytes": self.size_bytes,
            "agreement_with_float": self.agreement_with_float, "note": self.note, "sha256": self.sha256,
            "metric": self.accuracy.metric if self.accuracy else None, "value": self.accuracy.value if self.accuracy else None,
        }


@dataclass(frozen=True)
class QatResult:
    """What :func:`qat` produced; :meth:`save` writes it as the ``.qat.report.json`` report."""

    artifact: Artifact
    info: TfliteInfo
    io_type: IOType
    plan: tuple[LayerPlan, ...]
    unsupported: tuple[LayerPlan, ...]
    float_ops: tuple[str, ...]
    comparison: tuple[VariantResult, ...]
    history: tuple[dict[str, float], ...]
    train_samples: int
    val_samples: int
    val_source: str
    epochs: int
    seconds_training: float
    seconds_conversion: float
    preserve: str | None
    preserved: dict[str, Any]
    keras_path: str | None
    report_path: str
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: how training ran: strategy, replicas in sync, workers (see edgekit.passes.distribute)
    distribution: dict[str, Any] = field(default_factory=lambda: NONE.to_dict())

    def row(self, variant: str) -> VariantResult | None:
        """The comparison row of ``variant`` ("float", "ptq-int8", "qat-int8", "qat-keras")."""
        return next((r for r in self.comparison if r.variant == variant), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.to_dict(),
            "io_type": self.io_type.value,
            "comparison": [r.to_dict() for r in self.comparison],
            "validation": {"source": self.val_source, "samples": self.val_samples},
            "training": {"samples": self.train_samples, "epochs": self.epochs, "seconds": round(self.seconds_training, 1),
                         "history": list(self.history), "distribution": self.distribution},
            "conversion_seconds": round(self.seconds_conversion, 2),
            "unsupported_layers": [p.to_dict() for p in self.unsupported],
            "float_ops": list(self.float_ops),
            "preserve": self.preserve,
            "preserved": self.preserved,
            "keras_model": self.keras_path,
            "plan": [p.to_dict() for p in self.plan],
            "ops": self.info.op_histogram(),
            "inputs": [t.to_dict() for t in self.info.inputs],
            "outputs": [t.to_dict() for t in self.info.outputs],
            "warnings": list(self.warnings),
            "report": self.report_path,
        }

    def save(self) -> Path:
        """Writes the report (``report_path``) atomically and returns its path."""
        write_json_atomic(self.report_path, self.to_dict())
        return Path(self.report_path)


def report_path_for_qat(artifact: str | os.PathLike[str]) -> Path:
    """``dir/model.tflite`` -> ``dir/model.qat.report.json`` (the comparison report)."""
    return report_path_for(Path(artifact), "qat")


@contextlib.contextmanager
def native_quiet():
    """Silences Keras' stdout chatter and native logs around a call."""
    with native_stderr_captured(), contextlib.redirect_stdout(io.StringIO()):
        yield


def _split(train: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(training part, held-out validation part) of ``train``, seeded."""
    if len(train) < 10:
        raise DataError(f"training data {train.source} has {len(train)} samples; holding out validation data needs at least 10",
                        hint="give validation data or more training data")
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(round(len(train) * val_fraction)))
    held, kept = np.sort(order[:n_val]), np.sort(order[n_val:])
    return train.take(kept), train.take(held, f"{train.source} (held-out {n_val} samples, seed {seed})")


def _row(name: str, m: Measurement | None, note: str) -> VariantResult:
    acc = m.accuracy if m is not None else None
    return VariantResult(name, round(acc.top1, 2) if acc and acc.top1 is not None else None,
                         round(acc.top5, 2) if acc and acc.top5 is not None else None,
                         m.size.bytes if m is not None else None,
                         round(m.agreement, 2) if m is not None and m.agreement is not None else None, note,
                         m.sha256 if m is not None else None, acc)


def compare_variants(source: Any, qat_tflite: bytes, qat_keras: Any, val: Dataset, data: Dataset, *, io_type: IOType,
                     compare_ptq: bool, seed: int, device: DeviceProfile, notes: list[str],
                     tasks: list[OutputTask] | None = None) -> tuple[VariantResult, ...]:
    """Float32, PTQ int8 and QAT int8 (TFLite, measured by a :class:`Bench`) and QAT simulated in Keras, on ``val``."""
    # the same seeded draw from the whole --data as `quantize`, so the PTQ column is the model `quantize` makes
    calibration = calibration_sample(data, DEFAULT_CALIBRATION_SAMPLES, seed)
    with tempfile.TemporaryDirectory(prefix="edgekit-qat-") as tmp:
        bench = Bench(tmp, val=val, calibration=calibration, device=device, tasks=tasks)
        rows = [_row("float", bench.add(Candidate("float", keras=source, conversion=Conversion(QuantMode.FLOAT32)), reference=True),
                     "TFLite float32 of the model")]
        if compare_ptq:
            try:
                with warnings.catch_warnings():  # the converter's "Statistics for quantized inputs were expected" with integer I/O
                    warnings.simplefilter("ignore", UserWarning)
                    ptq = bench.add(Candidate("ptq-int8", keras=source, conversion=Conversion(QuantMode.INT8, io_type=io_type)))
            except ConversionError as exc:
                notes.append(f"PTQ int8 comparison skipped: {exc.one_line()}")
            else:
                rows.append(_row("ptq-int8", ptq, f"post-training, {rows_of(calibration)} calibration samples"))
        rows.append(_row("qat-int8", bench.add(Candidate("qat-int8", tflite=qat_tflite)), "this file"))
        float_out, qat_out = bench.outputs["float"], bench.outputs["qat-int8"]
        tasks = bench.tasks or model_tasks(source, val)
    pred = qat_keras.predict(val.feed, batch_size=256, verbose=0)
    outs = [np.asarray(p) for p in (pred if isinstance(pred, (list, tuple)) else [pred])]
    acc = evaluate(tasks, outs, val.targets)
    sim = outs[0].reshape(-1, outs[0].shape[-1]) if outs[0].ndim > 2 else outs[0].reshape(len(val), -1)  # as the bench keeps them
    if tasks[0].task.categorical:
        same_as_file = float((sim.argmax(1) == qat_out.argmax(1)).mean() * 100.0)
        agreement: float | None = float((sim.argmax(1) == float_out.argmax(1)).mean() * 100.0)
        note = f"simulated in Keras; {same_as_file:.1f}% same top-1 as the file"
    else:
        agreement = None
        note = f"simulated in Keras; mean abs difference to the file {float(np.abs(sim - qat_out).mean()):.4g}"
    rows.append(VariantResult("qat-keras", round(acc.top1, 2) if acc and acc.top1 is not None else None,
                              round(acc.top5, 2) if acc and acc.top5 is not None else None, None,
                              round(agreement, 2) if agreement is not None else None, note, None, acc))
    return tuple(rows)


def qat(
    model: str | os.PathLike[str] | LoadedModel,
    output: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | Dataset | None,
    config: QatConfig | None = None,
    val: str | os.PathLike[str] | Dataset | None = None,
    keep_keras: str | os.PathLike[str] | None = None,
    preprocessing: Preprocessing | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    compare_ptq: bool = True,
    device: DeviceProfile | str = "local",
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    on_epoch: EpochCallback | None = None,
    tasks: tuple[str, ...] = (),
    **settings: Any,
) -> QatResult | WorkerDone:
    """Fine-tunes ``model`` with simulated int8 quantization and writes a full-int8 ``output`` (.tflite).

    Beside ``output`` it writes the manifest (``.json``, as ``edgekit quantize`` does) and the
    report (``.qat.report.json``) comparing float, PTQ int8 and QAT int8 top-1 on the validation data
    (``val``, or a seeded ``val_fraction`` of ``data`` held out from training).

    Args:
        model: a Keras 3 ``.keras`` or ``.h5`` file (or a loaded model) with a classifier output.
        output: the ``.tflite`` file to write.
        data: training inputs with labels (``.npz`` with ``x``/``y``, or an image folder).
        config: the QAT settings; or give them as keywords (``epochs=2, learning_rate=1e-4...``,
            the fields of :class:`~edgekit.passes.qat.QatConfig`). ``epochs`` must be given.
        val: validation data; by default ``val_fraction`` of ``data`` is held out.
        keep_keras: also save the fine-tuned float model (plain Keras layers, no fake-quant) here.
        preprocessing: scale/mean/std applied to raw inputs (recorded in the manifest).
        seed: the seed for everything random.
        compare_ptq: also convert with post-training int8 for the comparison table.
        device: where the comparison runs (a device profile or its name).
        on_epoch: called after each epoch with ``("qat", epoch, epochs, logs)``.

    Raises:
        InputError, DataError, ModelError: before any training, for bad options, data or models.
        ConversionError: the converter failed on the trained model.
    """
    if config is not None and settings:
        raise TypeError(f"give either config or settings as keywords, not both ({', '.join(settings)})")
    cfg = config if config is not None else QatConfig(**settings)
    if data is None:
        raise InputError("QAT needs training data (inputs and labels)",
                         hint="give a .npz with arrays x and y, or a class-per-folder image directory")
    if "epochs" not in cfg.model_fields_set:
        raise InputError("epochs must be at least 1, got none", hint="QAT fine-tunes the model; use e.g. epochs 2", settings=("epochs",))
    check_qat_config(cfg)
    dist = resolve_strategy(cfg.strategy)  # first: a multi-worker strategy configures TensorFlow's runtime
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be between 0 and 1, got {val_fraction}", hint="use e.g. 0.1", settings=("val_fraction",))
    io_type = IOType(cfg.io_type)
    src_path = model.path if isinstance(model, LoadedModel) else model
    data_path = data.source if isinstance(data, Dataset) else data
    val_path = val.source if isinstance(val, Dataset) else val
    out = check_output_path(output, inputs=[src_path, data_path, val_path], force=force, suffixes=(".tflite",),
                            sidecars=[manifest_path_for(Path(output)), report_path_for_qat(output)])
    keras_out = None
    if keep_keras is not None:
        keras_out = check_output_path(keep_keras, inputs=[src_path, data_path, val_path, output], force=force, suffixes=(".keras",))
    profile = load_profile(device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    if loaded.keras_model is None:
        raise ModelError(f"{loaded.path} is a SavedModel; QAT needs the Keras model to rebuild and fine-tune",
                         hint="pass the .keras or .h5 file the SavedModel was exported from")
    keras_model = loaded.keras_model
    if tasks:
        loaded.choose_tasks(tasks)
    output_tasks = model_tasks(loaded)
    classes = check_classifier(keras_model, str(loaded.path), output_tasks)
    pre = preprocessing or Preprocessing()

    def load(source: Any, what: str) -> Dataset:
        ds = source if isinstance(source, Dataset) else load_dataset(source, signature=loaded.signature, preprocessing=pre,
                                                                   x_key=x_key, y_key=y_key)
        conformed = conform(loaded, ds, output_tasks, "--val" if what.startswith("validation") else "--data")
        assert conformed is not None
        check_labels(conformed, classes, what)
        return conformed

    full = load(data, "training data")
    train, validation = (full, load(val, "validation data")) if val is not None else _split(full, val_fraction, seed)

    captured: dict[str, Any] = {}

    def keep_qat_model(_index: int, _pass: Any, output: PassOutput, _final: ModelState) -> None:
        captured["qat_model"] = output.state.details[QAT_MODEL]  # the fake-quantized graph, for the qat-keras row

    ctx = PassContext(train=train, val=validation, preprocessing=full.preprocessing, labels=full.labels, seed=seed, tasks=tuple(output_tasks),
                      teacher=keras_model, on_epoch=on_epoch, unsafe=unsafe, custom_objects=str(custom_objects) if custom_objects else None, distribution=dist)
    result = run_passes([QatPass(cfg)], ModelState(keras=keras_model, source=str(loaded.path)), ctx, on_step=keep_qat_model)
    if not dist.is_chief:
        return WorkerDone("qat", dist, str(out))
    final, step, details = result.state, result.steps[0], result.state.details["qat"]
    assert final.tflite is not None
    flatbuffer = final.tflite
    info = parse_tflite_bytes(flatbuffer, str(out))
    notes = [*step.warnings, *details["notes"]]
    comparison = compare_variants(keras_model, flatbuffer, captured["qat_model"].model, validation, full, io_type=io_type,
                                  compare_ptq=compare_ptq, seed=seed, device=profile, notes=notes, tasks=output_tasks)
    unsupported = tuple(LayerPlan.from_dict(p) for p in step.details["unsupported_layers"])
    # evaluated above, before writing any output; the model and its manifest are written together
    labels = list(full.labels) if full.labels else None
    finished = finalize(flatbuffer, name=Path(str(src_path)).stem, description=f"qat-int8 of {Path(str(src_path)).name} (edgekit qat)",
                        preprocessing=full.preprocessing, labels=labels)
    notes.extend(finished.notes)
    artifact = write_artifact(
        out, finished.flatbuffer, preprocessing=full.preprocessing, labels=labels,
        source={"path": str(src_path), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
        data={"path": str(full.source), "sha256": full.sha256, "samples": len(full), "training_samples": len(train),
              "validation": validation.source},
        options={"mode": "qat-int8", "io_type": io_type.value, "epochs": cfg.epochs, "lr": cfg.learning_rate, "batch_size": cfg.batch_size,
                 "seed": seed, "preserve": step.details["preserve"], "loss": step.details["loss"], "distill": cfg.distill,
                 "strategy": dist.name, "replicas": dist.replicas},
        extra={"qat": {"unsupported_layers": [p.to_dict() for p in unsupported], "float_ops": details["float_ops"],
                       "preserved": captured["qat_model"].preserved, "report": report_path_for_qat(out).name,
                       "keras_model": str(keras_out) if keras_out else None},
               "standard_metadata": finished.manifest_entry()},
        overwrite=force,
    )
    written: list[Path] = [out, manifest_path_for(out)]
    try:
        if keras_out is not None:
            with native_quiet(), atomic_path(keras_out) as tmp_keras:
                final.keras.save(tmp_keras)
            written.append(keras_out)
        qat_result = QatResult(
            artifact=artifact, info=info, io_type=io_type, plan=tuple(LayerPlan.from_dict(p) for p in step.details["plan"]),
            unsupported=unsupported, float_ops=tuple(details["float_ops"]), comparison=comparison,
            history=tuple(step.details["history"]), train_samples=len(train), val_samples=len(validation), val_source=validation.source,
            epochs=cfg.epochs, seconds_training=step.details["seconds_training"], seconds_conversion=details["conversion_seconds"],
            preserve=step.details["preserve"], preserved=details["preserved"], keras_path=str(keras_out) if keras_out else None,
            report_path=str(report_path_for_qat(out)), warnings=tuple(notes), distribution=dist.to_dict(),
        )
        qat_result.save()
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # never leave a model without its manifest and report
        raise
    return qat_result
