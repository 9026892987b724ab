"""Delegate rule tables: their schema (schema_version 1) and loading.

The tables in ``edgekit/export/rules/*.yaml`` are transcribed from the delegates' own C++ support
checks (upstream files and commits in ``edgekit/export/rules/SOURCES.md``). Every key is
validated on load (unknown keys are errors) and op names must be TFLite ``BuiltinOperator`` names.

Example:
    >>> load_rules("gpu").general.max_delegated_partitions
    1
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from edgekit.core.errors import InputError, RecipeError

RULES_DIR = Path(__file__).parent / "rules"
TARGETS = ("cpu", "gpu", "nnapi", "npu")
TARGET_DELEGATE = {"cpu": "xnnpack", "gpu": "gpu", "nnapi": "nnapi", "npu": "npu"}
DEFAULT_NNAPI_API_LEVEL = 34  # Android 14: the newest level before NNAPI's deprecation

DType = Literal[
    "float32", "float16", "bfloat16", "float64", "int4", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "bool", "string", "complex64", "complex128",
]
Activation = Literal["NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT"]
OptionValue = bool | int | float | str


# ----------------------------------------------------------------------------------------------
# Rule table schema (schema_version 1, see rules/SOURCES.md)
# ----------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CountRange(_Strict):
    """An inclusive range of input counts; a missing bound is open."""

    min: int | None = None
    max: int | None = None


class OpRule(_Strict):
    """The conditions under which a delegate takes one builtin op (all optional)."""

    max_version: int | None = None
    excluded_versions: list[int] = []
    fused_activations: list[Activation] | None = None
    inputs: int | CountRange | None = None
    runtime_inputs: int | CountRange | None = None
    constant_inputs: list[int] = []
    max_rank: int | None = None
    dtypes: list[DType] | None = None
    dtypes_by_api: dict[int, list[DType]] | None = None
    extra_runtime_dtypes: list[DType] = []
    required_options: dict[str, OptionValue | list[OptionValue]] = {}
    min_api: int | None = None
    min_feature_level: int | None = None
    max_version_with_accelerator: int | None = None
    notes: str | None = None
    suggestion: str | None = None


class UnsupportedExample(_Strict):
    """An op the delegate does not take, with the upstream reason and a rewrite if one exists."""

    reason: str
    suggestion: str | None = None


class SourceRef(_Strict):
    repo: str | None = None
    path: str
    commit: str | None = None
    transcribed: str | None = None
    note: str | None = None


class Source(_Strict):
    """Where a table was transcribed from (provenance only; not used by the checker)."""

    repo: str
    path: str | None = None
    commit: str | None = None
    function: str | None = None
    constants_from: str | None = None
    transcribed: str | None = None
    note: str | None = None
    files: list[SourceRef] | None = None
    compared_with: list[SourceRef] | None = None


class GpuQuantized(_Strict):
    accepted: bool
    requires_flag: str
    flag_default: str
    extra_runtime_dtypes_when_enabled: list[DType]
    behaviour: str


class GpuGeneral(_Strict):
    max_rank: int
    max_rank_notes: str
    runtime_tensor_dtypes: list[DType]
    runtime_tensor_dtypes_notes: str
    quantized_models: GpuQuantized
    float16_weights: str
    dynamic_tensors: bool
    dynamic_tensors_notes: str
    fused_activations_allowed: list[Activation]
    fused_activations_notes: str
    max_delegated_partitions: int
    max_delegated_partitions_notes: str
    version_check_notes: str
    broadcast_notes: str
    custom_ops_supported: list[str]


class NnapiGeneral(_Strict):
    min_api: int
    min_api_notes: str
    feature_level_used: str
    cpu_fallback: str
    int8_signed_quantization: str
    int8_conversion_ops_below_api30: list[str]
    uint8_quantization: str
    per_channel_quantization: str
    hybrid_ops: str
    float16: str
    dynamic_tensors: str
    max_rank_notes: str
    lowered_ops: str
    max_delegated_partitions: int
    max_delegated_partitions_notes: str
    max_version_notes: str


class XnnpackGeneral(_Strict):
    dtype_legend: dict[str, str]
    quantization_flags: str
    static_weights: str
    fused_activations_allowed: list[Activation]
    fused_activations_notes: str
    max_rank: int
    max_rank_notes: str
    padding: str
    dynamic_tensors: str
    dynamic_range_quantization: str
    mixed_types: str


class ApiLevel(_Strict):
    feature_level: int
    android_api: int
    android: str
    constant: str
    note: str | None = None


def _builtin_op_names() -> set[str]:
    from ai_edge_litert import schema_py_generated as schema  # pure Python

    return {k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


class _RuleTableBase(_Strict):
    schema_version: Literal[1]
    source: Source
    ops: dict[str, OpRule]
    unsupported_examples: dict[str, UnsupportedExample] = {}

    @field_validator("ops", "unsupported_examples")
    @classmethod
    def _builtin_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - _builtin_op_names())
        if unknown:
            raise ValueError(f"not BuiltinOperator names: {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _disjoint(self):
        both = sorted(set(self.ops) & set(self.unsupported_examples))
        if both:
            raise ValueError(f"ops listed as both supported and unsupported: {', '.join(both)}")
        return self

    @property
    def max_delegated_partitions(self) -> int | None:
        return getattr(self.general, "max_delegated_partitions", None)  # type: ignore[attr-defined]


class GpuRules(_RuleTableBase):
    delegate: Literal["gpu"]
    general: GpuGeneral
    notable_supported: dict[str, str] = {}


class NnapiRules(_RuleTableBase):
    delegate: Literal["nnapi"]
    general: NnapiGeneral
    deprecated_from_api: int
    deprecation_note: str
    api_levels: dict[str, ApiLevel]

    @model_validator(mode="after")
    def _min_api_everywhere(self):
        missing = sorted(op for op, rule in self.ops.items() if rule.min_api is None)
        if missing:
            raise ValueError(f"nnapi ops need min_api: {', '.join(missing)}")
        return self


class XnnpackRules(_RuleTableBase):
    delegate: Literal["xnnpack"]
    general: XnnpackGeneral
    custom_ops_supported: dict[str, str] = {}

    @model_validator(mode="after")
    def _dtypes_everywhere(self):
        missing = sorted(op for op, rule in self.ops.items() if not rule.dtypes)
        if missing:
            raise ValueError(f"xnnpack ops need dtypes: {', '.join(missing)}")
        return self


RuleTable = Annotated[GpuRules | NnapiRules | XnnpackRules, Field(discriminator="delegate")]
_RULES_ADAPTER: TypeAdapter[Any] = TypeAdapter(RuleTable)


def parse_rules(data: Any, name: str = "<rules>") -> GpuRules | NnapiRules | XnnpackRules:
    """Validates a rule table (already parsed from YAML); unknown keys are errors.

    Raises:
        RecipeError: naming the first offending key.
    """
    try:
        return _RULES_ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecipeError(
            f"rule table {name} is invalid at {where or 'top level'}: {first['msg']} ({exc.error_count()} error(s))",
            hint="fix the YAML; the schema is described in `edgekit docs rules`",
        ) from None


def load_rules_file(path: str | os.PathLike[str]) -> GpuRules | NnapiRules | XnnpackRules:
    """Reads and validates one rule table file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"rule table {p} cannot be read: {type(exc).__name__}", hint="check the YAML syntax") from None
    return parse_rules(data, str(p))


@functools.cache
def load_rules(delegate: str) -> GpuRules | NnapiRules | XnnpackRules:
    """The bundled rule table of ``gpu``, ``nnapi`` or ``xnnpack`` (validated, cached)."""
    if delegate not in ("gpu", "nnapi", "xnnpack"):
        raise InputError(f"no rule table for delegate '{delegate}'", hint="use gpu, nnapi or xnnpack")
    return load_rules_file(RULES_DIR / f"{delegate}.yaml")


def check_target(target: str) -> str:
    """Returns ``target`` lower-cased if it is one of :data:`TARGETS`, else raises InputError."""
    t = str(target).lower()
    if t not in TARGETS:
        raise InputError(f"unknown target '{target}' (expected one of: {', '.join(TARGETS)})", hint="pass --target cpu, gpu, nnapi or npu")
    return t

