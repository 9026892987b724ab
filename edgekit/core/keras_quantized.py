"""Detects a Keras model quantized by Keras itself (``model.quantize(...)``), which edgekit refuses.

Keras 3's ``model.quantize("int8" | "float8" | "int4")`` (and the ``gptq``/``awq`` modes) swaps each
Dense/EinsumDense/Embedding layer's dtype policy for a quantized one
(``QuantizedDTypePolicy "int8_from_float32"``, ``QuantizedFloat8DTypePolicy``, ``Int4DTypePolicy
"int4/128_from_float32"``...) and replaces its float kernel with integer variables
(``kernel`` int8 + ``kernel_scale``; float8 keeps a float kernel with ``*_scale`` and
``*_amax_history`` variables). Those layers compute with Keras-specific ops: the TFLite converter
rejects int8/float8 models, and int4 ones export larger and slower than the float model. edgekit's
own quantizers need the float weights, so such a model is refused before conversion with a message
that says what to do.

Two entry points: :func:`quantized_layers_in_config` reads a saved model's JSON config (nothing is
deserialized, so it runs before Keras loads the file) and :func:`quantized_layers` looks at a
model object (for Python users who hand edgekit a model in memory).

Example:
    >>> quantized_layers_in_config({"class_name": "Dense", "config": {"name": "d1",
    ...     "dtype": {"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8"}}}})
    {'d1': 'int8'}
"""

from __future__ import annotations

from typing import Any

from edgekit.core.errors import ModelError

#: Keras 3.15 ``keras.src.dtype_policies.dtype_policy.QUANTIZATION_MODES``
QUANTIZATION_MODES = ("int8", "float8", "int4", "gptq", "awq")
_QUANTIZED_POLICY_CLASSES = {
    "QuantizedDTypePolicy", "QuantizedFloat8DTypePolicy", "Int4DTypePolicy", "GPTQDTypePolicy", "AWQDTypePolicy",
}


def _mode_of_policy(policy: Any) -> str | None:
    """The quantization mode a serialized dtype policy names (``"int8_from_float32"`` or a dict)."""
    if isinstance(policy, str):
        return policy.split("_from_")[0].split("/")[0] if policy.startswith(QUANTIZATION_MODES) else None
    if isinstance(policy, dict):
        cls = policy.get("class_name")
        raw = policy.get("config")
        cfg: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if cls in _QUANTIZED_POLICY_CLASSES:
            mode = str(cfg.get("mode") or cls)
            return mode.split("/")[0]
        if cls == "DTypePolicyMap":  # a model-level map: path -> policy
            for value in (cfg.get("policy_map") or {}).values():
                found = _mode_of_policy(value)
                if found:
                    return found
    return None


def quantized_layers_in_config(config: Any) -> dict[str, str]:
    """Layer name -> quantization mode for every layer whose dtype policy is a quantized one.

    Args:
        config: a Keras model config as stored in ``config.json`` of a ``.keras`` file (or the
            ``model_config`` attribute of an ``.h5`` file).
    """
    found: dict[str, str] = {}

    def visit(obj: Any, layer: str) -> None:
        if isinstance(obj, list):
            for item in obj:
                visit(item, layer)
            return
        if not isinstance(obj, dict):
            return
        cfg = obj.get("config")
        if isinstance(cfg, dict) and isinstance(cfg.get("name"), str) and "class_name" in obj:
            layer = cfg["name"]
            mode = _mode_of_policy(cfg.get("dtype"))
            if mode:
                found.setdefault(layer, mode)
        for key, value in obj.items():
            if key != "dtype":
                visit(value, layer)

    visit(config, "model")
    return found


def quantized_layers(keras_model: Any) -> dict[str, str]:
    """Layer path -> quantization mode for every layer of a Keras model object quantized by Keras.

    Looks at each layer's ``dtype_policy.quantization_mode`` (None for float policies), nested
    models included.
    """
    found: dict[str, str] = {}

    def visit(model: Any, prefix: str) -> None:
        for layer in getattr(model, "layers", []) or []:
            path = f"{prefix}{layer.name}"
            mode = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
            if mode:
                found[path] = str(mode).split("/")[0]
            if getattr(layer, "layers", None):
                visit(layer, path + "/")

    visit(keras_model, "")
    return found


def refusal(found: dict[str, str], source: str = "the model") -> ModelError:
    """The error for a model quantized by Keras (``found`` from one of the two detectors)."""
    modes = sorted(set(found.values()))
    names = sorted(found)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return ModelError(
        f"{source} was quantized by Keras itself (model.quantize('{'/'.join(modes)}') on {len(found)} layer(s): {shown}); "
        "the TFLite converter cannot use Keras-quantized layers",
        hint="give edgekit the float model (saved before model.quantize) and let edgekit quantize it (quantize --mode int8, int4...)",
    )


def check_not_keras_quantized(keras_model: Any, source: str = "the model") -> None:
    """Raises ModelError when ``keras_model`` has layers quantized by ``model.quantize``."""
    found = quantized_layers(keras_model)
    if found:
        raise refusal(found, source)


def check_config_not_keras_quantized(config: Any, source: str = "the model") -> None:
    """Raises ModelError when a saved model's config has layers quantized by ``model.quantize``."""
    found = quantized_layers_in_config(config)
    if found:
        raise refusal(found, source)
