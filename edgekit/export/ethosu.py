"""Arm Ethos-U NPUs: compile an int8 ``.tflite`` with Vela and report what runs where, and how fast.

Ethos-U55/U65/U85 micro-NPUs run next to a Cortex-M (or Cortex-A) core. Arm's compiler Vela
(``pip install 'edgekit[ethos-u]'``, ``ethos-u-vela``, Apache-2.0, offline) rewrites an int8 (or
16x8) model: the ops the NPU supports become one ``ethos-u`` custom op with a command stream; the
others stay TFLite ops for the CPU (TFLite Micro). Its performance model estimates cycles per layer
for a *system configuration* (clocks and memory bandwidths, from the ``Arm/vela.ini`` bundled with
Vela) and a *memory mode* (what lives in SRAM and what in flash/DRAM).

:func:`run_vela` runs Vela in a child process, parses its summary and per-layer CSVs and its
fall-back warnings into a frozen :class:`VelaResult`: NPU/CPU op split (original TFLite ops) with the
reason for each CPU op, SRAM and flash/DRAM use, estimated cycles and latency, top layers by cycles.

Defaults per target (Vela's own example systems): ``ethos-u55`` = ethos-u55-128 on
``Ethos_U55_High_End_Embedded`` with ``Shared_Sram``; ``ethos-u65`` = ethos-u65-256 on
``Ethos_U65_High_End`` with ``Dedicated_Sram``; ``ethos-u85`` = ethos-u85-256 on
``Ethos_U85_SYS_DRAM_Mid`` with ``Dedicated_Sram_384KB``.

Example:
    >>> result = run_vela(int8_flatbuffer, "ethos-u55")  # doctest: +SKIP
    >>> result.npu_op_share, result.sram_kib, result.inference_ms  # doctest: +SKIP
    (1.0, 11.59, 0.47)
"""

from __future__ import annotations

import configparser
import csv
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgekit.core.errors import ConversionError, InputError
from edgekit.core.extras import import_extra
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes

CONFIG_FILE = "Arm/vela.ini"  # Vela's bundled configuration, addressed relative to its config_files folder
ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048")


@dataclass(frozen=True)
class EthosTarget:
    """A Vela compilation target: accelerator, system configuration, memory mode."""

    accelerator: str
    system_config: str
    memory_mode: str


TARGETS: dict[str, EthosTarget] = {
    "ethos-u55": EthosTarget("ethos-u55-128", "Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65": EthosTarget("ethos-u65-256", "Ethos_U65_High_End", "Dedicated_Sram"),
    "ethos-u85": EthosTarget("ethos-u85-256", "Ethos_U85_SYS_DRAM_Mid", "Dedicated_Sram_384KB"),
}
_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'$")


@dataclass(frozen=True)
class VelaLayer:
    """One original TFLite op after compilation."""

    name: str  # the op's output tensor
    op: str  # the TFLite op (CONV_2D, FULLY_CONNECTED...)
    target: str  # NPU or CPU
    cycles: int  # estimated NPU cycles (0 on the CPU: Vela does not estimate CPU ops)
    macs: int
    reason: str | None = None  # why it falls back to the CPU

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "target": self.target, "cycles": self.cycles, "macs": self.macs, "reason": self.reason}


@dataclass(frozen=True)
class VelaResult:
    """What Vela made of a model for one Ethos-U configuration."""

    target: EthosTarget
    layers: tuple[VelaLayer, ...]
    sram_kib: float
    flash_kib: float  # on-chip + off-chip flash (weights, in modes that keep them there)
    dram_kib: float
    cycles_total: int
    npu_cycles: int
    core_clock_hz: float
    inference_ms: float  # Vela's estimate for the NPU part; CPU ops are not included
    macs: int
    vela_version: str
    compiled_model: bytes  # the ``*_vela.tflite`` the device runs
    warnings: tuple[str, ...] = ()

    @property
    def npu_ops(self) -> int:
        return sum(layer.target == "NPU" for layer in self.layers)

    @property
    def cpu_ops(self) -> int:
        return sum(layer.target != "NPU" for layer in self.layers)

    @property
    def npu_op_share(self) -> float:
        """Share of the original ops that run on the NPU (0-1)."""
        return self.npu_ops / len(self.layers) if self.layers else 0.0

    def top_layers(self, count: int = 5) -> list[VelaLayer]:
        """The layers with the most estimated cycles."""
        return sorted(self.layers, key=lambda layer: layer.cycles, reverse=True)[:count]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accelerator": self.target.accelerator, "system_config": self.target.system_config, "memory_mode": self.target.memory_mode,
            "npu_ops": self.npu_ops, "cpu_ops": self.cpu_ops, "npu_op_share": round(self.npu_op_share, 4),
            "cpu_layers": [layer.to_dict() for layer in self.layers if layer.target != "NPU"],
            "sram_kib": self.sram_kib, "flash_kib": self.flash_kib, "dram_kib": self.dram_kib,
            "cycles_total": self.cycles_total, "npu_cycles": self.npu_cycles, "core_clock_hz": self.core_clock_hz,
            "inference_ms_estimate": self.inference_ms, "macs": self.macs,
            "top_layers": [layer.to_dict() for layer in self.top_layers()],
            "vela_version": self.vela_version, "compiled_model_bytes": len(self.compiled_model), "warnings": list(self.warnings),
        }


def resolve_target(target: str, *, accelerator: str | None = None, system_config: str | None = None,
                   memory_mode: str | None = None) -> EthosTarget:
    """The Vela configuration for ``target`` (``ethos-u55``/``u65``/``u85``), with overrides checked.

    Raises:
        InputError: an unknown target, accelerator, system configuration or memory mode (the valid
            names are listed), or an accelerator of another family than the target.
    """
    if target not in TARGETS:
        raise InputError(f"unknown Ethos-U target {target!r}", hint=f"use one of {', '.join(TARGETS)}", settings=("target",))
    base = TARGETS[target]
    chosen = EthosTarget(accelerator or base.accelerator, system_config or base.system_config, memory_mode or base.memory_mode)
    if chosen.accelerator not in ACCELERATORS or not chosen.accelerator.startswith(target):
        valid = [a for a in ACCELERATORS if a.startswith(target)]
        raise InputError(f"accelerator {chosen.accelerator!r} is not a {target} configuration", hint=f"use one of {', '.join(valid)}",
                         settings=("accelerator",))
    systems, modes = vela_configs()
    if chosen.system_config not in systems:
        raise InputError(f"unknown Vela system configuration {chosen.system_config!r}", hint=f"use one of {', '.join(systems)}",
                         settings=("system_config",))
    if chosen.memory_mode not in modes:
        raise InputError(f"unknown Vela memory mode {chosen.memory_mode!r}", hint=f"use one of {', '.join(modes)}", settings=("memory_mode",))
    return chosen


def vela_configs() -> tuple[list[str], list[str]]:
    """The system configurations and memory modes of Vela's bundled ``Arm/vela.ini``."""
    vela = import_extra("ethos-u")
    ini = Path(str(vela.__file__)).resolve().parents[1] / "config_files" / CONFIG_FILE
    parser = configparser.ConfigParser()
    parser.read(ini)
    systems = [s.split(".", 1)[1] for s in parser.sections() if s.startswith("System_Config.")]
    modes = [s.split(".", 1)[1] for s in parser.sections() if s.startswith("Memory_Mode.")]
    return systems, modes


def run_vela(flatbuffer: bytes, target: str = "ethos-u55", *, accelerator: str | None = None, system_config: str | None = None,
             memory_mode: str | None = None, timeout_s: float = 900) -> VelaResult:
    """Compiles a model with Vela for an Ethos-U configuration and parses what it reports.

    Raises:
        InputError: the ``ethos-u`` extra is missing, or a bad configuration.
        ConversionError: Vela failed (its own error line is quoted).
    """
    chosen = resolve_target(target, accelerator=accelerator, system_config=system_config, memory_mode=memory_mode)
    info = parse_tflite_bytes(flatbuffer)
    warnings = []
    if not any(t.dtype in ("INT8", "INT16") for t in info.tensors if not t.is_constant):
        warnings.append("the model is not integer-quantized: Ethos-U runs int8/int16 ops only, the rest stays on the CPU")
    with tempfile.TemporaryDirectory(prefix="edgekit-vela-") as tmp:
        work = Path(tmp)
        model = work / "model.tflite"
        model.write_bytes(flatbuffer)
        cmd = [sys.executable, "-m", "ethosu.vela", str(model), "--config", CONFIG_FILE,
               "--accelerator-config", chosen.accelerator, "--system-config", chosen.system_config,
               "--memory-mode", chosen.memory_mode, "--output-dir", str(work / "out"), "--verbose-performance"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=work,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
        except subprocess.TimeoutExpired:
            raise ConversionError(f"Vela did not finish within {timeout_s:.0f} s", hint="try a smaller model") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            message = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else f"exit code {proc.returncode}")
            raise ConversionError(f"Vela failed for {chosen.accelerator}: {message[:300]}", hint="check the system configuration and memory mode")
        out = work / "out"
        summary = _read_csv(next(out.glob("*_summary_*.csv")))[0]
        layers = _layers(info, _read_csv(out / "model_per-layer.csv"), _fallback_reasons(proc.stdout))
        compiled = (out / "model_vela.tflite").read_bytes()
    version = _vela_version()
    return VelaResult(
        target=chosen, layers=layers,
        sram_kib=float(summary["sram_memory_used"]), dram_kib=float(summary["dram_memory_used"]),
        flash_kib=float(summary["on_chip_flash_memory_used"]) + float(summary["off_chip_flash_memory_used"]),
        cycles_total=int(float(summary["cycles_total"])), npu_cycles=int(float(summary["cycles_npu"])),
        core_clock_hz=float(summary["core_clock"]), inference_ms=float(summary["inference_time"]) * 1000.0,
        macs=int(float(summary["nn_macs"])), vela_version=version, compiled_model=compiled, warnings=tuple(warnings),
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, skipinitialspace=True))


def _fallback_reasons(stdout: str) -> dict[str, str]:
    """Output tensor name -> Vela's reason for running the op on the CPU."""
    reasons: dict[str, str] = {}
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        match = _WARNING.match(line.strip())
        if match:
            reason = lines[i + 1].strip() if i + 1 < len(lines) else ""
            reasons[match.group(2)] = reason.removeprefix("Reason: ")
    return reasons


def _layers(info: TfliteInfo, rows: list[dict[str, str]], reasons: dict[str, str]) -> tuple[VelaLayer, ...]:
    """One entry per original op of the main subgraph, named by its output tensor.

    Vela's per-layer rows are its own operations: it splits some ops (a Softmax becomes ~30 NPU
    operations named ``<output>_softmax_N``) and removes others (a Reshape only changes how memory
    is read). Rows are matched to an op by exact output name, then by the longest ``<output>_`` prefix;
    an op with no row ran on the NPU (removed or fused) unless Vela warned that it falls back.
    """
    ops = [op for op in info.operators if op.subgraph == 0 and op.outputs]
    names = [info.tensors[op.outputs[0]].name for op in ops]
    matched: dict[str, list[dict[str, str]]] = {name: [] for name in names}
    for row in rows:
        row_name = row.get("Name", "").strip()
        if row_name in matched:
            matched[row_name].append(row)
            continue
        owners = [name for name in names if row_name.startswith(name + "_")]
        if owners:
            matched[max(owners, key=len)].append(row)
    layers = []
    for op, name in zip(ops, names):
        own = matched[name]
        on_cpu = any(r.get("Target", "").strip() != "NPU" for r in own) or (not own and name in reasons)
        layers.append(VelaLayer(
            name=name, op=op.op, target="CPU" if on_cpu else "NPU",
            cycles=sum(_int(r.get("Op Cycles")) for r in own), macs=sum(_int(r.get("MAC Count")) for r in own),
            reason=reasons.get(name, "not supported by the NPU") if on_cpu else None,
        ))
    return tuple(layers)


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def _vela_version() -> str:
    try:
        return version("ethos-u-vela")
    except PackageNotFoundError:
        return "unknown"
