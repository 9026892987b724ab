"""Building the QAT model, calibrating its ranges, and converting it to full-int8 TFLite.

:func:`build_qat_model` rebuilds a Keras model's graph with the layers of
:mod:`edgekit.passes.qat.layers` (the caller's model is copied first, never changed);
:func:`calibrate` sets the activation ranges from float inference; :func:`export_tflite`
converts the trained graph through the export layer's QAT conversion.

Example:
    >>> qm = build_qat_model(model, preserve="sparsity")  # doctest: +SKIP
    >>> calibrate(qm, x[:512])  # doctest: +SKIP
    >>> qm.model.fit(x, y, epochs=1)  # doctest: +SKIP
    >>> qm.finalize(); flatbuffer = export_tflite(qm, "int8")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.datatypes import IOType
from edgekit.core.tflite_file import TfliteInfo
from edgekit.core.tfshim import keras
from edgekit.export.convert import convert_qat
from edgekit.passes.qat.graph import QatPlan, plan_qat
from edgekit.passes.qat.layers import qat_layers
from edgekit.passes.qat.preserve import preserve_constraints


@dataclass
class QatModel:
    """A QAT Keras model (``model``) and the plain float model whose variables it trains (``float_model``)."""

    model: Any
    float_model: Any
    plan: QatPlan
    quantizers: list[Any]
    weighted: list[Any]
    preserved: dict[str, Any]

    def set_mode(self, mode: str) -> None:
        for q in self.quantizers:
            q.mode = mode

    def finalize(self) -> None:
        """Writes preserved (masked/clustered) kernels back into the float model."""
        for layer in self.weighted:
            layer.finalize()


def _float_copy(keras_model: Any) -> Any:
    """A deep copy of the model (new variables), so QAT never changes the caller's model."""
    k = keras()
    copy = k.models.clone_model(keras_model)
    copy.set_weights(keras_model.get_weights())
    return copy


def build_qat_model(keras_model: Any, preserve: str | None = None, momentum: float = 0.99) -> QatModel:
    """Rebuilds ``keras_model`` with fake-quantization; the caller's model is never modified.

    The returned :class:`QatModel` holds the QAT graph and a float copy of the model sharing its
    variables: training the QAT graph fine-tunes the copy, which ``keep_keras`` saves.
    """
    k = keras()
    layers = qat_layers()
    FakeQuant, QuantAffine, QuantWeighted = layers.FakeQuant, layers.QuantAffine, layers.QuantWeighted  # noqa: N806 - classes
    float_model = _float_copy(keras_model)
    plan = plan_qat(float_model)
    constraints, preserved = preserve_constraints(plan, preserve)
    quantizers: list[Any] = []
    weighted: list[Any] = []
    names: set[str] = set()

    def unique(name: str) -> str:
        base, i = name, 1
        while name in names:
            i += 1
            name = f"{base}_{i}"
        names.add(name)
        return name

    def fake_quant(tensor: Any, name: str, fixed_range=None) -> Any:
        if "float" not in str(tensor.dtype):
            return tensor
        fq = FakeQuant(fixed_range=fixed_range, momentum=momentum, name=unique(f"{name}_fq"))
        quantizers.append(fq)
        return fq(tensor)

    values: dict[tuple, Any] = {}
    new_inputs = []
    for key, source in plan.graph.inputs:
        tensor = k.Input(batch_shape=tuple(source.shape), dtype=source.dtype, name=unique(source.name.split(":")[0]))
        new_inputs.append(tensor)
        values[key] = fake_quant(tensor, tensor.name)

    for step in plan.steps:
        node, layer = step.node, step.node.layer
        local = {id(t): values[key] for t, key in zip(node.arg_tensors, node.inputs)}
        if step.role == "folded":
            out = [local[id(node.arg_tensors[0])]]
        elif step.role == "weighted":
            attrs = ("depthwise_kernel", "pointwise_kernel") if step.kind == "separable" else ("kernel",)
            mine = {a: constraints[(id(layer), a)] for a in attrs if (id(layer), a) in constraints}
            qlayer = QuantWeighted(step.kind, layer, bn=step.bn, constraints=mine, momentum=momentum, name=unique(f"{layer.name}_qat"))
            weighted.append(qlayer)
            out = [qlayer(local[id(node.arg_tensors[0])])]
            quantizers.extend(q for q in (qlayer.pre_activation, qlayer.mid) if q is not None)
        elif step.role in ("bn", "affine"):
            out = [QuantAffine(layer, name=unique(f"{layer.name}_qat"))(local[id(node.arg_tensors[0])])]
        else:
            args, kwargs = node.arguments.fill_in(local)
            result = layer(*args, **kwargs)
            out = list(result) if isinstance(result, (list, tuple)) else [result]
        if step.quantize_output:
            out = [fake_quant(t, layer.name, step.fixed_range) for t in out]
        for key, tensor in zip(node.outputs, out):
            values[key] = tensor

    new_outputs = [values[key] for key in plan.graph.outputs]
    model = k.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                    new_outputs if len(new_outputs) > 1 else new_outputs[0], name=f"{keras_model.name}_qat")
    return QatModel(model=model, float_model=float_model, plan=plan, quantizers=quantizers, weighted=weighted,
                    preserved=preserved)


def calibrate(qat_model: QatModel, x: Any, batch_size: int = 64, batches: int = 8) -> None:
    """Sets every activation range from float inference on up to ``batches`` batches of ``x`` (a list for several inputs)."""
    qat_model.set_mode("calibrate")
    n = len(x[0]) if isinstance(x, list) else len(x)
    try:
        for start in range(0, min(n, batch_size * batches), batch_size):
            batch = [a[start: start + batch_size] for a in x] if isinstance(x, list) else x[start: start + batch_size]
            qat_model.model(batch, training=False)
    finally:
        qat_model.set_mode("train")


def export_tflite(qat_model: QatModel, io_type: IOType | str = IOType.FLOAT) -> bytes:
    """Converts the trained QAT model to full-int8 TFLite bytes (ranges from the fake-quant ops).

    Ops that only unsupported (float) layers produce stay float; everything else is int8.
    The converter is set up once, in :func:`edgekit.export.convert.convert_qat`.

    Raises:
        InputError: ``io_type`` is not float, int8 or uint8.
        ConversionError: with the converter's first error line.
    """
    return convert_qat(qat_model.model, io_type)


def float_ops(info: TfliteInfo) -> list[str]:
    """Operators that compute in float (a non-constant float32 input or output), excluding I/O QUANTIZE/DEQUANTIZE."""
    found = []
    model_in = {t.name for t in info.inputs}
    model_out = {t.name for t in info.outputs}
    for op in info.operators:
        if op.subgraph != 0:
            continue
        ins = [info.tensors[i] for i in op.inputs if i >= 0]
        outs = [info.tensors[i] for i in op.outputs if i >= 0]
        if op.op == "QUANTIZE" and all(t.name in model_in for t in ins):
            continue
        if op.op == "DEQUANTIZE" and all(t.name in model_out for t in outs):
            continue
        if any(t.dtype == "FLOAT32" and not t.is_constant for t in ins + outs):
            found.append(f"{op.op}#{op.index}")
    return found



def loss_for(outputs: np.ndarray) -> tuple[Any, str]:
    """Sparse cross-entropy on probabilities or logits, chosen from the model's outputs; and which it is."""
    k = keras()
    flat = outputs.reshape(outputs.shape[0], -1)
    probabilities = bool(np.all(flat >= 0) and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3))
    return k.losses.SparseCategoricalCrossentropy(from_logits=not probabilities), "probabilities" if probabilities else "logits"


def preserved_summary(qat_model: QatModel, flatbuffer: bytes) -> dict[str, Any]:
    """The preserve summary plus the zeros measured in the exported int8 weights."""
    summary = dict(qat_model.preserved)
    zeros, total = int8_weight_zeros(flatbuffer)
    summary["exported_int8_weights"] = total
    summary["exported_int8_zero_fraction"] = round(zeros / total, 4) if total else None
    return summary


def int8_weight_zeros(flatbuffer: bytes) -> tuple[int, int]:
    """(zeros, elements) over the constant int8 tensors (the weights) of a TFLite flatbuffer.

    Call it on bytes already checked by :func:`edgekit.core.tflite_file.parse_tflite_bytes`.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    sub = model.Subgraphs(0)
    zeros = total = 0
    for i in range(sub.TensorsLength()):
        tensor = sub.Tensors(i)
        if tensor.Type() != schema.TensorType.INT8:
            continue
        buf = model.Buffers(tensor.Buffer())
        if buf.DataLength():
            values = buf.DataAsNumpy()
        elif buf.Offset() > 1:
            values = np.frombuffer(flatbuffer, dtype=np.uint8, count=buf.Size(), offset=buf.Offset())
        else:
            continue
        total += int(values.size)
        zeros += int((values == 0).sum())
    return zeros, total
