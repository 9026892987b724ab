"""The explicit registry of passes: every built-in is registered here, in one place.

:func:`register` validates a pass class when it is registered (a name, a config class whose
``pass`` discriminator is that name, an ``apply``); recipes build their step schema from
:func:`config_types`, and the pipeline instantiates passes with :func:`build`.

Example:
    >>> from edgekit.passes.registry import build, pass_class
    >>> pass_class("prune").config_type.__name__
    'PruneConfig'
"""

from __future__ import annotations

import inspect

from edgekit.core.errors import RecipeError
from edgekit.passes.base import Pass, PassConfig
from edgekit.passes.cluster import ClusterPass
from edgekit.passes.distill import DistillPass
from edgekit.passes.export import ExportPass
from edgekit.passes.litert_quantize import LitertQuantizePass
from edgekit.passes.prune import PrunePass
from edgekit.passes.qat import QatPass
from edgekit.passes.quantize import QuantizePass

_PASSES: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    """Adds a pass class; raises TypeError if it does not follow the interface."""
    name = getattr(cls, "name", None)
    config = getattr(cls, "config_type", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no name")
    if not (isinstance(config, type) and issubclass(config, PassConfig)):
        raise TypeError(f"{cls.__name__}.config_type must be a PassConfig subclass")
    field = config.model_fields.get("pass_")
    if field is None or field.default != name or field.alias != "pass":
        raise TypeError(f"{config.__name__} must declare pass_: Literal[{name!r}] = Field({name!r}, alias='pass')")
    if inspect.isabstract(cls):
        raise TypeError(f"{cls.__name__} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    if name in _PASSES and _PASSES[name] is not cls:
        raise TypeError(f"a pass named {name!r} is already registered ({_PASSES[name].__name__})")
    _PASSES[name] = cls
    return cls


def unregister(name: str) -> None:
    """Removes a pass (tests use it to check how an unknown pass is reported)."""
    _PASSES.pop(name, None)


def names() -> tuple[str, ...]:
    """The registered pass names, in registration order."""
    return tuple(_PASSES)


def pass_class(name: str) -> type[Pass]:
    """The pass class registered as ``name``."""
    try:
        return _PASSES[name]
    except KeyError:
        raise RecipeError(f"unknown pass '{name}' (this edgekit has: {', '.join(_PASSES)})",
                          hint="check the pass name, or upgrade edgekit") from None


def config_types() -> tuple[type[PassConfig], ...]:
    """Every registered pass's config class (what a recipe step may validate into)."""
    return tuple(cls.config_type for cls in _PASSES.values())


def build(config: PassConfig) -> Pass:
    """The pass for a config."""
    return pass_class(config.name)(config)


# --- built-ins, registered explicitly -----------------------------------------------------------
# (each import brings a pass module that imports no TensorFlow at module level)
register(PrunePass)
register(ClusterPass)
register(QuantizePass)
register(LitertQuantizePass)
register(QatPass)
register(DistillPass)
register(ExportPass)
