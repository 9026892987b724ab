"""Export for a deployment target: converter settings per delegate, an artifact directory, honest reports.

``export(model, target, out_dir)`` picks converter settings for the target unless told otherwise:

=======  ==========================  ==================  ===================================
target   default                     other modes         why
=======  ==========================  ==================  ===================================
cpu      int8 weights+activations,   dynamic, float16,   XNNPACK's int8 kernels; float I/O
         float I/O (needs --data)    float32             keeps app code unchanged
gpu      float16 weights, float I/O  float32             GPU delegates compute in fp16/fp32;
                                                         int8 brings no GPU speed-up
nnapi    int8, int8 I/O (--data)     float16, float32    NNAPI accelerators are integer
npu      int8, int8 I/O (--data)     -                   vendor NPUs run quantized graphs
=======  ==========================  ==================  ===================================

and writes ``out_dir/``:

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

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import calibration_sample, load_dataset
from edgekit.core.datatypes import Artifact, Dataset, IOType, Preprocessing, QuantMode
from edgekit.core.errors import ConversionError, InputError, ModelError
from edgekit.core.fsutil import TMP_PREFIX, sha256_file, size_info, write_bytes_atomic, write_json_atomic
from edgekit.core.manifest import Manifest, manifest_path_for
from edgekit.core.models import LoadedModel, keras_layer_names, load_model
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.export.convert import check_mode_options, choose_weights, convert
from edgekit.export.delegates import CompatReport, check_compatibility
from edgekit.export.fp16_risk import Fp16Risk, fp16_risk_check
from edgekit.export.rules import check_target

METADATA_NAME = "edgekit_metadata"
METADATA_SCHEMA = "edgekit-metadata/1"
MODEL_FILE = "model.tflite"
REPORT_FILE = "compatibility.json"
FP16_FILE = "fp16_risk.json"


@dataclass(frozen=True)
class TargetProfile:
    """Converter settings edgekit uses for a target unless the user overrides them."""

    target: str
    default_mode: QuantMode
    modes: tuple[QuantMode, ...]
    int8_io: IOType  # I/O dtype for full-int8 exports
    why: str


TARGET_PROFILES: dict[str, TargetProfile] = {
    "cpu": TargetProfile("cpu", QuantMode.INT8, (QuantMode.INT8, QuantMode.DYNAMIC, QuantMode.FLOAT16, QuantMode.FLOAT32),
                         IOType.FLOAT, "full-int8 for XNNPACK's integer kernels; float I/O keeps app code unchanged"),
    "gpu": TargetProfile("gpu", QuantMode.FLOAT16, (QuantMode.FLOAT16, QuantMode.FLOAT32), IOType.FLOAT,
                         "GPU delegates compute in float16/float32; float16 weights halve the size at no GPU cost"),
    "nnapi": TargetProfile("nnapi", QuantMode.INT8, (QuantMode.INT8, QuantMode.FLOAT16, QuantMode.FLOAT32), IOType.INT8,
                           "NNAPI accelerators (DSP/NPU) are integer engines; float falls back to GPU or CPU drivers"),
    "npu": TargetProfile("npu", QuantMode.INT8, (QuantMode.INT8,), IOType.INT8,
                         "vendor NPUs run integer-quantized graphs end to end"),
}


def resolve_settings(target: str, mode: QuantMode | str | None, io_type: IOType | str | None, has_data: bool) -> tuple[str, QuantMode, IOType]:
    """The (target, mode, I/O type) an export will use; raises InputError before any work.

    Example:
        >>> resolve_settings("gpu", None, None, has_data=False)
        ('gpu', <QuantMode.FLOAT16: 'float16'>, <IOType.FLOAT: 'float'>)
    """
    target = check_target(target)
    profile = TARGET_PROFILES[target]
    try:
        chosen = QuantMode(mode) if mode is not None else profile.default_mode
    except ValueError:
        raise InputError(f"unknown --mode '{mode}'", hint=f"use one of: {', '.join(m.value for m in profile.modes)}") from None
    if chosen not in profile.modes:
        raise InputError(
            f"--mode {chosen.value} does not suit --target {target} (allowed: {', '.join(m.value for m in profile.modes)})",
            hint=profile.why,
        )
    if chosen.needs_data and not has_data:
        others = [m.value for m in profile.modes if not m.needs_data]
        raise InputError(
            f"--target {target} uses full-int8 quantization, which needs calibration data",
            hint="pass --data FILE (.npz, .npy or an image folder) with ~100 typical inputs"
            + (f", or choose --mode {' / '.join(others)}" if others else ""),
        )
    try:
        io = IOType(io_type) if io_type is not None else (profile.int8_io if chosen is QuantMode.INT8 else IOType.FLOAT)
    except ValueError:
        raise InputError(f"unknown --io-type '{io_type}'", hint="use float, int8, uint8 or int16") from None
    check_mode_options(chosen, io, has_data)
    return target, chosen, io


# ----------------------------------------------------------------------------------------------
# TFLite metadata
# ----------------------------------------------------------------------------------------------


def embed_metadata(flatbuffer: bytes, payload: dict[str, Any], name: str = METADATA_NAME) -> bytes:
    """Returns the model with ``payload`` (JSON) added as a metadata entry called ``name``.

    Uses the flatbuffer object API (``ai_edge_litert.tools.flatbuffer_utils``): a new buffer
    holds the UTF-8 JSON and ``Model.metadata`` gets ``{name, buffer}``. An entry with the same
    name is replaced. Graph, weights and signatures are unchanged.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    data = np.frombuffer(json.dumps(payload, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    entries = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name) != name]
    buffer = schema.BufferT()
    buffer.data = data
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_embedded_metadata(info: TfliteInfo, name: str = METADATA_NAME) -> dict[str, Any] | None:
    """The JSON edgekit embedded in a model, or None."""
    raw = info.metadata.get(name)
    if not raw:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------


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




def _read_labels(labels: str | os.PathLike[str] | list[str] | tuple[str, ...] | None) -> list[str] | None:
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


def _prepare_out_dir(out_dir: str | os.PathLike[str], *, force: bool, inputs: list[Any]) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file, expected a directory", hint="give a directory path with -o (it is created)")
    if not out.parent.exists():
        raise InputError(f"output folder {out.parent} does not exist", hint=f"create it first: mkdir -p {out.parent}")
    resolved = out.resolve()
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if src == resolved or resolved in src.parents:
            raise InputError(f"output directory {out} contains the input {given}", hint="choose another -o directory; edgekit never overwrites its inputs")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"output directory {out} already exists and is not empty", hint="pass --force to replace it or choose another -o path")
    return out


def _flex_ops(info: TfliteInfo) -> list[str]:
    return sorted({op.op[5:] for op in info.operators if op.op.startswith("FLEX:")})


def _flex_refusal(target: str, ops: list[str]) -> ModelError:
    what = {"gpu": "the GPU delegate", "npu": "NPU compilers", "nnapi": "NNAPI"}.get(target, "the target")
    return ModelError(
        f"the model needs TensorFlow op(s) {', '.join(ops)} that only run through the Flex delegate (SELECT_TF_OPS), "
        f"which {what} cannot run",
        hint="rewrite the layers that use them with TFLite builtin ops (e.g. gelu(approximate=True) instead of erf), "
        "or export for --target cpu with --allow-select-tf-ops",
    )


def _convert_for_target(loaded: LoadedModel, target: str, mode: QuantMode, calibration: np.ndarray | None, io_type: IOType,
                        allow_select_tf_ops: bool, per_channel: bool = True) -> bytes:
    """Converts; a model that needs Flex ops gets a refusal naming them (gpu/npu always)."""
    select = allow_select_tf_ops and target not in ("gpu", "npu")
    try:
        flatbuffer = convert(loaded, mode, calibration=calibration if mode.needs_data else None, io_type=io_type, allow_select_tf_ops=select,
                             per_channel=per_channel)
    except ConversionError as exc:
        if select:
            raise
        try:  # find out which ops have no builtin, to name them
            probe = convert(loaded, QuantMode.FLOAT32, allow_select_tf_ops=True)
        except ConversionError:
            raise exc from None
        flex = _flex_ops(parse_tflite_bytes(probe, "probe"))
        if not flex:
            raise
        if target in ("gpu", "npu"):
            raise _flex_refusal(target, flex) from None
        raise ConversionError(
            f"the model needs TensorFlow op(s) {', '.join(flex)} that have no TFLite builtin",
            hint="rewrite those layers, or pass --allow-select-tf-ops (the Flex delegate then runs them on the CPU)",
        ) from None
    return flatbuffer


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
    if (npu is not None or soc is not None) and target != "npu":
        raise InputError("--npu/--soc apply to --target npu only", hint="use --target npu --npu qualcomm|mediatek|google_tensor")
    if soc is not None and npu is None:
        raise InputError("--soc needs --npu VENDOR", hint="e.g. --npu qualcomm --soc SM8650")
    npu_plan = None
    if npu is not None:
        from edgekit.export.npu import check_npu_ready

        npu_plan = check_npu_ready(npu, soc)
    label_names = _read_labels(labels)
    is_loaded = isinstance(model, LoadedModel)
    is_path = isinstance(model, (str, os.PathLike))
    src_path = model.path if is_loaded else (str(model) if is_path else None)
    data_path = data.source if isinstance(data, Dataset) else data
    out = _prepare_out_dir(out_dir, force=force, inputs=[src_path, data_path])

    if is_loaded:
        loaded = model
    elif is_path:
        loaded = load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    else:
        loaded = _loaded_from_object(model)
    pre = preprocessing or Preprocessing()
    dataset: Dataset | None = None
    calibration = None
    if data is not None:
        dataset = data if isinstance(data, Dataset) else load_dataset(
            data, input_shape=loaded.input_shape, preprocessing=pre, x_key=x_key, y_key=y_key
        )
        pre = dataset.preprocessing
        calibration = calibration_sample(dataset, samples, seed)
    if label_names is None and dataset is not None and dataset.labels:
        label_names = list(dataset.labels)
    _check_labels(label_names, loaded)
    layers = keras_layer_names(loaded.keras_model) if loaded.keras_model is not None else {}

    warnings: list[str] = []
    started = time.perf_counter()
    weights, _ = choose_weights(loaded, chosen_mode)  # per-tensor for a model clustered per layer, as `edgekit quantize`
    flatbuffer = _convert_for_target(loaded, target, chosen_mode, calibration, chosen_io, allow_select_tf_ops, per_channel=weights != "per-tensor")
    seconds = time.perf_counter() - started
    info = parse_tflite_bytes(flatbuffer, MODEL_FILE)
    flex = _flex_ops(info)
    if flex and target in ("gpu", "npu"):  # pragma: no cover - _convert_for_target never enables Flex for these
        raise _flex_refusal(target, flex)
    if flex:
        warnings.append(f"the model uses Flex op(s) {', '.join(flex)}: ship the Flex delegate; no hardware delegate runs them")

    payload = {
        "schema": METADATA_SCHEMA,
        "labels": label_names,
        "preprocessing": pre.to_dict(),
        "inputs": [t.to_dict() for t in info.inputs],
        "outputs": [t.to_dict() for t in info.outputs],
        "target": target,
        "mode": chosen_mode.value,
    }
    flatbuffer = embed_metadata(flatbuffer, payload)
    info = parse_tflite_bytes(flatbuffer, str(out / MODEL_FILE))
    report = check_compatibility(info, target, api_level=api_level, layers=layers, model_bytes=flatbuffer)
    warnings.extend(report.warnings)
    if report.unsupported:
        ops = sorted({n.op for n in report.unsupported})
        warnings.append(f"{len(report.unsupported)} of {report.summary.nodes} nodes stay off the {report.delegate} delegate ({', '.join(ops)}); "
                        f"see {REPORT_FILE}")

    fp16 = None
    if target == "gpu" and fp16_check and dataset is not None:
        other_mode = QuantMode.FLOAT32 if chosen_mode is QuantMode.FLOAT16 else QuantMode.FLOAT16
        other = convert(loaded, other_mode)
        f32, f16 = (other, flatbuffer) if chosen_mode is QuantMode.FLOAT16 else (flatbuffer, other)
        check_x = calibration_sample(dataset, fp16_samples, seed)
        fp16 = fp16_risk_check(f32, f16, check_x, tolerance=fp16_tolerance, layers=layers)
        warnings.extend(f"fp16 risk: {msg}" for msg in fp16.flagged)
    elif target == "gpu" and fp16_check:
        warnings.append("no --data: the float16 risk check was skipped")

    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the artifact directory should not be
    try:
        model_file = tmp / MODEL_FILE
        write_bytes_atomic(model_file, flatbuffer)
        digest = sha256_file(model_file)
        sizes = size_info(model_file)
        npu_models: list[dict[str, Any]] = []
        if npu_plan is not None:
            from edgekit.export.npu import npu_compile

            vendor, soc_name = npu_plan
            npu_models = npu_compile(model_file, vendor.name, soc_name, tmp / "npu")
            warnings.extend(f"NPU compilation for {m['target']} failed: {m['error']}" for m in npu_models if m.get("file") is None)
        write_json_atomic(tmp / REPORT_FILE, report.to_dict())
        if fp16 is not None:
            write_json_atomic(tmp / FP16_FILE, fp16.to_dict())
        manifest = Manifest(
            artifact={"file": MODEL_FILE, "sha256": digest, "bytes": sizes.bytes, "gzip_bytes": sizes.gzip_bytes},
            inputs=[t.to_dict() for t in info.inputs],
            outputs=[t.to_dict() for t in info.outputs],
            preprocessing=pre.to_dict(),
            labels=label_names,
            source={"path": str(src_path) if src_path else None, "format": loaded.format, "sha256": loaded.sha256,
                    "parameters": loaded.parameter_count},
            data=({"path": str(dataset.source), "sha256": dataset.sha256, "samples": len(dataset),
                   "calibration_samples": int(len(calibration)) if calibration is not None and chosen_mode.needs_data else 0}
                  if dataset is not None else None),
            options={"target": target, "mode": chosen_mode.value, "io_type": chosen_io.value, "samples": samples, "seed": seed,
                     "api_level": api_level, "npu": npu, "soc": soc, "allow_select_tf_ops": allow_select_tf_ops,
                     "fp16_check": fp16_check, "fp16_tolerance": fp16_tolerance, "fp16_samples": fp16_samples,
                     "weights": weights},
            extra={
                "target": target,
                "settings": {"mode": chosen_mode.value, "io_type": chosen_io.value, "why": TARGET_PROFILES[target].why,
                             "weight_dtypes": info.weight_dtypes()},
                "embedded_metadata": {"name": METADATA_NAME, "schema": METADATA_SCHEMA},
                "compatibility": {"file": REPORT_FILE, "delegate": report.delegate, "full_coverage": report.full_coverage,
                                  **report.summary.to_dict()},
                "fp16_risk": ({"file": FP16_FILE, **fp16.summary()} if fp16 is not None else None),
                "npu_models": npu_models,
                "layers": layers,
                "warnings": warnings,
            },
        )
        write_json_atomic(manifest_path_for(model_file), manifest.to_dict())
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = out / MODEL_FILE
    artifact = Artifact(path=str(final), sha256=digest, size=sizes, manifest_path=str(manifest_path_for(final)))
    return ExportResult(out_dir=str(out), target=target, mode=chosen_mode, io_type=chosen_io, artifact=artifact,
                        info=parse_tflite_bytes(flatbuffer, str(final)), report=report, fp16=fp16,
                        npu_models=[{**m} for m in npu_models], conversion_seconds=seconds, warnings=warnings)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Renames the finished temp directory to ``out``, replacing an old one only at the end."""
    backup = None
    if out.exists():
        backup = out.with_name(f"{TMP_PREFIX}old-{out.name}-{os.getpid()}")
        os.replace(out, backup)
    try:
        os.replace(tmp, out)
    except OSError:
        if backup is not None:
            os.replace(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


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
    with contextlib.suppress(OSError, json.JSONDecodeError):
        return json.loads(path.read_text())
    raise InputError(f"{out_dir} has no readable {path.name}", hint="give a directory written by `edgekit export`")
