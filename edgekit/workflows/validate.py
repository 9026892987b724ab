"""Validates an artifact: accuracy against labels and a reference model, latency, size.

Example:
    >>> report = validate("model_int8.tflite", "val.npz", reference="model.keras")  # doctest: +SKIP
    >>> report.accuracy.top1, report.latency.p50_ms  # doctest: +SKIP
    (90.1, 0.21)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import load_dataset
from edgekit.core.datatypes import AccuracyResult, LatencyStats, OutputComparison, Preprocessing, Signature, SizeInfo
from edgekit.core.errors import EdgekitError, InputError, ModelError
from edgekit.core.fsutil import require_file, sha256_file, size_info, write_json_atomic
from edgekit.core.io_order import artifact_signature, feed_for, in_model_order, keras_feed, output_order
from edgekit.core.manifest import check_integrity, manifest_path_for, preprocessing_from_manifest, report_path_for, versions
from edgekit.core.models import load_model
from edgekit.core.tasks import (
    TASK_NAMES,
    OutputTask,
    Task,
    detect_tasks,
    keras_output_activations,
    parse_task_overrides,
    tflite_output_activations,
    with_tasks,
)
from edgekit.core.tflite_file import TfliteInfo
from edgekit.core.tflite_verify import read_verified_tflite
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.devices.run import run_model
from edgekit.export.tflite_metadata import METADATA_NAME, preprocessing_from_normalization, standard_metadata_of
from edgekit.measure.metrics import compare_outputs
from edgekit.measure.sanity import chance_warnings, expected_ranges, input_range_warnings
from edgekit.measure.task_metrics import evaluate
from edgekit.runtime.local import check_run_options
from edgekit.workflows.fleet import run_fleet


@dataclass(frozen=True)
class ValidationReport:
    """Everything ``edgekit validate`` measured, ready for a table or JSON."""

    artifact: str
    sha256: str
    size: SizeInfo
    samples: int
    accuracy: AccuracyResult | None
    reference_accuracy: AccuracyResult | None
    comparisons: list[OutputComparison]
    latency: LatencyStats
    preprocessing: Preprocessing
    data: dict[str, Any]
    reference: dict[str, Any] | None
    labels: list[str] | None = None
    device: dict[str, Any] = field(default_factory=lambda: {"name": "local", "transport": "local"})
    versions: dict[str, Any] = field(default_factory=versions)
    report_path: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def accuracy_drop(self) -> float | None:
        """How much worse the artifact's primary metric is than the reference's (top-1 points for a
        classifier, MAE for a regressor...; positive = the artifact is worse)."""
        return self.accuracy.drop_from(self.reference_accuracy) if self.accuracy is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "sha256": self.sha256,
            "size": self.size.to_dict(),
            "samples": self.samples,
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "reference_accuracy": self.reference_accuracy.to_dict() if self.reference_accuracy else None,
            "accuracy_drop": self.accuracy_drop,
            "comparisons": [c.to_dict() for c in self.comparisons],
            "latency": self.latency.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "data": self.data,
            "reference": self.reference,
            "labels": self.labels,
            "device": self.device,
            "versions": self.versions,
            "tasks": self.tasks,
            "warnings": self.warnings,
        }


def _check_outputs(signature: Signature, outputs: list[np.ndarray]) -> None:
    for spec, out in zip(signature.outputs, outputs, strict=False):
        bad = ~np.isfinite(out.reshape(out.shape[0], -1)) if out.size and np.issubdtype(out.dtype, np.floating) else None
        if bad is not None and bad.any():
            sample = int(np.argmax(bad.any(axis=1)))
            raise ModelError(f"the artifact's output {spec.name} is NaN or infinite ({int(bad.any(axis=1).sum())} of {len(out)} samples, "
                             f"first at sample {sample}): its numbers mean nothing",
                             hint="check the model's weights (NaN weights?) and the preprocessing; validate the float model with --reference")


def _check_reference(ref_model: Any, signature: Signature) -> None:
    """The reference must take the artifact's inputs (names and shapes, in any order)."""
    ref_inputs = {i.name: i for i in ref_model.signature.inputs}
    for spec in signature.inputs:
        ref = ref_inputs.get(spec.name) if len(signature.inputs) > 1 else next(iter(ref_inputs.values()))
        want = tuple(ref.shape[1:]) if ref is not None else None
        got = tuple(spec.shape[1:])
        if want is None or len(want) != len(got) or any(w is not None and g is not None and w != g for w, g in zip(want, got, strict=False)):
            raise InputError(
                f"reference model input {want if want is not None else spec.name + ' (missing)'} does not match the artifact input {got}",
                hint="pass the model the artifact was converted from",
            )


def _tasks(info: TfliteInfo, signature: Signature, dataset: Any, ref_model: Any, recorded: dict[str, Any],
           overrides: dict[str, Task]) -> list[OutputTask]:
    """Each output's task: --task, else the reference model's (loss, activation), else the manifest's, else the file's ops."""
    outputs = [(o.name, o.shape) for o in signature.outputs]
    if ref_model is not None and ref_model.keras_model is not None:
        return detect_tasks(outputs, activations=keras_output_activations(ref_model.keras_model), losses=ref_model.losses,
                            targets=dataset.targets, overrides=overrides)
    found = detect_tasks(outputs, activations=tflite_output_activations(info, output_order(info)), targets=dataset.targets,
                         overrides=overrides)
    kept = {t.get("output"): t for t in recorded.get("tasks") or [] if isinstance(t, dict)}
    return [replace(t, task=Task(kept[t.output]["task"]), reason=f"recorded at conversion: {kept[t.output].get('reason', '')}".rstrip(": "))
            if t.output in kept and t.output not in overrides and kept[t.output].get("task") in TASK_NAMES else t for t in found]


def _is_report(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "latency" in data and "sha256" in data


def _standard_preprocessing(path: Path, info: TfliteInfo) -> Preprocessing | None:
    """The preprocessing a file's standard metadata declares for its (float) input 0, if any."""
    if METADATA_NAME not in info.metadata or not info.inputs or info.inputs[0].dtype not in ("float32", "float16"):
        return None
    standard = standard_metadata_of(info, path.read_bytes())
    if standard is None or not standard.metadata.inputs or standard.metadata.inputs[0].normalization is None:
        return None
    return preprocessing_from_normalization(standard.metadata.inputs[0].normalization)


def _report_path(path: Path, data: Any, reference: Any, report: Any) -> Path:
    """Where the report goes; checked before any work so a bad path fails early."""
    out = Path(report) if report is not None else report_path_for(path, "validate")
    inputs = [Path(p).resolve() for p in (path, data, reference) if p is not None]
    if out.resolve() in inputs or out.resolve() == manifest_path_for(path).resolve():
        raise InputError(f"--report {out} would overwrite an input or the artifact's manifest", hint="choose another report path")
    if os.path.lexists(out) and not out.is_symlink() and not out.is_file() and not out.is_dir():
        raise InputError(f"--report {out} is not a regular file (a device, FIFO or socket); edgekit never replaces it",
                         hint="give a file path for the report with --report")
    if out.is_file() and not _is_report(out):
        raise InputError(f"--report {out} exists and is not an edgekit report", hint="choose another report path; reports are only refreshed in place")
    if out.is_dir() or not out.parent.is_dir():
        raise InputError(f"cannot write the report to {out}", hint="give a file path in an existing folder with --report")
    return out


def validate(
    artifact: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    preprocessing: Preprocessing | None = None,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 1,
    samples: int | None = None,
    seed: int = 0,
    x_key: str = "x",
    y_key: str = "y",
    tasks: list[str] | tuple[str, ...] | None = None,
    report: str | os.PathLike[str] | None = None,
    write_report: bool = True,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    runtime: str = "auto",
    device: str | os.PathLike[str] | DeviceProfile | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    ignore_manifest: bool = False,
) -> ValidationReport:
    """Runs ``artifact`` on ``data`` (this machine, or ``device``) and measures it.

    Preprocessing defaults to the one recorded in the artifact's manifest. With ``reference``
    (the float Keras model or SavedModel), outputs are compared per output (top-1 agreement,
    max/mean absolute error, cosine similarity, SQNR). The report is written to ``report`` or
    beside the artifact (``model.validate.report.json``) unless ``write_report`` is False.

    With ``device`` (a profile name, path or :class:`~edgekit.devices.profiles.DeviceProfile`)
    the artifact runs there instead (:func:`edgekit.devices.run.run_model`) and the
    report's ``device`` entry holds the probe, the runtime, the thermal state and where accuracy
    was measured.
    """
    # a bad name fails before any work; no device: this machine's profile, reported as plain "local"
    profile = load_profile(device if device is not None else "local", devices_dir=devices_dir)
    prep = _prepare(artifact, data, reference=reference, preprocessing=preprocessing, runs=runs, warmup=warmup, threads=threads,
                    samples=samples, seed=seed, x_key=x_key, y_key=y_key, tasks=tasks, report=report, write_report=write_report,
                    unsafe=unsafe, custom_objects=custom_objects, ignore_manifest=ignore_manifest)
    # one code path: the profile decides where the run happens; a device asked for by name records
    # the conditions of the run (probe, thermal state, where accuracy was measured)
    named = device is not None
    on_device = run_model(profile, prep.path, prep.feed, threads=threads, runs=runs, warmup=warmup, runtime=runtime,
                          with_probe=named, timeout_s=timeout)
    result = _finish(prep, on_device, on_device.report if named else {"name": profile.name, "transport": profile.transport})
    if prep.report_path is not None:
        write_json_atomic(prep.report_path, result.to_dict())
        result = dataclasses.replace(result, report_path=str(prep.report_path))
    return result


@dataclass
class _Prepared:
    """What every device's run of one validation shares: the checked artifact, data and reference."""

    path: Path
    info: TfliteInfo
    manifest: dict[str, Any] | None
    ref_model: Any
    signature: Signature
    dataset: Any
    output_tasks: list[OutputTask]
    warnings: list[str]
    report_path: Path | None
    feed: Any
    ref_out: list[np.ndarray] | None = None  # the reference model's outputs, computed once


def _prepare(artifact: Any, data: Any, *, reference: Any, preprocessing: Preprocessing | None, runs: int, warmup: int, threads: int,
             samples: int | None, seed: int, x_key: str, y_key: str, tasks: Any, report: Any, write_report: bool, unsafe: bool,
             custom_objects: Any, ignore_manifest: bool) -> _Prepared:
    check_run_options(runs, warmup, threads)
    if samples is not None and samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}", hint="omit it to use all samples")
    path = require_file(artifact, "artifact")
    report_path = _report_path(path, data, reference, report) if write_report else None
    info = read_verified_tflite(path)  # parse and check before native code sees the file
    manifest = check_integrity(path, ignore=ignore_manifest)  # a modified artifact is refused whatever the options
    pre = preprocessing if preprocessing is not None else preprocessing_from_manifest(manifest)
    if preprocessing is None and manifest is None:
        pre = _standard_preprocessing(path, info) or pre  # anyone's file: its standard metadata's normalization
    ref_model = None
    if reference is not None:
        ref_model = load_model(reference, unsafe=unsafe, custom_objects=custom_objects)
    recorded = (manifest or {}).get("model_io") or {}
    model_outputs = ref_model.output_names if ref_model is not None else recorded.get("outputs")
    signature = artifact_signature(info, model_outputs)
    overrides = parse_task_overrides(list(tasks or ()), list(signature.output_names))
    dataset = load_dataset(data, signature=signature, preprocessing=pre, x_key=x_key, y_key=y_key, limit=samples, seed=seed)
    if ref_model is not None:
        _check_reference(ref_model, signature)
    output_tasks = _tasks(info, signature, dataset, ref_model, recorded, overrides)
    dataset = with_tasks(dataset, output_tasks, [o.shape for o in signature.outputs])
    warnings = input_range_warnings(dataset, signature, expected_ranges(info, recorded, ref_model))
    return _Prepared(path=path, info=info, manifest=manifest, ref_model=ref_model, signature=signature, dataset=dataset,
                     output_tasks=output_tasks, warnings=warnings, report_path=report_path, feed=feed_for(info, dataset))


def _finish(prep: _Prepared, on_device: Any, device_report: dict[str, Any]) -> ValidationReport:
    """The report of one device's run: accuracy, the comparison with the reference, latency."""
    info, signature, dataset, output_tasks, ref_model = prep.info, prep.signature, prep.dataset, prep.output_tasks, prep.ref_model
    run, latency = on_device.run, on_device.latency
    outputs = in_model_order(info, run.outputs)
    _check_outputs(signature, outputs)
    acc = evaluate(output_tasks, outputs, dataset.targets)
    ref_acc = None
    comparisons: list[OutputComparison] = []
    if ref_model is not None:
        if prep.ref_out is None:
            prep.ref_out = list(ref_model.predict(keras_feed(ref_model.keras_model, dataset.input_names, dataset.inputs)
                                                  if ref_model.keras_model is not None else dataset.feed))
        ref_out = prep.ref_out
        if len(ref_out) != len(outputs):
            raise InputError(
                f"reference model has {len(ref_out)} outputs, the artifact {len(outputs)}",
                hint="pass the model the artifact was converted from",
            )
        for spec, task, ref, out in zip(signature.outputs, output_tasks, ref_out, outputs, strict=True):
            if ref.size != out.size:
                raise InputError(f"reference output shape {ref.shape} differs from the artifact's {out.shape}", hint="pass the model the artifact was converted from")
            comparisons.append(compare_outputs(spec.name, ref.reshape(out.shape), out, categorical=task.task.categorical))
        ref_acc = evaluate(output_tasks, [r.reshape(o.shape) for r, o in zip(ref_out, outputs, strict=True)], dataset.targets)
    warnings = prep.warnings + chance_warnings(ref_acc if ref_acc is not None else acc, output_tasks,
                                               "the reference model" if ref_acc is not None else "the artifact")
    path = prep.path
    labels = (prep.manifest or {}).get("labels") or (list(dataset.labels) if dataset.labels else None)
    return ValidationReport(
        artifact=str(path),
        sha256=sha256_file(path),
        size=size_info(path),
        samples=len(dataset),
        accuracy=acc,
        reference_accuracy=ref_acc,
        comparisons=comparisons,
        latency=latency,
        preprocessing=dataset.preprocessing,
        data={"path": dataset.source, "sha256": dataset.sha256, "samples": len(dataset), "labelled": dataset.labelled,
              "inputs": list(signature.input_names)},
        reference={"path": ref_model.path, "sha256": ref_model.sha256, "format": ref_model.format} if ref_model else None,
        labels=labels,
        device=device_report,
        tasks=[t.to_dict() for t in output_tasks],
        warnings=warnings,
    )


def validate_fleet(
    artifact: str | os.PathLike[str],
    data: str | os.PathLike[str],
    devices: Any,
    *,
    max_parallel: int | None = None,
    reference: str | os.PathLike[str] | None = None,
    preprocessing: Preprocessing | None = None,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    samples: int | None = None,
    seed: int = 0,
    x_key: str = "x",
    y_key: str = "y",
    tasks: list[str] | tuple[str, ...] | None = None,
    report: str | os.PathLike[str] | None = None,
    write_report: bool = True,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    runtime: str = "auto",
    timeout: float | None = None,
    ignore_manifest: bool = False,
    ray_address: str | None = None,
) -> Any:
    """:func:`validate` on several devices at once (``devices``: profiles from
    :func:`edgekit.workflows.fleet.load_fleet`): the artifact, data and reference are checked and
    loaded once, each device runs the artifact in parallel, and each row holds that device's
    :class:`ValidationReport` or its error. The report file holds every row. ``threads`` None:
    each device's profile threads.
    """
    prep = _prepare(artifact, data, reference=reference, preprocessing=preprocessing, runs=runs, warmup=warmup, threads=threads or 1,
                    samples=samples, seed=seed, x_key=x_key, y_key=y_key, tasks=tasks, report=report, write_report=write_report,
                    unsafe=unsafe, custom_objects=custom_objects, ignore_manifest=ignore_manifest)

    def measure(profile: DeviceProfile) -> Any:
        return run_model(profile, prep.path, prep.feed, threads=threads if threads is not None else profile.threads, runs=runs, warmup=warmup, runtime=runtime,
                         with_probe=True, timeout_s=timeout)

    ran = run_fleet(list(devices), measure, command="validate", max_parallel=max_parallel, ray_address=ray_address)
    rows = []
    for row in ran.rows:  # accuracy and the reference comparison here, one device after the other (one reference run)
        if row.ok:
            try:
                row = replace(row, result=_finish(prep, row.result, row.result.report))
            except EdgekitError as exc:
                row = replace(row, result=None, error=exc)
        rows.append(row)
    fleet = replace(ran, rows=tuple(rows))
    if prep.report_path is not None:
        write_json_atomic(prep.report_path, {**fleet.to_dict(), "artifact": str(prep.path), "sha256": sha256_file(prep.path),
                                             "latency": None, "versions": versions()})
    return fleet
