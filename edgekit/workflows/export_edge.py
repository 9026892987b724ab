"""``edgekit export --target mediapipe|mcu|ethos-u55|ethos-u65|ethos-u85``: artifacts for runtimes beyond the delegates.

- ``mediapipe``: what MediaPipe Tasks' ImageClassifier accepts (:mod:`edgekit.export.mediapipe`):
  float32 or uint8 I/O (never int8), an RGB front end for a grayscale model, the normalization and
  labels as standard metadata; the file is checked as MediaPipe would check it before it is written.
- ``mcu``: a full-int8 model for TensorFlow Lite Micro (:mod:`edgekit.export.mcu`): every op checked
  against TFLM's kernels, the tensor arena measured on the TFLM interpreter with a margin, accuracy
  on TFLM's kernels next to LiteRT's on the validation samples, ``model_data.cc``/``.h`` for firmware,
  and a device profile's ``max_arena_kb``/``max_flash_kb`` as a gate.
- ``ethos-u55``/``u65``/``u85``: a full-int8 model compiled by Vela (:mod:`edgekit.export.ethosu`):
  the NPU/CPU op split, SRAM and flash, estimated cycles and latency, the top layers by cycles, and
  ``model_vela.tflite`` (what the device runs).

Every check runs before anything is written; the output directory is staged and renamed into place.

Example:
    >>> result = export_edge("model.keras", "mcu", "out/mcu", data="calib.npz", val="val.npz",
    ...                      preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.details["arena"]["recommended_bytes"]  # doctest: +SKIP
    12592
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import DEFAULT_CALIBRATION_SAMPLES, calibration_sample, load_dataset, rows_of, sample_rows
from edgekit.core.datatypes import Artifact, IOType, Preprocessing, QuantMode
from edgekit.core.errors import InputError, ModelError
from edgekit.core.extras import import_extra
from edgekit.core.fsutil import write_bytes_atomic, write_json_atomic
from edgekit.core.manifest import manifest_path_for, write_artifact
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.devices.profiles import load_profile
from edgekit.export.convert import Conversion, convert_model
from edgekit.export.ethosu import TARGETS as ETHOS_TARGETS
from edgekit.export.ethosu import run_vela
from edgekit.export.mcu import ARENA_MARGIN, check_mcu_budget, check_mcu_ops, compare_with_litert, measure_arena, write_c_array
from edgekit.export.mediapipe import check_mediapipe_file, mediapipe_io, needs_rgb_adapter, rgb_input_adapter
from edgekit.export.standard import finalize
from edgekit.export.target import MODEL_FILE
from edgekit.runtime.local import run_local
from edgekit.workflows.outdir import prepare_out_dir, staged_dir

EDGE_TARGETS = ("mediapipe", "mcu", *ETHOS_TARGETS)
REPORT_FILES = {"mediapipe": "mediapipe.json", "mcu": "mcu.json", **{t: "vela.json" for t in ETHOS_TARGETS}}
VALIDATE_SAMPLES = 200  # validation samples run on TFLM (reference kernels are slow)


@dataclass(frozen=True)
class EdgeExportResult:
    """What :func:`export_edge` wrote and measured."""

    out_dir: str
    target: str
    mode: QuantMode
    io_type: IOType
    artifact: Artifact
    info: TfliteInfo
    details: dict[str, Any]
    files: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": self.out_dir, "target": self.target, "mode": self.mode.value, "io_type": self.io_type.value,
                "artifact": self.artifact.to_dict(), "inputs": [t.to_dict() for t in self.info.inputs],
                "outputs": [t.to_dict() for t in self.info.outputs], "files": list(self.files), "details": self.details,
                "warnings": self.warnings}


def _settings(target: str, mode: QuantMode | str | None, io_type: IOType | str | None, has_data: bool) -> tuple[QuantMode, IOType]:
    if target == "mediapipe":
        chosen = QuantMode(mode) if mode is not None else (QuantMode.INT8 if has_data else QuantMode.FLOAT32)
        if chosen not in (QuantMode.FLOAT32, QuantMode.FLOAT16, QuantMode.DYNAMIC, QuantMode.INT8):
            raise InputError(f"mode {chosen.value} does not suit the mediapipe target", hint="use float32, float16, dynamic or int8",
                             settings=("mode",))
        if chosen.needs_data and not has_data:
            raise InputError("mode int8 needs calibration data", hint="give --data, or use --mode float32", settings=("data",))
        return chosen, mediapipe_io(chosen, io_type)
    if mode is not None and QuantMode(mode) is not QuantMode.INT8:
        raise InputError(f"the {target} target runs full-int8 models only, not {QuantMode(mode).value}", hint="drop --mode (int8)",
                         settings=("mode",))
    if not has_data:
        raise InputError(f"the {target} target is full-int8: it needs calibration data", hint="give --data calib.npz", settings=("data",))
    chosen_io = IOType(io_type) if io_type is not None else IOType.INT8
    if chosen_io is IOType.INT16:
        raise InputError(f"the {target} target takes int8, uint8 or float I/O", hint="use io_type int8", settings=("io_type",))
    return QuantMode.INT8, chosen_io


def _validation(val_ds: Any, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    idx = sample_rows(np.arange(len(val_ds)), samples, seed)
    return val_ds.x[idx], (val_ds.y[idx] if val_ds.y is not None else None)


def export_edge(
    model: str | os.PathLike[str] | LoadedModel,
    target: str,
    out_dir: str | os.PathLike[str],
    *,
    mode: QuantMode | str | None = None,
    io_type: IOType | str | None = None,
    data: str | os.PathLike[str] | None = None,
    val: str | os.PathLike[str] | None = None,
    samples: int = DEFAULT_CALIBRATION_SAMPLES,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    labels: list[str] | None = None,
    device: str | os.PathLike[str] | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
    arena_margin: float = ARENA_MARGIN,
    validate_samples: int = VALIDATE_SAMPLES,
    system_config: str | None = None,
    accelerator_config: str | None = None,
    memory_mode: str | None = None,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
) -> EdgeExportResult:
    """Converts ``model`` for an edge ``target`` and writes ``out_dir`` (see the module docstring).

    Raises:
        InputError: bad options, a missing extra (with its ``pip install``), data missing for int8.
        ModelError: MediaPipe would refuse the file, TFLM lacks an op (named), a grayscale SavedModel for MediaPipe.
        GateFailed: the arena or the model exceeds the device profile's ``max_arena_kb``/``max_flash_kb``.
        ConversionError: the converter or Vela failed.
    """
    target = str(target).lower()
    if target not in EDGE_TARGETS:
        raise InputError(f"unknown edge target '{target}'", hint=f"use one of {', '.join(EDGE_TARGETS)}", settings=("target",))
    if target == "mcu":
        import_extra("mcu")
    elif target in ETHOS_TARGETS:
        import_extra("ethos-u")
    chosen_mode, chosen_io = _settings(target, mode, io_type, data is not None)
    if validate_samples < 1:
        raise InputError(f"validate_samples must be at least 1, got {validate_samples}", hint="e.g. 200", settings=("validate_samples",))
    profile = load_profile(device, devices_dir=devices_dir) if device is not None else None
    src_path = model.path if isinstance(model, LoadedModel) else str(model)
    out = prepare_out_dir(out_dir, force=force, inputs=[src_path, data, val])
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    pre = preprocessing or Preprocessing()
    dataset = load_dataset(data, signature=loaded.signature, preprocessing=pre, x_key=x_key, y_key=y_key) if data is not None else None
    val_ds = load_dataset(val, signature=loaded.signature, preprocessing=pre, x_key=x_key, y_key=y_key) if val is not None else dataset
    names = labels or (list(dataset.labels) if dataset is not None and dataset.labels else None)
    calibration = calibration_sample(dataset, samples, seed) if dataset is not None and chosen_mode.needs_data else None
    warnings: list[str] = []
    details: dict[str, Any] = {"target": target}

    source: Any = loaded
    rgb = False
    if target == "mediapipe" and needs_rgb_adapter(tuple(loaded.input_shape)):
        if loaded.keras_model is None:
            raise ModelError(f"{loaded.path} takes grayscale images, which MediaPipe refuses; the RGB front end needs the Keras model",
                             hint="pass the .keras file the SavedModel came from")
        source, rgb = rgb_input_adapter(loaded.keras_model), True
        calibration = np.repeat(calibration, 3, axis=-1) if calibration is not None else None
        details["rgb_adapter"] = "a fixed 1x1 convolution (BT.601 luma) in front of the grayscale model: MediaPipe hands it RGB images"
    converted = convert_model(source, Conversion(mode=chosen_mode, io_type=chosen_io), calibration=calibration).flatbuffer
    finished = finalize(converted, name=Path(str(src_path)).stem,
                        description=f"{chosen_mode.value} for {target} of {Path(str(src_path)).name} (edgekit export)",
                        preprocessing=pre, labels=names)
    flatbuffer = finished.flatbuffer
    warnings.extend(finished.notes)
    extra_files: dict[str, bytes] = {}

    if target == "mediapipe":
        check = check_mediapipe_file(flatbuffer)
        if check.errors:
            raise ModelError(f"MediaPipe would refuse this export: {check.errors[0].message}", hint=check.errors[0].hint)
        warnings.extend(p.message for p in check.warnings)
        details["mediapipe_check"] = check.to_dict()
    elif target == "mcu":
        ops = check_mcu_ops(flatbuffer)
        ops.raise_if_missing()
        arena = measure_arena(flatbuffer, margin=arena_margin)
        details.update({"ops": ops.to_dict(), "arena": arena.to_dict(), "flash_bytes": len(flatbuffer)})
        if val_ds is not None:
            x, y = _validation(val_ds, validate_samples, seed)
            with tempfile.TemporaryDirectory(prefix="edgekit-mcu-") as tmp:
                path = Path(tmp) / MODEL_FILE
                path.write_bytes(flatbuffer)
                litert = run_local(path, x, runs=1, warmup=0).outputs[0]
            details["accuracy"] = compare_with_litert(flatbuffer, x, y, litert, arena_size=arena.recommended_bytes).to_dict()
        else:
            warnings.append("no --data/--val: accuracy on TFLM's kernels was not measured")
        if profile is not None:
            budget = check_mcu_budget(arena.recommended_bytes, len(flatbuffer), profile.max_arena_kb, profile.max_flash_kb)
            details["budget"] = {"device": profile.name, **budget.to_dict()}
            budget.raise_if_failed()
    else:
        vela = run_vela(flatbuffer, target, accelerator=accelerator_config, system_config=system_config, memory_mode=memory_mode)
        details["vela"] = vela.to_dict()
        warnings.extend(vela.warnings)
        extra_files["model_vela.tflite"] = vela.compiled_model

    report_name = REPORT_FILES[target]
    with staged_dir(out, force=force) as tmp:
        for name, payload in extra_files.items():
            write_bytes_atomic(tmp / name, payload)
        if target == "mcu":
            write_c_array(flatbuffer, tmp, arena_bytes=details["arena"]["recommended_bytes"], source=MODEL_FILE)
        write_json_atomic(tmp / report_name, details)
        staged = write_artifact(
            tmp / MODEL_FILE, flatbuffer, preprocessing=pre, labels=names,
            source={"path": str(src_path), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
            data=({"path": str(dataset.source), "sha256": dataset.sha256, "samples": len(dataset),
                   "calibration_samples": rows_of(calibration) if calibration is not None else 0} if dataset is not None else None),
            options={"target": target, "mode": chosen_mode.value, "io_type": chosen_io.value, "samples": samples, "seed": seed,
                     "rgb_adapter": rgb, "device": profile.name if profile else None},
            extra={"target": target, "report": report_name, "standard_metadata": finished.manifest_entry(), "warnings": warnings},
        )
        files = sorted(p.name for p in tmp.iterdir())
    final = out / MODEL_FILE
    artifact = Artifact(path=str(final), sha256=staged.sha256, size=staged.size, manifest_path=str(manifest_path_for(final)))
    return EdgeExportResult(out_dir=str(out), target=target, mode=chosen_mode, io_type=chosen_io, artifact=artifact,
                            info=parse_tflite_bytes(flatbuffer, str(final)), details=details, files=tuple(files), warnings=warnings)
