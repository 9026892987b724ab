"""Keeping a pruned model's zeros or a clustered model's clusters through QAT (``preserve``).

:func:`preserve_constraints` turns ``preserve`` (``sparsity`` or ``clusters``) into one
:class:`~edgekit.passes.qat.layers.KernelConstraint` per simulated kernel, and raises before any
training when the model has nothing to preserve.

Example:
    >>> constraints, summary = preserve_constraints(plan_qat(model), "sparsity")  # doctest: +SKIP
    >>> summary["sparsity"]  # doctest: +SKIP
    0.8
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.errors import ModelError
from edgekit.core.keras_graph import MAX_SHARED_VALUES, shares_values
from edgekit.passes.qat.graph import QatPlan
from edgekit.passes.qat.layers import KernelConstraint

MAX_CLUSTERS = MAX_SHARED_VALUES  # a kernel with more distinct values than this is not treated as clustered
MIN_SPARSITY = 0.01  # preserve sparsity needs at least this fraction of zero kernel weights


@dataclass(frozen=True)
class _KernelRef:
    layer: Any
    attr: str


def _kernels(plan: QatPlan) -> list[_KernelRef]:
    refs: list[_KernelRef] = []
    for step in plan.steps:
        if step.role != "weighted":
            continue
        attrs = ("depthwise_kernel", "pointwise_kernel") if step.kind == "separable" else ("kernel",)
        refs.extend(_KernelRef(step.node.layer, a) for a in attrs)
    return refs


def sparsity_masks(plan: QatPlan) -> dict[tuple[int, str], np.ndarray]:
    """(id(layer), kernel attribute) -> mask (1 where the weight is non-zero) for every simulated kernel."""
    return {(id(r.layer), r.attr): (np.asarray(getattr(r.layer, r.attr)) != 0).astype(np.float32) for r in _kernels(plan)}


def _channel_view(kind: str, attr: str, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (weights per channel, channels), row-major; depthwise kernels merge their last two axes."""
    if kind == "depthwise" or attr == "depthwise_kernel":
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
    return kernel.reshape(-1, kernel.shape[-1])


@dataclass(frozen=True)
class Clusters:
    """A clustered kernel: ``centroids[indices]`` rebuilds it; ``values`` per kernel or per channel."""

    centroids: np.ndarray
    indices: np.ndarray
    per_channel: bool
    values: int


def cluster_centroids(plan: QatPlan) -> dict[tuple[int, str], Clusters]:
    """(id(layer), kernel attribute) -> :class:`Clusters` for every clustered kernel.

    A kernel is clustered by the one rule of :func:`edgekit.core.keras_graph.shares_values` (at most MAX_CLUSTERS distinct values, at most a quarter as
    many as it has weights (one shared codebook), or when each output channel does (a codebook
    per channel, as ``edgekit cluster --per-channel`` makes). ``centroids`` is flat; ``indices``
    has the kernel's shape and points into it, so ``centroids[indices]`` rebuilds the kernel.
    """
    found = {}
    for step in plan.steps:
        if step.role != "weighted":
            continue
        attrs = ("depthwise_kernel", "pointwise_kernel") if step.kind == "separable" else ("kernel",)
        for attr in attrs:
            values = np.asarray(getattr(step.node.layer, attr))
            centroids, indices = np.unique(values, return_inverse=True)
            if shares_values(len(centroids), values.size):
                found[(id(step.node.layer), attr)] = Clusters(centroids.astype(np.float32), indices.reshape(values.shape), False,
                                                              len(centroids))
                continue
            view = _channel_view(step.kind, attr, values)
            columns = [np.unique(view[:, c], return_inverse=True) for c in range(view.shape[1])]
            width = max(len(u) for u, _ in columns)
            if not shares_values(width, view.shape[0]):
                continue
            table = np.zeros((view.shape[1], width), np.float32)
            flat_index = np.zeros(view.shape, np.int64)
            for c, (uniq, inverse) in enumerate(columns):
                table[c, : len(uniq)] = uniq
                flat_index[:, c] = c * width + inverse.reshape(-1)
            found[(id(step.node.layer), attr)] = Clusters(table.reshape(-1), flat_index.reshape(values.shape), True, width)
    return found


def preserve_constraints(plan: QatPlan, preserve: str | None) -> tuple[dict[tuple[int, str], KernelConstraint], dict[str, Any]]:
    """The kernel constraints for ``preserve`` and a summary of what is kept.

    Args:
        plan: the model's QAT plan (its kernels are read, not changed).
        preserve: ``"sparsity"``, ``"clusters"``, or None (nothing to keep).

    Returns:
        ``{(id(layer), kernel attribute): constraint}`` and a JSON-ready summary.

    Raises:
        ModelError: the model has no sparsity (or no clusters) to keep.
    """
    if preserve is None:
        return {}, {}
    kernels = _kernels(plan)
    total = sum(int(np.prod(getattr(r.layer, r.attr).shape)) for r in kernels)
    if preserve == "sparsity":
        masks = sparsity_masks(plan)
        zeros = sum(int(m.size - m.sum()) for m in masks.values())
        fraction = zeros / max(total, 1)
        if fraction < MIN_SPARSITY:
            raise ModelError(
                f"preserve sparsity: only {fraction:.1%} of the model's kernel weights are zero, so there is no sparsity to keep",
                hint="prune the model first (edgekit prune) or drop preserve", settings=("preserve",),
            )
        constraints = {key: KernelConstraint("sparsity", mask=mask) for key, mask in masks.items() if mask.min() == 0}
        return constraints, {"kernel_weights": total, "zero_weights": zeros, "sparsity": round(fraction, 4),
                             "layers": len(constraints)}
    clusters = cluster_centroids(plan)
    if not clusters:
        raise ModelError(
            f"preserve clusters: no kernel of the model has {MAX_CLUSTERS} or fewer distinct values, so it is not clustered",
            hint="cluster the model first (edgekit cluster) or drop preserve", settings=("preserve",),
        )
    constraints = {key: KernelConstraint("clusters", centroids=c.centroids, indices=c.indices) for key, c in clusters.items()}
    counts = {
        f"{r.layer.name}.{r.attr}": f"{c.values} values" + (" per channel" if c.per_channel else "")
        for r in kernels if (c := clusters.get((id(r.layer), r.attr))) is not None
    }
    unclustered = [f"{r.layer.name}.{r.attr}" for r in kernels if (id(r.layer), r.attr) not in clusters]
    return constraints, {"clustered_kernels": counts, "unclustered_kernels": unclustered}

