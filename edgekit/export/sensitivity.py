"""Per-layer int8 quantization error, and int8 models with chosen layers kept in float.

:class:`MixedInt8` calibrates a model once with TensorFlow's ``QuantizationDebugger`` and then

- measures every quantized node's error against the float op computed from the same (quantized)
  inputs (the debugger's NumericVerify instrumentation), so each number is the error that layer
  adds, not the error accumulated before it: :meth:`MixedInt8.layer_errors`;
- re-quantizes the calibrated model with any set of Keras layers kept in float32 (the debugger's
  ``denylisted_nodes``), without calibrating again: :meth:`MixedInt8.quantize`.

Two numbers per node. ``sqnr_db`` is the signal-to-noise ratio of the whole output tensor. It
misses the classic failure of per-tensor activation scales: one channel with a wide range sets
the scale and the other channels drown in rounding noise while the tensor's SQNR, dominated by
the big channel, looks fine. ``channel_sqnr_db`` is therefore the SQNR of each output channel
(last axis) over all samples, averaged over the channels that carry signal; layers are ranked by
it together with the worst channel's SQNR (lowest first).

Example:
    >>> mixed = MixedInt8(loaded, calibration)  # doctest: +SKIP
    >>> worst = mixed.ranked_layers()[:2]  # doctest: +SKIP
    >>> flatbuffer = mixed.quantize(float_layers=worst)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import rows_of
from edgekit.core.datatypes import QuantMode
from edgekit.core.errors import ConversionError, EdgekitError, InputError
from edgekit.core.models import (
    LoadedModel,
    keras_layer_names,
    load_model,  # noqa: F401 - re-exported for callers
)
from edgekit.core.tfshim import CalibratedInt8, calibrate_with_debugger, interpreter_ops, native_output_captured, requantize, tensorflow
from edgekit.export.convert import conversion_error, make_converter
from edgekit.export.converter_worker import error_details, isolation_enabled, model_for_worker, run_in_worker
from edgekit.export.graph import guess_layer

# ops whose output keeps its input's scale: their error is the producer's, so they are not ranked
_PASS_THROUGH_OPS = {"RESHAPE", "MAX_POOL_2D", "SQUEEZE", "TRANSPOSE", "CONCATENATION", "PAD", "STRIDED_SLICE", "GATHER",
                     "SPLIT", "SLICE", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class LayerError:
    """The int8 error one node adds (its op run in int8 against the float op on the same inputs)."""

    node: str  # the node's output tensor name (what denylisted_nodes takes)
    op: str
    layer: str | None  # the Keras layer it came from
    elements: int
    channels: int
    scale: float
    zero_point: int
    sqnr_db: float
    channel_sqnr_db: float
    worst_channel_sqnr_db: float
    rmse_over_scale: float
    max_abs_error: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 6) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
        return out


def score(error: LayerError) -> float:
    """Sensitivity score of a node in dB (lower = more sensitive); see :meth:`MixedInt8.ranked_layers`."""
    return (error.channel_sqnr_db + error.worst_channel_sqnr_db) / 2.0




def _layer_of(node: str, layers: dict[str, str]) -> str | None:
    found = guess_layer(node, layers) if layers else guess_layer(node)
    return found.split(" (")[0] if found else None


def _node_name(verify_output: str) -> str:
    """The quantized node's name from its NumericVerify output (``NumericVerify/{name}{digit}:{index}``), as the debugger reads it."""
    name = verify_output.rsplit(":", 1)[0]
    name = name.split("/", 1)[1] if name.startswith("NumericVerify/") else name
    return name[:-1] if name and name[-1].isdigit() else name


def _db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return math.inf if signal > 0 else 0.0
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


class MixedInt8:
    """A model calibrated once for int8, re-quantizable with any layers kept in float.

    Args:
        model: a loaded Keras model (SavedModels are not supported: the layer names come from Keras).
        calibration: preprocessed inputs for calibration (and for the error statistics).
        per_channel: per-channel weight scales (False: one scale per tensor, a smaller file).
        stats_samples: how many calibration samples the per-layer statistics run on.

    Raises:
        InputError: a SavedModel, or no calibration data.
        ConversionError: the converter failed to calibrate the model.
    """

    def __init__(self, model: LoadedModel, calibration: np.ndarray, *, per_channel: bool = True, stats_samples: int = 100) -> None:
        if model.keras_model is None:
            raise InputError(f"{model.path} is a SavedModel; mixed int8 and per-layer errors need the Keras model", hint="pass the .keras file")
        if calibration is None or rows_of(calibration) == 0:
            raise InputError("mixed int8 needs calibration data", hint="pass --data")
        specs = model.signature.inputs
        if len(specs) != 1 or specs[0].integer:
            raise InputError(f"the per-layer analysis feeds one float input; {model.path} has "
                             + (f"{len(specs)} inputs" if len(specs) != 1 else f"a {specs[0].dtype} input ({specs[0].name})"),
                             hint="quantize with --mode int8 and check it with validate --reference")
        self.model = model
        self.per_channel = per_channel
        self.layers = keras_layer_names(model.keras_model)
        samples = np.asarray(calibration, dtype=np.float32)
        self._stats_x = samples[: max(1, stats_samples)]
        self._errors: list[LayerError] | None = None
        self._in_worker = False
        if isolation_enabled():  # calibration, the debugger's instrumented run and re-quantization: native code, in the worker
            with tempfile.TemporaryDirectory(prefix="edgekit-sensitivity-") as tmp:
                source = model_for_worker(model, Path(tmp))
                done = None if source is None else run_in_worker(
                    worker_calibrate, {"model": source, "unsafe": bool(getattr(model, "unsafe", False)), "calibration": samples,
                                       "stats_x": self._stats_x, "per_channel": per_channel, "layers": self.layers},
                    stage="the per-layer sensitivity analysis (int8 calibration)", name=str(model.path))
            if done is not None and done[0] == "ok":
                self._models, self._errors = done[1]
                self._in_worker = True
                return
        self._models = _calibrate(model, samples, self._stats_x, per_channel)

    # -- statistics ------------------------------------------------------------------------------

    def layer_errors(self) -> list[LayerError]:
        """The error of every quantized node, in graph order (computed once, then cached)."""
        if self._errors is None:
            self._errors = self._compute_errors()
        return self._errors

    def _compute_errors(self) -> list[LayerError]:
        return compute_layer_errors(self._models.debug, self._stats_x, self.layers)

    def ranked_layers(self) -> list[str]:
        """Keras layers from the most to the least sensitive.

        A node's score is the mean of its mean per-channel SQNR (many channels drowned by a wide
        scale) and its worst channel's SQNR (one channel destroyed); a layer takes the lowest score
        of its nodes; lowest first.
        """
        worst: dict[str, float] = {}
        for e in self.layer_errors():
            if e.layer is None or e.op in _PASS_THROUGH_OPS:
                continue
            worst[e.layer] = min(worst.get(e.layer, math.inf), score(e))
        return sorted(worst, key=lambda name: worst[name])

    # -- quantization ----------------------------------------------------------------------------

    def nodes_of(self, float_layers: list[str] | tuple[str, ...]) -> list[str]:
        """The node (output tensor) names belonging to the Keras layers matched by ``float_layers`` (regex, full match).

        Raises:
            InputError: a pattern matches no layer of the model.
        """
        names = sorted(self.layers)
        chosen: set[str] = set()
        for pattern in float_layers:
            regex = re.compile(pattern)
            hit = [n for n in names if regex.fullmatch(n)]
            if not hit:
                close = difflib.get_close_matches(pattern, names, n=1)
                raise InputError(
                    f"float_layers entry '{pattern}' matches no layer of the model" + (f"; did you mean '{close[0]}'?" if close else ""),
                    hint=f"layers: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}",
                )
            chosen.update(hit)
        nodes = [e.node for e in self.layer_errors() if e.layer in chosen]
        return nodes

    def quantize(self, float_layers: list[str] | tuple[str, ...] = ()) -> bytes:
        """The int8 model with ``float_layers`` (Keras layer names or regexes) computed in float32; float I/O."""
        nodes = self.nodes_of(list(float_layers)) if float_layers else []
        job = {"calibrated": self._models.calibrated, "per_channel": self.per_channel, "nodes": nodes, "float_layers": list(float_layers)}
        if self._in_worker and isolation_enabled():
            done = run_in_worker(worker_requantize, job, stage="the int8 re-quantization" + (
                f" with float layers {', '.join(float_layers)}" if float_layers else ""), name=str(self.model.path))
            if done is not None:
                return bytes(done[1])
        return _requantize(job)


def _calibrate(model: LoadedModel, samples: np.ndarray, stats_x: np.ndarray, per_channel: bool) -> CalibratedInt8:
    """Calibrates through the QuantizationDebugger (int8 with float kernels allowed, so the
    re-quantization can keep chosen layers in float)."""

    def stats_dataset():
        for i in range(stats_x.shape[0]):
            yield [stats_x[i: i + 1]]

    converter = make_converter(model, QuantMode.INT8, calibration=samples, per_channel=per_channel, float_fallback=True)
    log: list[str] = []
    try:
        with native_output_captured(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return calibrate_with_debugger(converter, stats_dataset)
    except Exception as exc:
        raise conversion_error(exc, log, False) from exc


def _requantize(job: dict[str, Any]) -> bytes:
    log: list[str] = []
    try:
        with native_output_captured(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return requantize(job["calibrated"], per_channel=job["per_channel"], denylisted_nodes=job["nodes"] or None)
    except Exception as exc:
        raise ConversionError(f"re-quantizing with float layers {', '.join(job['float_layers'])} failed: {str(exc).splitlines()[0][:200]}",
                              hint="rerun with -v to see the converter log") from exc


def worker_calibrate(job: dict[str, Any]) -> tuple[str, Any]:
    """Runs in the converter's worker: calibrates and measures every node's error; ``(models, errors)``."""
    os.environ["EDGEKIT_CONVERTER"] = "inprocess"
    try:
        try:
            loaded = load_model(job["model"], unsafe=job["unsafe"])
        except EdgekitError as exc:
            return "reload", exc.one_line()
        models = _calibrate(loaded, job["calibration"], job["stats_x"], job["per_channel"])
        return "ok", (models, compute_layer_errors(models.debug, job["stats_x"], job["layers"]))
    except EdgekitError as exc:
        return "error", error_details(exc)


def worker_requantize(job: dict[str, Any]) -> tuple[str, Any]:
    """Runs in the converter's worker: the calibrated model re-quantized with ``nodes`` kept in float."""
    try:
        return "ok", _requantize(job)
    except EdgekitError as exc:
        return "error", error_details(exc)


def compute_layer_errors(debug_model: bytes, stats_x: np.ndarray, layers: dict[str, str]) -> list[LayerError]:
    """Every quantized node's error, from the debugger's instrumented model run on ``stats_x``."""
    tf = tensorflow()
    with native_output_captured(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = tf.lite.Interpreter(
            model_content=debug_model, experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
    details = {t["index"]: t for t in interp.get_tensor_details()}
    verify_ops = []
    ops = interpreter_ops(interp)
    for op in ops:
        if op["op_name"].upper().replace("_", "") != "NUMERICVERIFY":
            continue
        q_idx, f_idx = op["inputs"][:2]
        producer = next((o for o in ops if q_idx in o["outputs"] and o["op_name"] != "DELEGATE"), None)
        verify_ops.append((q_idx, f_idx, producer["op_name"] if producer else "?", _node_name(details[op["outputs"][0]]["name"])))
    input_index = interp.get_input_details()[0]["index"]
    sums: dict[int, dict[str, Any]] = {}
    for i in range(stats_x.shape[0]):
        interp.set_tensor(input_index, stats_x[i: i + 1])
        interp.invoke()
        for q_idx, f_idx, _, _ in verify_ops:
            detail = details[q_idx]
            scale, zero = detail["quantization"]
            quant = interp.get_tensor(q_idx).astype(np.float64)
            deq = (quant - zero) * scale if scale else quant
            ref = interp.get_tensor(f_idx).astype(np.float64)
            channels = ref.shape[-1] if ref.ndim else 1
            ref2 = ref.reshape(-1, channels)
            err2 = (deq.reshape(-1, channels) - ref2)
            acc = sums.setdefault(q_idx, {"signal": np.zeros(channels), "noise": np.zeros(channels), "max": 0.0, "n": 0})
            acc["signal"] += (ref2 ** 2).sum(axis=0)
            acc["noise"] += (err2 ** 2).sum(axis=0)
            acc["max"] = max(acc["max"], float(np.abs(err2).max(initial=0.0)))
            acc["n"] += err2.size
    out = []
    for q_idx, _f_idx, op_name, node in verify_ops:
        if q_idx not in sums:
            continue
        acc = sums[q_idx]
        detail = details[q_idx]
        scale, zero = detail["quantization"]
        signal, noise = acc["signal"], acc["noise"]
        carrying = signal > signal.sum() * 1e-9
        per_channel_db = [_db(s, n) for s, n in zip(signal[carrying], noise[carrying])]
        finite = [min(v, 120.0) for v in per_channel_db]
        mse = float(noise.sum() / max(acc["n"], 1))
        out.append(LayerError(
            node=node, op=op_name, layer=_layer_of(node, layers), elements=int(np.prod(detail["shape"])),
            channels=int(signal.size), scale=float(scale), zero_point=int(zero),
            sqnr_db=_db(float(signal.sum()), float(noise.sum())),
            channel_sqnr_db=float(np.mean(finite)) if finite else math.inf,
            worst_channel_sqnr_db=float(np.min(finite)) if finite else math.inf,
            rmse_over_scale=math.sqrt(mse) / scale if scale else 0.0,
            max_abs_error=acc["max"],
        ))
    return out
