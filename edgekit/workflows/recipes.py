"""Recipes: a YAML file that chains edgekit's passes, names the data they use and sets gates.

A recipe is a flat, ordered list of passes with their options, plus the data settings and the
gates the final artifact must pass::

    schema_version: 1
    name: prune80-int8
    description: 80% magnitude pruning with fine-tuning, then full-int8 PTQ for XNNPACK.
    data:
      preprocessing: {scale: 1/255}
    passes:
      - pass: prune
        sparsity: 0.8
        epochs: 2
      - pass: quantize
        mode: int8
      - pass: export
        target: cpu
    gates:
      accuracy: {max_drop: 1.0}           # points of top-1 against the float32 model
      latency: {max_ms: 5, percentile: p90}
      size: {max_kb: 300}

Everything is checked before anything runs: the YAML (``safe_load`` semantics, duplicate keys
refused), every key and value against pydantic models that forbid unknown keys (errors name the
line and suggest the closest valid name), and the rules that span passes in one recipe-level
validator (:meth:`Recipe._cross_pass_rules`). This module imports no TensorFlow: ``edgekit recipe
check|list|show`` run in a fraction of a second.

Bundled recipes live in the repository's ``recipes/`` folder and are installed with edgekit (see
:func:`bundled_dirs`); a recipe is named (``int8-cpu``) or given by path.

Example:
    >>> recipe = load_recipe("int8-cpu")
    >>> [p.name for p in recipe.passes]
    ['quantize', 'export']
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import sysconfig
import types
import typing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgekit.core.datatypes import check_name
from edgekit.core.errors import InputError, RecipeError

SCHEMA_VERSION = 1
ENV_VAR = "EDGEKIT_RECIPES"
PASS_NAMES = ("prune", "cluster", "distill", "qat", "quantize", "export")
TRAINING_PASSES = ("prune", "cluster", "distill", "qat")
QUANT_MODES = ("float32", "float16", "dynamic", "int8", "int16x8")
TARGETS = ("cpu", "gpu", "nnapi", "npu")
# The modes each export target accepts (mirrors edgekit.workflows.export.TARGET_PROFILES, kept here so this
# module stays free of TensorFlow).
TARGET_MODES = {
    "cpu": ("int8", "dynamic", "float16", "float32"),
    "gpu": ("float16", "float32"),
    "nnapi": ("int8", "float16", "float32"),
    "npu": ("int8",),
}


# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_regex(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{what} '{value}' is not a valid regular expression ({exc})") from None
    return value


class Preprocessing(_Strict):
    """``((x * scale) - mean) / std``; ``scale`` may be written as a fraction (``1/255``)."""

    scale: float | str | None = None
    mean: float | list[float] | None = None
    std: float | list[float] | None = None

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str):
            try:
                float(Fraction(value.strip()))
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"'{value}' is not a number (write e.g. 0.00392 or 1/255)") from None
        return value

    def scale_value(self) -> float | None:
        if self.scale is None:
            return None
        return float(Fraction(self.scale.strip())) if isinstance(self.scale, str) else float(self.scale)


class DataSpec(_Strict):
    """How the data given on the command line (``--data``, ``--val``) is read and used."""

    preprocessing: Preprocessing | None = None
    train_samples: int | None = Field(None, ge=1, description="Use at most this many training samples (seeded).")
    val_samples: int | None = Field(None, ge=1, description="Validate on at most this many samples (seeded).")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Held out from --data when a training pass runs and --val is absent.")
    seed: int = Field(0, ge=0)
    x_key: str = "x"
    y_key: str = "y"


class _PassBase(_Strict):
    @property
    def name(self) -> str:
        """The pass name (``prune``, ``quantize``...)."""
        return self.pass_  # type: ignore[attr-defined]


class _Training(_PassBase):
    epochs: int = Field(1, ge=0, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float | None = Field(None, gt=0)
    loss: str | None = None


class LayerTarget(_Strict):
    layers: str
    sparsity: float = Field(ge=0.0, lt=1.0)

    @field_validator("layers")
    @classmethod
    def _regex(cls, value: str) -> str:
        return _check_regex(value, "layers")  # type: ignore[return-value]


class PruneSpec(_Training):
    """Magnitude (unstructured), 2:4 or channel pruning with fine-tuning (:mod:`edgekit.passes.prune`)."""

    pass_: Literal["prune"] = Field("prune", alias="pass")
    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    structure: Literal["unstructured", "2:4", "channels"] = "unstructured"
    schedule: Literal["constant", "polynomial"] = "constant"
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    begin_epoch: float | None = Field(None, ge=0.0, allow_inf_nan=False, description="Polynomial schedule: first epoch that prunes (default 0).")
    end_epoch: float | None = Field(None, gt=0.0, allow_inf_nan=False, description="Polynomial schedule: epoch reaching the target (default 3/4 of epochs).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Fine-tuning learning rate: constant, or cosine decay to 2% over all fine-tuning steps.")
    layers: str | None = None
    skip: str | None = None
    targets: list[LayerTarget] = Field(default_factory=list)

    @field_validator("layers", "skip")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _check_regex(value, "layers/skip")

    @model_validator(mode="after")
    def _consistent(self) -> PruneSpec:
        if self.structure == "2:4" and self.schedule == "polynomial":
            raise ValueError("2:4 sparsity is a fixed pattern (exactly 50%); use schedule: constant")
        if self.structure == "2:4" and self.sparsity != 0.5 and "sparsity" in self.model_fields_set:
            raise ValueError(f"structure 2:4 always prunes 50%, but sparsity {self.sparsity} was given; drop sparsity")
        if self.schedule == "polynomial" and self.initial_sparsity > self.sparsity:
            raise ValueError(f"initial_sparsity {self.initial_sparsity} is above the target sparsity {self.sparsity}")
        if (self.begin_epoch is not None or self.end_epoch is not None) and self.schedule != "polynomial":
            raise ValueError("begin_epoch/end_epoch bound the polynomial schedule; add schedule: polynomial")
        if self.begin_epoch is not None and self.end_epoch is not None and self.end_epoch <= self.begin_epoch:
            raise ValueError(f"end_epoch ({self.end_epoch}) must be after begin_epoch ({self.begin_epoch})")
        if self.end_epoch is not None and self.end_epoch > self.epochs:
            raise ValueError(f"end_epoch ({self.end_epoch}) is after the last fine-tuning epoch ({self.epochs})")
        if self.begin_epoch is not None and self.begin_epoch >= self.epochs:
            raise ValueError(f"begin_epoch ({self.begin_epoch}) leaves no fine-tuning epoch to prune in (epochs {self.epochs})")
        return self


class ClusterSpec(_Training):
    """k-means weight clustering with fine-tuning (:mod:`edgekit.passes.cluster`)."""

    pass_: Literal["cluster"] = Field("cluster", alias="pass")
    clusters: int = Field(16, ge=2, le=256)
    init: Literal["kmeans++", "linear"] = "kmeans++"
    preserve_sparsity: bool = False
    per_channel: bool = False
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Fine-tuning learning rate: constant, or cosine decay to 2% over all fine-tuning steps.")
    layers: str | None = None
    skip: str | None = None

    @field_validator("layers", "skip")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _check_regex(value, "layers/skip")


class DistillSpec(_Training):
    """Knowledge distillation into a smaller student; the teacher is the model being optimized."""

    pass_: Literal["distill"] = Field("distill", alias="pass")
    student: str | None = Field(None, description="A .keras student model (path relative to the recipe file).")
    width: float | None = Field(None, gt=0.0, le=1.0, description="Derive the student from the teacher with this width.")
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0)
    epochs: int = Field(2, ge=1, le=1000)

    @model_validator(mode="after")
    def _student(self) -> DistillSpec:
        if (self.student is None) == (self.width is None):
            raise ValueError("give exactly one of student: (a .keras file) or width: (e.g. 0.5)")
        return self


class QatSpec(_Training):
    """Quantization-aware training to full int8 (:mod:`edgekit.passes.qat`)."""

    pass_: Literal["qat"] = Field("qat", alias="pass")
    epochs: int = Field(1, ge=1, le=1000)
    learning_rate: float = Field(1e-4, gt=0)
    io_type: Literal["float", "int8", "uint8"] = "float"
    preserve: Literal["auto", "none", "sparsity", "clusters"] = Field(
        "auto", description="auto: keep the sparsity or clusters of an earlier prune/cluster pass.")


class QuantizeSpec(_PassBase):
    """Post-training quantization (:mod:`edgekit.export.convert`), optionally mixed precision."""

    pass_: Literal["quantize"] = Field("quantize", alias="pass")
    mode: Literal["float32", "float16", "dynamic", "int8", "int16x8"] = "int8"
    io_type: Literal["float", "int8", "uint8", "int16"] = "float"
    calibration_samples: int = Field(100, ge=1, le=100000)
    per_channel: bool | None = Field(
        None, description="int8 weight scales per output channel (true) or per tensor (false); unset: per-tensor only for a model "
                          "clustered with one codebook per layer, per-channel otherwise (as edgekit quantize --weights auto).")
    equalize: bool = Field(False, description="Cross-layer equalization first (edgekit.passes.equalize): float outputs unchanged.")
    float_layers: list[str] = Field(
        default_factory=list, description="Keras layer names (regex, full match) kept in float32 (int8 only).")
    keep_sensitive_float: int = Field(
        0, ge=0, le=1000, description="Keep this many of the layers with the largest int8 error in float (int8 only).")
    layer_stats: bool = Field(True, description="Measure per-layer int8 error with TensorFlow's QuantizationDebugger.")

    @field_validator("float_layers")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for item in value:
            _check_regex(item, "float_layers entry")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> QuantizeSpec:
        allowed = {"int8": ("float", "int8", "uint8"), "int16x8": ("float", "int16")}.get(self.mode, ("float",))
        if self.io_type not in allowed:
            raise ValueError(f"io_type {self.io_type} does not go with mode {self.mode} (allowed: {', '.join(allowed)})")
        if (self.float_layers or self.keep_sensitive_float) and self.mode != "int8":
            raise ValueError(f"float_layers / keep_sensitive_float need mode int8 (mixed int8/float), not {self.mode}")
        if self.per_channel is False and self.mode not in ("int8", "int16x8", "dynamic"):
            raise ValueError(f"per_channel: false applies to int8, int16x8 and dynamic, not {self.mode}")
        return self

    @property
    def mixed(self) -> bool:
        return bool(self.float_layers or self.keep_sensitive_float)


class ExportSpec(_PassBase):
    """Package the artifact for a target: metadata, manifest, delegate compatibility report (:mod:`edgekit.workflows.export`)."""

    pass_: Literal["export"] = Field("export", alias="pass")
    target: Literal["cpu", "gpu", "nnapi", "npu"] = "cpu"
    api_level: int | None = Field(None, ge=21, le=60)
    npu: Literal["qualcomm", "mediatek", "google_tensor"] | None = None
    soc: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ExportSpec:
        if self.api_level is not None and self.target != "nnapi":
            raise ValueError("api_level applies to target nnapi only")
        if (self.npu is not None or self.soc is not None) and self.target != "npu":
            raise ValueError("npu/soc apply to target npu only")
        if self.soc is not None and self.npu is None:
            raise ValueError("soc needs npu (the vendor) too")
        return self


PASS_SPECS: dict[str, type[_Strict]] = {
    "prune": PruneSpec, "cluster": ClusterSpec, "distill": DistillSpec, "qat": QatSpec, "quantize": QuantizeSpec, "export": ExportSpec,
}


def _pass_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("pass")
    return getattr(value, "pass_", None)


PassSpec = Annotated[
    Annotated[PruneSpec, Tag("prune")] | Annotated[ClusterSpec, Tag("cluster")] | Annotated[DistillSpec, Tag("distill")] | Annotated[QatSpec, Tag("qat")] | Annotated[QuantizeSpec, Tag("quantize")] | Annotated[ExportSpec, Tag("export")],
    Discriminator(_pass_tag),
]


class AccuracyGate(_Strict):
    """Top-1 of the final artifact against the float32 model, on the validation data."""

    max_drop: float = Field(ge=0.0, description="Points of top-1 (or percent of the float top-1 with relative: true).")
    relative: bool = False


class LatencyGate(_Strict):
    max_ms: float = Field(gt=0.0)
    percentile: Literal["p50", "p90"] = "p50"
    device: str | None = Field(None, description="A device profile; --device overrides it; default: this machine.")


class SizeGate(_Strict):
    max_bytes: int | None = Field(None, ge=1)
    max_kb: float | None = Field(None, gt=0)
    compressed: bool = Field(False, description="Compare the gzip size instead of the bytes on disk.")

    @model_validator(mode="after")
    def _one(self) -> SizeGate:
        if (self.max_bytes is None) == (self.max_kb is None):
            raise ValueError("give exactly one of max_bytes or max_kb")
        return self

    @property
    def limit_bytes(self) -> int:
        return int(self.max_bytes if self.max_bytes is not None else round(self.max_kb * 1024))  # type: ignore[operator]


class Gates(_Strict):
    accuracy: AccuracyGate | None = None
    latency: LatencyGate | None = None
    size: SizeGate | None = None


class MeasureSpec(_Strict):
    """How the final artifact (and the float32 reference) is measured."""

    runs: int = Field(50, ge=1, le=100000)
    warmup: int = Field(5, ge=0, le=10000)
    threads: int | None = Field(None, ge=1, le=256, description="Default: the device profile's threads (1 locally).")
    rounds: int = Field(3, ge=1, le=50, description="Interleaved rounds of the artifact and the float32 reference.")


class Recipe(_Strict):
    """A validated recipe. ``passes`` run in order; ``gates`` are checked on the final artifact."""

    schema_version: int
    name: str
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    passes: list[PassSpec] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates)
    measure: MeasureSpec = Field(default_factory=MeasureSpec)

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"this edgekit reads recipes with schema_version {SCHEMA_VERSION}, the file has {value}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @model_validator(mode="after")
    def _cross_pass_rules(self) -> Recipe:
        """The rules that span passes. Each failure names the pass (and so its line)."""
        names = [p.pass_ for p in self.passes]

        def fail(index: int, message: str) -> None:
            raise PydanticCustomError("recipe_rule", "{message}", {"message": message, "path": ("passes", index)})

        for name in ("quantize", "qat", "export", "distill"):
            where = [i for i, n in enumerate(names) if n == name]
            if len(where) > 1:
                fail(where[1], f"pass {name} appears {len(where)} times (passes {', '.join(str(i + 1) for i in where)}); keep one")
        quant = [i for i, n in enumerate(names) if n in ("quantize", "qat")]
        if "quantize" in names and "qat" in names:
            i = max(names.index("quantize"), names.index("qat"))
            fail(i, "qat and quantize are exclusive: QAT already produces the int8 model; remove one of them")
        if quant:
            q = quant[0]
            later = [i for i in range(q + 1, len(names)) if names[i] in TRAINING_PASSES]
            if later:
                fail(later[0], f"{names[later[0]]} comes after {names[q]}: quantization must be the last model-changing pass; "
                               f"move {names[later[0]]} before {names[q]}")
        if "export" in names:
            e = names.index("export")
            if e != len(names) - 1:
                fail(e + 1, f"{names[e + 1]} comes after export: export packages the final model and must be the last pass")
            spec = self.passes[e]
            assert isinstance(spec, ExportSpec)
            modes = TARGET_MODES[spec.target]
            if quant and names[quant[0]] == "quantize":
                qspec = self.passes[quant[0]]
                assert isinstance(qspec, QuantizeSpec)
                if qspec.mode not in modes:
                    fail(e, f"target {spec.target} does not take {qspec.mode} models (allowed: {', '.join(modes)}); "
                            f"change the quantize mode or the target")
                if spec.target in ("nnapi", "npu") and qspec.mode == "int8" and qspec.mixed:
                    fail(e, f"target {spec.target} runs integer graphs end to end; float_layers/keep_sensitive_float keep float ops "
                            "that the accelerator cannot run; drop them or export for cpu")
            if quant and names[quant[0]] == "qat" and spec.target == "gpu":
                fail(e, "target gpu computes in float16/float32; a QAT int8 model brings no GPU speed-up; use quantize mode float16")
        elif not quant:
            fail(len(names) - 1, "the recipe never produces a TFLite model: add a quantize (or qat) pass, or an export pass")
        for i, spec in enumerate(self.passes):
            if isinstance(spec, QatSpec) and spec.preserve in ("sparsity", "clusters"):
                source = "prune" if spec.preserve == "sparsity" else "cluster"
                if source not in names[:i]:
                    fail(i, f"preserve: {spec.preserve} needs a {source} pass before qat")
        return self

    @property
    def training(self) -> bool:
        """Whether any pass fine-tunes or trains the model (and so needs labelled training data)."""
        return any(p.pass_ in TRAINING_PASSES and getattr(p, "epochs", 0) > 0 for p in self.passes)

    @property
    def needs_data(self) -> bool:
        """Whether a pass needs data (calibration or training)."""
        for p in self.passes:
            if p.pass_ in TRAINING_PASSES or (isinstance(p, QuantizeSpec) and p.mode in ("int8", "int16x8")):
                return True
            if isinstance(p, ExportSpec) and "quantize" not in [q.pass_ for q in self.passes] and "qat" not in [q.pass_ for q in self.passes]:
                return TARGET_MODES[p.target][0] == "int8"
        return False

    def pass_names(self) -> list[str]:
        return [p.pass_ for p in self.passes]

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (every default filled in) as plain data, ``pass`` first in each pass."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=False)
        data["passes"] = [{"pass": p.pop("pass"), **p} for p in data["passes"]]
        return data

    def to_yaml(self, header: str | None = None) -> str:
        """The resolved recipe as YAML that :func:`load_recipe` reads back."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, width=110)
        if header:
            text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
        return text


# ----------------------------------------------------------------------------------------------
# YAML with line numbers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, at a line of its file."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


class RecipeProblems(RecipeError):
    """A recipe failed validation; ``problems`` lists every problem found (the message shows the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more problem(s); run `edgekit recipe check` to see all)" if len(problems) > 1 else ""
        super().__init__(f"invalid recipe {problems[0]}{more}", hint=None)


def _load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """Parses YAML safely and records the line (1-based) of every mapping key and list item.

    Returns ``(data, lines)`` where ``lines`` maps a path such as ``("passes", 0, "sparsity")``
    to the line it is on. Duplicate keys are refused (plain ``safe_load`` silently keeps the last).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeProblems([Problem(source, None, "the file is empty; a recipe needs schema_version, name and passes")])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise RecipeProblems([Problem(source, line, f"not valid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise RecipeProblems([Problem(source, None, f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()

    lines: dict[tuple, int] = {(): node.start_mark.line + 1}
    problems: list[Problem] = []

    def walk(n: yaml.Node, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in n.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    problems.append(Problem(source, line, f"duplicate key '{key}' (first at line {seen[key]})"))
                    continue
                seen[key] = line
                lines[(*path, key)] = line
                walk(value_node, (*path, key))
        elif isinstance(n, yaml.SequenceNode):
            for index, item in enumerate(n.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index))

    walk(node, ())
    if problems:
        raise RecipeProblems(problems)
    return data, lines


# ----------------------------------------------------------------------------------------------
# Validation with line numbers and suggestions
# ----------------------------------------------------------------------------------------------


def _model_at(path: tuple, data: Any) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``path`` of ``data`` (None if not a model)."""
    current: Any = Recipe
    value = data
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return None
            value = value[part]
            if current == "passes":
                current = PASS_SPECS.get(_pass_tag(value) or "")
            elif isinstance(current, tuple) and current[0] == "list":
                current = current[1]
            else:
                return None
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or not isinstance(value, dict):
            return None
        field = _field_by_key(current, part)
        if field is None:
            return None
        value = value.get(part)
        if current is Recipe and part == "passes":
            current = "passes"
            continue
        current = _model_of(current.model_fields[field].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_by_key(model: type[BaseModel], key: Any) -> str | None:
    for name, info in model.model_fields.items():
        if key == (info.alias or name):
            return name
    return None


def _model_of(annotation: Any) -> Any:
    """The BaseModel class inside an annotation (Optional[X], list[X] -> ("list", X))."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    if origin is list:
        inner = _model_of(typing.get_args(annotation)[0])
        return ("list", inner) if inner is not None else None
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def _line_for(path: tuple, lines: dict[tuple, int]) -> int | None:
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _data_path(loc: tuple, data: Any) -> tuple:
    """Drops the parts of a pydantic error location that are not in the data (union tags, 'function-after')."""
    out: list[Any] = []
    value = data
    for part in loc:
        if isinstance(value, dict) and part in value:
            out.append(part)
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            out.append(part)
            value = value[part]
    return tuple(out)


def _where(path: tuple, data: Any) -> str:
    """A readable name for the place: 'the prune pass (pass 2)', 'gates.latency', 'the recipe'."""
    if len(path) >= 2 and path[0] == "passes" and isinstance(path[1], int):
        tag = _pass_tag(data["passes"][path[1]]) if isinstance(data.get("passes"), list) else None
        return f"the {tag} pass (pass {path[1] + 1})" if tag else f"pass {path[1] + 1}"
    keys = [str(p) for p in path if not isinstance(p, int)]
    return ".".join(keys) if keys else "the recipe"


def _precheck_passes(data: dict[str, Any], lines: dict[tuple, int], source: str) -> list[Problem]:
    """Unknown or missing pass names, with suggestions (before pydantic, whose union errors are vague)."""
    problems = []
    passes = data.get("passes")
    if not isinstance(passes, list):
        return problems
    for index, item in enumerate(passes):
        if not isinstance(item, dict):
            problems.append(Problem(source, _line_for(("passes", index), lines),
                                    f"pass {index + 1} should be a mapping like '- pass: quantize', got {type(item).__name__}"))
            continue
        name = item.get("pass")
        if name is None:
            problems.append(Problem(source, _line_for(("passes", index), lines),
                                    f"pass {index + 1} has no 'pass:' key (one of: {', '.join(PASS_NAMES)})"))
        elif name not in PASS_NAMES:
            problems.append(Problem(source, _line_for(("passes", index, "pass"), lines),
                                    f"unknown pass '{name}'{_suggest(str(name), PASS_NAMES)} (passes: {', '.join(PASS_NAMES)})"))
    return problems


def _problems_from(exc: Any, data: Any, lines: dict[tuple, int], source: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "recipe_rule":
            path = tuple(ctx.get("path", ()))
            problems.append(Problem(source, _line_for(path, lines), f"{_where(path, data)}: {ctx.get('message', err['msg'])}"))
            continue
        path = _data_path(tuple(err["loc"]), data)
        line = _line_for(path, lines)
        if kind == "extra_forbidden":
            key = err["loc"][-1]
            parent = _data_path(tuple(err["loc"][:-1]), data)
            model = _model_at(parent, data)
            valid = _keys_of(model) if model is not None else []
            listing = f" (valid: {', '.join(valid)})" if valid else ""
            problems.append(Problem(source, line, f"unknown key '{key}' in {_where(parent, data)}{_suggest(str(key), valid)}{listing}"))
        elif kind == "missing":
            key = err["loc"][-1]
            problems.append(Problem(source, _line_for(path, lines), f"{_where(path, data)} needs '{key}'"))
        elif kind == "literal_error":
            expected = str(ctx.get("expected", ""))
            choices = re.findall(r"'([^']*)'", expected)
            got = err.get("input")
            problems.append(Problem(source, line, f"{'.'.join(str(p) for p in path[-1:]) or 'value'} '{got}' in "
                                                  f"{_where(path[:-1], data)} is not one of {expected}{_suggest(str(got), choices)}"))
        else:
            message = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or kind == "value_error" else f" (got {got!r})"
            last = path[-1] if path else None
            if isinstance(last, str) and len(path) == len(_data_path(tuple(err["loc"]), data)) and _model_at(path, data) is None:
                problems.append(Problem(source, line, f"{last} in {_where(path[:-1], data)}: {message}{shown}"))
            else:
                problems.append(Problem(source, line, f"{_where(path, data)}: {message}{shown}"))
    return problems


class _Relocated:
    """A ValidationError of one pass, with its locations moved under ``passes[index]``."""

    def __init__(self, exc: ValidationError, index: int) -> None:
        self._errors = [{**err, "loc": ("passes", index, *err["loc"])} for err in exc.errors()]

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


def parse_recipe(text: str, *, source: str = "<recipe>") -> Recipe:
    """Parses and validates recipe text.

    Raises:
        RecipeProblems: (a RecipeError, exit code 9) listing every problem with its line.
    """
    data, lines = _load_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise RecipeProblems([Problem(source, lines.get(()), f"a recipe is a mapping (schema_version, name, passes...), got {type(data).__name__}")])
    problems = _precheck_passes(data, lines, source)
    if problems:
        # still check the passes that are known, so one run reports every problem
        for index, item in enumerate(data.get("passes") or []):
            spec = PASS_SPECS.get(_pass_tag(item) or "") if isinstance(item, dict) else None
            if spec is None:
                continue
            try:
                spec.model_validate(item)
            except ValidationError as exc:
                problems.extend(_problems_from(_Relocated(exc, index), data, lines, source))
        raise RecipeProblems(sorted(problems, key=lambda p: p.line or 0))
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeProblems(_problems_from(exc, data, lines, source) or [Problem(source, None, str(exc))]) from None


# ----------------------------------------------------------------------------------------------
# Finding recipes
# ----------------------------------------------------------------------------------------------


def bundled_dirs() -> list[Path]:
    """Where bundled recipes are looked for, in order.

    - ``recipes/`` beside the ``edgekit`` package (a source checkout or an editable install);
    - ``<prefix>/share/edgekit/recipes`` (a wheel install: pyproject's ``data-files`` puts them there).
    """
    here = Path(__file__).resolve().parent
    dirs = [here.parents[1] / "recipes"]
    for prefix in dict.fromkeys([sys.prefix, sysconfig.get_path("data")]):
        dirs.append(Path(prefix) / "share" / "edgekit" / "recipes")
    return dirs


def search_dirs(recipes_dir: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """Folders searched for a recipe name: ``recipes_dir``, then ``$EDGEKIT_RECIPES`` (os.pathsep list), then bundled."""
    dirs: list[tuple[Path, str]] = []
    if recipes_dir is not None:
        dirs.append((Path(recipes_dir), "--recipes-dir"))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append((Path(part), ENV_VAR))
    dirs.extend((d, "bundled") for d in bundled_dirs())
    return dirs


@dataclass(frozen=True)
class RecipeEntry:
    name: str
    path: Path
    origin: str
    description: str


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.endswith((".yaml", ".yml"))


def find_recipe(name_or_path: str | os.PathLike[str], *, recipes_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file of a recipe given by name (searched in :func:`search_dirs`) or by path."""
    name = str(name_or_path)
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise InputError(f"recipe file {path} does not exist", hint="give a bundled recipe name (edgekit recipe list) or an existing .yaml file")
        return path
    for folder, _origin in search_dirs(recipes_dir):
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    known = [e.name for e in list_recipes(recipes_dir)]
    raise InputError(f"unknown recipe '{name}'{_suggest(name, known)} (known: {', '.join(known) or 'none'})",
                     hint="see `edgekit recipe list`, or pass the path of a .yaml file")


def load_recipe(recipe: str | os.PathLike[str] | Recipe, *, recipes_dir: str | os.PathLike[str] | None = None) -> Recipe:
    """A validated :class:`Recipe` from a name, a path or a Recipe (returned as is)."""
    if isinstance(recipe, Recipe):
        return recipe
    path = find_recipe(recipe, recipes_dir=recipes_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read recipe {path}: {getattr(exc, 'strerror', None) or exc}", hint="check the file") from None
    loaded = parse_recipe(text, source=str(path))
    object.__setattr__(loaded, "__source__", str(path))
    return loaded


def recipe_source(recipe: Recipe) -> str | None:
    """The file a recipe was loaded from (None when built in code)."""
    return getattr(recipe, "__source__", None)


def list_recipes(recipes_dir: str | os.PathLike[str] | None = None) -> list[RecipeEntry]:
    """Every recipe found, earlier folders shadowing later ones of the same name, sorted by name.

    Invalid files are listed with their first problem as the description.
    """
    seen: dict[str, RecipeEntry] = {}
    for folder, origin in search_dirs(recipes_dir):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
            name = path.stem
            if name in seen:
                continue
            try:
                description = parse_recipe(path.read_text(encoding="utf-8"), source=str(path)).description
            except (RecipeError, OSError, UnicodeDecodeError) as exc:
                description = f"INVALID: {exc}"
            seen[name] = RecipeEntry(name, path, origin, description)
    return [seen[n] for n in sorted(seen)]


def recipe_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Recipe:
    """Validates a recipe given as Python data (round-trips through YAML so errors carry lines)."""
    return parse_recipe(yaml.safe_dump(data, sort_keys=False), source=source)
