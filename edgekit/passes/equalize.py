"""Cross-layer equalization: rescale channels between two layers so int8 ranges fit every channel.

For a layer A with a ReLU (or linear) activation feeding a layer B directly, ``relu(x / s) * s ==
relu(x)`` for any ``s > 0``: dividing A's output channel ``i`` (its kernel column and bias) by
``s_i`` and multiplying B's input channel ``i`` (its kernel row) by ``s_i`` leaves the float model's
outputs unchanged. Choosing ``s_i = sqrt(r1_i / r2_i)`` (``r1_i``: the largest weight of A's
channel ``i``, ``r2_i``: the largest weight of B's input channel ``i``) equalizes the two ranges
(Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction", ICCV
2019). A channel whose weights (and so activations) are hundreds of times wider than the others
then stops setting the int8 scale of the whole tensor.

Pairs handled: Dense -> Dense and Conv2D -> Conv2D (``groups`` 1), A's only consumer being B, A's
activation ``relu`` or ``linear``. Other layers are left as they are and listed.

Example:
    >>> equalized, pairs = equalize(keras_model)  # doctest: +SKIP
    >>> [(p.first, p.second, round(p.max_scale)) for p in pairs]  # doctest: +SKIP
    [('conv1', 'conv2', 3), ('fc1', 'fc2', 500), ('fc2', 'probs', 2)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.tfshim import inbound_nodes, outbound_nodes, producing_layer

_HOMOGENEOUS = ("relu", "linear")


@dataclass(frozen=True)
class EqualizedPair:
    first: str
    second: str
    channels: int
    max_scale: float
    min_scale: float

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, "channels": self.channels,
                "max_scale": round(self.max_scale, 4), "min_scale": round(self.min_scale, 6)}


def _kind(layer: Any) -> str | None:
    name = type(layer).__name__
    if name == "Dense":
        return "dense"
    if name == "Conv2D" and getattr(layer, "groups", 1) == 1:
        return "conv"
    return None


def _activation(layer: Any) -> str | None:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", None)


def equalization_pairs(model: Any) -> list[tuple[str, str]]:
    """(A, B) layer names that can be equalized: B's only input is A's output and A feeds only B."""
    pairs = []
    for layer in model.layers:
        kind = _kind(layer)
        if kind is None or len(inbound_nodes(layer)) != 1:
            continue
        inputs = inbound_nodes(layer)[0].input_tensors
        if len(inputs) != 1:
            continue
        producer = producing_layer(inputs[0])
        if _kind(producer) != kind or _activation(producer) not in _HOMOGENEOUS:
            continue
        if len(outbound_nodes(producer)) != 1:
            continue
        if kind == "conv" and getattr(producer, "data_format", "channels_last") != "channels_last":
            continue
        pairs.append((producer.name, layer.name))
    return pairs


def equalize(keras_model: Any) -> tuple[Any, list[EqualizedPair]]:
    """A copy of ``keras_model`` with every eligible pair equalized (the input model is not changed).

    Pairs are processed in graph order, so a layer that is B of one pair and A of the next is
    rescaled on both sides.
    """
    from edgekit.passes.compress import clone_model

    model = clone_model(keras_model)
    done = []
    for first_name, second_name in equalization_pairs(model):
        first, second = model.get_layer(first_name), model.get_layer(second_name)
        w1 = [np.array(w) for w in first.get_weights()]
        w2 = [np.array(w) for w in second.get_weights()]
        k1, k2 = w1[0], w2[0]
        if _kind(first) == "dense":
            r1 = np.abs(k1).max(axis=0)
            r2 = np.abs(k2).max(axis=1)
        else:  # HWIO kernels: A's output channel is the last axis, B's input channel the third
            r1 = np.abs(k1).max(axis=(0, 1, 2))
            r2 = np.abs(k2).max(axis=(0, 1, 3))
        valid = (r1 > 0) & (r2 > 0)
        scale = np.ones_like(r1)
        scale[valid] = np.sqrt(r1[valid] / r2[valid])
        if _kind(first) == "dense":
            k1 = k1 / scale[None, :]
            k2 = k2 * scale[:, None]
        else:
            k1 = k1 / scale[None, None, None, :]
            k2 = k2 * scale[None, None, :, None]
        w1[0], w2[0] = k1.astype(w1[0].dtype), k2.astype(w2[0].dtype)
        if len(w1) > 1:
            w1[1] = (w1[1] / scale).astype(w1[1].dtype)
        first.set_weights(w1)
        second.set_weights(w2)
        done.append(EqualizedPair(first_name, second_name, int(scale.size), float(scale.max()), float(scale.min())))
    return model, done
