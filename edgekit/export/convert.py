"""Conversion through the TFLite converter: the one place edgekit sets a converter up.

Modes: ``float32`` (plain conversion), ``float16`` (float16 weights), ``dynamic`` (int8 weights,
float activations), ``int8`` (full integer with a representative dataset) and ``int16x8`` (int16
activations, int8 weights). Only builtin ops are allowed unless ``allow_select_tf_ops`` is set.

- :func:`convert_model` with a :class:`Conversion` is what commands, passes and the bench call;
- :func:`convert_qat` converts a fake-quantized (QAT) Keras model to full int8;
- :func:`make_converter` / :func:`run_converter` are the two halves under both (also used by the
  per-layer error analysis, :mod:`edgekit.export.sensitivity`).

Example:
    >>> converted = convert_model(keras_model, Conversion(mode="int8"), calibration=x[:100])  # doctest: +SKIP
    >>> len(converted.flatbuffer), converted.weights  # doctest: +SKIP
    (230512, 'per-channel')
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import Calibration, rows_of
from edgekit.core.datatypes import InputSpec, IOType, QuantMode
from edgekit.core.errors import ConversionError, EdgekitError, InputError
from edgekit.core.keras_graph import codebook_per_layer
from edgekit.core.keras_quantized import check_not_keras_quantized
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tfshim import disable_per_channel, keras, native_output_captured, tensorflow
from edgekit.export.converter_worker import convert_in_worker, error_details, isolation_enabled, run_in_worker

SELECT_OPS_WARNING = (
    "SELECT_TF_OPS is on: ops outside the TFLite builtin set run through the Flex delegate, "
    "which GPU/NNAPI/NPU delegates cannot run and which adds several MB to the app"
)

WEIGHT_CHOICES = ("auto", "per-channel", "per-tensor")
INT8_WEIGHT_MODES = (QuantMode.DYNAMIC, QuantMode.INT8, QuantMode.INT16X8)
QAT_IO_TYPES = (IOType.FLOAT, IOType.INT8, IOType.UINT8)

ConverterHook = Callable[[Any], None]


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


# ----------------------------------------------------------------------------------------------
# The converter, set up once
# ----------------------------------------------------------------------------------------------


def as_loaded(model: Any) -> LoadedModel:
    """``model`` as a :class:`LoadedModel` (an in-memory Keras model is wrapped, a LoadedModel kept)."""
    if isinstance(model, LoadedModel):
        return model
    return LoadedModel(path="<memory>", format="keras", sha256="", keras_model=model, input_shape=tuple(model.inputs[0].shape),
                       input_dtype=str(model.inputs[0].dtype), output_names=list(getattr(model, "output_names", []) or []),
                       output_shapes=[tuple(o.shape) for o in model.outputs],
                       inputs=tuple(InputSpec(str(t.name), tuple(t.shape), str(t.dtype)) for t in model.inputs))


def _as_input_dtype(samples: np.ndarray, input_dtype: str, name: str) -> np.ndarray:
    dtype = np.dtype(input_dtype) if np.dtype(input_dtype).kind in "iu" else np.dtype(np.float32)
    samples = np.asarray(samples)
    if dtype.kind in "iu" and samples.dtype.kind == "f" and not np.all(samples == np.round(samples)):
        raise InputError(f"the model's input {name} is {dtype.name}, but the calibration data has fractional values",
                         hint="give integer ids (and no --scale/--mean/--std) for integer inputs")
    return samples.astype(dtype)


def _representative_dataset(calibration: Any, loaded: LoadedModel) -> Callable[[], Iterator[Any]]:
    """Yields one sample at a time in each input's dtype (int32 token ids stay int32).

    One input: ``[sample]``. Several (``calibration`` a tuple in the model's input order): a dict
    keyed by the model's input names, which the converter matches to its signature by name (its
    own input order is alphabetical, not the model's).
    """
    specs = loaded.signature.inputs
    arrays = list(calibration) if isinstance(calibration, (tuple, list)) else [calibration]
    if len(arrays) != len(specs):
        raise InputError(f"the calibration data has {len(arrays)} input array(s), the model {len(specs)} inputs "
                         f"({', '.join(s.name for s in specs)})", hint="give one array per model input, named after the input")
    samples = [_as_input_dtype(a, spec.dtype, spec.name) for a, spec in zip(arrays, specs, strict=True)]
    names = [spec.name for spec in specs]

    def representative_dataset() -> Iterator[Any]:
        for i in range(samples[0].shape[0]):
            if len(samples) == 1:
                yield [samples[0][i: i + 1]]
            else:
                yield {n: a[i: i + 1] for n, a in zip(names, samples, strict=True)}

    return representative_dataset


def make_converter(
    model: Any,
    mode: QuantMode | str,
    *,
    io_type: IOType | str = IOType.FLOAT,
    calibration: Calibration | None = None,
    allow_select_tf_ops: bool = False,
    per_channel: bool = True,
    float_fallback: bool = False,
    fake_quant: bool = False,
) -> Any:
    """A ``tf.lite.TFLiteConverter`` set up for ``mode``: every converter edgekit runs comes from here.

    Args:
        model: a Keras model or a :class:`LoadedModel` (Keras or SavedModel).
        mode: the quantization mode (ignored with ``fake_quant``).
        io_type: dtype of the model's inputs and outputs (integer types for int8/int16x8/QAT only).
        calibration: preprocessed inputs for the representative dataset (int8, int16x8).
        allow_select_tf_ops: allow TensorFlow ops through the Flex delegate.
        per_channel: int8 weights with one scale per output channel (False: one per tensor).
        float_fallback: int8 may leave ops the int8 kernels lack in float (the per-layer
            analysis re-quantizes with chosen layers kept in float).
        fake_quant: the model carries its own ranges (QAT fake-quant ops): full int8 without
            a representative dataset.

    Raises:
        ConversionError: the model cannot be prepared for conversion.
        InputError: int8/int16x8 without calibration data.
    """
    tf = tensorflow()
    mode = QuantMode(mode)
    io_type = IOType(io_type)
    loaded = as_loaded(model)
    try:
        if loaded.keras_model is not None:
            prepared = loaded.keras_model if allow_select_tf_ops else unrolled(loaded.keras_model)[0]
            converter = tf.lite.TFLiteConverter.from_keras_model(with_static_batch(prepared))
        else:
            converter = tf.lite.TFLiteConverter.from_saved_model(loaded.saved_model_dir)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"the model cannot be prepared for conversion: {first[:300]}", hint="rerun with -v for details") from exc
    io_dtype = {IOType.FLOAT: tf.float32, IOType.INT8: tf.int8, IOType.UINT8: tf.uint8, IOType.INT16: tf.int16}[io_type]
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if fake_quant:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = io_dtype
        converter.inference_output_type = io_dtype
    else:
        if mode is not QuantMode.FLOAT32:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode is QuantMode.FLOAT16:
            converter.target_spec.supported_types = [tf.float16]
        if mode.needs_data:
            if calibration is None or rows_of(calibration) == 0:
                raise InputError(f"--mode {mode.value} needs calibration data", hint="pass --data")
            converter.representative_dataset = _representative_dataset(calibration, loaded)
            if mode is QuantMode.INT8:
                ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, *([tf.lite.OpsSet.TFLITE_BUILTINS] if float_fallback else [])]
            else:
                ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            if all(np.dtype(i.dtype).kind == "f" for i in loaded.signature.inputs):  # integer inputs (token ids) keep their dtype
                converter.inference_input_type = io_dtype
            converter.inference_output_type = io_dtype
        if not per_channel and mode in INT8_WEIGHT_MODES:
            disable_per_channel(converter)
    if allow_select_tf_ops:
        ops = [*ops, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.target_spec.supported_ops = ops
    return converter


def run_converter(converter: Any, *, allow_select_tf_ops: bool = False, ignore_warnings: bool = False) -> bytes:
    """Runs ``converter.convert()`` quietly; a failure becomes a one-line :class:`ConversionError`.

    ``ignore_warnings`` silences the converter's Python warnings (QAT: "Statistics for quantized
    inputs were expected", the fake-quant ops provide them).
    """
    log: list[str] = []
    try:
        # Keras' export prints "Saved artifact at ..." to stdout and the converter logs to fd 2
        with native_output_captured(log), warnings.catch_warnings():
            if ignore_warnings:
                warnings.simplefilter("ignore", UserWarning)
            flatbuffer = converter.convert()
    except Exception as exc:
        raise conversion_error(exc, log, allow_select_tf_ops) from exc
    return bytes(flatbuffer)


def conversion_error(exc: Exception, log: list[str], allow_select_tf_ops: bool) -> ConversionError:
    """The :class:`ConversionError` for a converter failure: its first telling line and a hint."""
    return ConversionError(_conversion_message(exc, log, allow_select_tf_ops), hint=_conversion_hint(exc, log, allow_select_tf_ops))


def convert(
    model: LoadedModel,
    mode: QuantMode,
    *,
    calibration: Calibration | None = None,
    io_type: IOType = IOType.FLOAT,
    allow_select_tf_ops: bool = False,
    converter_hook: ConverterHook | None = None,
    per_channel: bool = True,
) -> bytes:
    """Converts a loaded model to TFLite flatbuffer bytes (prefer :func:`convert_model`).

    Args:
        model: from :func:`edgekit.core.models.load_model` (or a Keras model).
        mode: the quantization mode.
        calibration: preprocessed inputs for the representative dataset (int8, int16x8).
        io_type: dtype of the model's inputs and outputs (integer types only for int8/int16x8).
        allow_select_tf_ops: allow TensorFlow ops through the Flex delegate.
        converter_hook: optional callable receiving the converter before ``convert()``, for
            settings edgekit does not expose.
        per_channel: int8 weights with one scale per output channel (the converter's default);
            False: one scale per tensor (see :func:`choose_weights`).

    Raises:
        ConversionError: with the converter's own first error line.
    """
    if converter_hook is None and isolation_enabled():
        done = convert_in_worker(worker_convert, model, mode, calibration=calibration, io_type=io_type,
                                 allow_select_tf_ops=allow_select_tf_ops, per_channel=per_channel)
        if done is not None:
            return done
    converter = make_converter(model, mode, io_type=io_type, calibration=calibration, allow_select_tf_ops=allow_select_tf_ops,
                               per_channel=per_channel)
    if converter_hook is not None:
        converter_hook(converter)
    return run_converter(converter, allow_select_tf_ops=allow_select_tf_ops)


def worker_convert(job: dict[str, Any]) -> tuple[str, Any]:
    """Runs in the converter's worker process (:mod:`edgekit.export.converter_worker`): loads the model
    file, converts it in process; ``("ok", bytes)``, ``("reload", why)`` or ``("error", details)``."""
    os.environ["EDGEKIT_CONVERTER"] = "inprocess"  # the worker itself converts in process
    try:
        try:
            loaded = load_model(job["model"], unsafe=job["unsafe"])
        except EdgekitError as exc:
            return "reload", exc.one_line()
        flatbuffer = convert(loaded, QuantMode(job["mode"]), calibration=job["calibration"], io_type=IOType(job["io_type"]),
                             allow_select_tf_ops=job["allow_select_tf_ops"], per_channel=job["per_channel"])
        return "ok", flatbuffer
    except EdgekitError as exc:
        return "error", error_details(exc)


def convert_qat(keras_model: Any, io_type: IOType | str = IOType.FLOAT) -> bytes:
    """Converts a trained fake-quantized (QAT) Keras model to full-int8 TFLite bytes.

    The ranges come from the model's fake-quant ops (no representative dataset); ops that only
    unquantized layers produce stay float.

    Raises:
        InputError: an I/O type other than float, int8 or uint8.
        ConversionError: with the converter's first error line.
    """
    io_type = IOType(io_type)
    if io_type not in QAT_IO_TYPES:
        raise InputError(f"io_type {io_type.value} is not available for full-int8 QAT", hint="use float, int8 or uint8",
                         settings=("io_type",))
    if isolation_enabled():
        with tempfile.TemporaryDirectory(prefix="edgekit-qat-export-") as tmp:
            folder = _saved_model_for_worker(keras_model, Path(tmp) / "saved_model")
            if folder is not None:
                done = run_in_worker(worker_convert_qat, {"model": str(folder), "io_type": io_type.value},
                                     stage="the QAT export to int8", name=f"the QAT model of {keras_model.name}")
                if done is not None and done[0] == "ok":
                    return bytes(done[1])
    converter = make_converter(keras_model, QuantMode.INT8, io_type=io_type, fake_quant=True)
    return run_converter(converter, ignore_warnings=True)


def _saved_model_for_worker(keras_model: Any, folder: Path) -> Path | None:
    """The model as the SavedModel ``TFLiteConverter.from_keras_model`` itself exports for a Keras 3 model
    (one ``serve`` endpoint calling the model with ``training=False``), prepared as :func:`make_converter`
    prepares it (recurrent layers unrolled, static batch); None when it cannot be exported (convert in process).

    Layers that are never saved as ``.keras`` (the QAT fake-quant layers) travel to the converter's
    worker this way: a SavedModel is a traced graph with its variables, no Python classes.
    """
    k = keras()
    tf = tensorflow()
    try:
        prepared = with_static_batch(unrolled(keras_model)[0])
        archive = k.export.ExportArchive()
        archive.track(prepared)
        signature = [tf.TensorSpec(t.shape, dtype=t.dtype, name=t.name) for t in prepared.inputs]
        archive.add_endpoint("serve", functools.partial(prepared.__call__, training=False),
                             [signature] if len(signature) > 1 else signature)
        with native_output_captured(stdout=False), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            archive.write_out(str(folder), verbose=False)
    except Exception:  # noqa: BLE001 - a model that cannot be exported converts in process, as before
        return None
    return folder


def worker_convert_qat(job: dict[str, Any]) -> tuple[str, Any]:
    """Runs in the converter's worker: converts the exported QAT SavedModel to full int8 from its fake-quant ranges."""
    os.environ["EDGEKIT_CONVERTER"] = "inprocess"
    try:
        loaded = load_model(job["model"])
        converter = make_converter(loaded, QuantMode.INT8, io_type=IOType(job["io_type"]), fake_quant=True)
        return "ok", run_converter(converter, ignore_warnings=True)
    except EdgekitError as exc:
        return "error", error_details(exc)


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


def convert_model(model: Any, conversion: Conversion, *, calibration: Calibration | None = None,
                  converter_hook: ConverterHook | None = None) -> Converted:
    """Converts a Keras model (or a :class:`~edgekit.core.models.LoadedModel`) as ``conversion`` says.

    The one place every command converts through, so the same model, calibration sample and
    conversion give the same bytes whichever command asks. ``calibration`` is used only by the
    modes that need it (int8, int16x8).
    """
    loaded = as_loaded(model)
    if loaded.keras_model is not None:  # before the converter: it cannot use layers Keras quantized itself
        check_not_keras_quantized(loaded.keras_model, str(loaded.path))
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


RECURRENT_LAYERS = ("LSTM", "GRU", "SimpleRNN")


def _recurrent_layers(keras_model: Any) -> list[Any]:
    found = []
    for layer in getattr(keras_model, "layers", []):
        inner = getattr(layer, "forward_layer", None)  # Bidirectional
        if type(layer).__name__ in RECURRENT_LAYERS or (inner is not None and type(inner).__name__ in RECURRENT_LAYERS):
            found.append(layer)
    return found


def unrolled(keras_model: Any) -> tuple[Any, list[str]]:
    """The model with its LSTM/GRU/SimpleRNN layers (also inside Bidirectional) unrolled over their
    static number of steps, weights copied; unchanged if it has none (or they are unrolled already).

    Keras 3 recurrent layers convert to TensorList ops the TFLite builtins lack (they need
    SELECT_TF_OPS even in float, and int8 calibration of them can crash the converter); unrolled,
    each step becomes FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD builtins that quantize to int8. The
    numbers are the same (the same weights, the same steps); the file grows with the step count.
    Returns the model and one note per unrolled layer.
    """
    layers = [la for la in _recurrent_layers(keras_model) if not getattr(getattr(la, "forward_layer", la), "unroll", True)]
    if not layers:
        return keras_model, []
    k = keras()
    names = {la.name for la in layers}
    notes: list[str] = []

    def clone(layer: Any) -> Any:
        if layer.name not in names:
            return layer.__class__.from_config(layer.get_config())
        config = layer.get_config()
        if "layer" in config and isinstance(config["layer"], dict):  # Bidirectional
            config["layer"]["config"]["unroll"] = True
            if isinstance(config.get("backward_layer"), dict):
                config["backward_layer"]["config"]["unroll"] = True
        else:
            config["unroll"] = True
        return layer.__class__.from_config(config)

    try:
        model = k.models.clone_model(keras_model, clone_function=clone)
        model.set_weights(keras_model.get_weights())
    except Exception as exc:  # noqa: BLE001 - any layer that cannot be cloned: convert as it is and say why
        return keras_model, [f"recurrent layers could not be unrolled ({type(exc).__name__}: {str(exc)[:120]}); converting as they are"]
    for layer in layers:
        steps = layer.input.shape[1] if hasattr(layer, "input") and len(layer.input.shape) > 1 else None
        if steps is None:
            return keras_model, [f"{type(layer).__name__} '{layer.name}' has no fixed number of steps to unroll; it needs "
                                 "SELECT_TF_OPS (give the model a fixed sequence length)"]
        notes.append(f"{type(layer).__name__} '{layer.name}' unrolled over its {steps} steps for builtin ops (same weights, same results)")
    return model, notes


def recurrent_notes(keras_model: Any) -> list[str]:
    """What :func:`unrolled` does to ``keras_model`` (one note per recurrent layer), without converting."""
    layers = [la for la in _recurrent_layers(keras_model) if not getattr(getattr(la, "forward_layer", la), "unroll", True)]
    notes = []
    for layer in layers:
        steps = layer.input.shape[1] if len(layer.input.shape) > 1 else None
        notes.append(f"{type(layer).__name__} '{layer.name}' unrolled over its {steps} steps for builtin ops (same weights, same results)"
                     if steps is not None else f"{type(layer).__name__} '{layer.name}' has no fixed number of steps: it needs SELECT_TF_OPS")
    return notes


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
