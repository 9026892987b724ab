"""edgekit: take a trained Keras model to a small, fast, validated on-device artifact.

Each step is a module with a function of the same name; importing ``edgekit`` itself is light::

    from edgekit.workflows.quantize import quantize
    from edgekit.workflows.validate import validate
    result = quantize("model.keras", "model_int8.tflite", mode="int8", data="calib.npz")
    report = validate("model_int8.tflite", "val.npz", reference="model.keras")

A few helpers are also reachable lazily from the package (``edgekit.load_model`` ...).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "convert": "edgekit.export.convert",
    "load_model": "edgekit.core.models",
    "load_dataset": "edgekit.core.data",
    "read_tflite": "edgekit.core.tflite_file",
    "inspect_artifact": "edgekit.workflows.inspect",
    "run_local": "edgekit.runtime.local",
    "Preprocessing": "edgekit.core.datatypes",
    "QuantMode": "edgekit.core.datatypes",
    "IOType": "edgekit.core.datatypes",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
