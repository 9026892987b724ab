"""The Keras subclasses distillation needs, defined on first use (:func:`keras_classes`, cached).

- ``DistillationLoss`` + ``PackedAccuracy``: a plain Keras loss and metric over "packed" targets
  ``[label, teacher logits...]`` (:func:`edgekit.passes.distill.outputs.teacher_targets`), for
  callers that run ``model.fit`` themselves (:func:`distillation_loss`, :func:`packed_accuracy_metric`);
- ``DistillingModel``: a ``keras.Model`` with its own ``train_step``, used when hints or
  augmentation need the teacher's features or a fresh teacher pass per batch.

Importing this module imports no TensorFlow; :func:`keras_classes` does.

Example:
    >>> y_packed, t_conv = teacher_targets(teacher, x, y)  # doctest: +SKIP
    >>> student.compile("adam", loss=distillation_loss(4.0, 0.9, student_kind="softmax"),
    ...                 metrics=[packed_accuracy_metric("softmax")])  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

from edgekit.core.tfshim import keras, tensorflow
from edgekit.passes.distill.checks import Hint, check_hint_shapes
from edgekit.passes.distill.outputs import OutputKind, kd_terms, ops_logits, uses_sigmoid


class KerasClasses(NamedTuple):
    """The classes :func:`keras_classes` defines."""

    DistillationLoss: type
    PackedAccuracy: type
    DistillingModel: type


class _Untracked:
    """Holds a value on a Keras layer without Keras tracking it (and its variables)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


@functools.cache
def keras_classes() -> KerasClasses:
    """The Keras subclasses, defined on first use (once per process) so importing this module stays light."""
    k = keras()
    ops = k.ops
    Loss: Any = k.losses.Loss  # noqa: N806 - Keras base classes, typed Any
    MeanMetricWrapper: Any = k.metrics.MeanMetricWrapper  # noqa: N806
    Model: Any = k.Model  # noqa: N806

    def packed_split(y_true: Any, classes: int) -> tuple[Any, Any | None]:
        """(labels, teacher logits) from packed targets, or (labels, None) from plain labels."""
        if len(y_true.shape) == 2 and y_true.shape[-1] == classes + 1:
            return y_true[:, 0], y_true[:, 1:]
        return ops.reshape(y_true, (-1,)), None

    class DistillationLoss(Loss):
        """Distillation loss on packed targets ``[label, teacher logits...]`` (see :func:`teacher_targets`).

        With plain labels (validation data) it is the hard-label loss alone.
        """

        def __init__(self, temperature: float = 4.0, alpha: float = 0.9, student_kind: str = "logits",
                     teacher_kind: str = "logits", name: str = "distillation_loss", **kwargs: Any) -> None:
            super().__init__(name=name, **kwargs)
            self.temperature = float(temperature)
            self.alpha = float(alpha)
            self.student_kind = OutputKind(student_kind)
            self.teacher_kind = OutputKind(teacher_kind)

        def call(self, y_true: Any, y_pred: Any) -> Any:
            classes = int(y_pred.shape[-1])
            sigmoid = uses_sigmoid(self.teacher_kind, self.student_kind, classes)
            labels, teacher_logits = packed_split(y_true, classes)
            student_logits = ops_logits(y_pred, self.student_kind)
            if teacher_logits is None:
                _, _, hard = kd_terms(labels, student_logits, student_logits, temperature=1.0, alpha=0.0, sigmoid=sigmoid)
                return hard
            total, _, _ = kd_terms(labels, teacher_logits, student_logits, temperature=self.temperature, alpha=self.alpha,
                                   sigmoid=sigmoid)
            return total

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha,
                    "student_kind": self.student_kind.value, "teacher_kind": self.teacher_kind.value}

    def packed_accuracy(y_true: Any, y_pred: Any, threshold: float) -> Any:
        classes = int(y_pred.shape[-1])
        labels, _ = packed_split(y_true, classes)
        labels = ops.cast(labels, "int32")
        if classes == 1:
            pred = ops.cast(ops.reshape(y_pred, (-1,)) > threshold, "int32")
        else:
            pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        return ops.cast(ops.equal(pred, labels), "float32")

    class PackedAccuracy(MeanMetricWrapper):
        """Top-1 accuracy against packed targets or plain labels."""

        def __init__(self, name: str = "accuracy", threshold: float = 0.0, **kwargs: Any) -> None:
            def fn(y_true: Any, y_pred: Any) -> Any:
                return packed_accuracy(y_true, y_pred, threshold)

            super().__init__(fn=fn, name=name, **kwargs)

    class DistillingModel(Model):
        """Trains ``student`` against ``teacher`` with hint losses and/or augmentation.

        ``fit`` takes ``x`` and either plain labels (the teacher runs on every batch, after
        augmentation) or a dict of cached targets ``{"labels", "teacher", "hint0", ...}``.
        Only the student's and the hint adapters' variables are trained; the teacher is not
        tracked by this model (no optimizer state, no weight updates) and runs with
        ``training=False``.

        Example:
            >>> dm = DistillingModel(student, teacher, temperature=4.0, alpha=0.9, hints=[Hint("conv2", "conv2")])  # doctest: +SKIP
            >>> dm.compile(optimizer="adam")  # doctest: +SKIP
            >>> dm.fit(x, y, epochs=3)  # doctest: +SKIP
        """

        def __init__(self, student: Any, teacher: Any, *, temperature: float, alpha: float, teacher_kind: OutputKind,
                     student_kind: OutputKind, hints: Sequence[Hint] = (), hint_weight: float = 1.0, augment: Any = None,
                     cached: bool = False) -> None:
            super().__init__(name="distilling_model")
            self.student = student
            self.temperature = float(temperature)
            self.alpha = float(alpha)
            self.teacher_kind = teacher_kind
            self.student_kind = student_kind
            self.hints = list(hints)
            self.hint_weight = float(hint_weight)
            self.augment = augment
            self.cached = cached
            classes = int(student.outputs[0].shape[-1])
            self.sigmoid = uses_sigmoid(teacher_kind, student_kind, classes)
            self.student_features = k.Model(
                student.inputs, [student.outputs[0], *[student.get_layer(h.student_layer).output for h in self.hints]],
                name="student_features",
            )
            teacher_features = k.Model(
                teacher.inputs, [teacher.outputs[0], *[teacher.get_layer(h.teacher_layer).output for h in self.hints]],
                name="teacher_features",
            ) if self.hints else teacher
            # held outside Keras' attribute tracking: no teacher variable is trained or gets optimizer state
            self._teacher_box = _Untracked((teacher, teacher_features))
            self.adapters: list[Any] = []
            self.adapter_info: list[dict[str, Any]] = []
            for h in self.hints:
                s_shape = tuple(student.get_layer(h.student_layer).output.shape)
                t_shape = tuple(teacher.get_layer(h.teacher_layer).output.shape)
                self.adapters.append(make_adapter(s_shape, t_shape, name=f"adapter_{len(self.adapters)}"))
                self.adapter_info.append({"teacher_layer": h.teacher_layer, "student_layer": h.student_layer,
                                          "teacher_shape": list(t_shape[1:]), "student_shape": list(s_shape[1:]),
                                          "adapter": "identity" if self.adapters[-1] is None else type(self.adapters[-1]).__name__})
            self.trackers = {name: k.metrics.Mean(name=name) for name in ("loss", "soft_loss", "hard_loss", "hint_loss")}
            self.accuracy_tracker = PackedAccuracy(threshold=0.5 if student_kind.is_probability else 0.0)

        @property
        def teacher_features(self) -> Any:
            """The teacher's model of (outputs, hint features) (the teacher itself without hints)."""
            return self._teacher_box.value[1]

        @property
        def metrics(self) -> list[Any]:
            return [*self.trackers.values(), self.accuracy_tracker]

        def call(self, x: Any, training: bool = False) -> Any:
            return self.student(x, training=training)

        def _teacher_outputs(self, x: Any, y: Any) -> tuple[Any, Any, list[Any]]:
            if self.cached:
                return y["labels"], y["teacher"], [y[f"hint{i}"] for i in range(len(self.hints))]
            out = self.teacher_features(x, training=False)
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            return y, ops_logits(out[0], self.teacher_kind), [ops.stop_gradient(o) for o in out[1:]]

        def _distill_losses(self, x: Any, labels: Any, teacher_logits: Any, teacher_feats: list[Any], training: bool):
            outs = self.student_features(x, training=training)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            student_out = outs[0]
            total, soft, hard = kd_terms(labels, ops.stop_gradient(teacher_logits), ops_logits(student_out, self.student_kind),
                                         temperature=self.temperature, alpha=self.alpha, sigmoid=self.sigmoid)
            total, soft, hard = ops.mean(total), ops.mean(soft), ops.mean(hard)
            hint = ops.convert_to_tensor(0.0)
            for adapter, s_feat, t_feat in zip(self.adapters, outs[1:], teacher_feats):
                mapped = adapter(s_feat, training=training) if adapter is not None else s_feat
                # relative MSE: scale-free whatever the teacher's feature magnitudes are
                hint = hint + ops.mean(ops.square(mapped - t_feat)) / (ops.mean(ops.square(t_feat)) + 1e-6)
            total = total + self.hint_weight * hint
            return total, soft, hard, hint, student_out

        def train_step(self, data: Any) -> dict[str, Any]:
            tf = tensorflow()
            x, y, _ = k.utils.unpack_x_y_sample_weight(data)
            if self.augment is not None:
                x = self.augment(x, training=True)
            labels, teacher_logits, teacher_feats = self._teacher_outputs(x, y)
            with tf.GradientTape() as tape:
                total, soft, hard, hint, student_out = self._distill_losses(x, labels, teacher_logits, teacher_feats, True)
                regularization = self.student.losses
                loss = total + (ops.sum(regularization) if regularization else 0.0)
                # under a tf.distribute strategy the replicas' gradients are summed: each replica's share is 1/replicas
                share = loss / tf.distribute.get_strategy().num_replicas_in_sync
            variables = list(self.student.trainable_variables)
            for adapter in self.adapters:
                if adapter is not None:
                    variables += list(adapter.trainable_variables)
            grads = tape.gradient(share, variables)
            self.optimizer.apply(grads, variables)
            for name, value in (("loss", loss), ("soft_loss", soft), ("hard_loss", hard), ("hint_loss", hint)):
                self.trackers[name].update_state(value)
            self.accuracy_tracker.update_state(labels, student_out)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data: Any) -> dict[str, Any]:
            x, y, _ = k.utils.unpack_x_y_sample_weight(data)
            labels = y["labels"] if isinstance(y, dict) else y
            student_out = self.student(x, training=False)
            _, _, hard = kd_terms(labels, student_out, ops_logits(student_out, self.student_kind), temperature=1.0, alpha=0.0,
                                  sigmoid=self.sigmoid)
            self.trackers["loss"].update_state(ops.mean(hard))
            self.trackers["hard_loss"].update_state(ops.mean(hard))
            self.accuracy_tracker.update_state(labels, student_out)
            return {m.name: m.result() for m in (self.trackers["loss"], self.accuracy_tracker)}

    return KerasClasses(DistillationLoss, PackedAccuracy, DistillingModel)




def make_adapter(student_shape: tuple[Any, ...], teacher_shape: tuple[Any, ...], *, name: str) -> Any:
    """A learned 1x1 convolution / linear map from student to teacher channels (None if equal).

    Raises ModelError when the two features differ in anything but their channel count.
    """
    k = keras()
    check_hint_shapes(student_shape, teacher_shape)
    if student_shape[-1] == teacher_shape[-1]:
        return None
    rank = len(student_shape)
    if rank == 4:
        layer = k.layers.Conv2D(int(teacher_shape[-1]), 1, use_bias=False, name=name)
    elif rank == 3:
        layer = k.layers.Conv1D(int(teacher_shape[-1]), 1, use_bias=False, name=name)
    else:
        layer = k.layers.Dense(int(teacher_shape[-1]), use_bias=False, name=name)
    layer.build(tuple(student_shape))
    return layer



def distillation_loss(temperature: float = 4.0, alpha: float = 0.9, *, student_kind: OutputKind | str = OutputKind.LOGITS,
                      teacher_kind: OutputKind | str = OutputKind.LOGITS) -> Any:
    """A Keras loss for ``model.compile`` that distills from packed targets.

    ``y`` passed to ``fit`` must come from :func:`teacher_targets` (``[label, teacher logits]``
    per sample; teacher probabilities are already converted to logits there, so leave
    ``teacher_kind`` as logits then). Plain integer labels (e.g. ``validation_data``) give the
    hard-label loss alone.

    Example:
        >>> y_packed, t_conv = teacher_targets(teacher, x, y)  # doctest: +SKIP
        >>> student.compile("adam", loss=distillation_loss(4.0, 0.9, student_kind="softmax"),
        ...                 metrics=[packed_accuracy_metric()])  # doctest: +SKIP
        >>> student.fit(x, y_packed, validation_data=(x_val, y_val), epochs=3)  # doctest: +SKIP
    """
    return keras_classes().DistillationLoss(temperature, alpha, OutputKind(student_kind).value, OutputKind(teacher_kind).value)


def packed_accuracy_metric(student_kind: OutputKind | str = OutputKind.LOGITS) -> Any:
    """A top-1 accuracy metric (named ``accuracy``) that understands packed targets."""
    return keras_classes().PackedAccuracy(threshold=0.5 if OutputKind(student_kind).is_probability else 0.0)


