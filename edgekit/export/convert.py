"""Post-training quantization through the TFLite converter.

Modes: ``float32`` (plain conversion), ``float16`` (float16 weights), ``dynamic`` (int8 weights,
float activations), ``int8`` (full integer with a representative dataset) and ``int16x8`` (int16
activations, int8 weights). Only builtin ops are allowed unless ``allow_select_tf_ops`` is set.

Example:
    >>> result = quantize("model.keras", "model_int8.tflite", mode="int8",
    ...                   data="calib.npz", preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.artifact.size.bytes  # doctest: +SKIP
    230512
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import calibration_sample, load_dataset
from edgekit.core.errors import ConversionError, InputError
from edgekit.core.keras_graph import codebook_per_layer
from edgekit.core.fsutil import check_output_path, sha256_file, size_info, write_bytes_atomic, write_json_atomic
from edgekit.core.manifest import Manifest, manifest_path_for
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.core.datatypes import Artifact, Dataset, IOType, Preprocessing, QuantMode

SELECT_OPS_WARNING = (
    "SELECT_TF_OPS is on: ops outside the TFLite builtin set run through the Flex delegate, "
    "which GPU/NNAPI/NPU delegates cannot run and which adds several MB to the app"
)


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` produced."""

    artifact: Artifact
    info: TfliteInfo
    mode: QuantMode
    io_type: IOType
    conversion_seconds: float
    calibration_samples: int
    warnings: list[str] = field(default_factory=list)
    weights: str | None = None  # per-channel / per-tensor (modes with int8 weights), None otherwise
    weights_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.to_dict(),
            "mode": self.mode.value,
            "io_type": self.io_type.value,
            "weights": self.weights,
            "weights_reason": self.weights_reason,
            "conversion_seconds": round(self.conversion_seconds, 3),
            "calibration_samples": self.calibration_samples,
            "inputs": [t.to_dict() for t in self.info.inputs],
            "outputs": [t.to_dict() for t in self.info.outputs],
            "ops": self.info.op_histogram(),
            "warnings": self.warnings,
        }


WEIGHT_CHOICES = ("auto", "per-channel", "per-tensor")
INT8_WEIGHT_MODES = (QuantMode.DYNAMIC, QuantMode.INT8, QuantMode.INT16X8)


def shared_value_kernels(keras_model: Any) -> dict[str, int] | None:
    """Distinct values per compressible kernel when *every* large kernel shares a few values.

    That is the signature of a model clustered with one codebook per layer; the rule is
    :func:`edgekit.core.keras_graph.codebook_per_layer` (the one "is clustered" rule).
    """
    return codebook_per_layer(keras_model)


def check_weights_option(mode: QuantMode, requested: str) -> None:
    """Raises InputError for an unknown ``--weights`` value or one the mode has no use for."""
    if requested not in WEIGHT_CHOICES:
        raise InputError(f"--weights must be one of {', '.join(WEIGHT_CHOICES)}, got {requested!r}", hint="e.g. --weights per-channel")
    if requested != "auto" and mode not in INT8_WEIGHT_MODES:
        raise InputError(f"--weights {requested} applies to modes with int8 weights (dynamic, int8, int16x8), not --mode {mode.value}",
                         hint="drop --weights, or use --mode int8")


def choose_weights(model: LoadedModel, mode: QuantMode, requested: str = "auto") -> tuple[str | None, str | None]:
    """How int8 weights are scaled: ``(per-channel|per-tensor|None, reason)``.

    ``auto`` keeps the converter's per-channel scales, except for a model clustered with one
    codebook per layer: per-channel scales would map the layer's shared values to different int8
    codes in every channel and undo most of what clustering buys after compression, while one
    per-tensor scale keeps exactly the shared values (the rounding error, at most max|w|/254, is far
    below the clustering's own). Modes without int8 weights return ``(None, None)``.
    """
    check_weights_option(mode, requested)
    if mode not in INT8_WEIGHT_MODES:
        return None, None
    if requested != "auto":
        return requested, "chosen with --weights"
    shared = shared_value_kernels(model.keras_model) if model.keras_model is not None else None
    if shared:
        most = max(shared.values())
        return "per-tensor", (f"auto: the model is clustered (at most {most} distinct values in each of its {len(shared)} large kernels); "
                              "one scale per tensor keeps the shared values shared after int8 (smaller when compressed); "
                              "--weights per-channel to override")
    return "per-channel", "auto: converter default"


def check_mode_options(mode: QuantMode, io_type: IOType, has_data: bool) -> None:
    """Rejects option combinations the converter cannot honour, before any work starts."""
    if mode.needs_data and not has_data:
        raise InputError(
            f"--mode {mode.value} needs calibration data to choose activation ranges",
            hint="pass --data FILE (.npz, .npy or an image folder) with ~100 typical inputs",
        )
    allowed = {
        QuantMode.INT8: (IOType.FLOAT, IOType.INT8, IOType.UINT8),
        QuantMode.INT16X8: (IOType.FLOAT, IOType.INT16),
    }.get(mode, (IOType.FLOAT,))
    if io_type not in allowed:
        raise InputError(
            f"--io-type {io_type.value} does not go with --mode {mode.value} (allowed: {', '.join(a.value for a in allowed)})",
            hint="integer I/O needs --mode int8 (int8/uint8) or int16x8 (int16)",
        )


def convert(
    model: LoadedModel,
    mode: QuantMode,
    *,
    calibration: np.ndarray | None = None,
    io_type: IOType = IOType.FLOAT,
    allow_select_tf_ops: bool = False,
    converter_hook: Any = None,
    per_channel: bool = True,
) -> bytes:
    """Converts a loaded model to TFLite flatbuffer bytes.

    Args:
        model: from :func:`edgekit.core.models.load_model`.
        mode: the quantization mode.
        calibration: preprocessed inputs for the representative dataset (int8, int16x8).
        io_type: dtype of the model's inputs and outputs (integer types only for int8/int16x8).
        allow_select_tf_ops: allow TensorFlow ops through the Flex delegate.
        converter_hook: optional callable receiving the converter before ``convert()``, for
            settings edgekit does not expose (used by later passes, e.g. per-layer denylists).
        per_channel: int8 weights with one scale per output channel (the converter's default);
            False: one scale per tensor (see :func:`choose_weights`).

    Raises:
        ConversionError: with the converter's own first error line.
    """
    from edgekit.core.tfshim import native_stderr_captured, tensorflow

    tf = tensorflow()
    try:
        if model.keras_model is not None:
            converter = tf.lite.TFLiteConverter.from_keras_model(with_static_batch(model.keras_model))
        else:
            converter = tf.lite.TFLiteConverter.from_saved_model(model.saved_model_dir)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"the model cannot be prepared for conversion: {first[:300]}", hint="rerun with -v for details") from exc
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode is not QuantMode.FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is QuantMode.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if mode.needs_data:
        if calibration is None or len(calibration) == 0:
            raise InputError(f"--mode {mode.value} needs calibration data", hint="pass --data")
        samples = np.asarray(calibration, dtype=np.float32)

        def representative_dataset():
            for i in range(samples.shape[0]):
                yield [samples[i: i + 1]]

        converter.representative_dataset = representative_dataset
        if mode is QuantMode.INT8:
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:
            ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        io_dtype = {IOType.FLOAT: tf.float32, IOType.INT8: tf.int8, IOType.UINT8: tf.uint8, IOType.INT16: tf.int16}[io_type]
        converter.inference_input_type = io_dtype
        converter.inference_output_type = io_dtype
    if allow_select_tf_ops:
        ops = [*ops, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.target_spec.supported_ops = ops
    if not per_channel and mode in INT8_WEIGHT_MODES:
        converter._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch for per-tensor weights
    if converter_hook is not None:
        converter_hook(converter)
    log: list[str] = []
    try:
        # Keras' export prints "Saved artifact at ..." to stdout and the converter logs to fd 2
        with native_stderr_captured(log), contextlib.redirect_stdout(io.StringIO()):
            flatbuffer = converter.convert()
    except Exception as exc:
        raise ConversionError(_conversion_message(exc, log, allow_select_tf_ops), hint=_conversion_hint(exc, log, allow_select_tf_ops)) from exc
    return bytes(flatbuffer)


@dataclass(frozen=True)
class Conversion:
    """How a Keras model becomes TFLite: the mode, the I/O dtype, the int8 weight scales.

    ``weights`` is ``auto`` (per-channel, except per-tensor for a model clustered with one
    codebook per layer: :func:`choose_weights`), ``per-channel`` or ``per-tensor``.
    """

    mode: QuantMode = QuantMode.INT8
    io_type: IOType = IOType.FLOAT
    weights: str = "auto"
    allow_select_tf_ops: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", QuantMode(self.mode))
        object.__setattr__(self, "io_type", IOType(self.io_type))
        check_weights_option(self.mode, self.weights)


@dataclass(frozen=True)
class Converted:
    """A conversion's result: the flatbuffer and the int8 weight granularity chosen (and why)."""

    flatbuffer: bytes
    weights: str | None
    weights_reason: str | None


def convert_model(model: Any, conversion: Conversion, *, calibration: np.ndarray | None = None,
                  converter_hook: Any = None) -> Converted:
    """Converts a Keras model (or a :class:`~edgekit.core.models.LoadedModel`) as ``conversion`` says.

    The one place every command converts through, so the same model, calibration sample and
    conversion give the same bytes whichever command asks. ``calibration`` is used only by the
    modes that need it (int8, int16x8).
    """
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(
        path="<memory>", format="keras", sha256="", keras_model=model, input_shape=tuple(model.inputs[0].shape))
    weights, reason = choose_weights(loaded, conversion.mode, conversion.weights)
    flatbuffer = convert(loaded, conversion.mode, calibration=calibration if conversion.mode.needs_data else None,
                         io_type=conversion.io_type, allow_select_tf_ops=conversion.allow_select_tf_ops,
                         converter_hook=converter_hook, per_channel=weights != "per-tensor")
    return Converted(flatbuffer=flatbuffer, weights=weights, weights_reason=reason)


def with_static_batch(keras_model: Any, batch_size: int = 1) -> Any:
    """Wraps a Keras model so every input has a fixed batch dimension.

    With a dynamic batch the converter keeps SHAPE/STRIDED_SLICE/PACK ops around Flatten and
    Reshape; on-device inference runs one sample at a time, and a static graph is smaller,
    faster and friendlier to delegates.
    """
    from edgekit.core.tfshim import keras

    k = keras()
    inputs = keras_model.inputs
    if all(t.shape[0] == batch_size for t in inputs):
        return keras_model
    new_inputs = [
        k.Input(batch_shape=(batch_size, *t.shape[1:]), dtype=t.dtype, name=t.name.split(":")[0].split("/")[0])
        for t in inputs
    ]
    outputs = keras_model(new_inputs if len(new_inputs) > 1 else new_inputs[0], training=False)
    return k.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0], outputs, name=keras_model.name)


def _conversion_message(exc: Exception, log: list[str], select: bool) -> str:
    text = "\n".join([str(exc), *log])
    for line in text.splitlines():
        low = line.lower()
        if "error:" in low and ("op" in low or "failed" in low or "not supported" in low):
            return "the TFLite converter failed: " + line.split("error:", 1)[-1].strip()[:300]
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"the TFLite converter failed: {first[:300]}"


def _conversion_hint(exc: Exception, log: list[str], select: bool) -> str:
    text = "\n".join([str(exc), *log]).lower()
    if not select and ("flex" in text or "select_tf_ops" in text or "not supported by" in text or "tf ops" in text):
        return "the model uses TensorFlow ops with no TFLite builtin; rewrite those layers or pass --allow-select-tf-ops"
    return "rerun with -v to see the converter log"


def quantize(
    model: str | os.PathLike[str] | LoadedModel,
    output: str | os.PathLike[str],
    *,
    mode: QuantMode | str = QuantMode.INT8,
    data: str | os.PathLike[str] | Dataset | None = None,
    samples: int = 100,
    seed: int = 0,
    io_type: IOType | str = IOType.FLOAT,
    preprocessing: Preprocessing | None = None,
    allow_select_tf_ops: bool = False,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    weights: str = "auto",
) -> QuantizeResult:
    """Quantizes a model and writes ``output`` (.tflite) and its manifest (``output`` with .json).

    ``weights`` (auto, per-channel, per-tensor) sets how int8 weights are scaled; ``auto`` is
    per-channel except for models clustered with one codebook per layer (:func:`choose_weights`).
    Every check (paths, options, model, data) runs before conversion; the files are written
    atomically, and an existing output is replaced only with ``force``.
    """
    mode = QuantMode(mode)
    io_type = IOType(io_type)
    check_mode_options(mode, io_type, data is not None)
    check_weights_option(mode, weights)
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}", hint="use e.g. --samples 100")
    src_path = model.path if isinstance(model, LoadedModel) else model
    data_path = data.source if isinstance(data, Dataset) else data
    out = check_output_path(
        output, inputs=[src_path, data_path], force=force, suffixes=(".tflite",),
        sidecars=[manifest_path_for(output)],
    )
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    pre = preprocessing or Preprocessing()
    dataset: Dataset | None = None
    calibration = None
    if data is not None:
        # read only the calibration sample: a memory-mapped .npy/.npz or an image folder far larger
        # than memory is never loaded whole (the same seeded draw as calibration_sample)
        dataset = data if isinstance(data, Dataset) else load_dataset(
            data, input_shape=loaded.input_shape, preprocessing=pre, x_key=x_key, y_key=y_key,
            limit=samples if mode.needs_data else None, seed=seed,
        )
        pre = dataset.preprocessing
        calibration = calibration_sample(dataset, samples, seed)

    warnings: list[str] = []
    if allow_select_tf_ops:
        warnings.append(SELECT_OPS_WARNING)
    granularity, granularity_reason = choose_weights(loaded, mode, weights)
    started = time.perf_counter()
    flatbuffer = convert(loaded, mode, calibration=calibration if mode.needs_data else None,
                         io_type=io_type, allow_select_tf_ops=allow_select_tf_ops, per_channel=granularity != "per-tensor")
    seconds = time.perf_counter() - started
    info = parse_tflite_bytes(flatbuffer, str(out))
    flex = sorted({op.op for op in info.operators if op.op.startswith("FLEX:")})
    if flex:
        warnings.append(f"the model uses {len(flex)} TensorFlow op type(s) via Flex: {', '.join(flex)}")

    write_bytes_atomic(out, flatbuffer)
    try:
        artifact = Artifact(path=str(out), sha256=sha256_file(out), size=size_info(out), manifest_path=str(manifest_path_for(out)))
        manifest = Manifest(
            artifact={"file": out.name, "sha256": artifact.sha256, "bytes": artifact.size.bytes, "gzip_bytes": artifact.size.gzip_bytes},
            inputs=[t.to_dict() for t in info.inputs],
            outputs=[t.to_dict() for t in info.outputs],
            preprocessing=pre.to_dict(),
            labels=list(dataset.labels) if dataset is not None and dataset.labels else None,
            source={"path": str(src_path), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
            data=(
                {"path": str(dataset.source), "sha256": dataset.sha256, "samples": len(dataset),
                 "calibration_samples": int(len(calibration)) if calibration is not None and mode.needs_data else 0}
                if dataset is not None else None
            ),
            options={"mode": mode.value, "io_type": io_type.value, "samples": samples, "seed": seed,
                     "allow_select_tf_ops": allow_select_tf_ops, "weights": granularity, "weights_reason": granularity_reason},
        )
        write_json_atomic(manifest_path_for(out), manifest.to_dict())
    except BaseException:
        Path(out).unlink(missing_ok=True)  # never leave a model without its manifest
        raise
    return QuantizeResult(
        artifact=artifact, info=info, mode=mode, io_type=io_type, conversion_seconds=seconds,
        calibration_samples=int(len(calibration)) if calibration is not None and mode.needs_data else 0,
        warnings=warnings, weights=granularity, weights_reason=granularity_reason,
    )
