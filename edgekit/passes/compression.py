"""What the weight-compression passes (prune, cluster) share: their config base and per-layer reports.

- :class:`CompressionConfig`: the training settings plus ``layers``/``skip`` (regexes searched
  in layer paths such as ``conv1`` or ``backbone/conv1``);
- :func:`setting_error`: a config validation error that names its settings, so the CLI shows it
  with its flags (``--epochs``) and a recipe with its keys;
- :class:`LayerReport`: what a pass did to one layer, as it appears in ``PassOutput.details``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from pydantic import field_validator
from pydantic_core import PydanticCustomError

from edgekit.passes.base import TrainingConfig


def setting_error(message: str, *settings: str, hint: str | None = None) -> PydanticCustomError:
    """A validation error of a pass config whose message speaks of ``settings`` (config field names).

    Raise it from a pydantic validator: a recipe lists it with its line, and the CLI
    (:func:`edgekit.cli.options.build_config`) rewrites each setting to its flag spelling.
    """
    context: dict[str, Any] = {"settings": tuple(settings)}
    if hint:
        context["hint"] = hint
    return PydanticCustomError("edgekit_setting", message, context)


def check_regex(value: str | None, setting: str) -> str | None:
    """``value`` if it is a valid regular expression, else a :func:`setting_error`."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise setting_error(f"{setting} '{value}' is not a valid regular expression ({exc})", setting,
                                hint=f"e.g. {setting} 'conv|fc1'") from None
    return value


class CompressionConfig(TrainingConfig):
    """Settings prune and cluster share: fine-tuning and which layers to compress."""

    layers: str | None = None
    skip: str | None = None

    @field_validator("layers", "skip")
    @classmethod
    def _regex(cls, value: str | None, info: Any) -> str | None:
        return check_regex(value, info.field_name)

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise setting_error(f"epochs cannot be negative, got {value}", "epochs", hint="use epochs 0 to compress without fine-tuning")
        return value


@dataclass(frozen=True)
class LayerReport:
    """What a pass did to one layer."""

    path: str
    layer_class: str
    parameters: int
    status: str  # pruned, clustered, rewired, skipped, unsupported
    reason: str | None = None
    target_sparsity: float | None = None
    sparsity: float | None = None
    channels_before: int | None = None
    channels_after: int | None = None
    clusters: int | None = None
    distinct_values: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerReport:
        """The report back from its ``to_dict()`` (as found in ``PassOutput.details['layers']``)."""
        return cls(**data)
