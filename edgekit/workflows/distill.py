"""``edgekit distill``: train a small student from a large teacher, and compare them side by side.

:func:`distill` loads the teacher and the data, runs :class:`~edgekit.passes.distill.DistillPass`
through the pipeline (and, with ``baseline``, the same student on the labels alone), writes the
student (``.keras``), measures teacher, baseline and student as int8 TFLite with
:class:`~edgekit.measure.bench.Bench` (accuracy, size, latency in interleaved rounds) and writes
``OUT.distill.report.json``.

Example:
    >>> result = distill("teacher.keras", "student.keras", width=0.5, data="train.npz",
    ...                  val="val.npz", epochs=5, baseline=True,
    ...                  preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.rows["distilled"].top1, result.rows["baseline"].top1  # doctest: +SKIP
    (88.9, 88.1)
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekit.core.data import calibration_sample, load_dataset
from edgekit.core.datatypes import LOWER_IS_BETTER, METRIC_LABELS, Dataset, LatencyStats, Preprocessing, QuantMode, SizeInfo, format_metric
from edgekit.core.errors import DataError, InputError, ModelError
from edgekit.core.fsutil import check_output_path, save_keras_atomic, write_json_atomic
from edgekit.core.manifest import report_path_for, versions
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tasks import OutputTask
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.export.convert import Conversion, as_loaded
from edgekit.measure.bench import Bench, Candidate, MeasureSettings
from edgekit.passes.base import EpochCallback, ModelState, PassContext
from edgekit.passes.distill import (
    DistillConfig,
    DistillPass,
    FitResult,
    OutputKind,
    WidthChange,
    check_distill_config,
    check_labels,
    top1,
)
from edgekit.passes.distill.multitask import is_classic
from edgekit.passes.distribute import WorkerDone, resolve_strategy
from edgekit.passes.pipeline import run_passes
from edgekit.runtime.local import check_run_options
from edgekit.workflows.inputs import conform, keras_quality, model_tasks

LATENCY_WARMUP = 3


@dataclass(frozen=True)
class ModelRow:
    """One model in the side-by-side report: Keras top-1, and its int8 TFLite top-1, size and latency."""

    name: str
    parameters: int
    top1: float | None
    int8_top1: float | None = None
    int8_size: SizeInfo | None = None
    latency: LatencyStats | None = None
    keras_bytes: int | None = None
    #: the task's primary metric that ``top1``/``int8_top1`` hold (``top1`` for a classifier, ``mae`` for a regressor...)
    metric: str = "top1"

    def to_dict(self) -> dict[str, Any]:
        classifier = self.metric == "top1"
        return {
            "name": self.name,
            "parameters": self.parameters,
            "metric": self.metric,
            "value": None if self.top1 is None else round(self.top1, 5),
            "int8_value": None if self.int8_top1 is None else round(self.int8_top1, 5),
            "top1": None if self.top1 is None or not classifier else round(self.top1, 3),
            "int8_top1": None if self.int8_top1 is None or not classifier else round(self.int8_top1, 3),
            "int8_bytes": self.int8_size.bytes if self.int8_size else None,
            "int8_gzip_bytes": self.int8_size.gzip_bytes if self.int8_size else None,
            "latency": self.latency.to_dict() if self.latency else None,
            "keras_bytes": self.keras_bytes,
        }


@dataclass(frozen=True)
class DistillResult:
    """What :func:`distill` produced and measured; :meth:`save` writes it as ``OUT.distill.report.json``."""

    output: str
    report_path: str
    rows: dict[str, ModelRow]
    fit: FitResult
    baseline_fit: FitResult | None
    settings: dict[str, Any]
    width_changes: tuple[WidthChange, ...]
    val_samples: int | None
    train_samples: int
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def compression(self) -> float:
        """Teacher parameters / student parameters."""
        return self.rows["teacher"].parameters / max(1, self.rows["distilled"].parameters)

    @property
    def lower_is_better(self) -> bool:
        return self.rows["distilled"].metric in LOWER_IS_BETTER

    def gain_over_baseline(self) -> float | None:
        """How much better the distilled student is than the labels-only one (top-1 points for a classifier,
        the primary metric's units otherwise; positive = distillation helped). None without a labelled baseline."""
        base, dist = self.rows.get("baseline"), self.rows["distilled"]
        if base is None or base.top1 is None or dist.top1 is None:
            return None
        return (base.top1 - dist.top1) if self.lower_is_better else (dist.top1 - base.top1)

    def gap_to_teacher(self) -> float | None:
        """How much worse the distilled student is than the teacher (positive = worse)."""
        t, d = self.rows["teacher"].top1, self.rows["distilled"].top1
        if t is None or d is None:
            return None
        return (d - t) if self.lower_is_better else (t - d)

    def to_dict(self) -> dict[str, Any]:
        gain, gap = self.gain_over_baseline(), self.gap_to_teacher()
        return {
            "kind": "distill",
            "output": self.output,
            "settings": self.settings,
            "teacher_outputs": self.fit.teacher_outputs.to_dict(),
            "student_outputs": self.fit.student_outputs.to_dict(),
            "teacher_cache": {"cached": self.fit.teacher_cached, "teacher_forward_samples": self.fit.teacher_forward_samples,
                              "note": self.fit.cache_note},
            "models": {key: row.to_dict() for key, row in self.rows.items()},
            "parameter_ratio_teacher_to_student": round(self.compression, 3),
            "top1_gain_over_baseline": None if gain is None else round(gain, 3),
            "top1_gap_to_teacher": None if gap is None else round(gap, 3),
            "width_changes": [asdict(c) for c in self.width_changes],
            "hint_adapters": self.fit.adapters,
            "history": {"distilled": self.fit.history, "baseline": self.baseline_fit.history if self.baseline_fit else None},
            "train_samples": self.train_samples,
            "val_samples": self.val_samples,
            "seconds": round(self.seconds, 1),
            "notes": list(self.notes),
            "versions": versions(),
        }

    def save(self) -> Path:
        """Writes the report (``report_path``) atomically and returns its path."""
        write_json_atomic(self.report_path, self.to_dict())
        return Path(self.report_path)


def latency_settings(runs: int, threads: int) -> MeasureSettings:
    """``runs`` timed runs in all, in rounds of at least 10 (at most 5 rounds), after 3 warm-up runs each."""
    rounds = max(1, min(5, runs // 10))
    return MeasureSettings(runs=max(1, runs // rounds), warmup=LATENCY_WARMUP, rounds=rounds, threads=threads)


def measure_int8(models: dict[str, Any], kinds: dict[str, OutputKind], train: Dataset, val: Dataset | None, *, samples: int,
                 seed: int, settings: MeasureSettings, device: DeviceProfile, tasks: list[OutputTask] | None = None) -> dict[str, tuple[SizeInfo, float | None, LatencyStats]]:
    """Each Keras model as int8 TFLite: (size, top-1 on labelled ``val``, latency), measured side by side by a :class:`Bench`."""
    labelled = val if val is not None and val.labelled else None
    with tempfile.TemporaryDirectory(prefix="edgekit-distill-") as tmp:
        bench = Bench(tmp, val=labelled, calibration=calibration_sample(train, samples, seed), device=device, settings=settings, tasks=tasks)
        measured = [bench.add(Candidate(key, keras=model, conversion=Conversion(QuantMode.INT8)), reference=key == "teacher")
                    for key, model in models.items()]
        timed = bench.time(measured)
    results = {}
    for m in timed:
        acc = m.accuracy.value if m.accuracy is not None else None
        if acc is None and labelled is not None and labelled.y is not None and labelled.y.ndim == 1 and not labelled.more_y:
            # a single output unit: thresholded by its convention
            acc = top1(bench.outputs[m.name], labelled.y, kinds[m.name])  # type: ignore[arg-type]
        assert m.latency is not None
        results[m.name] = (m.size, acc, m.latency)
    return results


def _path_of(obj: Any) -> Any:
    if isinstance(obj, (str, os.PathLike)):
        return obj
    if isinstance(obj, Dataset):
        return obj.source
    return getattr(obj, "path", None)


def _teacher_model(teacher: Any, *, unsafe: bool, custom_objects: Any) -> tuple[Any, str, LoadedModel | None]:
    """(Keras model, where it came from, the LoadedModel whose compiled losses decide the tasks, if loaded from a file)."""
    if isinstance(teacher, (str, os.PathLike)):
        loaded = load_model(teacher, unsafe=unsafe, custom_objects=custom_objects)
    elif isinstance(teacher, LoadedModel):
        loaded = teacher
    else:
        return teacher, getattr(teacher, "name", "teacher"), None
    if loaded.keras_model is None:
        raise ModelError(f"the teacher {loaded.path} is a SavedModel; distillation needs a Keras model (.keras or .h5)",
                         hint="pass the .keras file your training code saved")
    return loaded.keras_model, loaded.path, loaded


def distill(
    teacher: str | os.PathLike[str] | Any,
    output: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | Dataset,
    config: DistillConfig | None = None,
    val: str | os.PathLike[str] | Dataset | None = None,
    baseline: bool = False,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    export: bool = True,
    calibration_samples: int = 100,
    runs: int = 50,
    threads: int = 1,
    device: DeviceProfile | str = "local",
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    on_epoch: EpochCallback | None = None,
    tasks: tuple[str, ...] = (),
    **settings: Any,
) -> DistillResult | WorkerDone:
    """Distills ``teacher`` into a student and writes ``output`` (.keras) and ``OUT.distill.report.json``.

    The student is ``config.student`` (a .keras file; its weights are the starting point unless
    ``reinit``) or the teacher's architecture at ``config.width`` (fresh, seeded). With
    ``baseline`` the same student, from the same initial weights, is also trained on the hard
    labels alone (same epochs, data, batch order and seed) for comparison. Every check (paths,
    options, teacher/student compatibility, hint layers, data shapes and labels) runs before
    training; the teacher's weights are never changed.

    Args:
        teacher: the teacher (.keras/.h5 path, loaded model or Keras model).
        output: the student .keras file to write.
        data: training data (labelled unless ``alpha`` is 1 and there is no baseline).
        config: the distillation settings, or give them as keywords (``width=0.5, epochs=5...``,
            the fields of :class:`~edgekit.passes.distill.DistillConfig`).
        val: labelled validation data for the accuracy columns.
        export: convert teacher, baseline and student to int8 TFLite and measure them.
        calibration_samples, runs, threads, device: the int8 calibration sample size, the timed runs
            per model (in rounds of at least 10, at most 5 rounds), interpreter threads, where to run.
        on_epoch: called after each epoch with ``("distilled" or "baseline", epoch, epochs, logs)``.

    Raises:
        InputError, ModelError, DataError: one-line messages, before any training.
    """
    started = time.perf_counter()
    if config is not None and settings:
        raise TypeError(f"give either config or settings as keywords, not both ({', '.join(settings)})")
    cfg = config if config is not None else DistillConfig(**settings)
    check_distill_config(cfg)
    dist = resolve_strategy(cfg.strategy)  # first: a multi-worker strategy configures TensorFlow's runtime
    if export:
        check_run_options(runs, 0, threads)
        if calibration_samples < 1:
            raise InputError(f"samples must be at least 1, got {calibration_samples}", hint="e.g. samples 100", settings=("samples",))
    out = check_output_path(output, inputs=[_path_of(teacher), cfg.student, _path_of(data), _path_of(val)], force=force,
                            suffixes=(".keras",), sidecars=[report_path_for(Path(output), "distill")])
    profile = load_profile(device)
    teacher_model, teacher_src, teacher_loaded = _teacher_model(teacher, unsafe=unsafe, custom_objects=custom_objects)
    if tasks and teacher_loaded is None:
        teacher_loaded = as_loaded(teacher_model)
    if tasks:
        teacher_loaded.choose_tasks(tasks)  # type: ignore[union-attr]
    output_tasks = model_tasks(teacher_loaded if teacher_loaded is not None else teacher_model)
    classic = is_classic(teacher_model, output_tasks)
    classes = int(teacher_model.outputs[0].shape[-1]) if classic else None
    pre = preprocessing or Preprocessing()

    def dataset(d: Any, what: str, limit: int | None) -> Dataset | None:
        if d is None:
            return None
        ds = d if isinstance(d, Dataset) else load_dataset(d, signature=as_loaded(teacher_model).signature, preprocessing=pre,
                                                           x_key=x_key, y_key=y_key, limit=limit, seed=seed)
        conformed = conform(teacher_model, ds, output_tasks, f"--{what}")
        assert conformed is not None
        ds = conformed
        if classes is not None:
            check_labels(ds, classes, what)
        return ds

    train = dataset(data, "data", cfg.limit)
    val_ds = dataset(val, "val", None)
    assert train is not None
    if any(t is None for t in train.targets) and (cfg.alpha < 1.0 or baseline):
        raise DataError(f"data {train.source} has no labels ('{y_key}' array), needed for "
                        + ("baseline" if baseline else f"the hard-label term (alpha {cfg.alpha} < 1)"),
                        hint="give labels (y), or distill from the teacher alone with alpha 1 and no baseline",
                        settings=("data", "baseline", "alpha"))
    notes: list[str] = []
    if val_ds is not None and not val_ds.labelled:
        notes.append(f"the validation data {val_ds.source} has no labels: accuracy not measured")
    if val_ds is None:
        notes.append("no validation data: accuracy not measured (give labelled validation data)")

    def tagged(tag: str) -> EpochCallback | None:
        return None if on_epoch is None else lambda _title, epoch, total, logs: on_epoch(tag, epoch, total, logs)

    ctx = PassContext(train=train, val=val_ds, preprocessing=train.preprocessing, labels=train.labels, seed=seed, teacher=teacher_model,
                      tasks=tuple(output_tasks),
                      on_epoch=tagged("distilled"), unsafe=unsafe, custom_objects=str(custom_objects) if custom_objects else None,
                      distribution=dist)
    start = ModelState(keras=teacher_model, source=str(teacher_src))
    distilled = run_passes([DistillPass(cfg)], start, ctx)
    step = distilled.steps[0].details
    fit, student = FitResult.from_dict(step["fit"]), distilled.state.keras
    models = {"teacher": teacher_model, "distilled": student}
    baseline_fit = None
    if baseline:  # alpha 0: the same loss code, start, batches and optimizer, with the teacher's term switched off
        labels_only = cfg.model_copy(update={"alpha": 0.0, "hints": (), "augment": "none"})
        base = run_passes([DistillPass(labels_only)], start, replace(ctx, on_epoch=tagged("baseline")))
        baseline_fit = FitResult.from_dict(base.steps[0].details["fit"])
        models = {"teacher": teacher_model, "baseline": base.state.keras, "distilled": student}
    if not dist.is_chief:
        return WorkerDone("distill", dist, str(out))

    save_keras_atomic(student, out)
    kinds = {"teacher": fit.teacher_outputs.kind, "baseline": fit.student_outputs.kind, "distilled": fit.student_outputs.kind}
    measured = measure_int8(models, kinds, train, val_ds, samples=calibration_samples, seed=seed, settings=latency_settings(runs, threads),
                            device=profile, tasks=output_tasks) if export else {}
    rows: dict[str, ModelRow] = {}
    metric = "top1"
    for key, model in models.items():
        acc = None
        if val_ds is not None and val_ds.labelled:
            if classic and val_ds.y is not None and val_ds.y.ndim == 1:
                acc = top1(model.predict(val_ds.x, batch_size=256, verbose=0), val_ds.y, kinds[key])
            else:
                quality = keras_quality(model, val_ds, output_tasks)
                acc, metric = (quality.value, quality.metric) if quality is not None else (None, metric)
        size, int8_acc, latency = measured.get(key, (None, None, None))
        rows[key] = ModelRow(name=key, parameters=int(model.count_params()), top1=acc, int8_top1=int8_acc, int8_size=size, latency=latency,
                             keras_bytes=out.stat().st_size if key == "distilled" else None, metric=metric)
    base_row, dist_row = rows.get("baseline"), rows.get("distilled")
    if base_row is not None and dist_row is not None and base_row.top1 is not None and dist_row.top1 is not None:
        worse = dist_row.top1 > base_row.top1 if metric in LOWER_IS_BETTER else dist_row.top1 < base_row.top1
        if worse:
            notes.append(f"distillation did worse than the labels alone here: {format_metric(metric, dist_row.top1)} vs "
                         f"{format_metric(metric, base_row.top1)} {METRIC_LABELS.get(metric, metric)} for the same student, start, epochs "
                         "and data; keep the labels-only student, or try a lower alpha or temperature, more epochs, or a stronger teacher")
    report_settings = {
        "teacher": str(teacher_src), "student": str(step["student"]), "width": cfg.width, "epochs": cfg.epochs,
        "temperature": cfg.temperature, "alpha": cfg.alpha, "hints": [asdict(h) for h in cfg.parsed_hints()], "hint_weight": cfg.hint_weight,
        "baseline": baseline, "seed": seed, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
        "augment": None if cfg.augment == "none" else cfg.augment, "reinit": cfg.reinit, "preprocessing": pre.to_dict(),
        "data": train.source, "data_sha256": train.sha256, "val": val_ds.source if val_ds else None, "limit": cfg.limit,
        "calibration_samples": calibration_samples if export else None, "latency_runs": runs if export else None, "threads": threads,
        "strategy": dist.name, "replicas": dist.replicas,
    }
    result = DistillResult(output=str(out), report_path=str(report_path_for(out, "distill")), rows=rows, fit=fit, baseline_fit=baseline_fit,
                           settings=report_settings, width_changes=tuple(WidthChange(**c) for c in step["width_changes"]),
                           val_samples=len(val_ds) if val_ds is not None else None, train_samples=len(train),
                           seconds=time.perf_counter() - started, notes=tuple(notes))
    result.save()
    return result

