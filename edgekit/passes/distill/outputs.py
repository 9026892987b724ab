"""Output conventions (logits or probabilities) and the distillation loss terms.

Teachers and students may output logits or probabilities (a final softmax or sigmoid): the
convention is detected (from the output layer's activation, else from a batch whose rows sum
to 1) and probabilities are turned back into logits with ``log`` before softening. The loss::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross_entropy(labels, student)

Example:
    >>> conv = detect_output_kind(model, run_teacher(model, x[:64]))  # doctest: +SKIP
    >>> total, soft, hard = kd_terms(y, teacher_logits, to_logits(out, conv.kind), temperature=4.0, alpha=0.9)  # doctest: +SKIP
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.errors import ModelError
from edgekit.core.tfshim import keras, producing_layer
from edgekit.passes import distribute

# Probabilities are clipped before ``log`` so an underflowed 0 does not become -inf.
SOFTMAX_EPS = 1e-12
SIGMOID_EPS = 1e-7


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


    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputConvention:
        """The inverse of :meth:`to_dict`."""
        return cls(OutputKind(data["kind"]), data["evidence"])


def output_layer(model: Any) -> Any:
    """The layer that produces the model's (first) output, looking inside nested models."""
    layer = None
    outputs = getattr(model, "outputs", None) or []
    if outputs:
        layer = producing_layer(outputs[0])
    if layer is None and getattr(model, "layers", None):
        layer = model.layers[-1]
    if layer is not None and layer is not model and getattr(layer, "outputs", None) is not None and hasattr(layer, "layers"):
        return output_layer(layer)
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


def activation_decides(model: Any) -> bool:
    """Whether the output layer's activation alone tells logits from probabilities."""
    layer = output_layer(model)
    return layer is not None and _activation_name(layer) in ("softmax", "sigmoid", "linear", "log_softmax")


def detect_output_kind(model: Any, outputs: np.ndarray | None = None) -> OutputConvention:
    """Whether ``model`` outputs logits or probabilities, and why.

    The final layer's activation decides when it is softmax, sigmoid or linear; otherwise
    ``outputs`` (the model's outputs on a batch) decide: non-negative rows summing to 1 are
    softmax probabilities, a single unit in [0, 1] is a sigmoid probability, anything else logits.
    """
    layer = output_layer(model)
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


def ops_logits(values: Any, kind: OutputKind) -> Any:
    """:func:`to_logits` in Keras ops (differentiable, for losses)."""
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



def run_teacher(teacher: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """A model's (first) output on ``x`` as (N, -1) float32, in inference mode, batch by batch."""
    out = distribute.predict(teacher, x, batch_size=batch_size)
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



def compile_plain(model: Any, kind: OutputKind, learning_rate: float = 1e-3) -> None:
    """Compiles ``model`` with Keras' own loss for its output convention (clean to save and reload)."""
    k = keras()
    classes = int(model.outputs[0].shape[-1])
    if classes == 1 or kind is OutputKind.SIGMOID:
        loss = k.losses.BinaryCrossentropy(from_logits=kind is OutputKind.LOGITS)
    else:
        loss = k.losses.SparseCategoricalCrossentropy(from_logits=kind is OutputKind.LOGITS)
    model.compile(optimizer=k.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])



def top1(pred: np.ndarray, labels: np.ndarray, kind: OutputKind) -> float:
    """Top-1 accuracy in percent (a single output unit is thresholded: 0 for logits, 0.5 for probabilities)."""
    pred = np.asarray(pred).reshape(len(labels), -1)
    if pred.shape[1] == 1:
        hit = (pred[:, 0] > (0.5 if kind.is_probability else 0.0)).astype(np.int64)
    else:
        hit = pred.argmax(axis=1)
    return float((hit == labels).mean() * 100.0)

