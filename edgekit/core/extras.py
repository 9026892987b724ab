"""Optional extras: import a package that ``pip install 'edgekit[EXTRA]'`` brings, or say how to get it.

edgekit's base install stays lean; features built on third-party tools live behind extras:

==========  ==================  ===================================================
extra       package             what it enables
==========  ==================  ===================================================
quantizer   litert-quantizer    int4 weights and per-layer mixed precision
mcu         tflite-micro        TFLite Micro op check, tensor arena, MCU accuracy
ethos-u     ethos-u-vela        Arm Ethos-U55/U65/U85 compilation and estimates
distributed optuna, ray         optimize --search optuna (resumable study), --ray
==========  ==================  ===================================================

Example:
    >>> has_extra("quantizer") in (True, False)
    True
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from edgekit.core.errors import InputError


@dataclass(frozen=True)
class Extra:
    """An optional dependency group of edgekit."""

    name: str
    module: str
    package: str
    purpose: str

    @property
    def install(self) -> str:
        """The pip command that installs the extra."""
        return f"pip install 'edgekit[{self.name}]'"


EXTRAS: dict[str, Extra] = {
    "quantizer": Extra("quantizer", "litert_quantizer", "litert-quantizer", "int4 and mixed-precision quantization"),
    "mcu": Extra("mcu", "tflite_micro", "tflite-micro", "the microcontroller target (TFLite Micro)"),
    "ethos-u": Extra("ethos-u", "ethosu.vela", "ethos-u-vela", "the Arm Ethos-U targets (Vela)"),
    "distributed": Extra("distributed", "optuna", "optuna and ray", "optimize's Optuna search and Ray builds (--search optuna, --ray)"),
}


def has_extra(name: str) -> bool:
    """Whether the extra's package can be imported (without importing it)."""
    module = EXTRAS[name].module
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def import_extra(name: str, module: str | None = None) -> ModuleType:
    """Imports ``module`` (default: the extra's main module) or raises a one-line InputError.

    Raises:
        InputError: the package is missing, with the ``pip install 'edgekit[EXTRA]'`` to run.
    """
    extra = EXTRAS[name]
    target = module or extra.module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise InputError(
            f"{extra.purpose} needs the optional package {extra.package}, which is not installed ({exc.name or target})",
            hint=extra.install,
        ) from None


def missing_extra_reason(name: str) -> str | None:
    """A skip reason for tests and reports when the extra is absent, else None."""
    if has_extra(name):
        return None
    extra = EXTRAS[name]
    return f"{extra.package} is not installed: {extra.install}"
