"""edgekit: take a trained Keras model to a small, fast, validated on-device artifact.

The public API is imported lazily so ``import edgekit`` (and ``edgekit --help``) stays fast::

    import edgekit
    result = edgekit.quantize("model.keras", "model_int8.tflite", mode="int8", data="calib.npz")
    report = edgekit.validate("model_int8.tflite", "val.npz", reference="model.keras")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "quantize": "edgekit.quantize",
    "convert": "edgekit.quantize",
    "validate": "edgekit.validate",
    "load_model": "edgekit.models",
    "load_dataset": "edgekit.data",
    "read_tflite": "edgekit.tflite_file",
    "inspect_artifact": "edgekit.inspection",
    "run_local": "edgekit.runtime",
    "Preprocessing": "edgekit.types",
    "QuantMode": "edgekit.types",
    "IOType": "edgekit.types",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
