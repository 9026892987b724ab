"""Knowledge distillation: train a small student Keras model from a large teacher.

Hinton-style distillation (Hinton, Vinyals, Dean 2015): the student learns from the teacher's
outputs softened at a temperature ``T`` mixed with the hard labels::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross_entropy(labels, student)

The ``T^2`` factor keeps the soft term's gradients on the same scale whatever ``T`` is. Teachers
and students may output logits or probabilities (a final softmax or sigmoid): the convention is
detected (from the output layer's activation, else from a batch whose rows sum to 1) and
probabilities are turned back into logits with ``log`` before softening.

Pieces, from high level to low:

- :func:`distill` is ``edgekit distill``: loads teacher and student (or derives the student with
  :func:`derive_student`), checks everything before training, trains the distilled student (and a
  ``baseline`` student from the same initial weights on hard labels only), exports all three to
  int8 TFLite and measures accuracy, size and latency side by side; writes ``OUT.report.json``.
- :func:`fit_with_teacher` is the reusable training step for other passes (pruning, QAT): it
  fine-tunes any Keras ``student`` with ``teacher`` as the teacher, through the student's own
  ``compile``/``fit`` so the caller's callbacks (pruning masks...) see the student itself. Without
  augmentation the teacher runs once over the data and its outputs are reused every epoch.
- :func:`distillation_loss` + :func:`teacher_targets`: a plain Keras loss over "packed" targets
  (label, teacher logits) for callers that run ``model.fit`` themselves.
- :class:`DistillingModel` (built by :func:`fit_with_teacher` when hints or augmentation need the
  teacher's features or a fresh teacher pass per batch): a ``keras.Model`` with its own
  ``train_step``.

Example:
    >>> result = distill("teacher.keras", "student.keras", width=0.5, data="train.npz",
    ...                  val="val.npz", epochs=5, baseline=True,
    ...                  preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> result.rows["distilled"].top1, result.rows["baseline"].top1  # doctest: +SKIP
    (88.9, 88.1)
"""

from __future__ import annotations

import copy
import enum
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.errors import DataError, InputError, ModelError
from edgekit.core.manifest import report_path_for
from edgekit.core.datatypes import Dataset, LatencyStats, Preprocessing, SizeInfo
from edgekit.core.tfshim import producing_layer

# Probabilities are clipped before ``log`` so an underflowed 0 does not become -inf.
SOFTMAX_EPS = 1e-12
SIGMOID_EPS = 1e-7
DEFAULT_CACHE_LIMIT_MB = 1024

# Layers whose output channel count is set by one config field (what --width scales).
WIDTH_FIELDS: dict[str, str] = {
    "Dense": "units",
    "Conv1D": "filters",
    "Conv2D": "filters",
    "Conv3D": "filters",
    "Conv1DTranspose": "filters",
    "Conv2DTranspose": "filters",
    "Conv3DTranspose": "filters",
    "SeparableConv1D": "filters",
    "SeparableConv2D": "filters",
}
# Single-input layers whose output has the input's channels (or a fixed multiple of them).
CHANNEL_PRESERVING = {
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Identity", "Rescaling",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Masking",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Flatten",
    "DepthwiseConv1D", "DepthwiseConv2D",  # out = in * depth_multiplier: the multiplier is kept
    "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast", "RandomBrightness", "RandomCrop",
}
# Layers that combine inputs element-wise: every input must have the same channel count.
MERGE_LAYERS = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_CONTAINERS = {"Functional", "Sequential", "Model"}


class OutputKind(str, enum.Enum):
    """What a classifier's output holds."""

    LOGITS = "logits"
    SOFTMAX = "softmax"  # probabilities over classes
    SIGMOID = "sigmoid"  # independent per-unit probabilities (binary with one unit)

    @property
    def is_probability(self) -> bool:
        return self is not OutputKind.LOGITS


@dataclass(frozen=True)
class OutputConvention:
    """A model's detected output convention and the evidence for it."""

    kind: OutputKind
    evidence: str

    def describe(self) -> str:
        what = "logits" if self.kind is OutputKind.LOGITS else f"probabilities ({self.kind.value})"
        return f"{what}: {self.evidence}"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "evidence": self.evidence, "description": self.describe()}


@dataclass(frozen=True)
class WidthChange:
    """One layer of a ``--width`` student: its size in the teacher and in the student."""

    layer: str
    layer_class: str
    field: str
    teacher: int
    student: int
    note: str = ""


@dataclass(frozen=True)
class Hint:
    """Feature distillation between a teacher layer and a student layer (``TEACHER:STUDENT``)."""

    teacher_layer: str
    student_layer: str

    @classmethod
    def parse(cls, text: str) -> Hint:
        parts = text.split(":")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise InputError(f"--hint '{text}' is not TEACHER_LAYER:STUDENT_LAYER", hint="e.g. --hint conv2:conv2 (layer names from `edgekit inspect`)")
        return cls(parts[0].strip(), parts[1].strip())


@dataclass
class FitResult:
    """What :func:`fit_with_teacher` did."""

    history: dict[str, list[float]]
    teacher_outputs: OutputConvention
    student_outputs: OutputConvention
    teacher_cached: bool
    teacher_forward_samples: int
    cache_note: str
    adapters: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "teacher_outputs": self.teacher_outputs.to_dict(),
            "student_outputs": self.student_outputs.to_dict(),
            "teacher_cached": self.teacher_cached,
            "teacher_forward_samples": self.teacher_forward_samples,
            "cache_note": self.cache_note,
            "hint_adapters": self.adapters,
            "seconds": round(self.seconds, 1),
        }


# --- output conventions -----------------------------------------------------------------------

def _output_layer(model: Any) -> Any:
    """The layer that produces the model's (first) output, looking inside nested models."""
    layer = None
    outputs = getattr(model, "outputs", None) or []
    if outputs:
        layer = producing_layer(outputs[0])
    if layer is None and getattr(model, "layers", None):
        layer = model.layers[-1]
    if layer is not None and layer is not model and getattr(layer, "outputs", None) is not None and hasattr(layer, "layers"):
        return _output_layer(layer)
    return layer


def _activation_name(layer: Any) -> str | None:
    if type(layer).__name__ == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    if isinstance(act, str):
        return act
    return getattr(act, "__name__", None)


def _config_decides(model: Any) -> bool:
    """Whether the output layer's activation alone tells logits from probabilities."""
    layer = _output_layer(model)
    return layer is not None and _activation_name(layer) in ("softmax", "sigmoid", "linear", "log_softmax")


def detect_output_kind(model: Any, outputs: np.ndarray | None = None) -> OutputConvention:
    """Whether ``model`` outputs logits or probabilities, and why.

    The final layer's activation decides when it is softmax, sigmoid or linear; otherwise
    ``outputs`` (the model's outputs on a batch) decide: non-negative rows summing to 1 are
    softmax probabilities, a single unit in [0, 1] is a sigmoid probability, anything else logits.
    """
    layer = _output_layer(model)
    name = _activation_name(layer) if layer is not None else None
    layer_name = getattr(layer, "name", "?")
    if name == "log_softmax":
        return OutputConvention(OutputKind.LOGITS, f"final layer '{layer_name}' has a log_softmax activation (log-probabilities are logits)")
    if name == "softmax":
        return OutputConvention(OutputKind.SOFTMAX, f"final layer '{layer_name}' has a softmax activation")
    if name == "sigmoid":
        return OutputConvention(OutputKind.SIGMOID, f"final layer '{layer_name}' has a sigmoid activation")
    if name == "linear":
        return OutputConvention(OutputKind.LOGITS, f"final layer '{layer_name}' has a linear activation")
    if outputs is None:
        return OutputConvention(OutputKind.LOGITS, f"final layer '{layer_name}' has no softmax/sigmoid activation")
    flat = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    n = flat.shape[0]
    if flat.shape[1] > 1 and flat.min() >= 0 and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3):
        return OutputConvention(OutputKind.SOFTMAX, f"outputs are non-negative and every row sums to 1 on {n} samples")
    if flat.shape[1] == 1 and flat.min() >= 0 and flat.max() <= 1:
        return OutputConvention(OutputKind.SIGMOID, f"the single output stays in [0, 1] on {n} samples")
    return OutputConvention(OutputKind.LOGITS, f"outputs are not probabilities on {n} samples (rows do not sum to 1)")


def to_logits(values: np.ndarray, kind: OutputKind) -> np.ndarray:
    """Logits (up to a per-row constant for softmax) from a model's outputs, in numpy."""
    values = np.asarray(values, dtype=np.float32)
    if kind is OutputKind.SOFTMAX:
        return np.log(np.clip(values, SOFTMAX_EPS, 1.0)).astype(np.float32)
    if kind is OutputKind.SIGMOID:
        p = np.clip(values, SIGMOID_EPS, 1.0 - SIGMOID_EPS)
        return (np.log(p) - np.log1p(-p)).astype(np.float32)
    return values


def _ops_logits(values: Any, kind: OutputKind) -> Any:
    from keras import ops

    if kind is OutputKind.SOFTMAX:
        return ops.log(ops.clip(values, SOFTMAX_EPS, 1.0))
    if kind is OutputKind.SIGMOID:
        p = ops.clip(values, SIGMOID_EPS, 1.0 - SIGMOID_EPS)
        return ops.log(p) - ops.log(1.0 - p)
    return values


def uses_sigmoid(teacher: OutputKind, student: OutputKind, classes: int) -> bool:
    """Whether the pair is a sigmoid (per-unit) problem rather than a softmax over classes."""
    if OutputKind.SOFTMAX in (teacher, student) and OutputKind.SIGMOID in (teacher, student):
        raise ModelError(
            "one model ends in softmax and the other in sigmoid; their outputs mean different things",
            hint="use a student with the teacher's output activation (or logits)",
        )
    return OutputKind.SIGMOID in (teacher, student) or classes == 1


def kd_terms(labels: Any, teacher_logits: Any, student_logits: Any, *, temperature: float, alpha: float,
             sigmoid: bool = False) -> tuple[Any, Any, Any]:
    """Per-sample distillation loss and its two terms, in Keras ops (differentiable).

    Args:
        labels: integer class ids (any float/int dtype; ignored where ``alpha`` is 1).
        teacher_logits, student_logits: (N, classes) logits (convert probabilities first).
        temperature: softening temperature ``T``.
        alpha: weight of the soft (teacher) term; ``1 - alpha`` weighs the hard-label term.
        sigmoid: per-unit sigmoid outputs (binary/multi-label) instead of a softmax over classes.

    Returns:
        ``(total, soft, hard)``, each of shape (N,); ``soft`` already includes ``T^2``.
    """
    from keras import ops

    t = float(temperature)
    classes = int(student_logits.shape[-1])
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    if sigmoid:
        ts, ss = teacher_logits / t, student_logits / t
        p_t = ops.sigmoid(ts)
        # Bernoulli KL per unit, with log(sigmoid(z)) = -softplus(-z), log(1 - sigmoid(z)) = -softplus(z)
        kl = p_t * (ops.softplus(-ss) - ops.softplus(-ts)) + (1.0 - p_t) * (ops.softplus(ss) - ops.softplus(ts))
        soft = ops.mean(kl, axis=-1)
        target = ops.cast(ops.expand_dims(labels, -1), "float32") if classes == 1 else ops.one_hot(labels, classes)
        hard = ops.mean(target * ops.softplus(-student_logits) + (1.0 - target) * ops.softplus(student_logits), axis=-1)
    else:
        log_p_t = ops.log_softmax(teacher_logits / t, axis=-1)
        log_p_s = ops.log_softmax(student_logits / t, axis=-1)
        soft = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
        # one_hot of a missing label (-1) is all zeros: no hard term for unlabelled samples
        hard = -ops.sum(ops.one_hot(labels, classes) * ops.log_softmax(student_logits, axis=-1), axis=-1)
    soft = soft * (t * t)
    total = alpha * soft + (1.0 - alpha) * hard
    return total, soft, hard


# --- packed targets: distillation through a plain Keras loss --------------------------------------

_KERAS_CLASSES: dict[str, Any] = {}


class _Untracked:
    """Holds a value on a Keras layer without Keras tracking it (and its variables)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _keras_classes() -> dict[str, Any]:
    """Keras subclasses, defined on first use so importing this module stays light."""
    if _KERAS_CLASSES:
        return _KERAS_CLASSES
    from edgekit.core.tfshim import keras

    k = keras()
    ops = k.ops

    def packed_split(y_true: Any, classes: int) -> tuple[Any, Any | None]:
        """(labels, teacher logits) from packed targets, or (labels, None) from plain labels."""
        if len(y_true.shape) == 2 and y_true.shape[-1] == classes + 1:
            return y_true[:, 0], y_true[:, 1:]
        return ops.reshape(y_true, (-1,)), None

    class DistillationLoss(k.losses.Loss):
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
            student_logits = _ops_logits(y_pred, self.student_kind)
            if teacher_logits is None:
                _, _, hard = kd_terms(labels, student_logits, student_logits, temperature=1.0, alpha=0.0, sigmoid=sigmoid)
                return hard
            total, _, _ = kd_terms(labels, teacher_logits, student_logits, temperature=self.temperature, alpha=self.alpha,
                                   sigmoid=sigmoid)
            return total

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha,
                    "student_kind": self.student_kind.value, "teacher_kind": self.teacher_kind.value}

    def packed_accuracy(y_true: Any, y_pred: Any) -> Any:
        classes = int(y_pred.shape[-1])
        labels, _ = packed_split(y_true, classes)
        labels = ops.cast(labels, "int32")
        if classes == 1:
            pred = ops.cast(ops.reshape(y_pred, (-1,)) > packed_accuracy.threshold, "int32")
        else:
            pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        return ops.cast(ops.equal(pred, labels), "float32")

    packed_accuracy.threshold = 0.0

    class PackedAccuracy(k.metrics.MeanMetricWrapper):
        """Top-1 accuracy against packed targets or plain labels."""

        def __init__(self, name: str = "accuracy", threshold: float = 0.0, **kwargs: Any) -> None:
            def fn(y_true: Any, y_pred: Any) -> Any:
                packed_accuracy.threshold = threshold
                return packed_accuracy(y_true, y_pred)

            super().__init__(fn=fn, name=name, **kwargs)

    class DistillingModel(k.Model):
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
            self.adapters = []
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
        def metrics(self) -> list[Any]:
            return [*self.trackers.values(), self.accuracy_tracker]

        def call(self, x: Any, training: bool = False) -> Any:
            return self.student(x, training=training)

        def _teacher_outputs(self, x: Any, y: Any) -> tuple[Any, Any, list[Any]]:
            if self.cached:
                return y["labels"], y["teacher"], [y[f"hint{i}"] for i in range(len(self.hints))]
            out = self._teacher_box.value[1](x, training=False)
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            return y, _ops_logits(out[0], self.teacher_kind), [ops.stop_gradient(o) for o in out[1:]]

        def _distill_losses(self, x: Any, labels: Any, teacher_logits: Any, teacher_feats: list[Any], training: bool):
            outs = self.student_features(x, training=training)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            student_out = outs[0]
            total, soft, hard = kd_terms(labels, ops.stop_gradient(teacher_logits), _ops_logits(student_out, self.student_kind),
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
            from edgekit.core.tfshim import tensorflow

            tf = tensorflow()
            x, y, _ = k.utils.unpack_x_y_sample_weight(data)
            if self.augment is not None:
                x = self.augment(x, training=True)
            labels, teacher_logits, teacher_feats = self._teacher_outputs(x, y)
            with tf.GradientTape() as tape:
                total, soft, hard, hint, student_out = self._distill_losses(x, labels, teacher_logits, teacher_feats, True)
                regularization = self.student.losses
                loss = total + (ops.sum(regularization) if regularization else 0.0)
            variables = list(self.student.trainable_variables)
            for adapter in self.adapters:
                if adapter is not None:
                    variables += list(adapter.trainable_variables)
            grads = tape.gradient(loss, variables)
            self.optimizer.apply(grads, variables)
            for name, value in (("loss", loss), ("soft_loss", soft), ("hard_loss", hard), ("hint_loss", hint)):
                self.trackers[name].update_state(value)
            self.accuracy_tracker.update_state(labels, student_out)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data: Any) -> dict[str, Any]:
            x, y, _ = k.utils.unpack_x_y_sample_weight(data)
            labels = y["labels"] if isinstance(y, dict) else y
            student_out = self.student(x, training=False)
            _, _, hard = kd_terms(labels, student_out, _ops_logits(student_out, self.student_kind), temperature=1.0, alpha=0.0,
                                  sigmoid=self.sigmoid)
            self.trackers["loss"].update_state(ops.mean(hard))
            self.trackers["hard_loss"].update_state(ops.mean(hard))
            self.accuracy_tracker.update_state(labels, student_out)
            return {m.name: m.result() for m in (self.trackers["loss"], self.accuracy_tracker)}

    _KERAS_CLASSES.update(DistillationLoss=DistillationLoss, PackedAccuracy=PackedAccuracy, DistillingModel=DistillingModel)
    return _KERAS_CLASSES


def make_adapter(student_shape: tuple[Any, ...], teacher_shape: tuple[Any, ...], *, name: str) -> Any:
    """A learned 1x1 convolution / linear map from student to teacher channels (None if equal).

    Raises ModelError when the two features differ in anything but their channel count.
    """
    from edgekit.core.tfshim import keras

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


def check_hint_shapes(student_shape: tuple[Any, ...], teacher_shape: tuple[Any, ...]) -> None:
    """Raises ModelError unless the two feature shapes differ at most in their channel count."""
    if len(student_shape) != len(teacher_shape) or tuple(student_shape[1:-1]) != tuple(teacher_shape[1:-1]):
        raise ModelError(
            f"hint features have shapes {_pretty(student_shape)} (student) and {_pretty(teacher_shape)} (teacher); "
            "only the channel count may differ",
            hint="pair layers with the same spatial size (e.g. the same block of both models)",
        )


def _pretty(shape: Sequence[Any]) -> str:
    return "x".join("?" if d is None else str(d) for d in tuple(shape)[1:])


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
    return _keras_classes()["DistillationLoss"](temperature, alpha, OutputKind(student_kind).value, OutputKind(teacher_kind).value)


def packed_accuracy_metric(student_kind: OutputKind | str = OutputKind.LOGITS) -> Any:
    """A top-1 accuracy metric (named ``accuracy``) that understands packed targets."""
    return _keras_classes()["PackedAccuracy"](threshold=0.5 if OutputKind(student_kind).is_probability else 0.0)


def run_teacher(teacher: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """A model's (first) output on ``x`` as (N, -1) float32, in inference mode, batch by batch."""
    out = teacher.predict(x, batch_size=batch_size, verbose=0)
    out = out[0] if isinstance(out, (list, tuple)) else out
    return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


def teacher_targets(teacher: Any, x: np.ndarray, y: np.ndarray | None, *, batch_size: int = 256,
                    teacher_outputs: OutputConvention | None = None) -> tuple[np.ndarray, OutputConvention]:
    """Runs the teacher once over ``x``; returns packed targets ``[label, teacher logits]`` (N, 1 + classes).

    Missing labels (``y`` None) are packed as -1 (no hard-label term for them).
    """
    raw = run_teacher(teacher, x, batch_size)
    conv = teacher_outputs or detect_output_kind(teacher, raw)
    labels = np.full((len(x), 1), -1.0, np.float32) if y is None else np.asarray(y, np.float32).reshape(-1, 1)
    return np.concatenate([labels, to_logits(raw, conv.kind)], axis=1), conv


# --- training ---------------------------------------------------------------------------------

def _as_xy(data: Dataset | tuple[np.ndarray, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(data, Dataset):
        return data.x, data.y
    x, y = data
    return np.asarray(x), None if y is None else np.asarray(y)


def _epoch_callback(on_epoch: Callable[[int, int, dict[str, float]], None] | None, epochs: int) -> list[Any]:
    if on_epoch is None:
        return []
    from edgekit.core.tfshim import keras

    class EpochReport(keras().callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            on_epoch(epoch + 1, epochs, {key: float(v) for key, v in (logs or {}).items()})

    return [EpochReport()]


def make_augmentation(name: str | None, seed: int = 0) -> Any:
    """Keras augmentation layers for ``--augment`` (``flip``, ``shift``, ``flip+shift``), or None."""
    if name in (None, "", "none"):
        return None
    from edgekit.core.tfshim import keras

    k = keras()
    parts = name.split("+")
    unknown = [p for p in parts if p not in ("flip", "shift")]
    if unknown:
        raise InputError(f"--augment '{name}' is not one of none, flip, shift, flip+shift", hint="e.g. --augment shift")
    layers = []
    if "flip" in parts:
        layers.append(k.layers.RandomFlip("horizontal", seed=seed))
    if "shift" in parts:
        layers.append(k.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1))
    return k.Sequential(layers, name="augment")


def fit_with_teacher(
    student: Any,
    teacher: Any,
    train: Dataset | tuple[np.ndarray, np.ndarray | None],
    val: Dataset | tuple[np.ndarray, np.ndarray] | None = None,
    *,
    epochs: int,
    temperature: float = 4.0,
    alpha: float = 0.9,
    batch_size: int = 128,
    learning_rate: float | None = 1e-3,
    optimizer: Any = None,
    hints: Sequence[Hint | str] = (),
    hint_weight: float = 1.0,
    augment: Any = None,
    callbacks: Sequence[Any] = (),
    seed: int = 0,
    teacher_outputs: OutputConvention | None = None,
    student_outputs: OutputConvention | None = None,
    cache: bool = True,
    cache_limit_mb: float = DEFAULT_CACHE_LIMIT_MB,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    recompile: bool = True,
) -> FitResult:
    """Trains ``student`` (in place) with ``teacher`` as the teacher; the teacher is never changed.

    This is the recovery hook for other passes: fine-tune a pruned or fake-quantized model with
    the original model as the teacher by calling this instead of ``model.fit``. Without hints or
    augmentation the student is compiled with :func:`distillation_loss` and fitted on packed
    targets, so ``callbacks`` (pruning masks, ...) receive the student itself as ``self.model``,
    and the teacher runs exactly once over ``train`` (its outputs are cached for every epoch).
    With hints or augmentation a :class:`DistillingModel` wraps the student.

    Args:
        student: a built Keras model; trained in place.
        teacher: a Keras model with the same input shape and number of outputs (classes).
        train: a :class:`~edgekit.core.datatypes.Dataset` or ``(x, y)``; ``y`` may be None when ``alpha`` is 1.
        val: optional labelled data for ``val_accuracy`` in the history.
        epochs, batch_size, seed: training settings (``keras.utils.set_random_seed(seed)`` first).
        temperature, alpha: softening temperature and weight of the soft term (``1 - alpha``: hard labels).
        learning_rate, optimizer: Adam with ``learning_rate`` unless an optimizer is given.
        hints: ``Hint("teacher_layer", "student_layer")`` or ``"teacher_layer:student_layer"``.
        hint_weight: weight of the (relative MSE) hint loss.
        augment: a callable/Keras layer applied to each training batch (the teacher then runs per batch).
        callbacks: Keras callbacks for ``fit``.
        teacher_outputs, student_outputs: override the detected output conventions.
        cache: reuse teacher outputs across epochs when nothing changes the inputs (default).
        cache_limit_mb: with hints, cache teacher features only if they fit in this many MB.
        on_epoch: ``on_epoch(epoch, epochs, logs)`` after each epoch (progress display).
        recompile: for the packed path, leave the student compiled with a standard loss afterwards
            (so it saves and reloads without edgekit's custom loss).

    Example (prune's fine-tuning with the original model as teacher):
        >>> fit_with_teacher(pruned, original, train, val, epochs=2, batch_size=64,
        ...                  callbacks=[mask_callback(pruned, masks)])  # doctest: +SKIP
    """
    from edgekit.core.tfshim import keras

    k = keras()
    started = time.perf_counter()
    hint_list = [h if isinstance(h, Hint) else Hint.parse(h) for h in hints]
    check_pair(teacher, student, hints=hint_list)
    check_distill_options(epochs=epochs, temperature=temperature, alpha=alpha, batch_size=batch_size,
                          learning_rate=learning_rate if optimizer is None else 1.0, hint_weight=hint_weight)
    x, y = _as_xy(train)
    if y is None and alpha < 1.0:
        raise DataError("training data has no labels, but alpha < 1 needs them for the hard-label term",
                        hint="give labelled data (x and y) or use alpha 1.0 (teacher only)")
    val_xy = _as_xy(val) if val is not None else None
    if val_xy is not None and val_xy[1] is None:
        val_xy = None
    k.utils.set_random_seed(seed)
    s_conv = student_outputs or detect_output_kind(student, None if _config_decides(student) else run_teacher(student, x[:batch_size]))
    opt = optimizer if optimizer is not None else k.optimizers.Adam(1e-3 if learning_rate is None else learning_rate)
    cbs = [*callbacks, *_epoch_callback(on_epoch, epochs)]
    n = len(x)

    if not hint_list and augment is None and cache:
        if alpha == 0.0:  # labels only (a baseline): the teacher's term is off, so it need not run
            t_conv = teacher_outputs or detect_output_kind(teacher)
            classes = int(student.outputs[0].shape[-1])
            labels = np.asarray(y, np.float32).reshape(-1, 1)
            packed = np.concatenate([labels, np.zeros((n, classes), np.float32)], axis=1)
            forward, note = 0, "alpha 0: trained on the labels alone; the teacher did not run"
        else:
            packed, t_conv = teacher_targets(teacher, x, y, teacher_outputs=teacher_outputs)
            forward, note = n, f"teacher ran once over {n} samples; its outputs were reused for {epochs} epochs"
        uses_sigmoid(t_conv.kind, s_conv.kind, packed.shape[1] - 1)  # fail on softmax vs sigmoid now
        student.compile(optimizer=opt, loss=distillation_loss(temperature, alpha, student_kind=s_conv.kind),
                        metrics=[packed_accuracy_metric(s_conv.kind)])
        history = student.fit(x, packed, batch_size=batch_size, epochs=epochs, validation_data=val_xy, callbacks=cbs,
                              shuffle=True, verbose=0)
        if recompile:
            compile_plain(student, s_conv.kind)
        return FitResult(_history(history), t_conv, s_conv, True, forward, note, seconds=time.perf_counter() - started)

    # the teacher's convention, from its layers or one batch
    t_conv = teacher_outputs or detect_output_kind(teacher)
    forward = 0
    if teacher_outputs is None and not _config_decides(teacher):
        probe = x[: min(n, batch_size)]
        t_conv = detect_output_kind(teacher, run_teacher(teacher, probe))
        forward += len(probe)
    feature_bytes = 4 * n * sum(int(np.prod(teacher.get_layer(h.teacher_layer).output.shape[1:])) for h in hint_list)
    cached = augment is None and cache and feature_bytes <= cache_limit_mb * 2**20
    model = _keras_classes()["DistillingModel"](student, teacher, temperature=temperature, alpha=alpha, teacher_kind=t_conv.kind,
                                       student_kind=s_conv.kind, hints=hint_list, hint_weight=hint_weight, augment=augment,
                                       cached=cached)
    if cached:
        feature_model = model._teacher_box.value[1]
        outs = feature_model.predict(x, batch_size=256, verbose=0)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        targets = {"labels": np.full(n, -1, np.float32) if y is None else y.astype(np.float32),
                   "teacher": to_logits(np.asarray(outs[0]).reshape(n, -1), t_conv.kind)}
        targets.update({f"hint{i}": np.asarray(o, np.float32) for i, o in enumerate(outs[1:])})
        forward += n
        note = (f"teacher ran once over {n} samples; its outputs and {len(hint_list)} hint feature(s) "
                f"({feature_bytes / 2**20:.0f} MB) were reused for {epochs} epochs")
    else:
        targets = np.full(n, -1, np.float32) if y is None else y.astype(np.float32)
        steps = int(np.ceil(n / batch_size))
        forward += epochs * n
        if augment is not None:
            note = f"augmentation changes every batch, so the teacher ran on each of {steps * epochs} training batches"
        elif not cache:
            note = "cache off: the teacher ran on every training batch"
        else:
            note = (f"hint features would need {feature_bytes / 2**20:.0f} MB (> {cache_limit_mb:.0f} MB cache limit), "
                    "so the teacher ran on every training batch")
    model.compile(optimizer=opt)
    history = model.fit(x, targets, batch_size=batch_size, epochs=epochs, validation_data=val_xy, callbacks=cbs,
                        shuffle=True, verbose=0)
    if recompile:
        compile_plain(student, s_conv.kind)
    return FitResult(_history(history), t_conv, s_conv, cached, forward, note, adapters=model.adapter_info,
                     seconds=time.perf_counter() - started)


def _history(history: Any) -> dict[str, list[float]]:
    return {key: [round(float(v), 6) for v in values] for key, values in history.history.items()}


def compile_plain(model: Any, kind: OutputKind, learning_rate: float = 1e-3) -> None:
    """Compiles ``model`` with Keras' own loss for its output convention (clean to save and reload)."""
    from edgekit.core.tfshim import keras

    k = keras()
    classes = int(model.outputs[0].shape[-1])
    if classes == 1 or kind is OutputKind.SIGMOID:
        loss = k.losses.BinaryCrossentropy(from_logits=kind is OutputKind.LOGITS)
    else:
        loss = k.losses.SparseCategoricalCrossentropy(from_logits=kind is OutputKind.LOGITS)
    model.compile(optimizer=k.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])


# --- checks -----------------------------------------------------------------------------------

def check_distill_options(*, epochs: int, temperature: float, alpha: float, batch_size: int, learning_rate: float | None,
                          hint_weight: float = 1.0, width: float | None = None) -> None:
    """Rejects impossible settings before anything loads or trains."""
    if epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {epochs}", hint="e.g. --epochs 5")
    if not temperature > 0 or not np.isfinite(temperature):
        raise InputError(f"--temperature must be positive, got {temperature}", hint="Hinton et al. use 2-20; try --temperature 4")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha must be in [0, 1], got {alpha}", hint="it weighs the teacher term; 1 - alpha weighs the labels (e.g. 0.9)")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}", hint="e.g. --batch-size 128")
    if learning_rate is not None and (not learning_rate > 0 or not np.isfinite(learning_rate)):
        raise InputError(f"--lr must be positive, got {learning_rate}", hint="e.g. --lr 0.001")
    if not hint_weight >= 0 or not np.isfinite(hint_weight):
        raise InputError(f"--hint-weight must be >= 0, got {hint_weight}", hint="e.g. --hint-weight 1")
    if width is not None and not (0.0 < width <= 1.0):
        raise InputError(f"--width must be in (0, 1], got {width}", hint="e.g. --width 0.5 halves every layer's filters/units")


def _single_io(model: Any, role: str) -> None:
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"the {role} has {len(inputs)} input(s) and {len(outputs)} output(s); distillation handles single-input, single-output classifiers",
            hint="give a model with one input and one (classes) output",
        )


def check_pair(teacher: Any, student: Any, *, hints: Sequence[Hint] = ()) -> None:
    """Fails before training when teacher and student do not fit together.

    Checks: one input and one output each, the same input shape, the same number of classes,
    and that hint layers exist with compatible feature shapes.
    """
    _single_io(teacher, "teacher")
    _single_io(student, "student")
    t_in, s_in = tuple(teacher.inputs[0].shape[1:]), tuple(student.inputs[0].shape[1:])
    if t_in != s_in:
        raise ModelError(
            f"teacher and student take different inputs: teacher {_pretty((None, *t_in))}, student {_pretty((None, *s_in))}",
            hint="the student must take the same input shape as the teacher (same preprocessing and resolution)",
        )
    t_out, s_out = tuple(teacher.outputs[0].shape[1:]), tuple(student.outputs[0].shape[1:])
    if t_out != s_out:
        t_classes, s_classes = int(np.prod([d or 1 for d in t_out])), int(np.prod([d or 1 for d in s_out]))
        raise ModelError(
            f"teacher and student disagree on the output: teacher has {t_classes} classes ({_pretty((None, *t_out))}), "
            f"student {s_classes} ({_pretty((None, *s_out))})",
            hint="the student's final layer must have as many units as the teacher's (the same classes)",
        )
    if len(t_out) != 1:
        raise ModelError(f"the teacher's output has shape {_pretty((None, *t_out))}; distillation expects (N, classes)",
                         hint="distill classifiers whose output is one vector of classes per sample")
    for h in hints:
        for model, name, role in ((teacher, h.teacher_layer, "teacher"), (student, h.student_layer, "student")):
            names = [layer.name for layer in model.layers]
            if name not in names:
                raise ModelError(f"--hint names layer '{name}', which the {role} does not have",
                                 hint=f"{role} layers: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        check_hint_shapes(tuple(student.get_layer(h.student_layer).output.shape), tuple(teacher.get_layer(h.teacher_layer).output.shape))


def check_labels(data: Dataset, classes: int, what: str) -> None:
    if data.y is None:
        return
    limit = max(classes, 2)
    if data.y.size and int(data.y.max()) >= limit:
        raise DataError(f"labels in {what} go up to {int(data.y.max())}, but the teacher has {classes} classes (ids 0..{limit - 1})",
                        hint="check the labels belong to the teacher's dataset")


# --- deriving a student by width ----------------------------------------------------------------

def _keras_tensors(obj: Any) -> list[dict[str, Any]]:
    """The serialized Keras tensors inside a config fragment (inbound nodes, output layers)."""
    found: list[dict[str, Any]] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append(value)
                return
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    visit(obj)
    return found


def _history_refs(obj: Any) -> list[str]:
    """Names of the layers whose outputs a serialized inbound node refers to."""
    return [t["config"]["keras_history"][0] for t in _keras_tensors(obj)]


def _graph_from_config(config: dict[str, Any], class_name: str) -> tuple[list[dict[str, Any]], dict[str, list[str]], list[str]]:
    """(layers, inputs by layer name, output layer names) of a Functional or Sequential config."""
    layers = config["layers"]
    inbound: dict[str, list[str]] = {}
    if class_name == "Sequential":
        previous: str | None = None
        for layer in layers:
            name = layer["config"]["name"]
            inbound[name] = [previous] if previous is not None else []
            previous = name
        return layers, inbound, [previous] if previous else []
    for layer in layers:
        name = layer.get("name") or layer["config"]["name"]
        inbound[name] = list(dict.fromkeys(_history_refs(layer.get("inbound_nodes", []))))
    outputs = _history_refs(config.get("output_layers", []))
    if not outputs:  # older format: [[name, node, tensor], ...]
        raw = config.get("output_layers", [])
        raw = [raw] if raw and isinstance(raw[0], str) else raw
        outputs = [entry[0] for entry in raw]
    return layers, inbound, outputs


def _channels_kept(reshape: dict[str, Any]) -> bool:
    """Whether a Reshape keeps its input's last (channel) axis, e.g. (C,) -> (1, 1, C)."""
    shapes = [v["config"]["shape"] for v in _keras_tensors(reshape.get("inbound_nodes", []))]
    target = reshape["config"].get("target_shape")
    if len(shapes) != 1 or not target or not shapes[0] or shapes[0][-1] is None:
        return False
    in_rest = [d for d in shapes[0][1:-1]]
    out_rest = [int(d) for d in target[:-1]]
    return int(target[-1]) == int(shapes[0][-1]) and None not in in_rest and int(np.prod(in_rest or [1])) == int(np.prod(out_rest or [1]))


def _strip_build_configs(obj: Any) -> None:
    if isinstance(obj, dict):
        obj.pop("build_config", None)
        obj.pop("compile_config", None)
        for value in obj.values():
            _strip_build_configs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _strip_build_configs(value)


def plan_width(model: Any, width: float) -> tuple[dict[str, Any], list[WidthChange]]:
    """The serialized student (fresh: no weights) and the per-layer changes for ``width``.

    Every Conv/Dense layer's ``filters``/``units`` is multiplied by ``width`` (rounded, at least
    1) except where channel counts are pinned: the final classifier (any layer feeding a model
    output without another Conv/Dense in between), layers feeding Reshape/Permute or a layer
    type edgekit does not know, and the model inputs. Layers joined by Add/Multiply/... share a
    group: the group is scaled only if no member is pinned, so residual sums stay consistent.
    Depthwise layers keep their ``depth_multiplier`` (their channels follow their input).
    """
    from edgekit.core.tfshim import keras

    k = keras()
    serialized = k.saving.serialize_keras_object(model)
    class_name = serialized.get("class_name")
    if class_name not in ("Functional", "Sequential"):
        raise ModelError(f"--width rebuilds Sequential and Functional models; the teacher is a {class_name} (subclassed) model",
                         hint="build the student yourself and pass --student S.keras")
    config = serialized["config"]
    layers, inbound, outputs = _graph_from_config(config, class_name)
    by_name = {(lay.get("name") or lay["config"]["name"]): lay for lay in layers}
    for name, layer in by_name.items():
        if layer["class_name"] in _CONTAINERS:
            raise ModelError(f"--width does not scale nested models (layer '{name}' is a {layer['class_name']} model)",
                             hint="pass --student S.keras with the student architecture you want")

    # union-find over "channel groups": each tensor's channels are set by one group
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    group_of: dict[str, str] = {}  # layer name -> group of its output channels
    concat_inputs: dict[str, list[str]] = {}
    reshapes: dict[str, str] = {}
    pinned_groups: set[str] = set()
    pin_reasons: dict[str, str] = {}

    def pin(group: str, reason: str) -> None:
        pinned_groups.add(group)
        pin_reasons.setdefault(group, reason)

    for name, layer in by_name.items():  # configs list layers in topological order
        cls = layer["class_name"]
        ins = inbound.get(name, [])
        in_groups = [group_of[i] for i in ins if i in group_of]
        if cls == "InputLayer" or not ins:
            group_of[name] = f"input:{name}"
            pin(f"input:{name}", "model input")
        elif cls in WIDTH_FIELDS:
            group_of[name] = f"layer:{name}"
        elif cls in CHANNEL_PRESERVING and len(in_groups) == 1:
            group_of[name] = in_groups[0]
        elif cls in MERGE_LAYERS:
            for g in in_groups[1:]:
                union(in_groups[0], g)
            group_of[name] = in_groups[0]
        elif cls == "Concatenate":
            group_of[name] = f"concat:{name}"  # its channels follow its inputs
            concat_inputs[group_of[name]] = in_groups
        elif cls == "Reshape" and len(in_groups) == 1 and _channels_kept(layer):
            group_of[name] = in_groups[0]  # e.g. (C,) -> (1, 1, C) in a squeeze-excite block
            reshapes[name] = in_groups[0]
        else:
            for g in in_groups:  # Permute, RNNs, unknown layers: keep their input as is
                pin(g, f"feeds {cls} layer '{name}'")
            group_of[name] = f"other:{name}"
            pin(group_of[name], f"follows {cls} layer '{name}'")
    for out in outputs:
        pin(group_of[out], "final classifier")
    # a pinned concatenation pins its inputs (their sum must not change), until nothing changes
    changed = True
    while changed:
        changed = False
        roots = {find(g) for g in pinned_groups}
        for cat, ins in concat_inputs.items():
            if find(cat) in roots:
                for g in ins:
                    if find(g) not in roots:
                        pin(g, f"feeds pinned {cat.split(':', 1)[1]}")
                        changed = True
    pinned_roots = {find(g) for g in pinned_groups}
    root_reason = {}
    for g in pinned_groups:
        root_reason.setdefault(find(g), pin_reasons[g])

    student = copy.deepcopy(serialized)
    s_layers, _, _ = _graph_from_config(student["config"], class_name)
    changes: list[WidthChange] = []
    for layer in s_layers:
        cls = layer["class_name"]
        name = layer.get("name") or layer["config"]["name"]
        if name in reshapes and find(reshapes[name]) not in pinned_roots:
            target = list(layer["config"]["target_shape"])
            target[-1] = max(1, int(round(int(target[-1]) * width)))
            layer["config"]["target_shape"] = target
            continue
        if cls not in WIDTH_FIELDS:
            continue
        fld = WIDTH_FIELDS[cls]
        before = int(layer["config"][fld])
        root = find(group_of[name])
        if root in pinned_roots:
            changes.append(WidthChange(name, cls, fld, before, before, f"kept: {root_reason[root]}"))
            continue
        after = max(1, int(round(before * width)))
        layer["config"][fld] = after
        changes.append(WidthChange(name, cls, fld, before, after))
    _strip_build_configs(student)
    return student, changes


def derive_student(teacher: Any, width: float, *, seed: int = 0) -> tuple[Any, list[WidthChange]]:
    """A fresh (randomly initialised, seeded) student: the teacher's architecture at ``width``.

    Example:
        >>> student, changes = derive_student(teacher, 0.5)  # doctest: +SKIP
        >>> [(c.layer, c.teacher, c.student) for c in changes]  # doctest: +SKIP
        [('conv1', 16, 8), ('conv2', 32, 16), ('fc1', 256, 128), ('fc2', 128, 64), ('probs', 10, 10)]
    """
    from edgekit.core.tfshim import keras

    k = keras()
    check_distill_options(epochs=1, temperature=1, alpha=0, batch_size=1, learning_rate=None, width=width)
    serialized, changes = plan_width(teacher, width)
    k.utils.set_random_seed(seed)
    try:
        student = k.saving.deserialize_keras_object(serialized, custom_objects=_layer_classes(teacher))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:250]
        raise ModelError(f"cannot rebuild the teacher at --width {width}: {first}",
                         hint="some layer depends on exact channel counts; pass --student S.keras instead") from None
    student.name = f"{teacher.name}_w{width:g}".replace(".", "_")
    check_pair(teacher, student)
    return student, changes


def _layer_classes(model: Any) -> dict[str, type]:
    """The classes of a model's layers by name, so custom layers deserialize without a registry."""
    return {type(layer).__name__: type(layer) for layer in getattr(model, "layers", [])}


def fresh_copy(model: Any, *, seed: int = 0) -> Any:
    """The same architecture (same layer names) with freshly initialised, seeded weights."""
    from edgekit.core.tfshim import keras

    k = keras()
    k.utils.set_random_seed(seed)
    try:
        return k.models.clone_model(model)
    except Exception:  # e.g. a subclassed model: go through its serialized form
        serialized = k.saving.serialize_keras_object(model)
        _strip_build_configs(serialized)
        return k.saving.deserialize_keras_object(serialized, custom_objects=_layer_classes(model))


def copy_with_weights(model: Any, weights: list[np.ndarray]) -> Any:
    """The same architecture with the given weights (a clone that shares nothing with ``model``)."""
    clone = fresh_copy(model)
    clone.set_weights(weights)
    return clone


# --- the command ------------------------------------------------------------------------------

@dataclass
class ModelRow:
    """One model in the side-by-side report."""

    name: str
    parameters: int
    top1: float | None
    int8_top1: float | None = None
    int8_size: SizeInfo | None = None
    latency: LatencyStats | None = None
    keras_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parameters": self.parameters,
            "top1": None if self.top1 is None else round(self.top1, 3),
            "int8_top1": None if self.int8_top1 is None else round(self.int8_top1, 3),
            "int8_bytes": self.int8_size.bytes if self.int8_size else None,
            "int8_gzip_bytes": self.int8_size.gzip_bytes if self.int8_size else None,
            "latency": self.latency.to_dict() if self.latency else None,
            "keras_bytes": self.keras_bytes,
        }


@dataclass
class DistillResult:
    """What :func:`distill` produced and measured."""

    output: str
    report_path: str
    rows: dict[str, ModelRow]
    fit: FitResult
    baseline_fit: FitResult | None
    settings: dict[str, Any]
    width_changes: list[WidthChange]
    val_samples: int | None
    train_samples: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def compression(self) -> float:
        return self.rows["teacher"].parameters / max(1, self.rows["distilled"].parameters)

    def gain_over_baseline(self) -> float | None:
        base, dist = self.rows.get("baseline"), self.rows["distilled"]
        if base is None or base.top1 is None or dist.top1 is None:
            return None
        return dist.top1 - base.top1

    def gap_to_teacher(self) -> float | None:
        t, d = self.rows["teacher"].top1, self.rows["distilled"].top1
        return None if t is None or d is None else t - d

    def to_dict(self) -> dict[str, Any]:
        from edgekit.core.manifest import versions

        gain, gap = self.gain_over_baseline(), self.gap_to_teacher()
        return {
            "kind": "distill",
            "output": self.output,
            "settings": self.settings,
            "teacher_outputs": self.fit.teacher_outputs.to_dict(),
            "student_outputs": self.fit.student_outputs.to_dict(),
            "teacher_cache": {"cached": self.fit.teacher_cached, "teacher_forward_samples": self.fit.teacher_forward_samples,
                              "note": self.fit.cache_note},
            "models": {key: row.to_dict() for key, row in self.rows.items()},
            "parameter_ratio_teacher_to_student": round(self.compression, 3),
            "top1_gain_over_baseline": None if gain is None else round(gain, 3),
            "top1_gap_to_teacher": None if gap is None else round(gap, 3),
            "width_changes": [asdict(c) for c in self.width_changes],
            "hint_adapters": self.fit.adapters,
            "history": {"distilled": self.fit.history, "baseline": self.baseline_fit.history if self.baseline_fit else None},
            "train_samples": self.train_samples,
            "val_samples": self.val_samples,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            "versions": versions(),
        }



def top1(pred: np.ndarray, labels: np.ndarray, kind: OutputKind) -> float:
    """Top-1 accuracy in percent (a single output unit is thresholded: 0 for logits, 0.5 for probabilities)."""
    pred = np.asarray(pred).reshape(len(labels), -1)
    if pred.shape[1] == 1:
        hit = (pred[:, 0] > (0.5 if kind.is_probability else 0.0)).astype(np.int64)
    else:
        hit = pred.argmax(axis=1)
    return float((hit == labels).mean() * 100.0)


def measure_int8(models: dict[str, Any], kinds: dict[str, OutputKind], calibration: np.ndarray, val: Dataset | None, *,
                 runs: int = 50, rounds: int | None = None, threads: int = 1) -> dict[str, tuple[SizeInfo, float | None, LatencyStats]]:
    """Converts each Keras model to int8 TFLite and measures size, accuracy on ``val`` and latency.

    Latency runs alternate between the models ``rounds`` times (``runs`` timed runs in all per
    model; by default rounds of at least 10 runs, at most 5 rounds), so background load on a
    shared machine hits all of them alike. The first round also computes the outputs on ``val``.
    """
    import dataclasses

    from edgekit.core.fsutil import size_info
    from edgekit.core.models import LoadedModel
    from edgekit.export.convert import convert
    from edgekit.runtime.local import run_local
    from edgekit.core.datatypes import QuantMode
    from edgekit.runtime.local import latency_stats

    results: dict[str, tuple[SizeInfo, float | None, LatencyStats]] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-distill-") as tmp:
        paths = {}
        for key, model in models.items():
            loaded = LoadedModel(path=f"<{key}>", format="keras", sha256="", keras_model=model, input_shape=tuple(model.inputs[0].shape))
            paths[key] = Path(tmp) / f"{key}_int8.tflite"
            paths[key].write_bytes(convert(loaded, QuantMode.INT8, calibration=calibration))
        accuracy: dict[str, float | None] = dict.fromkeys(models)
        labelled = val is not None and val.y is not None
        rounds = rounds or max(1, min(5, runs // 10))
        per_round = max(1, runs // rounds)
        timings: dict[str, list[Any]] = {key: [] for key in models}
        for round_index in range(rounds):
            for key in models:
                inputs = val.x if labelled and round_index == 0 else None
                run = run_local(paths[key], inputs, threads=threads, runs=per_round, warmup=3)
                if inputs is not None:
                    accuracy[key] = top1(run.outputs[0], val.y, kinds[key])
                timings[key].append(run)
        for key in models:
            first = timings[key][0]
            pooled = dataclasses.replace(first, timings_ms=[t for r in timings[key] for t in r.timings_ms])
            results[key] = (size_info(paths[key]), accuracy[key], latency_stats(pooled))
    return results


def distill(
    teacher: str | os.PathLike[str] | Any,
    output: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | Dataset,
    student: str | os.PathLike[str] | Any | None = None,
    width: float | None = None,
    val: str | os.PathLike[str] | Dataset | None = None,
    epochs: int = 5,
    temperature: float = 4.0,
    alpha: float = 0.9,
    hints: Sequence[str | Hint] = (),
    hint_weight: float = 1.0,
    baseline: bool = False,
    seed: int = 0,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    augment: str | None = None,
    reinit: bool = False,
    preprocessing: Preprocessing | None = None,
    limit: int | None = None,
    export: bool = True,
    calibration_samples: int = 100,
    runs: int = 50,
    threads: int = 1,
    cache_limit_mb: float = DEFAULT_CACHE_LIMIT_MB,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    on_epoch: Callable[[str, int, int, dict[str, float]], None] | None = None,
) -> DistillResult:
    """Distills ``teacher`` into a student and writes ``output`` (.keras) and ``OUT.report.json``.

    The student is ``student`` (a .keras file or Keras model; its weights are the starting point
    unless ``reinit``) or the teacher's architecture at ``width`` (fresh, seeded). With
    ``baseline`` the same student, from the same initial weights, is also trained on the hard
    labels alone (same epochs, data, batch order and seed) for comparison. Every check (paths,
    options, teacher/student compatibility, hint layers, data shapes and labels) runs before
    training; the teacher's weights are never changed.

    Raises:
        InputError, ModelError, DataError: one-line messages, before any training.
    """
    from edgekit.core.data import calibration_sample, load_dataset
    from edgekit.core.fsutil import check_output_path, write_json_atomic
    from edgekit.core.models import LoadedModel, load_model
    from edgekit.runtime.local import check_run_options

    started = time.perf_counter()
    if (student is None) == (width is None):
        raise InputError("give exactly one of --student S.keras or --width W", hint="e.g. --width 0.5 derives a half-width student from the teacher")
    check_distill_options(epochs=epochs, temperature=temperature, alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
                          hint_weight=hint_weight, width=width)
    hint_list = [h if isinstance(h, Hint) else Hint.parse(h) for h in hints]
    if export:
        check_run_options(runs, 0, threads)
        if calibration_samples < 1:
            raise InputError(f"--samples must be at least 1, got {calibration_samples}", hint="e.g. --samples 100")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}", hint="e.g. --limit 10000")
    augment_layer_name = None if augment in (None, "", "none") else augment
    if augment_layer_name and any(p not in ("flip", "shift") for p in augment_layer_name.split("+")):
        raise InputError(f"--augment '{augment}' is not one of none, flip, shift, flip+shift", hint="e.g. --augment shift")

    def path_of(obj: Any) -> Any:
        if isinstance(obj, (str, os.PathLike)):
            return obj
        if isinstance(obj, Dataset):
            return obj.source
        return getattr(obj, "path", None)

    out = check_output_path(output, inputs=[path_of(teacher), path_of(student), path_of(data), path_of(val)], force=force,
                            suffixes=(".keras",), sidecars=[report_path_for(output)])

    def keras_of(obj: Any, role: str) -> tuple[Any, str]:
        if isinstance(obj, (str, os.PathLike)):
            loaded = load_model(obj, unsafe=unsafe, custom_objects=custom_objects)
        elif isinstance(obj, LoadedModel):
            loaded = obj
        else:
            return obj, getattr(obj, "name", role)
        if loaded.keras_model is None:
            raise ModelError(f"the {role} {loaded.path} is a SavedModel; distillation needs a Keras model (.keras or .h5)",
                             hint="pass the .keras file your training code saved")
        return loaded.keras_model, loaded.path

    teacher_model, teacher_src = keras_of(teacher, "teacher")
    _single_io(teacher_model, "teacher")
    width_changes: list[WidthChange] = []
    if width is not None:
        student_model, width_changes = derive_student(teacher_model, width, seed=seed)
        student_src = f"teacher at width {width:g}"
    else:
        student_model, student_src = keras_of(student, "student")
        _single_io(student_model, "student")
        if reinit:
            student_model = fresh_copy(student_model, seed=seed)
        else:
            student_model = copy_with_weights(student_model, student_model.get_weights())  # never train the caller's object
    check_pair(teacher_model, student_model, hints=hint_list)
    classes = int(teacher_model.outputs[0].shape[-1])

    pre = preprocessing or Preprocessing()
    in_shape = tuple(teacher_model.inputs[0].shape)

    def dataset(d: Any, what: str, lim: int | None) -> Dataset | None:
        if d is None:
            return None
        ds = d if isinstance(d, Dataset) else load_dataset(d, input_shape=in_shape, preprocessing=pre, x_key=x_key, y_key=y_key,
                                                           limit=lim, seed=seed)
        check_labels(ds, classes, what)
        return ds

    train = dataset(data, "--data", limit)
    val_ds = dataset(val, "--val", None)
    assert train is not None
    if train.y is None and (alpha < 1.0 or baseline):
        raise DataError(f"--data {train.source} has no labels ('{y_key}' array), needed for "
                        + ("--baseline" if baseline else f"the hard-label term (alpha {alpha} < 1)"),
                        hint="give labelled data, or distill from the teacher alone with --alpha 1 and no --baseline")
    notes: list[str] = []
    if val_ds is not None and val_ds.y is None:
        notes.append(f"--val {val_ds.source} has no labels: accuracy not measured")
    if val_ds is None:
        notes.append("no --val: accuracy not measured (give labelled validation data)")
    aug = make_augmentation(augment_layer_name, seed) if augment_layer_name else None

    initial = [np.array(w) for w in student_model.get_weights()]
    teacher_before = [np.array(w) for w in teacher_model.get_weights()]

    def progress(tag: str) -> Callable[[int, int, dict[str, float]], None] | None:
        if on_epoch is None:
            return None
        return lambda epoch, total, logs: on_epoch(tag, epoch, total, logs)

    fit = fit_with_teacher(student_model, teacher_model, train, val_ds, epochs=epochs, temperature=temperature, alpha=alpha,
                           batch_size=batch_size, learning_rate=learning_rate, hints=hint_list, hint_weight=hint_weight,
                           augment=aug, seed=seed, cache_limit_mb=cache_limit_mb, on_epoch=progress("distilled"))
    baseline_model, baseline_fit = None, None
    if baseline:
        baseline_model = copy_with_weights(student_model, initial)
        # alpha 0: the same loss code, batches and optimizer, with the teacher's term switched off
        baseline_fit = fit_with_teacher(baseline_model, teacher_model, train, val_ds, epochs=epochs, temperature=temperature,
                                        alpha=0.0, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                                        teacher_outputs=fit.teacher_outputs, student_outputs=fit.student_outputs,
                                        on_epoch=progress("baseline"))
    if any(not np.array_equal(a, np.asarray(b)) for a, b in zip(teacher_before, teacher_model.get_weights())):
        raise ModelError("internal error: the teacher's weights changed during distillation", hint="report this to edgekit")

    from edgekit.core.fsutil import save_keras_atomic

    save_keras_atomic(student_model, out)
    models = {"teacher": teacher_model, **({"baseline": baseline_model} if baseline_model is not None else {}), "distilled": student_model}
    kinds = {"teacher": fit.teacher_outputs.kind, "baseline": fit.student_outputs.kind, "distilled": fit.student_outputs.kind}
    rows: dict[str, ModelRow] = {}
    for key, model in models.items():
        acc = None
        if val_ds is not None and val_ds.y is not None:
            acc = top1(model.predict(val_ds.x, batch_size=256, verbose=0), val_ds.y, kinds[key])
        rows[key] = ModelRow(name=key, parameters=int(model.count_params()), top1=acc)
    rows["distilled"].keras_bytes = out.stat().st_size
    if export:
        measured = measure_int8(models, kinds, calibration_sample(train, calibration_samples, seed), val_ds, runs=runs, threads=threads)
        for key, (size, acc, lat) in measured.items():
            rows[key].int8_size, rows[key].int8_top1, rows[key].latency = size, acc, lat
    settings = {
        "teacher": str(teacher_src), "student": str(student_src), "width": width, "epochs": epochs, "temperature": temperature,
        "alpha": alpha, "hints": [asdict(h) for h in hint_list], "hint_weight": hint_weight, "baseline": baseline, "seed": seed,
        "batch_size": batch_size, "learning_rate": learning_rate, "augment": augment_layer_name, "reinit": reinit,
        "preprocessing": pre.to_dict(), "data": train.source, "data_sha256": train.sha256, "val": val_ds.source if val_ds else None,
        "limit": limit, "calibration_samples": calibration_samples if export else None, "latency_runs": runs if export else None,
        "threads": threads,
    }
    result = DistillResult(output=str(out), report_path=str(report_path_for(out)), rows=rows, fit=fit, baseline_fit=baseline_fit,
                           settings=settings, width_changes=width_changes, val_samples=len(val_ds) if val_ds is not None else None,
                           train_samples=len(train), seconds=time.perf_counter() - started, notes=notes)
    write_json_atomic(report_path_for(out), result.to_dict())
    return result


# Recovery defaults (prune/qat --distill), measured on Fashion-MNIST pruning (bench/RESULTS.md): a
# soft term at T=4, alpha=0.9 recovered less than the labels alone; matching the original's hidden
# features plus a mild T=1 output term recovered more.
RECOVERY_TEMPERATURE = 1.0
RECOVERY_ALPHA = 0.5
HINTABLE = set(WIDTH_FIELDS) | {"DepthwiseConv1D", "DepthwiseConv2D"}


def matching_hints(teacher: Any, student: Any) -> list[Hint]:
    """Hints for every hidden Conv/Dense layer that both models have, by name, with the same output shape.

    For a pruned or fake-quantized copy of the teacher that is every hidden weighted layer (the
    classifier is left to the output term). Layers whose shape changed (channels removed) are skipped.
    """
    out_layer = _output_layer(student)
    student_layers = {layer.name: layer for layer in getattr(student, "layers", [])}
    hints = []
    for layer in getattr(teacher, "layers", []):
        other = student_layers.get(layer.name)
        if other is None or other is out_layer or type(layer).__name__ not in HINTABLE:
            continue
        try:
            same = tuple(layer.output.shape) == tuple(other.output.shape)
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
        if same and other is not _output_layer(teacher):
            hints.append(Hint(layer.name, layer.name))
    return hints


def fit_for_pass(model: Any, source_model: Any, train: Dataset, val: Dataset | None, settings: Any, callbacks: list[Any], *,
                 title: str, epochs: int | None = None, initial_epoch: int = 0, temperature: float = RECOVERY_TEMPERATURE,
                 alpha: float = RECOVERY_ALPHA, hints: Sequence[Hint | str] | None = None) -> dict[str, list[float]]:
    """A drop-in for :func:`edgekit.passes.compress.fit` that fine-tunes with ``source_model`` as the teacher.

    Same arguments (a ``TrainSettings``: epochs, batch_size, learning_rate, seed, progress) and
    the same optimizer (:func:`edgekit.passes.compress.make_optimizer`); the loss is the distillation
    loss (``temperature``, ``alpha``) plus hint losses on every hidden layer the two models share
    (:func:`matching_hints`, unless ``hints`` is given). ``initial_epoch`` only places a
    ``--lr-schedule cosine`` on its curve (the history restarts at 0). Used by ``edgekit prune --distill``.
    """
    from edgekit.passes.compress import lr_schedule_callback, make_optimizer, progress_callback

    total = settings.epochs if epochs is None else epochs
    cbs = list(callbacks)
    schedule = lr_schedule_callback(settings, int(np.ceil(len(train) / settings.batch_size)), initial_epoch)
    if schedule is not None:
        cbs.append(schedule)
    if getattr(settings, "progress", False):
        cbs.append(progress_callback(title, int(np.ceil(len(train) / settings.batch_size)), settings.epochs))
    result = fit_with_teacher(model, source_model, train, val, epochs=total, temperature=temperature, alpha=alpha,
                              batch_size=settings.batch_size, optimizer=make_optimizer(source_model, settings.learning_rate),
                              callbacks=cbs, seed=settings.seed,
                              hints=matching_hints(source_model, model) if hints is None else hints)
    return {key: [float(v) for v in values] for key, values in result.history.items()}
