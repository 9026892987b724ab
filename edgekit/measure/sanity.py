"""Warnings for numbers that look fine but mean nothing: preprocessing applied twice or missing,
and a reference model that itself scores at chance level.

A validation run compares the range of each float input *after* preprocessing with what the
model expects: the range the calibration data had (recorded in the manifest at conversion), a
``Rescaling``/``Normalization`` layer at the model's input, or the file's own input quantization.
A range off by a large factor means the preprocessing is missing (raw 0..255 pixels for a model
calibrated on 0..1) or applied twice (0..1/255). A reference that scores at chance level on
labelled data means a drop of 0 points against it proves nothing.

Example:
    >>> input_range_warnings(ds, signature, {"image": (0.0, 1.0, "the calibration data")})  # doctest: +SKIP
    ["input 'image' reaches 255 after preprocessing, but the calibration data went up to 1: ..."]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.core.datatypes import AccuracyResult, Dataset, Signature
from edgekit.core.io_order import input_names
from edgekit.core.tasks import OutputTask, Task

RANGE_FACTOR = 8.0  # how far the data's magnitude may stray from the expected one before a warning


def _first_layers(keras_model: Any) -> list[Any]:
    layers = list(getattr(keras_model, "layers", []) or [])
    return [layer for layer in layers if type(layer).__name__ not in ("InputLayer",)][:4]


def expected_ranges(info: Any, recorded: dict[str, Any], ref_model: Any = None) -> dict[str, tuple[float, float, str]]:
    """Per input name: (low, high, where the expectation comes from)."""
    found: dict[str, tuple[float, float, str]] = {}
    for entry in recorded.get("inputs") or []:
        rng = entry.get("range") if isinstance(entry, dict) else None
        if isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng):
            found[str(entry.get("name"))] = (float(rng[0]), float(rng[1]), "the calibration data (recorded at conversion)")
    keras_model = getattr(ref_model, "keras_model", None)
    if keras_model is not None and len(getattr(keras_model, "inputs", []) or []) == 1:
        name = str(keras_model.inputs[0].name)
        for layer in _first_layers(keras_model):
            cls = type(layer).__name__
            if cls == "Rescaling":
                scale = float(np.max(np.abs(np.asarray(layer.scale, dtype=np.float64)))) or 1.0
                offset = float(np.max(np.abs(np.asarray(layer.offset, dtype=np.float64))))
                high = (1.0 + offset) / scale
                found[name] = (0.0, high, f"the model's own Rescaling layer '{layer.name}' (scale {scale:.4g}: it expects raw values "
                                          f"up to about {high:.4g})")
                break
            if cls == "Normalization" and getattr(layer, "mean", None) is not None:
                mean = np.asarray(layer.mean, dtype=np.float64)
                std = np.sqrt(np.asarray(layer.variance, dtype=np.float64))
                found[name] = (float((mean - 3 * std).min()), float((mean + 3 * std).max()),
                               f"the model's own Normalization layer '{layer.name}' (it expects raw values around {float(mean.mean()):.4g})")
                break
    if info is not None:
        for name, tensor in zip(input_names(info), info.inputs, strict=False):
            q = tensor.quantization
            if name in found or q is None or not q.scales or tensor.dtype not in ("int8", "uint8", "int16"):
                continue
            lo_q, hi_q = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}[tensor.dtype]
            s, z = float(q.scales[0]), int(q.zero_points[0]) if q.zero_points else 0
            found[name] = ((lo_q - z) * s, (hi_q - z) * s, "the artifact's input quantization")
    return found


def input_range_warnings(dataset: Dataset, signature: Signature, expected: dict[str, tuple[float, float, str]]) -> list[str]:
    """A warning per float input whose preprocessed magnitude is far from the expected one."""
    out: list[str] = []
    names = dataset.input_names or signature.input_names or ("x",)
    for name, arr in zip(names, dataset.inputs, strict=False):
        if arr.dtype.kind != "f" or not arr.size:
            continue
        want = expected.get(name) if len(names) > 1 else (expected.get(name) or (next(iter(expected.values())) if expected else None))
        if want is None:
            continue
        lo, hi, where = want
        got = float(np.max(np.abs(arr)))
        ref = max(abs(lo), abs(hi))
        if ref <= 0 or got <= 0:
            continue
        label = f"input '{name}'" if len(names) > 1 else "the input"
        if got > ref * RANGE_FACTOR:
            out.append(f"{label} reaches {got:.4g} after preprocessing, but {where} went up to {ref:.4g}: the preprocessing looks "
                       f"missing (raw values given where scaled ones are expected; e.g. pass --scale {_suggest(ref, got)})")
        elif got * RANGE_FACTOR < ref:
            out.append(f"{label} reaches only {got:.4g} after preprocessing, but {where} went up to {ref:.4g}: the preprocessing looks "
                       f"applied twice (data already scaled and scaled again by --scale, or scaled outside a model that rescales itself)")
    return out


def _suggest(ref: float, got: float) -> str:
    if got > 200 and ref <= 1.01:
        return "1/255"
    if got > 200 and ref <= 2.01:
        return "1/127.5 --mean 1"
    return f"{ref / got:.4g}"


def chance_warnings(result: AccuracyResult | None, tasks: list[OutputTask], who: str) -> list[str]:
    """A warning when ``who``'s primary metric is at chance level on labelled data (nothing is proven against it)."""
    if result is None or result.value is None:
        return []
    task = next((t for t in tasks if t.output == result.output), None)
    if task is None:
        return []
    if task.task is Task.CLASSIFICATION and task.classes and task.classes > 1:
        chance = 100.0 / task.classes
        if result.value <= max(1.5 * chance, chance + 5.0):
            return [f"{who} itself scores {result.value:.2f}% top-1, about chance ({chance:.1f}% for {task.classes} classes): "
                    "a small drop against it proves nothing; check the preprocessing (--scale/--mean/--std) and that the labels "
                    "belong to this model"]
    if task.task is Task.BINARY and "auc" in result.values and result.values["auc"] <= 0.55:
        return [f"{who} itself has ROC AUC {result.values['auc']:.3f}, about chance (0.5): check the preprocessing and the labels"]
    if task.task is Task.REGRESSION and result.values.get("r2", 1.0) <= 0.0:
        return [f"{who} itself has R² {result.values['r2']:.3f}: it predicts no better than the targets' mean; check the "
                "preprocessing and that the targets belong to this model"]
    return []
