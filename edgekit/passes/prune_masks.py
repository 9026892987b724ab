"""Pruning masks and schedules: which kernel weights are zero, and how many at each step.

- :func:`magnitude_mask`: the smallest-magnitude weights (exactly ``round(sparsity * size)``);
- :func:`m_by_n_mask`: N:M structured sparsity (2 of every 4 along the input-channel axis);
- :func:`mask_callback`: a Keras callback that re-applies masks after every training batch (and
  swaps in new ones on a schedule);
- :func:`polynomial_sparsity`: tfmot's PolynomialDecay curve;
- :func:`sparsity_masks`: the masks of an already pruned model (QAT after pruning keeps them).

Example:
    >>> mask = magnitude_mask(kernel, 0.8)      # doctest: +SKIP
    >>> float(1 - mask.mean())                  # doctest: +SKIP
    0.8
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.core.keras_graph import iter_layers, kernel_variable
from edgekit.core.tfshim import keras, tensorflow


def input_axis(layer: Any) -> int | None:
    """The input-channel axis of a layer's compressed kernel (None for depthwise kernels)."""
    cls = type(layer).__name__
    if cls.startswith("Depthwise"):
        return None
    if cls == "Dense":
        return 0
    return kernel_variable(layer).ndim - 2 if kernel_variable(layer) is not None else None


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """1 for kept weights, 0 for the ``round(sparsity * size)`` smallest magnitudes (exactly)."""
    flat = np.abs(weights).reshape(-1)
    drop = int(round(sparsity * flat.size))
    mask = np.ones(flat.size, dtype=np.float32)
    if drop > 0:
        idx = np.argpartition(flat, drop - 1)[:drop]
        mask[idx] = 0.0
    return mask.reshape(weights.shape)


def m_by_n_mask(weights: np.ndarray, axis: int, keep: int = 2, group: int = 4) -> np.ndarray:
    """Keeps the ``keep`` largest of every ``group`` consecutive weights along ``axis``."""
    moved = np.moveaxis(np.abs(weights), axis, -1)
    if moved.shape[-1] % group:
        raise ValueError(f"axis of size {moved.shape[-1]} is not a multiple of {group}")
    grouped = moved.reshape(*moved.shape[:-1], moved.shape[-1] // group, group)
    order = np.argsort(grouped, axis=-1, kind="stable")
    mask = np.ones_like(grouped, dtype=np.float32)
    np.put_along_axis(mask, order[..., : group - keep], 0.0, axis=-1)
    return np.moveaxis(mask.reshape(moved.shape), -1, axis)


def check_m_by_n(weights: np.ndarray, axis: int, zeros: int = 2, group: int = 4) -> bool:
    """True if every group of ``group`` along ``axis`` has at least ``zeros`` zeros."""
    moved = np.moveaxis(weights, axis, -1)
    grouped = moved.reshape(*moved.shape[:-1], moved.shape[-1] // group, group)
    return bool(((grouped == 0).sum(axis=-1) >= zeros).all())


def sparsity_masks(model: Any, *, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """The sparsity mask (1 = kept, 0 = pruned) of every compressible kernel that has zeros.

    Keys are layer paths (``conv1``, ``backbone/conv1``); the mask has the kernel's shape. For
    QAT after pruning: multiply each kernel by its mask after every step to keep the zeros.

    Example:
        >>> masks = sparsity_masks(keras.saving.load_model("pruned.keras"))  # doctest: +SKIP
        >>> float(1 - masks["fc1"].mean())  # doctest: +SKIP
        0.8
    """
    masks: dict[str, np.ndarray] = {}
    for path, layer in iter_layers(model):
        var = kernel_variable(layer)
        if var is None:
            continue
        w = np.asarray(var.numpy())
        mask = (np.abs(w) > threshold).astype(np.float32)
        if mask.size and mask.min() == 0.0:
            masks[path] = mask
    return masks


def apply_masks(model: Any, masks: dict[str, np.ndarray]) -> None:
    """Multiplies each layer's kernel by its mask, in place (for custom training loops)."""
    layers = dict(iter_layers(model))
    for path, mask in masks.items():
        var = kernel_variable(layers[path])
        var.assign(np.asarray(var.numpy()) * mask.astype(np.asarray(var.numpy()).dtype))


def mask_callback(model: Any, masks: dict[str, np.ndarray], schedule: Any = None) -> Any:
    """A Keras callback that re-applies ``masks`` after every training batch.

    ``schedule(step) -> dict[path, mask] | None`` may return new masks at a step (polynomial
    pruning); they replace the old ones before that batch runs.
    """
    tf = tensorflow()
    layers = dict(iter_layers(model))
    pairs = []
    for path, mask in masks.items():
        var = kernel_variable(layers[path])
        pairs.append((path, var, tf.Variable(mask.astype(np.float32), trainable=False)))

    @tf.function
    def reapply() -> None:
        for _, var, mask_var in pairs:
            var.assign(var * tf.cast(mask_var, var.dtype))

    class MaskCallback(keras().callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.step = 0
            self.reapply = reapply

        def on_train_begin(self, logs=None):
            reapply()

        def on_train_batch_begin(self, batch, logs=None):
            if schedule is None:
                return
            new = schedule(self.step)
            if new:
                for path, _var, mask_var in pairs:
                    if path in new:
                        mask_var.assign(new[path].astype(np.float32))
                reapply()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            reapply()

    return MaskCallback()


def polynomial_sparsity(step: float, target: float, initial: float, begin: float, end: float) -> float:
    """tfmot's PolynomialDecay (power 3): ``initial`` at ``begin`` up to ``target`` at ``end``."""
    progress = 1.0 if end <= begin else min(1.0, max(0.0, (step - begin) / (end - begin)))
    return target + (initial - target) * (1.0 - progress) ** 3


def apply_masks_exact(model: Any, masks: dict[str, np.ndarray]) -> None:
    """Sets masked weights to +0.0 exactly (no -0.0), in place."""
    layers = dict(iter_layers(model))
    for path, mask in masks.items():
        var = kernel_variable(layers[path])
        w = np.asarray(var.numpy())
        var.assign(np.where(mask > 0, w, np.zeros_like(w)))
