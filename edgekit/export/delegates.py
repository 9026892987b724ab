"""Offline delegate compatibility: which nodes of a ``.tflite`` model a delegate will take.

TF 2.21's ``Analyzer(gpu_compatibility=True)`` no longer checks anything, and a phone tells you
only after the fact that half the graph fell back to the CPU. edgekit reads the model's operators
(op, version, tensor dtypes, ranks, constant inputs, fused activation, a few options) and checks
them against rule tables transcribed from the delegates' own C++ support checks
(``edgekit/export/rules/*.yaml``; upstream files and commits in ``edgekit/export/rules/SOURCES.md``):

- ``gpu``: the TFLite GPU delegate (``model_builder.cc`` parsers + ``gpu_compatibility.cc``);
- ``nnapi``: the NNAPI delegate's ``Validate`` per Android API level (deprecated from API 35);
- ``cpu``: XNNPACK coverage (nodes XNNPACK does not take still run on TFLite's CPU kernels);
- ``npu``: no vendor publishes an offline op table, so only what every LiteRT NPU path needs is
  checked (builtin ops, static shapes, integer tensors); the vendor compiler has the last word.

Rule tables live in :mod:`edgekit.export.rules`, graph facts (options, FLOPs, layer names,
partitions) in :mod:`edgekit.export.graph`; the ``edgekit check`` command is
:func:`edgekit.workflows.check.check_artifact`. Nodes are then grouped into partitions with the algorithm TFLite itself uses
(``PartitionGraphIntoIndependentNodeSubsets`` in ``graph_info.cc``, greedy mode) and the
delegate's partition limit is applied (GPU: the largest 1, NNAPI: the largest 3).

Example:
    >>> report = check_bytes(Path("out/gpu/model.tflite").read_bytes(), "gpu")  # doctest: +SKIP
    >>> [(n.index, n.op) for n in report.unsupported]  # doctest: +SKIP
    [(6, 'TOPK_V2')]
    >>> report.summary.flop_share  # doctest: +SKIP
    0.998
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.errors import InputError
from edgekit.core.tflite_file import OperatorInfo, TensorInfo, TfliteInfo, parse_tflite_bytes
from edgekit.export.graph import (
    estimate_flops,
    main_ops,
    node_layer,
    partition_nodes,
    quasi_constant_tensors,
    read_operator_options,
    tensor_dtype,
)
from edgekit.export.rules import (
    DEFAULT_NNAPI_API_LEVEL,
    TARGET_DELEGATE,
    CountRange,
    GpuRules,
    NnapiRules,
    OpRule,
    XnnpackRules,
    check_target,
    load_rules,
)

# ops whose main data input is not input 0
_DATA_INPUT = {"TRANSPOSE_CONV": 2, "SPLIT": 1}
_NPU_RUNTIME_DTYPES = {"int8", "uint8", "int16", "int32", "bool"}


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.title() for word in rest)


# ----------------------------------------------------------------------------------------------
# Report types
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCompat:
    """One node of the main subgraph and whether the delegate takes it."""

    index: int
    op: str
    version: int
    supported: bool
    reasons: tuple[str, ...]
    layer: str | None
    suggestion: str | None
    flops: int
    partition: int | None = None  # index among the delegate partitions, if supported
    delegated: bool = False  # in a partition the delegate actually takes (partition limit applied)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "op": self.op, "version": self.version, "supported": self.supported,
            "delegated": self.delegated, "partition": self.partition, "why": "; ".join(self.reasons) or None,
            "layer": self.layer, "suggestion": self.suggestion, "flops": self.flops, "note": self.note,
        }


@dataclass(frozen=True)
class CompatSummary:
    """Coverage of a model by a delegate."""

    nodes: int
    supported_nodes: int
    flops: int
    supported_flops: int
    partitions: int  # partitions of supported nodes (TFLite's partitioning)
    delegated_partitions: int  # after the delegate's partition limit
    delegated_nodes: int
    delegated_flops: int
    max_delegated_partitions: int | None

    @property
    def node_share(self) -> float:
        return self.supported_nodes / self.nodes if self.nodes else 1.0

    @property
    def flop_share(self) -> float:
        return self.supported_flops / self.flops if self.flops else 1.0

    @property
    def delegated_node_share(self) -> float:
        return self.delegated_nodes / self.nodes if self.nodes else 1.0

    @property
    def delegated_flop_share(self) -> float:
        return self.delegated_flops / self.flops if self.flops else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes, "supported_nodes": self.supported_nodes, "node_share": round(self.node_share, 6),
            "flops": self.flops, "supported_flops": self.supported_flops, "flop_share": round(self.flop_share, 6),
            "partitions": self.partitions, "max_delegated_partitions": self.max_delegated_partitions,
            "delegated_partitions": self.delegated_partitions, "delegated_nodes": self.delegated_nodes,
            "delegated_node_share": round(self.delegated_node_share, 6), "delegated_flops": self.delegated_flops,
            "delegated_flop_share": round(self.delegated_flop_share, 6),
        }


@dataclass(frozen=True)
class CompatReport:
    """Per-node compatibility of a model with a target's delegate, and the summary."""

    target: str
    delegate: str
    artifact: str
    nodes: tuple[NodeCompat, ...]
    summary: CompatSummary
    api_level: int | None = None
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def unsupported(self) -> list[NodeCompat]:
        """Nodes the delegate does not take, in execution order."""
        return [n for n in self.nodes if not n.supported]

    @property
    def full_coverage(self) -> bool:
        """Every node runs on the delegate, in one partition."""
        return not self.unsupported and self.summary.partitions <= 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "delegate": self.delegate,
            "artifact": self.artifact,
            "api_level": self.api_level,
            "full_coverage": self.full_coverage,
            "summary": self.summary.to_dict(),
            "unsupported": [n.to_dict() for n in self.unsupported],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "rules": self.rules,
            "nodes": [n.to_dict() for n in self.nodes],
        }



# ----------------------------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------------------------


def _count_ok(count: int, rule: int | CountRange | None) -> bool:
    if rule is None:
        return True
    if isinstance(rule, int):
        return count == rule
    return (rule.min is None or count >= rule.min) and (rule.max is None or count <= rule.max)


def _count_text(rule: int | CountRange) -> str:
    if isinstance(rule, int):
        return f"exactly {rule}"
    if rule.min is not None and rule.max is not None:
        return f"{rule.min} to {rule.max}"
    return f"at least {rule.min}" if rule.min is not None else f"at most {rule.max}"


@dataclass(frozen=True)
class _Context:
    info: TfliteInfo
    constant: set[int]
    options: list[Any]
    api_level: int | None


Problem = tuple[str, str | None]  # (why the node is not delegated, a rewrite that fixes it or None)

_RANK_FIX = "keep tensors at rank <= {rank}: fold the extra dimension into batch or channels with a Reshape"
_DYNAMIC_FIX = "convert with fixed input shapes (edgekit exports with a static batch of 1; avoid None in Input shapes)"
_CONST_FIX = "make this input a constant (a weight or a literal), not a computed tensor"


def _option_problems(rule: OpRule, options: Any) -> list[Problem]:
    problems: list[Problem] = []
    for key, allowed in rule.required_options.items():
        if options is None:
            continue
        value = getattr(options, _camel(key), None)
        if value is None:
            continue
        allowed_list = allowed if isinstance(allowed, list) else [allowed]
        if not any(value == a for a in allowed_list):
            problems.append((f"option {key}={value} (the delegate needs {' or '.join(map(str, allowed_list))})", rule.suggestion))
    return problems


def _generic_problems(op: OperatorInfo, rule: OpRule, ctx: _Context, *, general_activations: list[str] | None) -> list[Problem]:
    """Checks shared by every rule table: version, activation, input counts, constants, rank, options."""
    problems: list[Problem] = []
    if rule.max_version is not None and op.version > rule.max_version:
        problems.append((f"op version {op.version} > {rule.max_version}, the newest this delegate accepts", rule.suggestion))
    if op.version in rule.excluded_versions:
        problems.append((f"op version {op.version} is not accepted", rule.suggestion))
    allowed_acts = rule.fused_activations if rule.fused_activations is not None else general_activations
    if op.fused_activation and allowed_acts is not None and op.fused_activation not in allowed_acts:
        problems.append((
            f"fused activation {op.fused_activation} is not supported (allowed: {', '.join(allowed_acts)})",
            "use relu/relu6 (or tanh on GPU), or apply the activation as its own layer",
        ))
    ins = [i for i in op.inputs if i >= 0]
    runtime = [i for i in ins if i not in ctx.constant]
    if not _count_ok(len(ins), rule.inputs):
        problems.append((f"{len(ins)} inputs, the delegate needs {_count_text(rule.inputs)}", rule.suggestion))  # type: ignore[arg-type]
    if not _count_ok(len(runtime), rule.runtime_inputs):
        problems.append((
            f"{len(runtime)} runtime (non-constant) inputs, the delegate needs {_count_text(rule.runtime_inputs)}",  # type: ignore[arg-type]
            rule.suggestion or _CONST_FIX,
        ))
    for pos in rule.constant_inputs:
        if pos < len(op.inputs) and op.inputs[pos] >= 0 and op.inputs[pos] not in ctx.constant:
            problems.append((f"input {pos} ('{ctx.info.tensors[op.inputs[pos]].name}') must be constant but is computed at run time", _CONST_FIX))
    if rule.max_rank is not None:
        for t in _io_tensors(op, ctx):
            if len(t.shape) > rule.max_rank:
                problems.append((f"tensor '{t.name}' has rank {len(t.shape)} (this op takes rank <= {rule.max_rank})", _RANK_FIX.format(rank=rule.max_rank)))
                break
    problems.extend(_option_problems(rule, ctx.options[op.index] if op.index < len(ctx.options) else None))
    return problems


def _io_tensors(op: OperatorInfo, ctx: _Context) -> list[TensorInfo]:
    return [ctx.info.tensors[i] for i in list(op.inputs) + list(op.outputs) if i >= 0]


def _data_input(op: OperatorInfo, ctx: _Context) -> TensorInfo | None:
    pos = _DATA_INPUT.get(op.op, 0)
    if pos < len(op.inputs) and op.inputs[pos] >= 0:
        return ctx.info.tensors[op.inputs[pos]]
    return None


def _dynamic_problem(op: OperatorInfo, ctx: _Context, who: str) -> list[Problem]:
    dynamic = [t for t in _io_tensors(op, ctx) if any(d < 0 for d in t.shape_signature)]
    if not dynamic:
        return []
    return [(f"tensor '{dynamic[0].name}' has a dynamic shape {list(dynamic[0].shape_signature)}; {who} needs static shapes", _DYNAMIC_FIX)]


def _rank_problem(op: OperatorInfo, ctx: _Context, max_rank: int, who: str) -> list[Problem]:
    worst = max(_io_tensors(op, ctx), key=lambda t: len(t.shape), default=None)
    if worst is None or len(worst.shape) <= max_rank:
        return []
    return [(f"tensor '{worst.name}' has rank {len(worst.shape)}; {who} handles rank <= {max_rank}", _RANK_FIX.format(rank=max_rank))]


def _check_gpu(op: OperatorInfo, rules: GpuRules, ctx: _Context) -> list[Problem]:
    rule = rules.ops[op.op]
    g = rules.general
    problems = _generic_problems(op, rule, ctx, general_activations=list(g.fused_activations_allowed))
    problems += _rank_problem(op, ctx, g.max_rank, "the GPU delegate")
    problems += _dynamic_problem(op, ctx, "the GPU delegate")
    allowed = set(g.runtime_tensor_dtypes) | set(rule.extra_runtime_dtypes)
    if g.quantized_models.accepted:
        allowed |= set(g.quantized_models.extra_runtime_dtypes_when_enabled)
    for t in _io_tensors(op, ctx):
        if t.index not in ctx.constant and tensor_dtype(t) not in allowed:
            problems.append((
                f"runtime tensor '{t.name}' is {tensor_dtype(t)}; the GPU delegate takes {'/'.join(sorted(allowed))} here",
                "keep integer/bool computations (indices, masks) out of the model or in post-processing",
            ))
            break
    return problems


def _api_dtypes(rule: OpRule, api: int) -> list[str] | None:
    if rule.dtypes_by_api:
        levels = [lvl for lvl in sorted(rule.dtypes_by_api) if lvl <= api]
        if levels:
            return list(rule.dtypes_by_api[levels[-1]])
    return list(rule.dtypes) if rule.dtypes is not None else None


def _check_nnapi(op: OperatorInfo, rules: NnapiRules, ctx: _Context) -> list[Problem]:
    rule = rules.ops[op.op]
    api = ctx.api_level or DEFAULT_NNAPI_API_LEVEL
    problems = _generic_problems(op, rule, ctx, general_activations=None)
    newer = "target a newer Android API level or use --target gpu / npu"
    if rule.min_api is not None and api < rule.min_api:
        problems.append((f"needs Android API {rule.min_api}+ (target API {api})", newer))
    if rule.min_feature_level is not None:
        needed = min((lvl.android_api for lvl in rules.api_levels.values() if lvl.feature_level >= rule.min_feature_level), default=None)
        if needed is not None and api < needed:
            problems.append((f"needs NNAPI feature level {rule.min_feature_level} (Android API {needed}+, target API {api})", newer))
    data = _data_input(op, ctx)
    allowed = _api_dtypes(rule, api)
    if data is not None and allowed is not None and tensor_dtype(data) not in allowed:
        problems.append((
            f"input '{data.name}' is {tensor_dtype(data)}; at API {api} NNAPI {op.op} takes {', '.join(allowed)}",
            rule.suggestion or "export with --mode int8 (or float32) so the op gets a type NNAPI accepts",
        ))
    boundary = op.op in ("QUANTIZE", "DEQUANTIZE")  # their own type rules say which int8 forms pass
    if api < 30 and not boundary and data is not None and tensor_dtype(data) == "int8" and op.op not in rules.general.int8_conversion_ops_below_api30:
        problems.append(("signed int8 needs API 30 for this op (below 30 only some ops are converted to uint8)", newer))
    problems += _dynamic_problem(op, ctx, "NNAPI (without allow_dynamic_dimensions)")
    return problems


def _check_xnnpack(op: OperatorInfo, rules: XnnpackRules, ctx: _Context) -> list[Problem]:
    rule = rules.ops[op.op]
    g = rules.general
    problems = _generic_problems(op, rule, ctx, general_activations=list(g.fused_activations_allowed))
    problems += _rank_problem(op, ctx, g.max_rank, "XNNPACK")
    data = _data_input(op, ctx)
    if data is not None and rule.dtypes is not None and tensor_dtype(data) not in rule.dtypes:
        problems.append((f"input '{data.name}' is {tensor_dtype(data)}; XNNPACK {op.op} takes {', '.join(rule.dtypes)}", rule.suggestion))
    return problems


def _check_npu(op: OperatorInfo, ctx: _Context) -> list[Problem]:
    problems: list[Problem] = []
    for t in _io_tensors(op, ctx):
        if t.index not in ctx.constant and tensor_dtype(t) not in _NPU_RUNTIME_DTYPES:
            problems.append((
                f"runtime tensor '{t.name}' is {tensor_dtype(t)}; NPUs run integer-quantized graphs, float ops usually stay on the CPU",
                "quantize the whole model to int8 (edgekit export --target npu does)",
            ))
            break
    return problems + _dynamic_problem(op, ctx, "an NPU compiler")


_FLEX_SUGGESTION = "rewrite the layer with ops that have a TFLite builtin and convert without SELECT_TF_OPS"


def _check_node(op: OperatorInfo, delegate: str, rules: Any, ctx: _Context, folded: bool) -> tuple[list[Problem], str | None]:
    """(problems that keep the node off the delegate, a note) for one node."""
    name = op.op
    if name.startswith("FLEX:"):
        return [(f"TensorFlow op {name[5:]} runs through the Flex delegate (SELECT_TF_OPS); no hardware delegate runs it", _FLEX_SUGGESTION)], None
    if name.startswith("CUSTOM:"):
        custom = name.split(":", 1)[1]
        allowed: Any = ()
        if delegate == "gpu":
            allowed = rules.general.custom_ops_supported
        elif delegate == "xnnpack":
            allowed = rules.custom_ops_supported
        if custom in allowed:
            return [], "custom op with a delegate kernel"
        return [(f"custom op '{custom}' has no {delegate} kernel", "replace the custom op by builtin ops")], None
    if folded:
        return [], "folds constant weights (fp16/int8/sparse) at load time"
    if delegate == "npu":
        return _check_npu(op, ctx), None
    if name not in rules.ops:
        example = rules.unsupported_examples.get(name)
        if example is not None:
            return [(example.reason, example.suggestion)], None
        return [(f"{name} is not in the {delegate} delegate's op list", None)], None
    if delegate == "gpu":
        return _check_gpu(op, rules, ctx), None
    if delegate == "nnapi":
        return _check_nnapi(op, rules, ctx), None
    return _check_xnnpack(op, rules, ctx), None


def check_compatibility(
    info: TfliteInfo,
    target: str,
    *,
    api_level: int | None = None,
    layers: dict[str, str] | None = None,
    model_bytes: bytes | None = None,
) -> CompatReport:
    """Checks every node of ``info``'s main subgraph against ``target``'s delegate rules.

    Args:
        info: from :func:`edgekit.core.tflite_file.read_tflite` / ``parse_tflite_bytes``.
        target: ``cpu`` (XNNPACK), ``gpu``, ``nnapi`` or ``npu``.
        api_level: Android API level for ``nnapi`` (default 34); 35+ adds the deprecation warning.
        layers: Keras layer name -> class, to name the layer each node came from.
        model_bytes: the flatbuffer (read from ``info.path`` when omitted) for operator options.

    Returns:
        A :class:`CompatReport`; ``report.unsupported`` lists the nodes that stay on the CPU.
    """
    target = check_target(target)
    delegate = TARGET_DELEGATE[target]
    if api_level is not None and delegate != "nnapi":
        raise InputError("--api-level applies to --target nnapi only", hint="drop --api-level or use --target nnapi")
    if api_level is not None and not 21 <= int(api_level) <= 60:
        raise InputError(f"--api-level {api_level} is not an Android API level", hint="use e.g. 30 (Android 11) or 35 (Android 15)")
    rules = load_rules(delegate) if delegate != "npu" else None
    if model_bytes is None and info.path and Path(info.path).is_file():
        model_bytes = Path(info.path).read_bytes()
    options = read_operator_options(model_bytes) if model_bytes else []
    ops = main_ops(info)
    constant, folded_nodes = quasi_constant_tensors(info, ops)
    ctx = _Context(info=info, constant=constant, options=options, api_level=api_level if delegate == "nnapi" else None)

    checked: list[tuple[OperatorInfo, list[str], str | None, str | None, int]] = []
    for op in ops:
        folded = op.index in folded_nodes
        problems, note = _check_node(op, delegate, rules, ctx, folded)
        reasons = list(dict.fromkeys(text for text, _ in problems))
        suggestion = next((fix for _, fix in problems if fix), None)
        flops = estimate_flops(op, info.tensors, options[op.index] if op.index < len(options) else None, folded=folded)
        checked.append((op, reasons, suggestion, note, flops))

    supported = [not reasons for _, reasons, _, _, _ in checked]
    subsets = partition_nodes(ops, supported)
    delegate_subsets = [members for kind, members in subsets if kind]
    limit = rules.max_delegated_partitions if rules is not None else None
    chosen = sorted(range(len(delegate_subsets)), key=lambda i: (-len(delegate_subsets[i]), i))
    if limit:
        chosen = chosen[:limit]
    partition_of: dict[int, int] = {}
    for part_index, members in enumerate(delegate_subsets):
        for pos in members:
            partition_of[pos] = part_index
    chosen_set = set(chosen)

    nodes = []
    for pos, (op, reasons, suggestion, note, flops) in enumerate(checked):
        part = partition_of.get(pos)
        nodes.append(NodeCompat(
            index=op.index, op=op.op, version=op.version, supported=not reasons, reasons=tuple(reasons),
            layer=node_layer(op, info.tensors, layers), suggestion=suggestion, flops=int(flops), partition=part,
            delegated=part is not None and part in chosen_set, note=note,
        ))
    total_flops = sum(n.flops for n in nodes)
    summary = CompatSummary(
        nodes=len(nodes), supported_nodes=sum(n.supported for n in nodes), flops=total_flops,
        supported_flops=sum(n.flops for n in nodes if n.supported), partitions=len(delegate_subsets),
        delegated_partitions=len(chosen), delegated_nodes=sum(n.delegated for n in nodes),
        delegated_flops=sum(n.flops for n in nodes if n.delegated), max_delegated_partitions=limit,
    )
    warnings, notes = _report_notes(target, delegate, rules, info, summary, api_level)
    return CompatReport(
        target=target, delegate=delegate, artifact=info.path, nodes=tuple(nodes), summary=summary,
        api_level=(api_level or DEFAULT_NNAPI_API_LEVEL) if delegate == "nnapi" else None,
        warnings=tuple(warnings), notes=tuple(notes), rules=_rules_provenance(delegate, rules),
    )


def _rules_provenance(delegate: str, rules: Any) -> dict[str, Any]:
    if rules is None:
        return {"table": None, "kind": "generic NPU requirements (no vendor op table is published)"}
    src = rules.source
    files = [{"path": f.path, "commit": f.commit} for f in (src.files or [])] or [{"path": src.path, "commit": src.commit}]
    return {"table": f"edgekit/export/rules/{delegate}.yaml", "schema_version": rules.schema_version, "upstream_repo": src.repo, "upstream_files": files}


def _report_notes(target: str, delegate: str, rules: Any, info: TfliteInfo, summary: CompatSummary, api_level: int | None) -> tuple[list[str], list[str]]:
    warnings: list[str] = []
    notes: list[str] = []
    if info.subgraph_count > 1:
        notes.append(f"the model has {info.subgraph_count} subgraphs; only the main subgraph is checked (control-flow bodies run on the CPU)")
    if summary.partitions > (summary.max_delegated_partitions or summary.partitions):
        warnings.append(
            f"{summary.partitions} delegate partitions but the {delegate} delegate takes only the largest "
            f"{summary.max_delegated_partitions} by default; the rest runs on the CPU"
        )
    if delegate == "nnapi":
        api = api_level or DEFAULT_NNAPI_API_LEVEL
        if api >= rules.deprecated_from_api:
            warnings.append(
                f"NNAPI is deprecated from Android 15 (API {rules.deprecated_from_api}) and the target is API {api}: "
                "prefer --target npu (vendor NPU via LiteRT) or --target gpu"
            )
        if api_level is None:
            notes.append(f"no --api-level given: rules evaluated at Android API {DEFAULT_NNAPI_API_LEVEL}")
        notes.append("NNAPI also decides per device at run time (driver support); this is the delegate's own check only")
    if delegate == "xnnpack":
        notes.append("nodes XNNPACK does not take still run on the CPU through TFLite's builtin kernels")
    if delegate == "npu":
        notes.append(
            "NPU support is decided by the vendor compiler (Qualcomm QNN, MediaTek NeuroPilot, Google Tensor); "
            "this check covers only what every LiteRT NPU path needs: builtin ops, static shapes, integer tensors"
        )
    if delegate == "gpu":
        notes.append("models the TFLite GPU delegate (OpenCL/OpenGL); LiteRT's newer ML Drift GPU accelerator accepts more (e.g. rank 5)")
    return warnings, notes



def check_bytes(flatbuffer: bytes, target: str, *, name: str = "<bytes>", api_level: int | None = None,
                layers: dict[str, str] | None = None) -> CompatReport:
    """:func:`check_compatibility` for flatbuffer bytes."""
    info = parse_tflite_bytes(flatbuffer, name)
    return check_compatibility(info, target, api_level=api_level, layers=layers, model_bytes=flatbuffer)
