"""int4 weights and per-layer mixed precision through litert-quantizer (``pip install 'edgekit[quantizer]'``).

The TFLite converter quantizes a whole model to one precision. litert-quantizer (Google's
Apache-2.0 quantizer for ``.tflite`` files, formerly ai-edge-quantizer) rewrites a **float**
``.tflite`` by recipe, op by op, which gives edgekit two modes the converter lacks:

- ``int4``: int4 weights with float activations (dynamic range: XNNPACK quantizes activations on
  the fly). ``granularity`` ``channel`` (one scale per output channel, every weight op) or
  ``block32``/``block64``/``block128`` (one float16 scale per block of input weights, on the ops that
  support it, fully connected layers today; the others keep per-channel int4). On the bundled
  Fashion-MNIST CNN: 7.4x smaller than float32 (``channel``), 6.1x (``block32``).
- ``int8-selective``: a :class:`PrecisionRules` file choosing, per layer, int8 or int16 activations
  (int8 weights, static ranges from calibration data), float (left unquantized), or int4/int8
  dynamic-range weights; the last matching rule wins, as in litert-quantizer's recipes.

Layers are matched by a regular expression on the op's output tensor name (the names
``edgekit inspect`` lists), optionally restricted to one op type (``FULLY_CONNECTED``...).

Example rule file (YAML or JSON)::

    default: int8        # every op not matched below
    io: float            # float (quantize/dequantize at the edges) or int8 I/O
    rules:
      - layer: fc1       # regex on the op's output tensor name
        precision: int16
      - layer: probs
        op: FULLY_CONNECTED
        precision: float

Example:
    >>> result = quantize_int4(float_flatbuffer)  # doctest: +SKIP
    >>> result.to_dict()["weights"]  # doctest: +SKIP
    {'INT4': 243600, 'FLOAT32': 442}
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.core.data import Calibration, rows_of
from edgekit.core.errors import ConversionError, InputError
from edgekit.core.extras import import_extra
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes

QUANTIZER_MODES = ("int4", "int8-selective")
INT4_GRANULARITIES = ("channel", "block32", "block64", "block128")
Precision = Literal["int8", "int16", "float", "int4", "dynamic"]
_ALGORITHM = "min_max_uniform_quantize"
_NO_QUANTIZE = "no_quantize"


class PrecisionRule(BaseModel):
    """One per-layer rule of an ``int8-selective`` recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: str = Field(".*", description="regular expression on the op's output tensor name")
    op: str = Field("*", description="TFLite op type (FULLY_CONNECTED, CONV_2D...) or * for every op")
    precision: Precision = Field(description="int8 / int16 activations (int8 weights), float, or int4 / dynamic (int8) weights")


class PrecisionRules(BaseModel):
    """A per-layer precision recipe: ``default`` for every op, then ``rules`` in order (last match wins)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Precision = "int8"
    io: Literal["float", "int8"] = "float"
    rules: tuple[PrecisionRule, ...] = ()

    @property
    def needs_calibration(self) -> bool:
        """True when some op gets static int8/int16 activations (ranges come from calibration data)."""
        return self.default in ("int8", "int16") or any(r.precision in ("int8", "int16") for r in self.rules)


@dataclass(frozen=True)
class LayerPrecision:
    """The precision one op ended up with."""

    op: str
    output: str
    activations: str
    weights: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "output": self.output, "activations": self.activations, "weights": self.weights}


@dataclass(frozen=True)
class QuantizerResult:
    """A model quantized by litert-quantizer, with the recipe that made it (for the manifest)."""

    flatbuffer: bytes
    mode: str
    recipe: tuple[dict[str, Any], ...]
    calibration_samples: int
    seconds: float
    info: TfliteInfo

    def layers(self) -> list[LayerPrecision]:
        """Per op: the dtype of its first input (activations) and of its constant weights."""
        out = []
        for op in self.info.operators:
            if op.subgraph != 0 or not op.inputs:
                continue
            tensors = [self.info.tensors[i] for i in op.inputs if i >= 0]
            activations = next((t.dtype for t in tensors if not t.is_constant), tensors[0].dtype if tensors else "?")
            weights = next((t.dtype for t in tensors if t.is_constant and len(t.shape) >= 2), None)
            name = self.info.tensors[op.outputs[0]].name if op.outputs else ""
            out.append(LayerPrecision(op=op.op, output=name, activations=activations, weights=weights))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "bytes": len(self.flatbuffer),
            "weights": self.info.weight_dtypes(),
            "calibration_samples": self.calibration_samples,
            "seconds": round(self.seconds, 3),
            "recipe": list(self.recipe),
            "layers": [layer.to_dict() for layer in self.layers()],
        }


def load_rules(path: str | os.PathLike[str]) -> PrecisionRules:
    """Reads a per-layer precision rule file (YAML or JSON).

    Raises:
        InputError: the file is missing, unreadable, or not a valid rule file (first problem named).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"rule file {p} does not exist", hint="give a YAML file with default, io and rules", settings=("rules",))
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"rule file {p} is not valid YAML/JSON: {str(exc).splitlines()[0]}", hint="check its syntax", settings=("rules",)) from None
    return parse_rules(data, str(p))


def parse_rules(data: Any, source: str = "rules") -> PrecisionRules:
    """Validates rules given as a dict (a parsed file or a recipe step's value)."""
    try:
        rules = PrecisionRules.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"{source}: {where}: {first['msg']}",
                         hint="precision is one of int8, int16, float, int4, dynamic; io is float or int8", settings=("rules",)) from None
    for rule in rules.rules:
        try:
            re.compile(rule.layer)
        except re.error as exc:
            raise InputError(f"{source}: layer pattern {rule.layer!r} is not a regular expression ({exc})", hint="e.g. layer: fc1", settings=("rules",)) from None
    return rules


def _op_config(precision: str, granularity: str = "CHANNELWISE") -> tuple[str, dict[str, Any]]:
    """litert-quantizer's (algorithm, op_config) for an edgekit precision."""
    if precision == "float":
        return _NO_QUANTIZE, {}
    if precision in ("int4", "dynamic"):
        weights = {"num_bits": 4 if precision == "int4" else 8, "symmetric": True, "granularity": granularity, "dtype": "INT"}
        return _ALGORITHM, {"weight_tensor_config": weights, "compute_precision": "INTEGER", "explicit_dequantize": False,
                            "skip_checks": False, "min_weight_elements": 0}
    bits = 16 if precision == "int16" else 8
    return _ALGORITHM, {
        "activation_tensor_config": {"num_bits": bits, "symmetric": bits == 16, "granularity": "TENSORWISE", "dtype": "INT"},
        "weight_tensor_config": {"num_bits": 8, "symmetric": True, "granularity": "CHANNELWISE", "dtype": "INT"},
        "compute_precision": "INTEGER", "explicit_dequantize": False, "skip_checks": False, "min_weight_elements": 0,
    }


def _entry(layer: str, op: str, precision: str, granularity: str = "CHANNELWISE") -> dict[str, Any]:
    algorithm, config = _op_config(precision, granularity)
    return {"regex": layer, "operation": op, "algorithm_key": algorithm, "op_config": config}


def int4_recipe(granularity: str = "channel") -> list[dict[str, Any]]:
    """The litert-quantizer recipe of ``quantize --mode int4``.

    ``channel``: int4 per-channel weights on every weight op. ``blockN``: the same, then blockwise
    on every op that supports it (the quantizer keeps the last *valid* config of an op, so the
    others stay per-channel).
    """
    if granularity not in INT4_GRANULARITIES:
        raise InputError(f"int4 granularity must be one of {', '.join(INT4_GRANULARITIES)}, got {granularity!r}",
                         hint="e.g. granularity channel", settings=("granularity",))
    recipe = [_entry(".*", "*", "int4")]
    if granularity != "channel":
        # a second scope ("^" also matches every name): one with the same regex and op would
        # replace the per-channel entry instead of falling back to it where blockwise is invalid
        recipe.append(_entry("^", "*", "int4", f"BLOCKWISE_{granularity[len('block'):]}"))
    return recipe


def selective_recipe(rules: PrecisionRules) -> list[dict[str, Any]]:
    """The litert-quantizer recipe of ``quantize --mode int8-selective`` with ``rules``."""
    recipe = [_entry(".*", "*", rules.default)]
    recipe += [_entry(rule.layer, rule.op.upper() if rule.op != "*" else "*", rule.precision) for rule in rules.rules]
    if rules.io == "float":  # keep float I/O: quantize/dequantize ops at the model's edges
        recipe += [_entry(".*", "INPUT", "float"), _entry(".*", "OUTPUT", "float")]
    return recipe


def quantize_int4(flatbuffer: bytes, granularity: str = "channel") -> QuantizerResult:
    """int4 weights, float activations, on a float ``.tflite`` (no calibration data needed).

    Raises:
        InputError: litert-quantizer is missing (``pip install 'edgekit[quantizer]'``), or a bad granularity.
        ConversionError: the input is not a float model, or the quantizer failed.
    """
    return run_quantizer(flatbuffer, int4_recipe(granularity), mode="int4")


def quantize_selective(flatbuffer: bytes, rules: PrecisionRules, calibration: Calibration | None = None) -> QuantizerResult:
    """Per-layer precision on a float ``.tflite``; static precisions need ``calibration`` (preprocessed samples).

    Raises:
        InputError: calibration missing where a rule needs it, or litert-quantizer missing.
        ConversionError: the quantizer failed.
    """
    if rules.needs_calibration and (calibration is None or rows_of(calibration) == 0):
        raise InputError("int8/int16 activations need calibration data to choose their ranges",
                         hint="pass data with ~100 typical inputs", settings=("data",))
    return run_quantizer(flatbuffer, selective_recipe(rules), mode="int8-selective",
                         calibration=calibration if rules.needs_calibration else None)


def run_quantizer(flatbuffer: bytes, recipe: list[dict[str, Any]], *, mode: str, calibration: Calibration | None = None) -> QuantizerResult:
    """Runs litert-quantizer with ``recipe`` on a float model (calibrating first when given data)."""
    quantizer_module = import_extra("quantizer")
    info = parse_tflite_bytes(flatbuffer)
    if any(t.dtype in ("int8", "uint8", "int16") for t in info.inputs) or "INT8" in info.weight_dtypes():
        raise ConversionError("litert-quantizer needs a float model; this one is already quantized",
                              hint="convert the Keras model with mode float32 first")
    started = time.perf_counter()
    log = io.StringIO()
    try:
        with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            quantizer = quantizer_module.Quantizer(bytearray(flatbuffer), recipe)
            calibration_result = None
            if calibration is not None:
                calibration_result = quantizer.calibrate(_calibration_data(flatbuffer, calibration), num_threads=min(4, os.cpu_count() or 1))
            result = quantizer.quantize(calibration_result, enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"litert-quantizer failed ({mode}): {first[:300]}", hint="check the rules' layer patterns and ops") from exc
    out = bytes(result.quantized_model)
    return QuantizerResult(flatbuffer=out, mode=mode, recipe=tuple(recipe), seconds=time.perf_counter() - started,
                           calibration_samples=rows_of(calibration) if calibration is not None else 0,
                           info=parse_tflite_bytes(out, f"<{mode}>"))


def _calibration_data(flatbuffer: bytes, samples: Calibration) -> dict[str, list[dict[str, np.ndarray]]]:
    """``{signature: [{input name: one sample}, ...]}``, the quantizer's calibration format."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=flatbuffer).get_signature_list()
    if not signatures:
        raise ConversionError("the model has no signature, which litert-quantizer needs for calibration",
                              hint="convert it with edgekit (its models carry serving_default)")
    key, spec = next(iter(signatures.items()))
    if len(spec["inputs"]) != 1 or isinstance(samples, tuple):
        raise InputError(f"litert-quantizer calibration feeds one input; the model's signature has {len(spec['inputs'])}",
                         hint="use --mode int8 for a model with several inputs")
    name = spec["inputs"][0]
    batch = np.asarray(samples)
    batch = batch.astype(np.float32) if batch.dtype.kind == "f" else batch  # token ids keep their integer dtype
    return {key: [{name: batch[i: i + 1]} for i in range(batch.shape[0])]}
