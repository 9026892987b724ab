"""Quantization-aware training (QAT) of Keras 3 models, exported to full-int8 TFLite.

edgekit rebuilds the model's graph (Sequential or Functional, nested models flattened) with
native Keras 3 fake-quantization layers placed where the TFLite converter quantizes a full-int8
model, fine-tunes it, and converts the result; no tf-keras or tfmot is involved.

What the rebuilt graph simulates (see :mod:`edgekit.passes.qat.layers`):

- the model input and every tensor the converter gives its own int8 scale: the outputs of
  Conv/Depthwise/Separable/Dense layers (after their fused ReLU/ReLU6, not between), of Add,
  Subtract, Multiply, Concatenate and the other merges, of activations (softmax, sigmoid and tanh
  with the fixed ranges of the int8 kernels), of Rescaling/Normalization, global average pooling
  and of unsupported layers;
- BatchNormalization folded into the preceding Conv/Depthwise/Separable/Dense (moving statistics,
  frozen during QAT; gamma and beta train), the folded kernel fake-quantized per output channel
  (convolutions) or per tensor (Dense);
- pass-through layers (Reshape, Flatten, pooling, padding, cropping, Dropout...) keep their input's
  scale, as the int8 kernels require.

A layer edgekit cannot simulate stays float (its output is still quantized so the rest of the
graph stays int8), is listed in the plan and the report, and training goes on. The model must
contain at least one layer that can be quantized.

The package, by what each module owns:

- :mod:`~edgekit.passes.qat.graph`: the flattened layer graph and the per-layer plan (:func:`plan_qat`);
- :mod:`~edgekit.passes.qat.preserve`: keeping sparsity or clusters (:func:`preserve_constraints`);
- :mod:`~edgekit.passes.qat.layers`: the Keras fake-quant layers (built on first use);
- :mod:`~edgekit.passes.qat.build`: building, calibrating and converting the QAT model;
- :mod:`~edgekit.passes.qat.qat_pass`: :class:`QatConfig` and :class:`QatPass`.

The ``edgekit qat`` command (measuring float, PTQ and QAT side by side, writing the files) is
:func:`edgekit.workflows.qat.qat`. Importing this package imports no TensorFlow.

Example:
    >>> result = run_passes([QatPass(QatConfig(epochs=2))], ModelState(keras=model), ctx)  # doctest: +SKIP
    >>> result.state.kind  # doctest: +SKIP
    'qat-int8'
"""

from __future__ import annotations

from edgekit.passes.qat.build import QatModel, build_qat_model, calibrate, export_tflite, float_ops, int8_weight_zeros
from edgekit.passes.qat.graph import QUANTIZABLE_ACTIVATIONS, LayerPlan, QatPlan, activation_name, plan_qat
from edgekit.passes.qat.layers import KernelConstraint, qat_layers
from edgekit.passes.qat.preserve import Clusters, cluster_centroids, preserve_constraints, sparsity_masks
from edgekit.passes.qat.qat_pass import QatConfig, QatPass, check_qat_config, resolve_preserve

__all__ = [
    "QUANTIZABLE_ACTIVATIONS", "Clusters", "KernelConstraint", "LayerPlan", "QatConfig", "QatModel", "QatPass", "QatPlan",
    "activation_name", "build_qat_model", "calibrate", "check_qat_config", "cluster_centroids", "export_tflite", "float_ops",
    "int8_weight_zeros", "plan_qat", "preserve_constraints", "qat_layers", "resolve_preserve", "sparsity_masks",
]
