"""Keras 3 layers that simulate TFLite full-int8 inference during training (TensorFlow backend).

Imported only by :mod:`edgekit.passes.qat` when a QAT model is built: it imports TensorFlow and Keras
at module level. The layers reproduce what the TFLite converter does for full-int8 models:

- :class:`FakeQuant` quantizes an activation tensor per tensor (asymmetric, 8 bits), with the
  range tracked as a moving average of batch min/max in training and frozen in inference. The
  converter reads the ``FakeQuantWithMinMaxVars`` ops of the exported graph as the int8 scales
  and zero points of those tensors.
- :class:`QuantWeighted` runs a Conv1D/Conv2D, DepthwiseConv2D, SeparableConv2D/1D or Dense layer
  with its following BatchNormalization folded in (moving statistics, frozen), fake-quantizing
  the folded kernel symmetrically per output channel (convolutions) or per tensor (Dense), exactly
  as the converter folds and quantizes them. It uses the variables of the original layers, so
  fine-tuning updates the float model too.

The layers are never saved: after training, edgekit exports the QAT graph with the TFLite
converter and keeps the plain float model (``--keep-keras``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edgekit.core.tfshim import causal_padding

EPSILON = 1e-6
# Activations that TFLite fuses into CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED/ADD/SUB/MUL.
FUSABLE_ACTIVATIONS = frozenset({"linear", "relu", "relu6"})
# int8 output ranges the TFLite kernels fix for these activations (scale 1/256 or 1/128).
FIXED_OUTPUT_RANGES: dict[str, tuple[float, float]] = {
    "softmax": (0.0, 255.0 / 256.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}


class FakeQuant(keras.layers.Layer):
    """Per-tensor asymmetric int8 fake quantization of an activation tensor.

    ``mode`` is a Python attribute read when the call is traced:

    - ``"calibrate"``: records the average of batch min/max and passes ``x`` through unchanged
      (run eagerly before training to start from sensible ranges);
    - ``"train"``: in training, updates the range as a moving average of batch min/max (the
      first batch sets it if calibration did not); in inference, uses the frozen range. Both
      quantize.

    Example:
        >>> fq = FakeQuant(name="fq")  # doctest: +SKIP
        >>> y = fq(x, training=True)  # doctest: +SKIP
    """

    def __init__(self, fixed_range: tuple[float, float] | None = None, momentum: float = 0.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed_range = fixed_range
        self.momentum = float(momentum)
        self.mode = "train"
        self._calibration_batches = 0

    def build(self, input_shape: Any) -> None:
        lo, hi = self.fixed_range or (0.0, 0.0)
        self.range_min = self.add_weight(shape=(), initializer=keras.initializers.Constant(lo), trainable=False, name="range_min")
        self.range_max = self.add_weight(shape=(), initializer=keras.initializers.Constant(hi), trainable=False, name="range_max")
        # 0 until a range was recorded: the first training batch then sets it directly
        self.initialized = self.add_weight(shape=(), initializer=keras.initializers.Constant(1.0 if self.fixed_range else 0.0),
                                           trainable=False, name="initialized")

    def _bounds(self):
        lo = tf.minimum(self.range_min, 0.0)
        hi = tf.maximum(tf.maximum(self.range_max, 0.0), lo + EPSILON)
        return lo, hi

    def call(self, x, training=None):
        x = tf.convert_to_tensor(x)
        if self.mode == "calibrate":
            if self.fixed_range is None:
                n = self._calibration_batches
                batch_min, batch_max = tf.reduce_min(x), tf.reduce_max(x)
                self.range_min.assign((self.range_min * n + batch_min) / (n + 1))
                self.range_max.assign((self.range_max * n + batch_max) / (n + 1))
                self._calibration_batches = n + 1
                self.initialized.assign(1.0)
            return x
        if training and self.fixed_range is None:
            m = self.momentum * self.initialized  # momentum 0 on the first batch of an uncalibrated range
            self.range_min.assign(m * self.range_min + (1.0 - m) * tf.reduce_min(x))
            self.range_max.assign(m * self.range_max + (1.0 - m) * tf.reduce_max(x))
            self.initialized.assign(1.0)
        lo, hi = self._bounds()
        return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8, narrow_range=False)

    def compute_output_shape(self, input_shape):
        return input_shape

    def quant_params(self) -> tuple[float, int]:
        """The int8 (scale, zero point) the converter will derive from the current range."""
        lo, hi = (float(v) for v in self._bounds())
        scale = (hi - lo) / 255.0
        zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
        return scale, zero_point


def fake_quant_weights(kernel, per_channel: bool):
    """Symmetric int8 fake quantization of a kernel (range [-127, 127], zero point 0).

    Per channel on the last axis (convolutions; the depthwise kernel must be given as
    ``(kh, kw, channels)``), or per tensor (Dense), as the converter quantizes weights.
    """
    if per_channel:
        flat = tf.reshape(tf.abs(kernel), (-1, kernel.shape[-1]))
        bound = tf.maximum(tf.reduce_max(flat, axis=0), EPSILON)
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(kernel, -bound, bound, num_bits=8, narrow_range=True)
    bound = tf.maximum(tf.reduce_max(tf.abs(kernel)), EPSILON)
    return tf.quantization.fake_quant_with_min_max_vars(kernel, -bound, bound, num_bits=8, narrow_range=True)


class KernelConstraint:
    """Keeps a kernel's zeros (``mask``) or its clusters (``centroids`` + ``indices``) through training.

    With a mask the kernel used in the forward pass is ``kernel * mask``: pruned weights get no
    gradient and stay exactly zero. With clusters the kernel is ``centroids[indices]``: the
    assignment of each weight to its cluster is frozen and only the centroid values train.
    """

    def __init__(self, kind: str, mask: np.ndarray | None = None, centroids: np.ndarray | None = None,
                 indices: np.ndarray | None = None) -> None:
        self.kind = kind
        self.mask = mask
        self.centroids = centroids
        self.indices = indices


class QuantWeighted(keras.layers.Layer):
    """A conv/depthwise/separable/dense layer (+ folded BatchNormalization) with int8-simulated weights.

    Args:
        kind: ``"conv"``, ``"depthwise"``, ``"separable"`` or ``"dense"``.
        layer: the original Keras layer; its variables are used (and trained) directly.
        bn: a BatchNormalization layer that follows ``layer`` and is folded into it, or None.
        activation: the original layer's own activation function.
        constraints: kernel attribute name -> :class:`KernelConstraint` (``--preserve``).
    """

    def __init__(self, kind: str, layer: Any, bn: Any = None, constraints: dict[str, KernelConstraint] | None = None,
                 momentum: float = 0.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.inner = layer
        self.bn = bn
        self.activation_fn = getattr(layer, "activation", None) or keras.activations.linear
        self.activation_name = getattr(self.activation_fn, "__name__", "linear")
        self.constraints = dict(constraints or {})
        self.pre_activation = None
        self.mid = None
        if self.activation_name not in FUSABLE_ACTIVATIONS:
            self.pre_activation = FakeQuant(momentum=momentum, name=f"{self.name}_preact_fq")
        if kind == "separable":
            self.mid = FakeQuant(momentum=momentum, name=f"{self.name}_depthwise_fq")
        self._centroid_vars: dict[str, Any] = {}
        self._index_tensors: dict[str, Any] = {}
        self._centroid_keep: dict[str, Any] = {}
        self._mask_tensors: dict[str, Any] = {}

    def build(self, input_shape: Any) -> None:
        for attr, constraint in self.constraints.items():
            if constraint.kind == "clusters":
                self._centroid_vars[attr] = self.add_weight(
                    shape=constraint.centroids.shape, initializer=keras.initializers.Constant(constraint.centroids),
                    trainable=getattr(self.inner, attr).trainable, name=f"{attr}_centroids",
                )
                self._index_tensors[attr] = tf.constant(constraint.indices.astype(np.int32))
                self._centroid_keep[attr] = tf.constant((constraint.centroids != 0).astype(np.float32))
                getattr(self.inner, attr).trainable = False  # only the centroids train
            else:
                self._mask_tensors[attr] = tf.constant(constraint.mask.astype(np.float32))

    def constrained(self, attr: str):
        """The kernel ``attr`` as the forward pass uses it (masked or rebuilt from centroids)."""
        kernel = getattr(self.inner, attr)
        if attr in self._centroid_vars:
            # a centroid that is exactly 0 (preserved sparsity) stays 0
            centroids = self._centroid_vars[attr] * self._centroid_keep[attr]
            return tf.gather(centroids, self._index_tensors[attr])
        if attr in self._mask_tensors:
            return kernel * self._mask_tensors[attr]
        return tf.convert_to_tensor(kernel)

    def finalize(self) -> None:
        """Writes the constrained kernels back into the original layer's variables."""
        for attr in self.constraints:
            getattr(self.inner, attr).assign(self.constrained(attr))
            if attr in self._centroid_vars:
                getattr(self.inner, attr).trainable = self._centroid_vars[attr].trainable

    def _fold(self, kernel, bias, channels: int):
        """Folds the BatchNormalization (moving statistics) into a kernel whose last axis is the output channel."""
        if bias is None:
            bias = tf.zeros((channels,), kernel.dtype)
        if self.bn is None:
            return kernel, bias
        bn = self.bn
        factor = tf.math.rsqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
        if bn.scale:
            factor = factor * bn.gamma
        beta = bn.beta if bn.center else tf.zeros_like(factor)
        return kernel * factor, beta + (bias - bn.moving_mean) * factor

    def _bias(self):
        return tf.convert_to_tensor(self.inner.bias) if getattr(self.inner, "use_bias", False) else None

    def call(self, x, training=None):
        layer = self.inner
        if self.kind == "dense":
            kernel, bias = self._fold(self.constrained("kernel"), self._bias(), layer.units)
            y = keras.ops.matmul(x, fake_quant_weights(kernel, per_channel=False))
            return self._activate(y + bias, training)
        one_d = len(x.shape) == 3
        if one_d:  # run 1D convolutions as 2D ones on (batch, 1, steps, channels), as the converter does
            if getattr(layer, "padding", None) == "causal":
                x = keras.ops.pad(x, causal_padding(layer))
            x = tf.expand_dims(x, 1)
        padding = "valid" if layer.padding == "causal" else layer.padding
        strides, dilation = _pair(layer.strides, one_d), _pair(layer.dilation_rate, one_d)
        if self.kind == "conv":
            kernel, bias = self._fold(_kernel_2d(self.constrained("kernel"), one_d), self._bias(), layer.filters)
            y = tf.nn.convolution(x, fake_quant_weights(kernel, per_channel=True), strides=strides, padding=padding.upper(),
                                  dilations=dilation)
        elif self.kind == "depthwise":
            y, bias = self._depthwise(x, _kernel_2d(self.constrained("kernel"), one_d), self._bias(), strides, dilation, padding)
        else:  # separable: depthwise, an int8 intermediate tensor, then a folded 1x1 pointwise conv
            mid, _ = self._depthwise(x, _kernel_2d(self.constrained("depthwise_kernel"), one_d), None, strides, dilation, padding,
                                     fold=False)
            mid = self.mid(mid, training=training)
            kernel, bias = self._fold(_kernel_2d(self.constrained("pointwise_kernel"), one_d), self._bias(), layer.filters)
            y = tf.nn.conv2d(mid, fake_quant_weights(kernel, per_channel=True), strides=1, padding="VALID")
        y = self._activate(y + bias, training)
        return tf.squeeze(y, 1) if one_d else y

    def _activate(self, y, training):
        if self.pre_activation is not None:
            y = self.pre_activation(y, training=training)
        return self.activation_fn(y)

    def _depthwise(self, x, kernel, bias, strides, dilation, padding, *, fold: bool = True):
        """Depthwise conv with a per-channel (input channel x multiplier) fake-quantized kernel."""
        kh, kw, channels_in, multiplier = tuple(kernel.shape)
        flat = tf.reshape(kernel, (kh, kw, channels_in * multiplier))
        if fold:
            flat, bias = self._fold(flat, bias, channels_in * multiplier)
        flat = fake_quant_weights(flat, per_channel=True)
        y = tf.nn.depthwise_conv2d(x, tf.reshape(flat, (kh, kw, channels_in, multiplier)), strides=(1, *strides, 1),
                                   padding=padding.upper(), dilations=dilation)
        return y, bias

    def compute_output_shape(self, input_shape):
        if self.bn is not None:
            return self.bn.compute_output_shape(self.inner.compute_output_shape(input_shape))
        return self.inner.compute_output_shape(input_shape)


def _pair(value, one_d: bool) -> tuple[int, int]:
    values = tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else (value,)))
    return (1, values[0]) if one_d else (values[0], values[-1])


def _kernel_2d(kernel, one_d: bool):
    """A 1D kernel ``(k, in, out)`` as the 2D kernel ``(1, k, in, out)`` of the equivalent conv."""
    return tf.expand_dims(kernel, 0) if one_d else kernel


class QuantAffine(keras.layers.Layer):
    """A per-channel ``x * a + b`` (BatchNormalization not after a conv, Rescaling, Normalization) as one int8 op.

    Computed as a 1x1 depthwise convolution with a per-channel int8 kernel ``a`` and an int32
    bias ``b`` (inputs of rank other than 4 are reshaped around it), so the converter emits a
    single DEPTHWISE_CONV_2D instead of MUL and ADD with a float intermediate tensor. A
    BatchNormalization uses its moving statistics (frozen); its gamma and beta train.
    """

    def __init__(self, layer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = layer

    def coefficients(self, channels: int):
        """(a, b), each of shape (channels,)."""
        layer = self.inner
        ones = tf.ones((channels,), tf.float32)
        if isinstance(layer, keras.layers.BatchNormalization):
            a = tf.math.rsqrt(tf.convert_to_tensor(layer.moving_variance) + layer.epsilon)
            if layer.scale:
                a = a * layer.gamma
            b = -tf.convert_to_tensor(layer.moving_mean) * a
            if layer.center:
                b = b + layer.beta
            return a, b
        if isinstance(layer, keras.layers.Rescaling):
            a = ones * tf.reshape(tf.cast(layer.scale, tf.float32), (-1,))
            return a, ones * tf.reshape(tf.cast(layer.offset, tf.float32), (-1,))
        mean = tf.reshape(tf.cast(layer.mean, tf.float32), (-1,)) * ones
        std = tf.maximum(tf.sqrt(tf.reshape(tf.cast(layer.variance, tf.float32), (-1,)) * ones), keras.config.epsilon())
        if getattr(layer, "invert", False):
            return std, mean
        return 1.0 / std, -mean / std

    def call(self, x):
        if not x.dtype.is_floating:
            x = tf.cast(x, tf.float32)
        channels = int(x.shape[-1])
        a, b = self.coefficients(channels)
        kernel = tf.reshape(fake_quant_weights(tf.reshape(a, (1, 1, channels)), per_channel=True), (1, 1, channels, 1))
        rank = len(x.shape)
        x4 = x if rank == 4 else tf.reshape(x, tf.stack([tf.shape(x)[0], 1, -1, channels]))
        y = tf.nn.depthwise_conv2d(x4, kernel, strides=(1, 1, 1, 1), padding="VALID") + b
        return y if rank == 4 else tf.reshape(y, tf.shape(x))

    def compute_output_shape(self, input_shape):
        return input_shape
