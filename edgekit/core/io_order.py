"""Matches a .tflite file's inputs and outputs to the model's own names and order.

The converter writes a model's inputs in the order of its signature's *names* (alphabetical) and
its outputs in whatever order the graph ends in; only the file's signature keeps the model's names
(``image``, ``meta``; ``output_0``, ``output_1`` in the Keras model's output order). Everything
that feeds a file or reads its outputs goes through here, so data arrays named after the model's
inputs reach the right tensors and each output is compared with the right reference output.

Example:
    >>> sig = artifact_signature(info, ["probs", "box"])  # doctest: +SKIP
    >>> sig.input_names, sig.output_names  # doctest: +SKIP
    (('ameta', 'zimage'), ('probs', 'box'))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset, InputSpec, OutputSpec, Signature
from edgekit.core.errors import InputError
from edgekit.core.tasks import detect_tasks, keras_output_activations

_OUTPUT_N = re.compile(r"^output_(\d+)$")


def _tensor_names(info: Any, pairs: Sequence[tuple[str, int]]) -> dict[str, str]:
    """Tensor name -> signature name."""
    found: dict[str, str] = {}
    for name, index in pairs:
        if 0 <= index < len(info.tensors):
            found[info.tensors[index].name] = name
    return found


def _dims(shape: Sequence[int]) -> tuple[int | None, ...]:
    return (None, *(None if d < 0 else int(d) for d in tuple(shape)[1:])) if len(shape) else ()


def input_names(info: Any) -> list[str]:
    """The file's inputs (in the file's order) under the model's names (the signature's, else the tensor's)."""
    names = _tensor_names(info, info.signature_inputs)
    return [names.get(t.name, t.name) for t in info.inputs]


def output_order(info: Any) -> list[int]:
    """Positions of the file's outputs in the model's output order (``output_<i>`` signature names), else the file's."""
    names = _tensor_names(info, info.signature_outputs)
    keys = [names.get(t.name, "") for t in info.outputs]
    found = [_OUTPUT_N.match(k) for k in keys]
    if keys and all(found) and sorted(int(m.group(1)) for m in found if m) == list(range(len(keys))):
        return sorted(range(len(keys)), key=lambda i: int(found[i].group(1)))  # type: ignore[union-attr]
    return list(range(len(keys)))


def artifact_signature(info: Any, model_outputs: Sequence[str] | None = None) -> Signature:
    """The file's inputs (file order, model names) and outputs (model order, named ``model_outputs`` when known)."""
    sig_names = _tensor_names(info, info.signature_outputs)
    order = output_order(info)
    outs = []
    for rank, i in enumerate(order):
        tensor = info.outputs[i]
        if model_outputs is not None and len(model_outputs) == len(order):
            name = model_outputs[rank]
        else:
            name = sig_names.get(tensor.name, tensor.name)
        outs.append(OutputSpec(name, _dims(tensor.shape)))
    ins = [InputSpec(name, _dims(t.shape), "float32" if t.dtype in ("float32", "float16", "int8", "uint8", "int16") else t.dtype)
           for name, t in zip(input_names(info), info.inputs, strict=True)]
    return Signature(inputs=tuple(ins), outputs=tuple(outs))


def in_model_order(info: Any, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The runner's outputs (file order) in the model's output order."""
    return [outputs[i] for i in output_order(info)] if len(outputs) == len(info.outputs) else list(outputs)


def feed_for(info: Any, dataset: Dataset) -> np.ndarray | list[np.ndarray]:
    """The dataset's inputs in the file's input order (matched by name; by position if names are unknown)."""
    if not dataset.more_x:
        return dataset.x
    names = input_names(info)
    by_name = dict(zip(dataset.input_names, dataset.inputs, strict=False))
    if dataset.input_names and set(names) == set(by_name):
        return [by_name[n] for n in names]
    if len(dataset.inputs) != len(names):
        raise InputError(f"the data has {len(dataset.inputs)} inputs, the artifact {len(names)} ({', '.join(names)})",
                         hint="give one array per model input, named after the input")
    return list(dataset.inputs)


def keras_feed(keras_model: Any, names: Sequence[str], arrays: Sequence[np.ndarray]) -> Any:
    """Arrays named ``names`` arranged as ``keras_model`` takes them (its own input order); one array alone for one input."""
    if len(arrays) == 1:
        return arrays[0]
    wanted = [t.name for t in getattr(keras_model, "inputs", [])]
    by_name = dict(zip(names, arrays, strict=True))
    if wanted and set(wanted) == set(by_name):
        return [by_name[n] for n in wanted]
    return list(arrays)


def model_io_entry(loaded: Any, calibration: Any = None) -> dict[str, Any]:
    """The manifest's ``model_io``: every input (name, shape, dtype, the value range calibration saw)
    and output of the source model, in its order, with each output's detected task."""
    sig = loaded.signature
    arrays = list(calibration) if isinstance(calibration, (tuple, list)) else ([calibration] if calibration is not None else [])
    inputs = []
    for k, spec in enumerate(sig.inputs):
        entry: dict[str, Any] = {"name": spec.name, "shape": [d if d is not None else -1 for d in spec.shape], "dtype": spec.dtype}
        if k < len(arrays) and np.asarray(arrays[k]).dtype.kind == "f" and np.asarray(arrays[k]).size:
            a = np.asarray(arrays[k])
            entry["range"] = [float(a.min()), float(a.max())]
        inputs.append(entry)
    activations = keras_output_activations(loaded.keras_model) if getattr(loaded, "keras_model", None) is not None else None
    tasks = detect_tasks([(o.name, o.shape) for o in sig.outputs], activations=activations, losses=getattr(loaded, "losses", ()),
                         overrides=getattr(loaded, "task_overrides", None))
    return {"inputs": inputs, "outputs": list(sig.output_names), "tasks": [t.to_dict() for t in tasks]}
