"""The recipe schema: data settings, the passes (each step validates into its pass's own config,
from :mod:`edgekit.passes.registry`), the gates and the measurement settings, and the rules that
span passes, checked in one recipe-level validator (:meth:`Recipe._cross_pass_rules`).

This module imports no TensorFlow (pass modules import it lazily), so ``edgekit recipe check``
runs in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

from edgekit.core.datatypes import Preprocessing as Pre
from edgekit.core.datatypes import check_name
from edgekit.core.numexpr import eval_number
from edgekit.export.target import TARGET_MODES
from edgekit.measure.gates import Gates
from edgekit.passes.base import PassConfig
from edgekit.passes.registry import config_types, names, pass_class

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
                eval_number(value)
            except (ValueError, ZeroDivisionError, SyntaxError, OverflowError):
                raise ValueError(f"'{value}' is not a number (write e.g. 0.00392 or 1/255)") from None
        return value

    def scale_value(self) -> float | None:
        if self.scale is None:
            return None
        return eval_number(self.scale) if isinstance(self.scale, str) else float(self.scale)

    def resolved(self) -> Pre:
        """As edgekit's :class:`~edgekit.core.datatypes.Preprocessing`."""

        def tup(v: Any) -> tuple[float, ...] | None:
            return None if v is None else tuple(float(x) for x in (v if isinstance(v, list) else [v]))

        return Pre(scale=self.scale_value(), mean=tup(self.mean), std=tup(self.std))


class DataSpec(_Strict):
    """How the data given on the command line (``--data``, ``--val``) is read and used."""

    preprocessing: Preprocessing | None = None
    train_samples: int | None = Field(None, ge=1, description="Use at most this many training samples (seeded).")
    val_samples: int | None = Field(None, ge=1, description="Validate on at most this many samples (seeded).")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Held out from --data when a training pass runs and --val is absent.")
    seed: int = Field(0, ge=0)
    x_key: str = "x"
    y_key: str = "y"


class MeasureSpec(_Strict):
    """How the final artifact (and the float32 reference) is measured."""

    runs: int = Field(50, ge=1, le=100000)
    warmup: int = Field(5, ge=0, le=10000)
    threads: int | None = Field(None, ge=1, le=256, description="Default: the device profile's threads (1 locally).")
    rounds: int = Field(3, ge=1, le=50, description="Interleaved rounds of the artifact and the float32 reference.")


def pass_tag(value: Any) -> str | None:
    """The pass name of a recipe step (a mapping or a config)."""
    if isinstance(value, dict):
        return value.get("pass")
    return getattr(value, "pass_", None)


PASS_NAMES: tuple[str, ...] = names()
PASS_SPECS: dict[str, type[PassConfig]] = dict(zip(PASS_NAMES, config_types(), strict=True))
if TYPE_CHECKING:  # the union is built from the registry at run time
    PassSpec = Any
else:
    PassSpec = Annotated[Union[tuple(Annotated[c, Tag(n)] for n, c in PASS_SPECS.items())], Discriminator(pass_tag)]  # noqa: UP007


def _trains(spec: Any) -> bool:
    return pass_class(spec.name).trains and getattr(spec, "epochs", 0) > 0


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
        names_ = [p.name for p in self.passes]

        def fail(index: int, message: str) -> None:
            raise PydanticCustomError("recipe_rule", "{message}", {"message": message, "path": ("passes", index)})

        for name in ("quantize", "qat", "litert_quantize", "export", "distill"):
            where = [i for i, n in enumerate(names_) if n == name]
            if len(where) > 1:
                fail(where[1], f"pass {name} appears {len(where)} times (passes {', '.join(str(i + 1) for i in where)}); keep one")
        quant = [i for i, n in enumerate(names_) if n in ("quantize", "qat", "litert_quantize")]
        if "quantize" in names_ and "qat" in names_:
            fail(max(names_.index("quantize"), names_.index("qat")),
                 "qat and quantize are exclusive: QAT already produces the int8 model; remove one of them")
        if len(quant) > 1:
            fail(quant[1], f"{names_[quant[0]]} and {names_[quant[1]]} both convert the model; keep one")
        if quant:
            q = quant[0]
            later = [i for i in range(q + 1, len(names_)) if pass_class(names_[i]).trains]
            if later:
                fail(later[0], f"{names_[later[0]]} comes after {names_[q]}: quantization must be the last model-changing pass; "
                               f"move {names_[later[0]]} before {names_[q]}")
        if "export" in names_:
            e = names_.index("export")
            if e != len(names_) - 1:
                fail(e + 1, f"{names_[e + 1]} comes after export: export packages the final model and must be the last pass")
            target = self.passes[e].target
            modes = TARGET_MODES[target]
            if quant and names_[quant[0]] == "quantize":
                qspec = self.passes[quant[0]]
                if qspec.mode not in modes:
                    fail(e, f"target {target} does not take {qspec.mode} models (allowed: {', '.join(modes)}); "
                            f"change the quantize mode or the target")
                if target in ("nnapi", "npu") and qspec.mode == "int8" and qspec.mixed:
                    fail(e, f"target {target} runs integer graphs end to end; float_layers/keep_sensitive_float keep float ops "
                            "that the accelerator cannot run; drop them or export for cpu")
            if quant and names_[quant[0]] == "qat" and target == "gpu":
                fail(e, "target gpu computes in float16/float32; a QAT int8 model brings no GPU speed-up; use quantize mode float16")
        elif not quant:
            fail(len(names_) - 1, "the recipe never produces a TFLite model: add a quantize (or qat) pass, or an export pass")
        for i, spec in enumerate(self.passes):
            preserve = getattr(spec, "preserve", None) if spec.name == "qat" else None
            if preserve in ("sparsity", "clusters"):
                source = "prune" if preserve == "sparsity" else "cluster"
                if source not in names_[:i]:
                    fail(i, f"preserve: {preserve} needs a {source} pass before qat")
        return self

    @property
    def training(self) -> bool:
        """Whether any pass fine-tunes or trains the model (and so needs labelled training data)."""
        return any(_trains(p) for p in self.passes)

    @property
    def needs_data(self) -> bool:
        """Whether a pass needs data (calibration or training)."""
        names_ = self.pass_names()
        for p in self.passes:
            if pass_class(p.name).trains or (p.name == "quantize" and p.mode in ("int8", "int16x8")):
                return True
            if p.name == "export" and "quantize" not in names_ and "qat" not in names_:
                return TARGET_MODES[p.target][0] == "int8"
        return False

    def pass_names(self) -> list[str]:
        return [p.name for p in self.passes]

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (every default filled in) as plain data, ``pass`` first in each pass."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=False)
        data["passes"] = [{"pass": p.pop("pass"), **p} for p in data["passes"]]
        return data

    def to_yaml(self, header: str | None = None) -> str:
        """The resolved recipe as YAML that :func:`~edgekit.workflows.recipes.load_recipe` reads back."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False, width=76)
        if header:
            text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
        return text
