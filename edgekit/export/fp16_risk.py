"""Float16 GPU risk check: will this model still be right when a GPU computes it in half precision?

Mobile GPU delegates store weights and usually compute in float16. Two things go wrong: an
activation exceeds float16's range (65,504) and becomes ``inf``/``NaN``, or rounding error grows
through the layers until the output changes. No GPU runs here, so the check runs on the CPU:

1. the float32 model and the float16-weights model run on the same validation samples with
   every intermediate tensor kept (``experimental_preserve_all_tensors``); each layer's output
   is compared (relative L2 error), so the layer where the error grows is named;
2. every float32 activation is checked against the float16 range (overflow = certain garbage on
   a GPU computing in fp16) and rounded to float16 once (the precision floor of fp16 storage).

What is NOT emulated: fp16 *accumulation* inside a GPU kernel. The per-layer weight-rounding error
and the range check are lower bounds on what a GPU does; a model flagged here will misbehave,
one that passes very likely works but should still be validated on a device.

Example:
    >>> risk = fp16_risk_check(float32_bytes, float16_bytes, x_val, tolerance=0.01)  # doctest: +SKIP
    >>> risk.risky, risk.outputs[0]["relative_error"]  # doctest: +SKIP
    (False, 0.0004)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.core.errors import RuntimeFailure
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.export.graph import node_layer

FP16_MAX = 65504.0
_TRAILING_DIGITS = re.compile(r"\d+$")


@dataclass(frozen=True)
class LayerRisk:
    """fp16 numbers of one node's output tensor over the samples."""

    node: int
    op: str
    tensor: str
    layer: str | None
    max_abs: float  # largest |activation| in the float32 model
    relative_error: float | None  # float16-weights vs float32 model, relative L2
    fp16_rounding_error: float  # relative L2 error of rounding the float32 activation to fp16 once
    overflow: bool  # max_abs > 65504

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node, "op": self.op, "tensor": self.tensor, "layer": self.layer,
            "max_abs": _finite(self.max_abs), "relative_error": _finite(self.relative_error),
            "fp16_rounding_error": _finite(self.fp16_rounding_error), "overflow": self.overflow,
        }


def _finite(value: float | None) -> float | str | None:
    if value is None:
        return None
    if not np.isfinite(value):
        return "inf" if value > 0 else "nan"
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class Fp16Risk:
    """The result of :func:`fp16_risk_check`."""

    samples: int
    tolerance: float
    outputs: list[dict[str, Any]]
    layers: list[LayerRisk]
    flagged: list[str]
    per_layer: bool
    notes: list[str] = field(default_factory=list)

    @property
    def risky(self) -> bool:
        return bool(self.flagged)

    @property
    def worst_layer(self) -> LayerRisk | None:
        scored = [lr for lr in self.layers if lr.relative_error is not None]
        return max(scored, key=lambda lr: lr.relative_error, default=None)  # type: ignore[arg-type,return-value]

    def summary(self) -> dict[str, Any]:
        """The headline numbers (for the manifest)."""
        worst = self.worst_layer
        return {
            "risky": self.risky,
            "samples": self.samples,
            "tolerance": self.tolerance,
            "max_output_relative_error": _finite(max((o["relative_error"] for o in self.outputs), default=0.0)),
            "min_top1_agreement": min((o["top1_agreement"] for o in self.outputs if o["top1_agreement"] is not None), default=None),
            "worst_layer": worst.to_dict() if worst else None,
            "max_abs_activation": _finite(max((lr.max_abs for lr in self.layers), default=0.0)),
            "overflowing_layers": sum(lr.overflow for lr in self.layers),
            "flagged": self.flagged,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "per_layer": self.per_layer,
            "outputs": self.outputs,
            "layers": [lr.to_dict() for lr in self.layers],
            "notes": self.notes,
        }


class _Accumulator:
    def __init__(self) -> None:
        self.diff_sq = 0.0
        self.ref_sq = 0.0
        self.round_sq = 0.0
        self.max_abs = 0.0

    def add(self, ref: np.ndarray, other: np.ndarray | None) -> None:
        ref64 = ref.astype(np.float64)
        self.ref_sq += float(np.sum(ref64 * ref64))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(ref64))) if ref64.size else 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            rounded = ref.astype(np.float16).astype(np.float64)
        self.round_sq += float(np.sum((rounded - ref64) ** 2))
        if other is not None:
            self.diff_sq += float(np.sum((other.astype(np.float64) - ref64) ** 2))

    def relative(self, value: float) -> float:
        if not np.isfinite(value):
            return float("inf")
        return float(np.sqrt(value / self.ref_sq)) if self.ref_sq > 0 else (0.0 if value == 0 else float("inf"))


def _interpreter(flatbuffer: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(
            model_content=flatbuffer,
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise RuntimeFailure(f"LiteRT could not load the model for the fp16 check: {str(exc).splitlines()[0][:200]}",
                             hint="rerun with -v; the model may need the Flex delegate") from exc
    return interp


def _compute_nodes(info: TfliteInfo) -> list[tuple[int, str, int]]:
    """(node index, op, output tensor) for nodes that compute on activations (weight DEQUANTIZE skipped)."""
    constant = {t.index for t in info.tensors if t.is_constant}
    out = []
    for op in info.operators:
        if op.subgraph != 0 or not op.outputs or op.outputs[0] < 0:
            continue
        if op.op in ("DEQUANTIZE", "DENSIFY") and all(i in constant for i in op.inputs if i >= 0):
            continue
        t = info.tensors[op.outputs[0]]
        if t.dtype not in ("FLOAT32", "FLOAT16"):
            continue
        out.append((op.index, op.op, op.outputs[0]))
    return out


def _pair_nodes(ref: list[tuple[int, str, int]], other: list[tuple[int, str, int]], ref_info: TfliteInfo,
                other_info: TfliteInfo) -> dict[int, int]:
    """Maps reference output tensors to the other model's: by op sequence, else by name."""
    if [op for _, op, _ in ref] == [op for _, op, _ in other]:
        return {r[2]: o[2] for r, o in zip(ref, other)}

    def key(info: TfliteInfo, t: int) -> str:
        return ";".join(_TRAILING_DIGITS.sub("", p) for p in info.tensors[t].name.split(";"))

    by_name = {key(other_info, o[2]): o[2] for o in other}
    return {r[2]: by_name[key(ref_info, r[2])] for r in ref if key(ref_info, r[2]) in by_name}


def fp16_risk_check(
    float32_model: bytes,
    float16_model: bytes,
    x: np.ndarray,
    *,
    tolerance: float = 0.01,
    layers: dict[str, str] | None = None,
) -> Fp16Risk:
    """Compares the float32 and float16-weights models on ``x`` (preprocessed float32 samples).

    Args:
        float32_model: flatbuffer of the plain float32 conversion.
        float16_model: flatbuffer of the float16-weights conversion (same graph).
        x: validation inputs, shape (N, ...) matching the model's input after the batch axis.
        tolerance: relative L2 error above which an output or a layer is flagged.
        layers: Keras layer name -> class, to name the layer of each node.

    Returns:
        An :class:`Fp16Risk`; ``risky`` is True when an output's error passes ``tolerance``,
        the top-1 class changes on more than 1% of samples, or an activation overflows fp16.
    """
    info32 = parse_tflite_bytes(float32_model, "float32 model")
    info16 = parse_tflite_bytes(float16_model, "float16 model")
    it32, it16 = _interpreter(float32_model), _interpreter(float16_model)
    in32, in16 = it32.get_input_details(), it16.get_input_details()
    if len(in32) != 1:
        raise RuntimeFailure(f"the fp16 check handles single-input models; this one has {len(in32)} inputs", hint="pass --no-fp16-check")
    if in32[0]["dtype"] != np.float32:
        raise RuntimeFailure("the fp16 check needs a float-input model", hint="pass --no-fp16-check")

    nodes32, nodes16 = _compute_nodes(info32), _compute_nodes(info16)
    pairs = _pair_nodes(nodes32, nodes16, info32, info16)
    outputs32 = [d["index"] for d in it32.get_output_details()]
    outputs16 = [d["index"] for d in it16.get_output_details()]
    accum = {t: _Accumulator() for _, _, t in nodes32}
    out_accum = [_Accumulator() for _ in outputs32]
    agree = [0 for _ in outputs32]
    per_layer = True
    samples = np.asarray(x, dtype=np.float32)
    shape = tuple(in32[0]["shape"])
    for i in range(samples.shape[0]):
        sample = samples[i: i + 1].reshape(shape)
        it32.set_tensor(in32[0]["index"], sample)
        it16.set_tensor(in16[0]["index"], sample)
        it32.invoke()
        it16.invoke()
        for j, (o32, o16) in enumerate(zip(outputs32, outputs16)):
            a, b = it32.get_tensor(o32), it16.get_tensor(o16)
            out_accum[j].add(a, b)
            agree[j] += int(np.argmax(a.reshape(-1)) == np.argmax(b.reshape(-1)))
        for _, _, t in nodes32:
            try:
                ref = it32.get_tensor(t)
                other = it16.get_tensor(pairs[t]) if t in pairs else None
            except ValueError:  # an intermediate the interpreter did not keep
                per_layer = False
                continue
            if other is not None and other.shape != ref.shape:
                other = None
            accum[t].add(ref, other)

    n = max(samples.shape[0], 1)
    out_details = it32.get_output_details()
    outputs = []
    flagged: list[str] = []
    for j, acc in enumerate(out_accum):
        rel = acc.relative(acc.diff_sq)
        classes = int(np.prod(out_details[j]["shape"][1:])) if len(out_details[j]["shape"]) > 1 else 1
        top1 = 100.0 * agree[j] / n if classes > 1 else None
        name = out_details[j]["name"]
        outputs.append({"output": name, "relative_error": _finite(rel), "top1_agreement": top1, "max_abs": _finite(acc.max_abs)})
        if not rel <= tolerance:
            flagged.append(f"output '{name}': relative error {rel:.3g} with float16 weights exceeds {tolerance:g}")
        if top1 is not None and top1 < 99.0:
            flagged.append(f"output '{name}': top-1 class changes on {100 - top1:.1f}% of samples with float16 weights")

    layer_risks = []
    main_ops = {op.index: op for op in info32.operators if op.subgraph == 0}
    for node, op, t in nodes32:
        acc = accum[t]
        tensor_name = info32.tensors[t].name
        layer_risks.append(LayerRisk(
            node=node, op=op, tensor=tensor_name, layer=node_layer(main_ops[node], info32.tensors, layers), max_abs=acc.max_abs,
            relative_error=acc.relative(acc.diff_sq) if t in pairs else None,
            fp16_rounding_error=acc.relative(acc.round_sq), overflow=acc.max_abs > FP16_MAX,
        ))
    for lr in layer_risks:
        where = f"node {lr.node} {lr.op}" + (f" ({lr.layer})" if lr.layer else "")
        if lr.overflow:
            flagged.append(f"{where}: activations reach {lr.max_abs:.3g}, beyond float16's 65504 (inf/NaN on a GPU computing in fp16)")
    first_growth = next((lr for lr in layer_risks if lr.relative_error is not None and not lr.relative_error <= tolerance), None)
    if first_growth is not None and flagged:
        flagged.append(f"error first exceeds {tolerance:g} at node {first_growth.node} {first_growth.op}"
                       + (f" ({first_growth.layer})" if first_growth.layer else "") + f": {first_growth.relative_error:.3g}")
    notes = ["CPU emulation: float16 weights and the float16 range are checked; fp16 accumulation inside GPU kernels is not emulated"]
    if not pairs:
        notes.append("the two conversions' graphs differ; per-layer errors are not available")
    return Fp16Risk(samples=int(samples.shape[0]), tolerance=tolerance, outputs=outputs, layers=layer_risks,
                    flagged=flagged, per_layer=per_layer and bool(pairs), notes=notes)
