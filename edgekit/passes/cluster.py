"""Weight clustering (weight sharing) for Keras 3 models, with fine-tuning.

Each selected layer's kernel is clustered with 1-D k-means (``kmeans++`` or ``linear`` init)
into at most ``clusters`` values (per layer, or per output channel with ``per_channel``). During
fine-tuning a Keras callback keeps the weights shared: after every batch, each cluster's value
becomes the mean of its members' updated weights (so the centroids train, with the assignment
fixed) and every weight is snapped back to its cluster's value. ``preserve_sparsity`` keeps zeros
at exactly zero (one of the ``clusters`` values is pinned to 0), so a pruned model stays pruned.

The output is a plain Keras model whose kernels take at most ``clusters`` distinct values:
nothing is smaller on disk until the file is compressed (or the weights are coded by index), which
the report states.

Example:
    >>> out = ClusterPass(ClusterConfig(clusters=16)).apply(ModelState(keras=model), PassContext(train=train))  # doctest: +SKIP
    >>> max(r["distinct_values"] for r in out.details["layers"] if r["status"] == "clustered")  # doctest: +SKIP
    16
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgekit.core.errors import ModelError
from edgekit.core.keras_graph import (
    MAX_SHARED_VALUES,
    channel_distinct_values,
    channel_view,
    clone_model,
    distinct_values,
    is_clustered,
    is_clustered_per_channel,
    iter_layers,
    kernel_variable,
    layers_by_path,
    select_paths,
)
from edgekit.core.tfshim import keras, tensorflow
from edgekit.passes.base import ModelState, Pass, PassContext, PassOutput
from edgekit.passes.compression import CompressionConfig, LayerReport
from edgekit.passes.training import TrainSettings, check_training_data, compile_like_source, fit, resolve_loss, strip_training_state

MAX_CLUSTERS = MAX_SHARED_VALUES  # the most values a clustered kernel may keep


class Init(str, enum.Enum):
    KMEANS_PP = "kmeans++"
    LINEAR = "linear"


class ClusterConfig(CompressionConfig):
    """Settings of a clustering pass (unknown keys are rejected)."""

    pass_: Literal["cluster"] = Field("cluster", alias="pass")
    clusters: int = Field(16, ge=2, le=MAX_CLUSTERS, description="Distinct values per layer (per channel with per_channel), 2-256.")
    init: Init = Field(Init.KMEANS_PP, description="k-means initialization: kmeans++ (seeded) or linear (evenly spaced).")
    preserve_sparsity: bool = Field(False, description="Keep zero weights at exactly zero (one of the values is 0).")
    per_channel: bool = Field(False, description="One codebook scaled per output channel (matches per-channel int8).")
    iterations: int = Field(30, ge=1, description="k-means iterations.")


def kmeans_1d(values: np.ndarray, k: int, *, init: Init | str = Init.KMEANS_PP, iterations: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means: returns (centroids, assignment) with ``centroids`` sorted and at most ``k`` long.

    Assignment uses the midpoints between sorted centroids (exact nearest-centroid in 1-D), so a
    step costs O(n log k).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    uniques = np.unique(x)
    if uniques.size <= k:
        return uniques.astype(np.float32), np.searchsorted(uniques, x).astype(np.int32)
    init = Init(init)
    if init is Init.LINEAR:
        centroids = np.linspace(x.min(), x.max(), k)
    else:
        rng = np.random.default_rng(seed)
        sample = x if x.size <= 20000 else rng.choice(x, 20000, replace=False)
        picks = [sample[rng.integers(sample.size)]]
        dist = (sample - picks[0]) ** 2
        for _ in range(1, k):
            total = dist.sum()
            pick = sample[rng.choice(sample.size, p=dist / total)] if total > 0 else sample[rng.integers(sample.size)]
            picks.append(pick)
            dist = np.minimum(dist, (sample - pick) ** 2)
        centroids = np.array(picks)
    centroids = np.sort(centroids)
    assign = np.zeros(x.size, dtype=np.int64)
    for _ in range(iterations):
        bounds = (centroids[1:] + centroids[:-1]) / 2.0
        assign = np.searchsorted(bounds, x)
        counts = np.bincount(assign, minlength=centroids.size)
        sums = np.bincount(assign, weights=x, minlength=centroids.size)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        new = np.sort(new)
        if np.allclose(new, centroids, rtol=0, atol=1e-12):
            centroids = new
            break
        centroids = new
    bounds = (centroids[1:] + centroids[:-1]) / 2.0
    assign = np.searchsorted(bounds, x)
    used = np.unique(assign)  # drop empty clusters
    centroids = centroids[used]
    assign = np.searchsorted(used, assign)
    return centroids.astype(np.float32), assign.astype(np.int32)


@dataclass
class Clustering:
    """One kernel's clustering, over the kernel's flat (row-major) weights.

    ``weight = scale * values[ids]``; ``scale`` is 1 per layer, or each weight's channel scale
    (the channel's largest magnitude) with ``per_channel``. ``pinned`` values never move
    (0 for preserved zeros, +-1 for the channel maxima of a per-channel codebook).
    """

    ids: np.ndarray
    values: np.ndarray
    pinned: np.ndarray
    scale: np.ndarray

    def weights(self, shape: tuple[int, ...]) -> np.ndarray:
        return (self.scale * self.values[self.ids]).astype(np.float32).reshape(shape)

    def refit(self, flat: np.ndarray) -> np.ndarray:
        """New values: the mean of each cluster's members (in scaled units); pinned ones kept."""
        units = flat.astype(np.float64) / self.scale
        counts = np.bincount(self.ids, minlength=self.values.size)
        sums = np.bincount(self.ids, weights=units, minlength=self.values.size)
        fresh = np.where(counts > 0, sums / np.maximum(counts, 1), self.values)
        return np.where(self.pinned, self.values, fresh).astype(np.float32)


def _kmeans_pinned(x: np.ndarray, k: int, pinned: list[float], init: Init, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means over ``x`` with some centroids fixed; returns (values, pinned flags, assignment)."""
    fixed = np.array(sorted({v for v in pinned if np.isin(v, x)}), dtype=np.float64)  # only values that occur
    free_count = k - fixed.size
    loose = x[~np.isin(x, fixed)] if fixed.size else x
    free = kmeans_1d(loose, free_count, init=init, iterations=iterations, seed=seed)[0].astype(np.float64) if loose.size and free_count > 0 else np.zeros(0)
    values = np.concatenate([fixed, free])
    is_pinned = np.arange(values.size) < fixed.size
    for _ in range(iterations):
        order = np.argsort(values, kind="stable")
        bounds = (values[order][1:] + values[order][:-1]) / 2.0
        assign = order[np.searchsorted(bounds, x)]
        counts = np.bincount(assign, minlength=values.size)
        sums = np.bincount(assign, weights=x, minlength=values.size)
        new = np.where(is_pinned | (counts == 0), values, sums / np.maximum(counts, 1))
        if np.allclose(new, values, rtol=0, atol=1e-12):
            break
        values = new
    order = np.argsort(values, kind="stable")
    bounds = (values[order][1:] + values[order][:-1]) / 2.0
    assign = order[np.searchsorted(bounds, x)]
    return values, is_pinned, assign


def cluster_kernel(layer: Any, kernel: np.ndarray, config: ClusterConfig, seed: int = 0) -> Clustering:
    """Clusters one kernel into at most ``config.clusters`` values (per layer or per channel).

    Per layer: 1-D k-means over all weights. Per channel: one codebook shared by all channels and
    scaled by each channel's largest magnitude (the scale per-channel int8 uses), with +-1 pinned
    so every channel keeps its scale; int8 export then gives every channel the same codes.
    """
    flat = np.asarray(kernel, dtype=np.float64).reshape(-1)
    # with preserve_sparsity one value is a pinned 0 that only the zero weights use
    k = config.clusters - 1 if config.preserve_sparsity else config.clusters
    if config.per_channel:
        view = channel_view(layer, np.asarray(kernel, dtype=np.float64))
        channel_scale = np.abs(view).max(axis=0)
        channel_scale[channel_scale == 0] = 1.0
        scale = np.broadcast_to(channel_scale, view.shape).reshape(-1).copy()
        pinned_values = [1.0, -1.0] if k > 2 else [1.0]
    else:
        scale = np.ones_like(flat)
        pinned_values = []
    units = flat / scale
    live = flat != 0 if config.preserve_sparsity else np.ones(flat.size, dtype=bool)
    if live.any():
        values, is_pinned, live_assign = _kmeans_pinned(units[live], k, pinned_values, config.init, config.iterations, seed)
    else:
        values, is_pinned, live_assign = np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    assign = np.zeros(flat.size, dtype=np.int64)
    assign[live] = live_assign
    if config.preserve_sparsity:
        assign[~live] = values.size
        values = np.append(values, 0.0)
        is_pinned = np.append(is_pinned, True)
    return Clustering(assign.astype(np.int32), values.astype(np.float32), is_pinned, scale)


def centroid_callback(model: Any, clustering: dict[str, Clustering]) -> Any:
    """A Keras callback that keeps each kernel's weights shared after every batch.

    Cluster values become the mean of their members' updated weights (pinned values stay), then
    every weight is set to its cluster's value (times its channel scale).
    """
    tf = tensorflow()
    layers = dict(iter_layers(model))
    entries = []
    for path, state in clustering.items():
        var = kernel_variable(layers[path])
        entries.append((var, tf.constant(state.ids), int(state.values.size), tf.constant(state.pinned),
                        tf.constant(state.values), tf.constant(state.scale.astype(np.float32)), tuple(var.shape)))

    @tf.function
    def share() -> None:
        for var, ids, segments, pinned, pinned_values, scale, shape in entries:
            units = tf.reshape(tf.cast(var, tf.float32), [-1]) / scale
            means = tf.where(pinned, pinned_values, tf.math.unsorted_segment_mean(units, ids, segments))
            var.assign(tf.cast(tf.reshape(tf.gather(means, ids) * scale, shape), var.dtype))

    class CentroidCallback(keras().callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch, logs=None):
            share()

    return CentroidCallback()


class ClusterPass(Pass[ClusterConfig]):
    """k-means weight clustering with fine-tuning.

    Example:
        >>> c = ClusterPass(ClusterConfig(clusters=16, preserve_sparsity=True, epochs=1))
        >>> c.check(ModelState(keras=model), ctx)                              # doctest: +SKIP
        >>> plain = c.finalize(c.apply(ModelState(keras=model), ctx).state).keras  # doctest: +SKIP
    """

    name = "cluster"
    config_type = ClusterConfig
    trains = True

    def check(self, state: ModelState, ctx: PassContext) -> None:
        """Raises before any training if the model, the data or the layer selection is wrong."""
        model = _keras_of(state)
        check_training_data(model, ctx.train, need_labels=self.config.epochs > 0)
        if self.config.epochs > 0:
            resolve_loss(model, self.config.loss)  # fail now, not after the first epoch
        self.selected(model)

    def selected(self, model: Any) -> list[str]:
        """The paths of the layers to cluster."""
        candidates = [p for p, layer in iter_layers(model) if kernel_variable(layer) is not None]
        return select_paths(candidates, self.config.layers, self.config.skip)

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """A new clustered (and fine-tuned) model; ``details``: ``layers`` (per-layer reports) and ``history``."""
        source = _keras_of(state)
        selected = self.selected(source)
        settings = TrainSettings.of(self.config, ctx)
        new = clone_model(source)
        layers = layers_by_path(new)
        clustering: dict[str, Clustering] = {}
        for path in selected:
            var = kernel_variable(layers[path])
            kernel = np.asarray(var.numpy(), dtype=np.float32)
            clustering[path] = cluster_kernel(layers[path], kernel, self.config, seed=settings.seed)
            var.assign(clustering[path].weights(kernel.shape).astype(kernel.dtype))
        history: dict[str, list[float]] = {}
        if settings.epochs > 0 and ctx.train is not None:
            history = fit(new, source, ctx.train, ctx.val, settings, [centroid_callback(new, clustering)], title="cluster")
        for path, state_ in clustering.items():  # every clustered kernel snapped exactly to its shared values
            var = kernel_variable(layers[path])
            kernel = np.asarray(var.numpy(), dtype=np.float32)
            state_.values = state_.refit(kernel.reshape(-1))
            var.assign(state_.weights(kernel.shape).astype(kernel.dtype))
        compile_like_source(new, source)
        reports = layer_reports(self.config, set(selected), new)
        return PassOutput(state=state.with_keras(new), details={"layers": [r.to_dict() for r in reports], "history": history})

    def finalize(self, state: ModelState) -> ModelState:
        """A plain Keras model: no optimizer state (the loss kept for a later fine-tuning step)."""
        return state.with_keras(strip_training_state(state.keras), kind=state.kind)


def _keras_of(state: ModelState) -> Any:
    if state.keras is None or state.converted:
        raise ModelError("clustering needs a Keras model (before any conversion to TFLite)", hint="cluster before quantize or export")
    return state.keras


def layer_reports(config: ClusterConfig, selected: set[str], model: Any) -> list[LayerReport]:
    """Distinct values (and sparsity) of every compressible kernel of the clustered ``model``."""
    reports = []
    for path, layer in iter_layers(model):
        var = kernel_variable(layer)
        if var is None:
            continue
        w = np.asarray(var.numpy())
        if path in selected:
            distinct = channel_distinct_values(layer, w) if config.per_channel else distinct_values(w)
            reports.append(LayerReport(path, type(layer).__name__, int(w.size), "clustered", None, None, float((w == 0).mean()),
                                       clusters=config.clusters, distinct_values=int(distinct)))
        else:
            reports.append(LayerReport(path, type(layer).__name__, int(w.size), "skipped", "not selected (layers/skip)",
                                       None, float((w == 0).mean()), distinct_values=distinct_values(w)))
    return reports


def cluster_centroids(model: Any, *, per_channel: bool = False) -> dict[str, np.ndarray]:
    """The shared values of every clustered kernel, by layer path.

    A kernel counts as clustered by the one rule of :mod:`edgekit.core.keras_graph`
    (:func:`~edgekit.core.keras_graph.is_clustered`, per channel
    :func:`~edgekit.core.keras_graph.is_clustered_per_channel`). The value is the sorted distinct
    values (1-D), or with ``per_channel`` a (channels, k) array padded with NaN. For QAT after
    clustering: snap each kernel to its nearest centroid after each step.
    """
    out: dict[str, np.ndarray] = {}
    for path, layer in iter_layers(model):
        var = kernel_variable(layer)
        if var is None:
            continue
        w = np.asarray(var.numpy())
        if per_channel:
            if is_clustered_per_channel(layer, w):
                cols = [np.unique(col) for col in channel_view(layer, w).T]
                table = np.full((len(cols), max(c.size for c in cols)), np.nan, dtype=np.float32)
                for i, col in enumerate(cols):
                    table[i, : col.size] = col
                out[path] = table
        elif is_clustered(w):
            out[path] = np.unique(w).astype(np.float32)
    return out
