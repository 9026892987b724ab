"""``edgekit inspect``: describes a model without running it, a ``.tflite`` file (anyone's) or a Keras model.

Example:
    >>> report = inspect_artifact("model_int8.tflite")  # doctest: +SKIP
    >>> report.kind, report.to_dict()["op_histogram"]["CONV_2D"]  # doctest: +SKIP
    ('tflite', 1)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.core.fsutil import sha256_file
from edgekit.core.models import detect_format, load_model
from edgekit.core.tflite_file import read_tflite
from edgekit.core.tflite_verify import verify_tflite
from edgekit.export.tflite_metadata import METADATA_NAME, standard_metadata_of


def _metadata_summary(metadata: dict[str, bytes]) -> dict[str, Any]:
    """Readable metadata: edgekit's own JSON metadata decoded, others by size."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if key == METADATA_NAME:
            out[key] = {"bytes": len(value), "standard": True}  # decoded in full under standard_metadata
            continue
        if key.startswith("edgekit"):
            try:
                out[key] = json.loads(value.decode("utf-8"))
                continue
            except (UnicodeDecodeError, json.JSONDecodeError):
                pass
        out[key] = {"bytes": len(value)}
    return out


@dataclass(frozen=True)
class InspectReport:
    """What ``edgekit inspect`` found; ``to_dict()`` is its JSON (keys depend on :attr:`kind`)."""

    kind: str  # "tflite", or the Keras model's format ("keras", "h5", "savedmodel")
    fields: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.fields}


def inspect_tflite(path: str | os.PathLike[str], *, lenient: bool = False) -> InspectReport:
    """Operators, I/O with quantization, parameters, size breakdown and metadata of a .tflite file.

    The structure is verified first (:mod:`edgekit.core.tflite_verify`): a file with violations is
    refused (exit 3) naming them, unless ``lenient``, which shows what can be read and lists every
    violation under ``violations``.
    """
    verified = verify_tflite(path)
    if not lenient:
        verified.raise_if_invalid()
    info = read_tflite(path)
    meta = _metadata_summary(info.metadata)
    standard = standard_metadata_of(info, Path(path).read_bytes()) if METADATA_NAME in info.metadata else None
    labels = standard.labels(0) if standard is not None else None
    for value in meta.values():
        if labels is None and isinstance(value, dict) and isinstance(value.get("labels"), list):
            labels = value["labels"]
    return InspectReport(kind="tflite", fields={
        "path": str(path),
        "sha256": sha256_file(path),
        "bytes": info.file_bytes,
        "schema_version": info.schema_version,
        "description": info.description,
        "subgraphs": info.subgraph_count,
        "operators": len(info.operators),
        "op_histogram": info.op_histogram(),
        "inputs": [t.to_dict() for t in info.inputs],
        "outputs": [t.to_dict() for t in info.outputs],
        "parameters": info.parameter_count,
        "weight_dtypes": info.weight_dtypes(),
        "size_breakdown": info.size_breakdown(),
        "metadata": meta,
        "standard_metadata": standard.to_dict() if standard is not None else None,
        "labels": labels,
        "signatures": list(info.signatures),
        "violations": [{**v.to_dict(), "where": v.where()} for v in verified.violations],
    })


def inspect_keras(path: str | os.PathLike[str], *, unsafe: bool = False, custom_objects: str | None = None) -> InspectReport:
    """Layers, shapes and parameter counts of a Keras model (or SavedModel)."""
    loaded = load_model(path, unsafe=unsafe, custom_objects=custom_objects)
    layers = []
    trainable = None
    if loaded.keras_model is not None:
        model = loaded.keras_model
        for layer in model.layers:
            try:
                shape = layer.output.shape
                out_shape = [tuple(s) for s in shape] if isinstance(shape, list) else tuple(shape)
            except (AttributeError, ValueError):
                out_shape = None
            layers.append({"name": layer.name, "class": type(layer).__name__, "output_shape": out_shape, "parameters": int(layer.count_params())})
        trainable = int(sum(int(w.numpy().size) for w in model.trainable_weights))
    return InspectReport(kind=loaded.format, fields={
        "path": str(path),
        "sha256": loaded.sha256,
        "inputs": [{"shape": loaded.input_shape, "dtype": loaded.input_dtype}],
        "outputs": [{"name": n, "shape": s} for n, s in zip(loaded.output_names, loaded.output_shapes, strict=False)],
        "parameters": loaded.parameter_count,
        "trainable_parameters": trainable,
        "layers": layers,
    })


def inspect_artifact(path: str | os.PathLike[str], *, lenient: bool = False, **kwargs: Any) -> InspectReport:
    """Dispatches on the file's content: .tflite -> :func:`inspect_tflite`, else :func:`inspect_keras`."""
    fmt = detect_format(Path(path))
    if fmt == "tflite":
        return inspect_tflite(path, lenient=lenient)
    return inspect_keras(path, **kwargs)
