"""``edgekit export``: convert a model for a deployment target into an artifact directory, with honest reports.

``export(model, target, out_dir)`` picks converter settings for the target unless told otherwise
(:data:`edgekit.export.target.TARGET_PROFILES`: cpu int8, gpu float16, nnapi and npu int8 with
int8 I/O), converts, and runs the one-pass pipeline :class:`~edgekit.passes.export.ExportPass`
(metadata, delegate compatibility, NPU compilation). It writes ``out_dir/``:

- ``model.tflite`` with an ``edgekit_metadata`` metadata entry (JSON: labels, preprocessing,
  input/output specs, target) that app code can read from the flatbuffer;
- ``model.json``: the manifest (sha256, I/O with quantization parameters, preprocessing,
  labels, target, settings, versions, the command, the Keras layer names);
- ``compatibility.json``: the per-node delegate report (:mod:`edgekit.export.delegates`);
- ``fp16_risk.json`` (gpu with ``data``): the float16 risk check (:mod:`edgekit.export.fp16_risk`);
- ``npu/`` (npu with ``npu=VENDOR``): ahead-of-time compiled models (:mod:`edgekit.export.npu`).

The directory is assembled in a temporary folder and renamed into place, so a failed export
leaves nothing behind and an existing one is replaced only with ``force``.

Example:
    >>> result = export("model.keras", "gpu", "out/gpu", data="val.npz",
    ...                 preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.report.summary.node_share, result.fp16.risky  # doctest: +SKIP
    (1.0, False)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.data import calibration_sample, load_dataset, rows_of
from edgekit.core.datatypes import Artifact, Dataset, IOType, Preprocessing, QuantMode
from edgekit.core.errors import InputError, ModelError
from edgekit.core.fsutil import json_bytes, write_bytes_atomic, write_json_atomic
from edgekit.core.manifest import manifest_path_for, write_artifact
from edgekit.core.models import LoadedModel, keras_layer_names, load_model
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.export.convert import Conversion, convert_model
from edgekit.export.delegates import CompatReport
from edgekit.export.fp16_risk import Fp16Risk, fp16_risk_check
from edgekit.export.npu import check_npu_ready
from edgekit.export.standard import finalize
from edgekit.export.target import (  # noqa: F401 - METADATA_*, embed_metadata, read_embedded_metadata: re-exported for callers
    FP16_FILE,
    METADATA_NAME,
    METADATA_SCHEMA,
    MODEL_FILE,
    REPORT_FILE,
    TARGET_PROFILES,
    TargetProfile,
    convert_for_target,
    embed_metadata,
    flex_ops,
    flex_refusal,
    read_embedded_metadata,
    resolve_settings,
)
from edgekit.passes.base import ModelState, PassContext
from edgekit.passes.export import ExportConfig, ExportPass, compatibility
from edgekit.passes.pipeline import run_passes
from edgekit.workflows.outdir import prepare_out_dir, staged_dir


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote."""

    out_dir: str
    target: str
    mode: QuantMode
    io_type: IOType
    artifact: Artifact
    info: TfliteInfo
    report: CompatReport
    fp16: Fp16Risk | None
    npu_models: list[dict[str, Any]]
    conversion_seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "target": self.target,
            "mode": self.mode.value,
            "io_type": self.io_type.value,
            "artifact": self.artifact.to_dict(),
            "inputs": [t.to_dict() for t in self.info.inputs],
            "outputs": [t.to_dict() for t in self.info.outputs],
            "weight_dtypes": self.info.weight_dtypes(),
            "compatibility": {**self.report.summary.to_dict(), "full_coverage": self.report.full_coverage,
                              "unsupported": [n.to_dict() for n in self.report.unsupported]},
            "fp16_risk": self.fp16.summary() if self.fp16 else None,
            "npu_models": self.npu_models,
            "conversion_seconds": round(self.conversion_seconds, 3),
            "warnings": self.warnings,
        }


def read_labels(labels: str | os.PathLike[str] | list[str] | tuple[str, ...] | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (list, tuple)):
        return [str(x) for x in labels]
    p = Path(labels)
    if p.is_file():
        names = [line.strip() for line in p.read_text(errors="replace").splitlines() if line.strip()]
    elif "," in str(labels):
        names = [x.strip() for x in str(labels).split(",") if x.strip()]
    else:
        raise InputError(f"labels file {p} does not exist", hint="give a text file with one class name per line, or a comma-separated list")
    if not names:
        raise InputError(f"no labels in {labels}", hint="one class name per line")
    return names


def export(
    model: str | os.PathLike[str] | LoadedModel | Any,
    target: str,
    out_dir: str | os.PathLike[str],
    *,
    mode: QuantMode | str | None = None,
    io_type: IOType | str | None = None,
    data: str | os.PathLike[str] | Dataset | None = None,
    samples: int = 100,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    labels: str | os.PathLike[str] | list[str] | None = None,
    api_level: int | None = None,
    npu: str | None = None,
    soc: str | None = None,
    allow_select_tf_ops: bool = False,
    fp16_check: bool = True,
    fp16_tolerance: float = 0.01,
    fp16_samples: int = 100,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
) -> ExportResult:
    """Converts ``model`` for ``target`` and writes the artifact directory ``out_dir``.

    Args:
        model: a .keras/.h5 file, a SavedModel directory, a LoadedModel or a Keras model object.
        target: ``cpu``, ``gpu``, ``nnapi`` or ``npu``.
        out_dir: directory to create (must be empty or absent unless ``force``).
        mode: override the target's quantization mode (see :data:`TARGET_PROFILES`).
        io_type: override the model's input/output dtype.
        data: calibration data (int8) and validation data for the fp16 risk check (gpu).
        samples, seed: calibration samples drawn from ``data``.
        preprocessing: how raw data becomes model input; recorded and embedded.
        labels: class names (list, text file, or comma list); default: the data's ``labels``.
        api_level: Android API level of the device (nnapi): rules per level, deprecation from 35.
        npu, soc: AOT-compile for a vendor NPU (``qualcomm``, ``mediatek``, ``google_tensor``).
        allow_select_tf_ops: allow Flex ops (refused for gpu and npu, which cannot run them).
        fp16_check, fp16_tolerance, fp16_samples: the gpu float16 risk check.
        force: replace an existing output directory.

    Raises:
        InputError: bad target/mode/paths, int8 without data (before any work).
        ModelError: Flex ops for gpu/npu (names the ops).
        ConversionError: the converter or the NPU compiler failed (names what is missing).
    """
    target, chosen_mode, chosen_io = resolve_settings(target, mode, io_type, data is not None)
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}", hint="use e.g. --samples 100")
    if not fp16_tolerance > 0:
        raise InputError(f"--fp16-tolerance must be positive, got {fp16_tolerance}", hint="e.g. 0.01 (1% relative error)")
    if api_level is not None and target != "nnapi":
        raise InputError("--api-level applies to --target nnapi only", hint="drop --api-level or use --target nnapi")
    if api_level is not None and not 21 <= int(api_level) <= 60:
        raise InputError(f"--api-level {api_level} is not an Android API level", hint="use e.g. 30 (Android 11) or 35 (Android 15)")
    if (npu is not None or soc is not None) and target != "npu":
        raise InputError("--npu/--soc apply to --target npu only", hint="use --target npu --npu qualcomm|mediatek|google_tensor")
    if soc is not None and npu is None:
        raise InputError("--soc needs --npu VENDOR", hint="e.g. --npu qualcomm --soc SM8650")
    vendor = check_npu_ready(npu, soc)[0].name if npu is not None else None
    config = ExportConfig.model_validate({"target": target, "api_level": api_level, "npu": vendor, "soc": soc})
    label_names = read_labels(labels)
    if isinstance(model, LoadedModel):
        src_path: str | None = model.path
    else:
        src_path = str(model) if isinstance(model, (str, os.PathLike)) else None
    data_path = data.source if isinstance(data, Dataset) else data
    out = prepare_out_dir(out_dir, force=force, inputs=[src_path, data_path])

    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, (str, os.PathLike)):
        loaded = load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    else:
        loaded = _loaded_from_object(model)
    pre = preprocessing or Preprocessing()
    dataset: Dataset | None = None
    calibration = None
    if data is not None:
        dataset = data if isinstance(data, Dataset) else load_dataset(
            data, signature=loaded.signature, preprocessing=pre, x_key=x_key, y_key=y_key
        )
        pre = dataset.preprocessing
        calibration = calibration_sample(dataset, samples, seed)
    if label_names is None and dataset is not None and dataset.labels:
        label_names = list(dataset.labels)
    _check_labels(label_names, loaded)
    layers = keras_layer_names(loaded.keras_model) if loaded.keras_model is not None else {}

    warnings: list[str] = []
    started = time.perf_counter()
    converted = convert_for_target(loaded, target, chosen_mode, calibration, chosen_io, allow_select_tf_ops)
    seconds = time.perf_counter() - started
    flex = flex_ops(parse_tflite_bytes(converted.flatbuffer, MODEL_FILE))
    if flex and target in ("gpu", "npu"):  # pragma: no cover - convert_for_target never enables Flex for these
        raise flex_refusal(target, flex)
    if flex:
        warnings.append(f"the model uses Flex op(s) {', '.join(flex)}: ship the Flex delegate; no hardware delegate runs them")

    # the export pass: metadata, delegate compatibility, NPU compilation (it writes nothing itself)
    state = ModelState(keras=loaded.keras_model, tflite=converted.flatbuffer, kind=chosen_mode.value, source=str(src_path or ""),
                       details={"weights": converted.weights, "weights_reason": converted.weights_reason})
    ctx = PassContext(calibration=calibration, preprocessing=pre, labels=tuple(label_names) if label_names else None, seed=seed)
    outputs = []
    done = run_passes([ExportPass(config)], state, ctx, on_step=lambda _i, _p, output, _s: outputs.append(output))
    flatbuffer = done.state.tflite
    assert flatbuffer is not None
    info = parse_tflite_bytes(flatbuffer, str(out / MODEL_FILE))
    report = compatibility(flatbuffer, target, api_level=api_level, keras_model=loaded.keras_model, name=str(out / MODEL_FILE))
    warnings.extend(done.warnings)
    npu_models: list[dict[str, Any]] = list(done.steps[0].details.get("npu_models", []))

    fp16 = None
    if target == "gpu" and fp16_check and dataset is not None:
        other_mode = QuantMode.FLOAT32 if chosen_mode is QuantMode.FLOAT16 else QuantMode.FLOAT16
        other = convert_model(loaded, Conversion(mode=other_mode)).flatbuffer
        f32, f16 = (other, flatbuffer) if chosen_mode is QuantMode.FLOAT16 else (flatbuffer, other)
        check_x = calibration_sample(dataset, fp16_samples, seed)
        if isinstance(check_x, tuple):
            raise InputError("the float16 risk check feeds one input; this model has several",
                             hint="pass --no-fp16-check and validate the float16 file with --reference", settings=("fp16_check",))
        fp16 = fp16_risk_check(f32, f16, check_x, tolerance=fp16_tolerance, layers=layers)
        warnings.extend(f"fp16 risk: {msg}" for msg in fp16.flagged)
    elif target == "gpu" and fp16_check:
        warnings.append("no --data: the float16 risk check was skipped")

    finished = finalize(flatbuffer, name=Path(str(src_path or "model")).stem,
                        description=f"{chosen_mode.value} for {target} of {Path(str(src_path or 'model')).name} (edgekit export)",
                        preprocessing=pre, labels=label_names)
    flatbuffer = finished.flatbuffer
    warnings.extend(finished.notes)
    with staged_dir(out, force=force) as tmp:
        files = {**outputs[0].files, REPORT_FILE: json_bytes(report.to_dict())}  # the report names the file where it lies
        for name, data_bytes in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(tmp / name, data_bytes)
        if fp16 is not None:
            write_json_atomic(tmp / FP16_FILE, fp16.to_dict())
        staged = write_artifact(
            tmp / MODEL_FILE, flatbuffer, preprocessing=pre, labels=label_names,
            source={"path": str(src_path) if src_path else None, "format": loaded.format, "sha256": loaded.sha256,
                    "parameters": loaded.parameter_count},
            data=({"path": str(dataset.source), "sha256": dataset.sha256, "samples": len(dataset),
                   "calibration_samples": rows_of(calibration) if calibration is not None and chosen_mode.needs_data else 0}
                  if dataset is not None else None),
            options={"target": target, "mode": chosen_mode.value, "io_type": chosen_io.value, "samples": samples, "seed": seed,
                     "api_level": api_level, "npu": npu, "soc": soc, "allow_select_tf_ops": allow_select_tf_ops,
                     "fp16_check": fp16_check, "fp16_tolerance": fp16_tolerance, "fp16_samples": fp16_samples,
                     "weights": converted.weights},
            extra={
                "target": target,
                "settings": {"mode": chosen_mode.value, "io_type": chosen_io.value, "why": TARGET_PROFILES[target].why,
                             "weight_dtypes": info.weight_dtypes()},
                "embedded_metadata": {"name": METADATA_NAME, "schema": METADATA_SCHEMA},
                "standard_metadata": finished.manifest_entry(),
                "compatibility": {"file": REPORT_FILE, "delegate": report.delegate, "full_coverage": report.full_coverage,
                                  **report.summary.to_dict()},
                "fp16_risk": ({"file": FP16_FILE, **fp16.summary()} if fp16 is not None else None),
                "npu_models": npu_models,
                "layers": layers,
                "warnings": warnings,
            },
        )
    final = out / MODEL_FILE
    artifact = Artifact(path=str(final), sha256=staged.sha256, size=staged.size, manifest_path=str(manifest_path_for(final)))
    return ExportResult(out_dir=str(out), target=target, mode=chosen_mode, io_type=chosen_io, artifact=artifact,
                        info=info, report=report, fp16=fp16, npu_models=[{**m} for m in npu_models], conversion_seconds=seconds,
                        warnings=warnings)


def _loaded_from_object(keras_model: Any) -> LoadedModel:
    """Wraps an in-memory Keras model (no file) as a LoadedModel."""
    inputs = getattr(keras_model, "inputs", None)
    if not inputs:
        raise ModelError("the Keras model has no defined inputs (a subclassed model that was never built?)",
                         hint="pass a Functional or Sequential model, or a saved .keras file")
    outputs = keras_model.outputs or []
    return LoadedModel(
        path=f"<in-memory {getattr(keras_model, 'name', 'model')}>",
        format="keras",
        sha256="",
        keras_model=keras_model,
        input_shape=tuple(inputs[0].shape),
        input_dtype=str(inputs[0].dtype),
        output_shapes=[tuple(o.shape) for o in outputs],
        output_names=list(getattr(keras_model, "output_names", None) or []),
        parameter_count=int(keras_model.count_params()),
    )


def _check_labels(labels: list[str] | None, loaded: LoadedModel) -> None:
    if not labels or not loaded.output_shapes:
        return
    classes = loaded.output_shapes[0][-1] if loaded.output_shapes[0] else None
    if classes is not None and len(loaded.output_shapes[0]) == 2 and classes != len(labels):
        raise InputError(
            f"{len(labels)} labels given but the model's first output has {classes} classes",
            hint="give one label per output class, in class-id order",
        )


def read_export_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an export directory (``model.json``)."""
    path = manifest_path_for(Path(out_dir) / MODEL_FILE)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if isinstance(data, dict):
        return data
    raise InputError(f"{out_dir} has no readable {path.name}", hint="give a directory written by `edgekit export`")
