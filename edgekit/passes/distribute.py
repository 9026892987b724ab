"""Training under ``tf.distribute``: one strategy per process, one training step for every pass.

``--strategy`` (and a training step's ``strategy`` key in a recipe) picks how the training passes
(qat, distill, prune, cluster) fine-tune:

- ``none``: one process, ``model.fit`` (today's path, unchanged);
- ``mirrored``: ``MirroredStrategy``: every local GPU (the CPU when there is none);
- ``multiworker``: ``MultiWorkerMirroredStrategy`` over the hosts in ``TF_CONFIG`` (each host runs
  the same command with its own task index; only the chief, worker 0, writes files);
- ``auto``: ``mirrored`` when this host has several GPUs, else ``none``.

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras#20585, tensorflow#72388), so
under any strategy the passes train with :func:`train`'s own step: ``strategy.run`` over a
``GradientTape`` step on a distributed ``tf.data`` pipeline (sharded by data, shuffled with the
same seed on every worker). The step is the model's compiled loss (``compute_loss``, which Keras
scales per replica) and its optimizer, so QAT's fake-quant graph, knowledge distillation's packed
loss, pruning masks and cluster constraints (callbacks after every batch) all train through it; a
model with a ``train_step`` of its own (distillation with hints) runs that step per replica.
``--batch-size`` is the batch per replica: the global batch is ``batch_size x replicas``. Arrays kept
on disk (data larger than memory, :mod:`edgekit.core.diskarray`) are read batch by batch through
``tf.data`` under every strategy, ``none`` included (:func:`streamed`).

The pipeline builds and compiles the model of a training pass inside :func:`scope`, so its
variables are mirrored; the trained model converts and saves like a single-process one.

Example:
    >>> dist = resolve_strategy("multiworker")  # doctest: +SKIP  (first thing in the process: TF_CONFIG)
    >>> with scope(dist):                       # doctest: +SKIP
    ...     history = train(model, x, y, batch_size=64, epochs=2, callbacks=[])
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from edgekit.core import interrupts
from edgekit.core.diskarray import is_on_disk, stream_threshold_bytes
from edgekit.core.errors import InputError
from edgekit.core.tfshim import forget_distribution, keras, nested_models, tensorflow

StrategyChoice = Literal["auto", "none", "mirrored", "multiworker"]
STRATEGIES: tuple[str, ...] = ("auto", "none", "mirrored", "multiworker")


@dataclass(frozen=True)
class Distribution:
    """The resolved strategy of this process: its name, the ``tf.distribute`` object (None for
    ``none``), the replicas in sync, the workers and this worker's index."""

    name: str = "none"
    strategy: Any = None
    replicas: int = 1
    workers: int = 1
    task_index: int = 0

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the outputs (worker 0, or the only process)."""
        return self.task_index == 0

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.name, "replicas": self.replicas, "workers": self.workers, "task_index": self.task_index}


NONE = Distribution()


def _tf_config() -> tuple[int, int]:
    """(workers, this task's index) from ``TF_CONFIG``; raises a one-line error when it is missing or malformed."""
    raw = os.environ.get("TF_CONFIG", "")
    hint = ('set TF_CONFIG on every host, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}} (index 1 on the second host)')
    if not raw.strip():
        raise InputError("--strategy multiworker needs TF_CONFIG (the cluster's workers and this worker's index)", hint=hint,
                         settings=("strategy",))
    try:
        config = json.loads(raw)
        cluster = config["cluster"]
        task = config["task"]
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        index = int(task["index"]) + (1 if task.get("type") == "worker" and cluster.get("chief") else 0)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError("TF_CONFIG is not a JSON object with a cluster and a task", hint=hint, settings=("strategy",)) from None
    if workers < 1 or not 0 <= index < workers:
        raise InputError(f"TF_CONFIG names task index {index} of {workers} worker(s)", hint=hint, settings=("strategy",))
    return workers, index


def local_gpus() -> int:
    """How many GPUs TensorFlow sees on this host."""
    return len(tensorflow().config.list_physical_devices("GPU"))


def _cpu_replicas() -> list[str] | None:
    """Without GPUs: ``EDGEKIT_CPU_REPLICAS=N`` splits the CPU into N logical devices to mirror over (to try
    the distributed path on a laptop or in CI); None (the CPU as one replica) otherwise."""
    raw = os.environ.get("EDGEKIT_CPU_REPLICAS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise InputError(f"EDGEKIT_CPU_REPLICAS must be a whole number from 1 to 64, got {raw!r}", hint="e.g. EDGEKIT_CPU_REPLICAS=2",
                         settings=("strategy",))
    tf = tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(raw))
    except RuntimeError:  # TensorFlow already started: keep the devices it has
        pass
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def resolve_strategy(choice: str | None) -> Distribution:
    """The :class:`Distribution` for ``choice`` (see the module docstring).

    Call it before anything runs on TensorFlow in this process: ``MultiWorkerMirroredStrategy``
    configures the runtime's collective ops, which TensorFlow allows only at program start.
    """
    choice = choice or "none"
    if choice not in STRATEGIES:
        raise InputError(f"strategy must be one of {', '.join(STRATEGIES)}, got {choice!r}", hint="e.g. --strategy mirrored",
                         settings=("strategy",))
    if choice == "auto":
        choice = "mirrored" if local_gpus() > 1 else "none"
    if choice == "none":
        return NONE
    tf = tensorflow()
    if choice == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=_cpu_replicas() if local_gpus() == 0 else None)
        return Distribution("mirrored", strategy, int(strategy.num_replicas_in_sync))
    workers, index = _tf_config()
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"cannot start MultiWorkerMirroredStrategy: {str(exc).splitlines()[0]}",
                         hint="start the strategy first in the process (edgekit's CLI does); check TF_CONFIG's addresses",
                         settings=("strategy",)) from None
    return Distribution("multiworker", strategy, int(strategy.num_replicas_in_sync), workers, index)


@contextlib.contextmanager
def scope(dist: Distribution | None) -> Iterator[None]:
    """The strategy's scope (models and optimizers made inside are mirrored); nothing for ``none``."""
    if dist is None or dist.strategy is None:
        yield
        return
    with dist.strategy.scope():
        yield


def active() -> Any | None:
    """The ``tf.distribute`` strategy whose scope this code runs in, or None."""
    tf = tensorflow()
    return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None


def replicas() -> int:
    """Replicas in sync of the active strategy (1 outside any)."""
    strategy = active()
    return int(strategy.num_replicas_in_sync) if strategy is not None else 1


def global_batch(batch_size: int) -> int:
    """The batch one training step consumes: ``batch_size`` per replica."""
    return batch_size * replicas()


def _models_in(value: Any, depth: int = 0) -> Iterator[Any]:
    model_type = keras().Model
    if isinstance(value, model_type):
        yield value
        yield from nested_models(value)
    elif depth == 0 and isinstance(value, dict):
        for item in value.values():
            yield from _models_in(item, 1)
    elif depth <= 1 and hasattr(value, "__dict__") and not isinstance(value, type):
        for item in vars(value).values():
            if isinstance(item, model_type):
                yield from _models_in(item, 2)


def release(*values: Any) -> None:
    """Lets the Keras models in ``values`` (and models held by objects and dicts there) run without the strategy.

    Keras remembers the strategy a model was built under and runs its ``predict`` through it, a
    collective operation every worker must join; once training is over, only the chief goes on
    (evaluation, export), so the trained models run on this process's copy of their variables.
    """
    for value in values:
        for model in _models_in(value):
            forget_distribution(model)


class History:
    """What :func:`train` returns under a strategy: ``history`` like Keras' ``History``."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}

    def add(self, logs: dict[str, float]) -> None:
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


def train(model: Any, x: Any, y: Any, *, batch_size: int, epochs: int, initial_epoch: int = 0, validation_data: Any = None,
          callbacks: Sequence[Any] = (), shuffle: bool = True, seed: int = 0) -> Any:
    """Trains a compiled ``model`` like ``model.fit`` and returns an object with ``history``.

    Outside a strategy's scope this is ``model.fit`` itself. Inside one it is the distributed loop
    of the module docstring: ``callbacks`` get ``on_epoch_*`` and ``on_train_batch_*`` calls with
    the logs ``loss`` (the global mean) and, for a single classifier output, ``val_accuracy``.
    """
    strategy = active()
    if strategy is None:
        if streams(x, y):  # arrays on disk: batches read as they are needed, not one tensor of everything
            batches = streamed(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, first_epoch=initial_epoch)
            return model.fit(batches, epochs=epochs, initial_epoch=initial_epoch, validation_data=validation_data, callbacks=list(callbacks),
                             shuffle=False, verbose=0)  # the batches come shuffled
        return model.fit(x, y, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch, validation_data=validation_data,
                         callbacks=list(callbacks), shuffle=shuffle, verbose=0)
    return _distributed_fit(strategy, model, x, y, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                            validation_data=validation_data, callbacks=callbacks, shuffle=shuffle, seed=seed)


def _arrays(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, dict):
        return list(value.values())
    return [] if value is None else [value]


def streams(x: Any, y: Any = None) -> bool:
    """Whether training reads these arrays batch by batch: one of them is on disk and larger than ``EDGEKIT_STREAM_MB``
    (a large ``.npy``/``.npz`` or TFRecord data set; smaller ones are in memory and train as Keras feeds them)."""
    limit = stream_threshold_bytes()
    return any(is_on_disk(a) and int(a.size) * 4 > limit for a in (*_arrays(x), *_arrays(y)))


def _rows_of(value: Any, idx: np.ndarray) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(np.asarray(v[idx]) for v in value)
    if isinstance(value, dict):
        return {k: np.asarray(v[idx]) for k, v in value.items()}
    return np.asarray(value[idx])


def _signature(value: Any) -> Any:
    tf = tensorflow()

    def spec(a: Any) -> Any:
        return tf.TensorSpec((None, *np.shape(a)[1:]), tf.as_dtype(np.asarray(a[:1]).dtype))

    if isinstance(value, (list, tuple)):
        return tuple(spec(v) for v in value)
    if isinstance(value, dict):
        return {k: spec(v) for k, v in value.items()}
    return spec(value)


def streamed(x: Any, y: Any, *, batch_size: int, shuffle: bool = True, seed: int = 0, drop_remainder: bool = False,
             first_epoch: int = 0) -> Any:
    """A ``tf.data`` pipeline of ``(x, y)`` batches read from the arrays as training asks for them (prefetched).

    Each pass over it is one epoch (counted from ``first_epoch``, for training that goes on in stages): a new
    seeded order (``seed``, epoch) when ``shuffle``; a batch's rows
    are read in file order, so a memory-mapped array is read mostly sequentially.
    """
    tf = tensorflow()
    n = _rows(x)
    epochs = [first_epoch]

    def batches() -> Iterator[Any]:
        order = np.random.default_rng([seed, epochs[0]]).permutation(n) if shuffle else np.arange(n)
        epochs[0] += 1
        stop = n - n % batch_size if drop_remainder and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = np.sort(order[start:start + batch_size])
            yield _rows_of(x, idx), _rows_of(y, idx)

    return tf.data.Dataset.from_generator(batches, output_signature=(_signature(x), _signature(y))).prefetch(2)


def predict(model: Any, x: Any, *, batch_size: int = 256) -> Any:
    """``model.predict`` over ``x``, in chunks of rows when ``x`` is on disk (never one tensor of all of it)."""
    if not streams(x):
        return model.predict(x, batch_size=batch_size, verbose=0)
    n = _rows(x)
    parts = [model.predict(_rows_of(x, np.arange(s, min(n, s + 8192))), batch_size=batch_size, verbose=0) for s in range(0, n, 8192)]
    if isinstance(parts[0], (list, tuple)):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def _as_tensors(value: Any) -> Any:
    """Lists (several inputs or outputs) as tuples for ``tf.data``; arrays as they are."""
    if isinstance(value, list):
        return tuple(np.asarray(v) for v in value)
    if isinstance(value, dict):
        return {k: np.asarray(v) for k, v in value.items()}
    return np.asarray(value)


def _as_keras(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _rows(x: Any) -> int:
    first = x[0] if isinstance(x, (list, tuple)) else (next(iter(x.values())) if isinstance(x, dict) else x)
    return len(first)


def _own_train_step(model: Any) -> bool:
    """Whether the model's class brings its own ``train_step`` (distillation with hints)."""
    base = keras().Model.train_step
    return getattr(type(model).train_step, "__code__", None) is not getattr(base, "__code__", None)


def _val_accuracy(model: Any, validation_data: Any) -> float | None:
    if validation_data is None or isinstance(validation_data[1], (list, tuple, dict)):
        return None
    labels = np.asarray(validation_data[1])
    if labels.ndim != 1 or labels.dtype.kind not in "iuf":
        return None
    pred = model.predict(validation_data[0], batch_size=256, verbose=0)
    if isinstance(pred, (list, tuple, dict)) or np.ndim(pred) != 2 or np.shape(pred)[1] < 2:
        return None  # not a single classifier output
    return float(np.mean(np.argmax(pred, axis=-1) == labels.astype(np.int64)))


def _distributed_fit(strategy: Any, model: Any, x: Any, y: Any, *, batch_size: int, epochs: int, initial_epoch: int,
                     validation_data: Any, callbacks: Sequence[Any], shuffle: bool, seed: int) -> History:
    tf = tensorflow()
    k = keras()
    n = _rows(x)
    per_step = batch_size * int(strategy.num_replicas_in_sync)
    # whole global batches only (when there is one): every replica gets a non-empty share of every step;
    # the same seed on every worker: the same order, which the data sharding then splits
    if streams(x, y):
        data = streamed(x, y, batch_size=per_step, shuffle=shuffle, seed=seed, drop_remainder=True, first_epoch=initial_epoch)
    else:
        data = tf.data.Dataset.from_tensor_slices((_as_tensors(x), _as_tensors(y)))
        if shuffle:  # training in stages (initial_epoch > 0) goes on with new orders, not the first epoch's again
            data = data.shuffle(n, seed=seed + 1009 * initial_epoch, reshuffle_each_iteration=True)
        data = data.batch(per_step, drop_remainder=n >= per_step)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    distributed = strategy.experimental_distribute_dataset(data.with_options(options))
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    own_step = _own_train_step(model)
    if not own_step:  # Keras builds the compiled loss (a tracker per output) on first use: here, not inside the replicas' step
        first = np.arange(min(n, 2))
        x0, y0 = _as_keras(_rows_of(x, first)), _as_keras(_rows_of(y, first))
        model.compute_loss(x=x0, y=y0, y_pred=model(x0, training=False), training=False)

    def replica_step(xb: Any, yb: Any) -> Any:
        xb, yb = _as_keras(xb), _as_keras(yb)
        if own_step:
            return model.train_step((xb, yb))["loss"]
        with tf.GradientTape() as tape:
            pred = model(xb, training=True)
            loss = model.compute_loss(x=xb, y=yb, y_pred=pred, training=True)  # scaled by 1/replicas (Keras' Loss)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply(grads, model.trainable_variables)
        return loss * float(strategy.num_replicas_in_sync)  # this replica's mean loss, for the logs

    @tf.function
    def step(batch: Any) -> Any:
        per_replica = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    history = History()
    cbs = k.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        losses: list[float] = []
        for index, batch in enumerate(distributed):
            cbs.on_train_batch_begin(index)
            losses.append(float(step(batch)))
            cbs.on_train_batch_end(index, {"loss": losses[-1]})
            interrupts.check()
        logs = {"loss": float(np.mean(losses)) if losses else float("nan")}
        accuracy = _val_accuracy(model, validation_data)
        if accuracy is not None:
            logs["val_accuracy"] = accuracy
        history.add(logs)
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end()
    return history


@dataclass(frozen=True)
class WorkerDone:
    """What a non-chief worker of a multi-worker run returns: it trained its share and wrote nothing."""

    command: str
    distribution: Distribution
    output: str

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "output": None, "chief_output": self.output, "distribution": self.distribution.to_dict(),
                "written": False}

    def message(self) -> str:
        d = self.distribution
        return (f"worker {d.task_index} of {d.workers}: {self.command} trained its share ({d.replicas} replicas in sync); "
                f"the chief (worker 0) writes {self.output}")
