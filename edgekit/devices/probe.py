"""Device probe: what the device is, which TFLite runtime runs there, and how hot it is.

For Linux devices (local, ssh) the probe copies ``remote_probe.py`` (stdlib only) next to
edgekit's runner and runs it with the device's Python: architecture, OS, Python, installed
runtimes (from package metadata, never imported), ``/proc/cpuinfo``. For Android it reads
``uname -m``, ``/proc/cpuinfo`` and ``getprop`` (API level, SoC). On both it reads the thermal
zones, ``vcgencmd get_throttled`` on a Raspberry Pi and Android's thermal status.

The runtime is then chosen (:func:`choose_runtime`): installed runtimes known to crash on this
CPU (:data:`RUNTIME_HAZARDS`, e.g. ai-edge-litert >= 2.2 on a Cortex-A72 without LSE atomics)
are tried last, and each candidate is try-run on a tiny bundled model in its own process, so a
runtime that dies with SIGILL is rejected before the real run.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.errors import DeviceError, RuntimeFailure
from edgekit.devices.connect import open_transport
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.devices.transport import Completed, Transport, work_dir
from edgekit.runtime.local import RUNNER_PATH, parse_runner_error

REMOTE_PROBE_PATH = Path(__file__).with_name("remote_probe.py")
PROBE_MODEL_PATH = Path(__file__).with_name("probe_model.tflite")
PROBE_TIMEOUT_S = 300

# runner runtime name -> distribution name reported by remote_probe.py
RUNTIME_DISTS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime", "tensorflow": "tensorflow"}
AUTO_ORDER = ("ai_edge_litert", "tflite_runtime")

# (implementer, part) -> core name, from the ARM Technical Reference Manuals (MIDR_EL1).
ARM_CORES = {
    (0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57", (0x41, 0xD08): "Cortex-A72", (0x41, 0xD09): "Cortex-A73",
    (0x41, 0xD0A): "Cortex-A75", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD0D): "Cortex-A77", (0x41, 0xD40): "Neoverse-V1", (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD44): "Cortex-X1", (0x41, 0xD46): "Cortex-A510", (0x41, 0xD47): "Cortex-A710",
    (0x41, 0xD48): "Cortex-X2", (0x41, 0xD49): "Neoverse-N2", (0x41, 0xD4B): "Cortex-A78C",
    (0x41, 0xD4D): "Cortex-A715", (0x41, 0xD4E): "Cortex-X3", (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD80): "Cortex-A520", (0x41, 0xD81): "Cortex-A720", (0x41, 0xD82): "Cortex-X4",
    (0x51, 0x800): "Kryo 2xx Gold", (0x51, 0x801): "Kryo 2xx Silver", (0x51, 0x804): "Kryo 4xx Gold",
    (0x51, 0x805): "Kryo 4xx Silver", (0x61, 0x022): "Apple M1 Icestorm", (0x61, 0x023): "Apple M1 Firestorm",
}


@dataclass(frozen=True)
class RuntimeHazard:
    """A runtime release known to crash on CPUs that lack a feature."""

    runtime: str
    min_version: tuple[int, ...]
    needs_feature: str
    detail: str


RUNTIME_HAZARDS: tuple[RuntimeHazard, ...] = (
    RuntimeHazard(
        "ai_edge_litert", (2, 2), "atomics",
        "ai-edge-litert 2.2 and 2.3 ship libLiteRtWebGpuAccelerator.so built for ARMv8.1 (LSE atomics); "
        "it dies with SIGILL on cores without them (Cortex-A72, Raspberry Pi 4) when a LiteRT Environment is created",
    ),
)


def _version_tuple(version: str | None) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", (version or "").split("+")[0])[:3]
    return tuple(int(n) for n in numbers)


# ----------------------------------------------------------------------------------------- cpu
@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the CPU."""

    model: str | None
    cores: int
    core_types: tuple[str, ...]
    features: tuple[str, ...]
    hardware: str | None = None

    @property
    def is_arm(self) -> bool:
        return bool(self.core_types) or "asimd" in self.features or "neon" in self.features

    @property
    def has_lse_atomics(self) -> bool | None:
        """Whether every core has ARMv8.1 LSE atomics (None: not an ARM CPU or unknown)."""
        if not self.is_arm or not self.features:
            return None
        return "atomics" in self.features

    def has_feature(self, name: str) -> bool | None:
        if not self.features:
            return None
        return name in self.features

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lse_atomics"] = self.has_lse_atomics
        return data


def parse_cpuinfo(text: str | None) -> CpuInfo:
    """Parses Linux ``/proc/cpuinfo`` (ARM or x86). Features are those common to all cores.

    Example:
        >>> cpu = parse_cpuinfo("processor\\t: 0\\nFeatures\\t: fp asimd crc32 cpuid\\n"
        ...                     "CPU implementer\\t: 0x41\\nCPU part\\t: 0xd08\\n")
        >>> cpu.model, cpu.has_lse_atomics
        ('Cortex-A72', False)
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    extra: dict[str, str] = {}
    for raw in (text or "").splitlines():
        if not raw.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor" and value.isdigit() and "processor" in current:
            blocks.append(current)
            current = {}
        current[key] = value
    if current:
        blocks.append(current)
    cores = [b for b in blocks if b.get("processor", "").isdigit()]
    for b in blocks:
        if b not in cores:
            extra.update(b)
    if not cores and blocks:  # old ARM kernels: one block, "Processor : AArch64 Processor rev 4"
        cores = [blocks[0]]
    core_types: list[str] = []
    feature_sets: list[set[str]] = []
    for b in cores:
        feats = b.get("features") or b.get("flags")
        if feats is not None:
            feature_sets.append(set(feats.split()))
        part, implementer = b.get("cpu part"), b.get("cpu implementer")
        if part and implementer:
            try:
                core_id = (int(implementer, 16), int(part, 16))
            except ValueError:
                continue
            name = ARM_CORES.get(core_id, f"ARM part {part} (implementer {implementer})")
            if name not in core_types:
                core_types.append(name)
    features = tuple(sorted(set.intersection(*feature_sets))) if feature_sets else ()
    model = " + ".join(core_types) if core_types else None
    if model is None:
        for b in cores:
            for field_name in ("model name", "cpu model", "processor"):
                named = b.get(field_name)
                if named and not named.isdigit():
                    model = named
                    break
            if model:
                break
    return CpuInfo(
        model=model,
        cores=sum(1 for b in cores if b.get("processor", "").isdigit()) or len(cores),
        core_types=tuple(core_types),
        features=features,
        hardware=extra.get("hardware") or extra.get("model") or (cores[0].get("hardware") if cores else None),
    )


def hazards_for(runtime: str, version: str | None, cpu: CpuInfo) -> list[str]:
    """Known crash risks of ``runtime`` ``version`` on this CPU (empty when none is known)."""
    found = []
    for hazard in RUNTIME_HAZARDS:
        if hazard.runtime != runtime or _version_tuple(version) < hazard.min_version:
            continue
        if cpu.is_arm and cpu.has_feature(hazard.needs_feature) is False:
            found.append(hazard.detail)
    return found


# ------------------------------------------------------------------------------------- thermal
THERMAL_SCRIPT = (
    'for z in /sys/class/thermal/thermal_zone*; do '
    '[ -r "$z/temp" ] || continue; t=$(cat "$z/temp" 2>/dev/null); [ -n "$t" ] || continue; '
    'echo "zone $(cat "$z/type" 2>/dev/null | tr " " "_") $t"; done; '
    'if command -v vcgencmd >/dev/null 2>&1; then vcgencmd get_throttled 2>/dev/null; fi; '
    'if command -v dumpsys >/dev/null 2>&1; then dumpsys thermalservice 2>/dev/null | grep -m 1 "Thermal Status"; fi; '
    'true'
)
VCGENCMD_NOW = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit active"}
ANDROID_THERMAL_STATUS = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical", 5: "emergency", 6: "shutdown"}


@dataclass(frozen=True)
class ThermalState:
    """Temperatures (deg C, per zone type) and throttling indicators at one moment."""

    zones: dict[str, float] = field(default_factory=dict)
    max_temp_c: float | None = None
    vcgencmd_throttled: int | None = None
    android_status: int | None = None

    def throttling_now(self) -> list[str]:
        reasons = []
        if self.vcgencmd_throttled is not None:
            reasons += [text for bit, text in VCGENCMD_NOW.items() if self.vcgencmd_throttled & (1 << bit)]
        if self.android_status is not None and self.android_status >= 2:
            reasons.append(f"Android thermal status {ANDROID_THERMAL_STATUS.get(self.android_status, self.android_status)}")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["vcgencmd_throttled"] = hex(self.vcgencmd_throttled) if self.vcgencmd_throttled is not None else None
        data["throttling_now"] = self.throttling_now()
        return data


def parse_thermal(text: str) -> ThermalState:
    """Parses the output of :data:`THERMAL_SCRIPT`.

    Example:
        >>> t = parse_thermal("zone cpu-thermal 61835\\nthrottled=0x80008\\n")
        >>> t.max_temp_c, t.throttling_now()
        (61.8, ['soft temperature limit active'])
    """
    zones: dict[str, float] = {}
    throttled = status = None
    for line in text.replace("\r", "").splitlines():
        line = line.strip()
        if line.startswith("zone "):
            parts = line.split()
            if len(parts) < 3:
                continue
            kind, value = (parts[1] if len(parts) > 2 else "zone"), parts[-1]
            try:
                raw = float(value)
            except ValueError:
                continue
            celsius = raw / 1000.0 if abs(raw) >= 1000 else raw  # millidegrees on most kernels
            if -40.0 <= celsius <= 150.0:  # unplugged sensors report -273 or 0x7fffffff
                zones[kind] = round(max(celsius, zones.get(kind, celsius)), 1)
        elif line.startswith("throttled="):
            try:
                throttled = int(line.split("=", 1)[1], 16)
            except ValueError:
                pass
        elif "Thermal Status" in line:
            match = re.search(r"Thermal Status:\s*(\d+)", line)
            if match:
                status = int(match.group(1))
    return ThermalState(zones=zones, max_temp_c=max(zones.values()) if zones else None,
                        vcgencmd_throttled=throttled, android_status=status)


def read_thermal(transport: Transport) -> ThermalState | None:
    """The device's thermal state now (None when it could not be read)."""
    try:
        done = transport.run(["sh", "-c", THERMAL_SCRIPT], timeout_s=60)
    except DeviceError:
        return None
    return parse_thermal(done.stdout) if done.ok else None


def thermal_verdict(before: ThermalState | None, after: ThermalState | None, limit_c: float | None) -> dict[str, Any]:
    """Whether a run was throttled: throttling during/after it, new since-boot flags, or too hot."""
    reasons: list[str] = []
    if after is not None:
        reasons += [f"{r} after the run" for r in after.throttling_now()]
        if after.vcgencmd_throttled is not None:
            new = (after.vcgencmd_throttled >> 16) & 0xF & ~((before.vcgencmd_throttled >> 16) & 0xF if before and before.vcgencmd_throttled is not None else 0)
            reasons += [f"{text} occurred during the run" for bit, text in VCGENCMD_NOW.items() if new & (1 << bit)]
        if limit_c is not None and after.max_temp_c is not None and after.max_temp_c >= limit_c:
            reasons.append(f"hottest zone at {after.max_temp_c:.1f} C (limit {limit_c:.0f} C)")
    if before is not None:
        reasons += [f"{r} before the run" for r in before.throttling_now()]
    return {
        "before": before.to_dict() if before else None,
        "after": after.to_dict() if after else None,
        "throttled": bool(reasons),
        "reasons": reasons,
        "readable": before is not None or after is not None,
    }


# ------------------------------------------------------------------------------------- android
def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` output (``[key]: [value]`` lines) -> dict.

    Example:
        >>> parse_getprop("[ro.build.version.sdk]: [34]\\n[ro.soc.model]: [Tensor G3]\\n")["ro.soc.model"]
        'Tensor G3'
    """
    props = {}
    for match in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text.replace("\r", ""), re.MULTILINE):
        props[match.group(1)] = match.group(2)
    return props


def android_summary(props: dict[str, str]) -> dict[str, Any]:
    """API level, release, SoC, model and ABI from getprop."""
    sdk = props.get("ro.build.version.sdk", "")
    soc = " ".join(v for v in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if v) or None
    return {
        "api_level": int(sdk) if sdk.isdigit() else None,
        "release": props.get("ro.build.version.release"),
        "manufacturer": props.get("ro.product.manufacturer"),
        "model": props.get("ro.product.model"),
        "soc": soc,
        "board_platform": props.get("ro.board.platform") or props.get("ro.hardware"),
        "abi": props.get("ro.product.cpu.abi"),
        "build": props.get("ro.build.fingerprint"),
    }


# ----------------------------------------------------------------------------- runtime choice
@dataclass(frozen=True)
class RuntimeCandidate:
    runtime: str
    version: str | None
    status: str  # selected | rejected | skipped | not installed
    reason: str = ""


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime the runs will use, and why the others were not used."""

    runtime: str
    version: str | None
    reason: str
    candidates: tuple[RuntimeCandidate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "version": self.version, "reason": self.reason,
                "candidates": [asdict(c) for c in self.candidates]}


@dataclass(frozen=True)
class TryRun:
    ok: bool
    detail: str


def choose_runtime(
    packages: dict[str, str | None],
    cpu: CpuInfo,
    requested: str,
    try_run: Callable[[str], TryRun],
    *,
    where: str,
    verify_single: bool = True,
) -> RuntimeChoice:
    """Picks the runtime for the runs: the requested one, or the first of ai-edge-litert /
    tflite-runtime that is installed, not known to crash on this CPU, and passes a try-run.

    With ``verify_single=False`` a lone candidate without a known risk is taken without a
    try-run: there is nothing to fall back to, and the run itself reports a crash.

    Raises:
        DeviceError: numpy or every runtime is missing, or none survives its try-run.
    """
    if not packages.get("numpy"):
        raise DeviceError(f"{where}: numpy is not installed for the device's Python, edgekit's runner needs it",
                          hint="on the device: python3 -m pip install numpy ai-edge-litert (or set runner.python to a Python that has them)")
    order = [requested] if requested != "auto" else list(AUTO_ORDER)
    installed = [r for r in order if packages.get(RUNTIME_DISTS[r])]
    candidates: list[RuntimeCandidate] = [RuntimeCandidate(r, None, "not installed") for r in order if r not in installed]
    if not installed:
        wanted = " or ".join(RUNTIME_DISTS[r] for r in order)
        raise DeviceError(f"{where}: no TFLite runtime on the device ({wanted} is not installed for its Python)",
                          hint="on the device: python3 -m pip install ai-edge-litert (tflite-runtime on Python <= 3.11), "
                               "or set runner.python in the profile to a Python that has one")
    risky = {r: hazards_for(r, packages.get(RUNTIME_DISTS[r]), cpu) for r in installed}
    ranked = sorted(installed, key=lambda r: bool(risky[r]))  # stable: safe ones first, in preference order
    chosen: RuntimeChoice | None = None
    for runtime in ranked:
        version = packages.get(RUNTIME_DISTS[runtime])
        if chosen is not None:
            candidates.append(RuntimeCandidate(runtime, version, "skipped",
                                               "; ".join(risky[runtime]) or f"{chosen.runtime} was preferred"))
            continue
        if not verify_single and len(ranked) == 1 and not risky[runtime]:
            reason = "the only installed runtime (no try-run: nothing to fall back to; the run itself is the check)"
            chosen = RuntimeChoice(runtime, version, reason, ())
            candidates.append(RuntimeCandidate(runtime, version, "selected", reason))
            continue
        result = try_run(runtime)
        if not result.ok:
            candidates.append(RuntimeCandidate(runtime, version, "rejected", result.detail))
            continue
        if risky[runtime]:
            reason = f"the only runtime that passed its try-run, despite a known risk: {risky[runtime][0]}"
        elif len(installed) > 1 and any(c.status == "rejected" for c in candidates):
            reason = "passed its try-run; the preferred runtime failed"
        else:
            reason = "requested in the profile or on the command line" if requested != "auto" else "first installed runtime in edgekit's order, passed its try-run"
            if any(risky.values()):
                reason = "passed its try-run; avoids a runtime known to crash on this CPU"
        chosen = RuntimeChoice(runtime, version, reason, ())
        candidates.append(RuntimeCandidate(runtime, version, "selected", reason))
    if chosen is None:
        details = "; ".join(f"{c.runtime} {c.version}: {c.reason}" for c in candidates if c.status == "rejected")
        raise DeviceError(f"{where}: no installed TFLite runtime runs on this device ({details})",
                          hint="install another runtime on the device (tflite-runtime 2.14 runs on a Cortex-A72)")
    order_index = {"selected": 0, "rejected": 1, "skipped": 2, "not installed": 3}
    return RuntimeChoice(chosen.runtime, chosen.version, chosen.reason,
                         tuple(sorted(candidates, key=lambda c: order_index[c.status])))


# --------------------------------------------------------------------------------------- probe
@dataclass(frozen=True)
class DeviceProbe:
    """What a probe found; ``to_dict()`` goes into reports as ``device.probe``."""

    name: str
    transport: str
    address: str
    profile: str | None
    arch: str | None
    os: str | None
    kernel: str | None
    device_model: str | None
    python: dict[str, Any] | None
    packages: dict[str, str | None]
    cpu: CpuInfo
    cpu_count: int | None
    memory_mb: int | None
    cpufreq: dict[str, Any] | None
    android: dict[str, Any] | None
    thermal: ThermalState | None
    runtime: RuntimeChoice | None
    warnings: tuple[str, ...] = ()
    runtime_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "transport": self.transport, "address": self.address, "profile": self.profile,
            "arch": self.arch, "os": self.os, "kernel": self.kernel, "device_model": self.device_model,
            "python": self.python, "packages": self.packages, "cpu": self.cpu.to_dict(), "cpu_count": self.cpu_count,
            "memory_mb": self.memory_mb, "cpufreq": self.cpufreq, "android": self.android,
            "thermal": self.thermal.to_dict() if self.thermal else None,
            "runtime": self.runtime.to_dict() if self.runtime else None,
            "runtime_error": self.runtime_error, "warnings": list(self.warnings),
        }


def python_argv(profile: DeviceProfile) -> list[str]:
    """The command that starts Python for the runner (edgekit's own Python for ``python: null``)."""
    argv = profile.runner_settings.python_argv()
    return [sys.executable] if argv is None else argv


def runner_env(profile: DeviceProfile) -> dict[str, str]:
    return {"TF_CPP_MIN_LOG_LEVEL": "3", **profile.runner_settings.env}


def python_failure(done: Completed, profile: DeviceProfile, what: str) -> DeviceError | RuntimeFailure:
    """An error for a runner or probe process that failed on the device."""
    python = " ".join(python_argv(profile))
    if done.signal_name:
        return RuntimeFailure(f"{profile.name}: {what} crashed with {done.signal_name}",
                              hint="the runtime build does not run on this CPU; see the probe (edgekit devices probe)")
    if done.returncode in (126, 127):
        return DeviceError(f"{profile.name}: cannot start Python '{python}' on the device ({done.tail()})",
                           hint="set runner.python in the profile to the device's Python, e.g. /home/pi/venv/bin/python")
    message = parse_runner_error(done.stderr)
    if message:
        return RuntimeFailure(f"{profile.name}: {message}", hint="rerun with -v for the runtime log")
    return RuntimeFailure(f"{profile.name}: {what} exited with code {done.returncode}: {done.tail()}", hint="rerun with -v")


def _try_runner(transport: Transport, profile: DeviceProfile, work: str) -> Callable[[str], TryRun]:
    def attempt(runtime: str) -> TryRun:
        argv = [*python_argv(profile), f"{work}/runner.py", "--model", f"{work}/probe_model.tflite",
                "--result", f"{work}/tryrun-{runtime}.json", "--runs", "1", "--warmup", "0", "--runtime", runtime]
        done = transport.run(argv, timeout_s=PROBE_TIMEOUT_S, env=runner_env(profile))
        if done.ok:
            return TryRun(True, "ran the probe model")
        if done.signal_name:
            return TryRun(False, f"crashed with {done.signal_name} in its try-run")
        return TryRun(False, parse_runner_error(done.stderr) or f"try-run exited with code {done.returncode}: {done.tail()}")

    return attempt


def _expectation_warnings(profile: DeviceProfile, arch: str | None, python: dict[str, Any] | None, cpu: CpuInfo) -> list[str]:
    warnings = []
    expected = profile.hardware.arch
    if expected and arch and arch != expected:
        warnings.append(f"the profile expects {expected}, the device reports {arch}")
    if python and arch in ("aarch64", "arm64") and python.get("bits") == 32:
        warnings.append("32-bit Python on a 64-bit kernel: ai-edge-litert has no 32-bit ARM wheels")
    if profile.hardware.cpu and cpu.model and profile.hardware.cpu.split()[0].lower() not in cpu.model.lower():
        warnings.append(f"the profile expects a {profile.hardware.cpu}, /proc/cpuinfo shows {cpu.model}")
    return warnings


def probe_linux(transport: Transport, work: str, *, runtime: str | None = None, require_runtime: bool = True,
                verify_single: bool = True) -> DeviceProbe:
    """Probes a Linux device whose work folder is ``work``; copies runner, probe and probe model there.

    ``verify_single=False`` skips the try-run when only one runtime could be used (see :func:`choose_runtime`).
    """
    profile = transport.profile
    transport.push([RUNNER_PATH, REMOTE_PROBE_PATH, PROBE_MODEL_PATH], work)
    done = transport.run([*python_argv(profile), f"{work}/remote_probe.py"], timeout_s=PROBE_TIMEOUT_S, env=runner_env(profile))
    if not done.ok:
        raise python_failure(done, profile, "the device probe")
    try:
        facts = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeviceError(f"{profile.name}: the device probe printed no JSON ({done.tail()})", hint="check runner.python runs Python 3.7 or newer") from None
    cpuinfo_text = facts.get("cpuinfo")
    warnings: list[str] = []
    override = profile.runner_settings.cpuinfo_file
    if override:
        try:
            cpuinfo_text = Path(override).read_text()
        except OSError as exc:
            raise DeviceError(f"{profile.name}: cannot read runner.cpuinfo_file {override}: {exc.strerror}", hint="fix the path in the profile") from None
        warnings.append(f"CPU description read from {override} (runner.cpuinfo_file), not from the device")
    cpu = parse_cpuinfo(cpuinfo_text)
    packages = dict(facts.get("packages") or {})
    warnings += _expectation_warnings(profile, facts.get("machine"), facts.get("python"), cpu)
    requested = runtime if runtime not in (None, "auto") else profile.runner_settings.runtime
    choice = None
    runtime_error = None
    where = f"{profile.name} ({profile.address}, Python {' '.join(python_argv(profile))})"
    try:
        choice = choose_runtime(packages, cpu, requested, _try_runner(transport, profile, work), where=where, verify_single=verify_single)
    except DeviceError as exc:
        if require_runtime:
            raise
        runtime_error = exc.one_line()
    return DeviceProbe(
        name=profile.name, transport=profile.transport, address=profile.address, profile=profile.source,
        arch=facts.get("machine"), os=facts.get("os") or facts.get("system"), kernel=facts.get("kernel"),
        device_model=facts.get("device_model"), python=facts.get("python"), packages=packages, cpu=cpu,
        cpu_count=facts.get("cpu_count"), memory_mb=facts.get("memory_mb"), cpufreq=facts.get("cpufreq"),
        android=None, thermal=read_thermal(transport), runtime=choice, warnings=tuple(warnings), runtime_error=runtime_error,
    )


def probe_android(transport: Transport) -> DeviceProbe:
    """Probes an Android device over adb: ABI, CPU, API level, SoC, thermal state."""
    profile = transport.profile
    uname = transport.run(["uname", "-m"], timeout_s=60)
    cpuinfo = transport.run(["cat", "/proc/cpuinfo"], timeout_s=60)
    props = transport.run(["getprop"], timeout_s=60)
    cpu = parse_cpuinfo(cpuinfo.stdout if cpuinfo.ok else "")
    android = android_summary(parse_getprop(props.stdout)) if props.ok else None
    arch = uname.stdout.strip() or None if uname.ok else None
    warnings = _expectation_warnings(profile, arch, None, cpu)
    return DeviceProbe(
        name=profile.name, transport=profile.transport, address=profile.address, profile=profile.source,
        arch=arch, os=f"Android {android['release']} (API {android['api_level']})" if android and android.get("release") else "Android",
        kernel=None, device_model=" ".join(v for v in ((android or {}).get("manufacturer"), (android or {}).get("model")) if v) or None,
        python=None, packages={}, cpu=cpu, cpu_count=cpu.cores or None, memory_mb=None, cpufreq=None,
        android=android, thermal=read_thermal(transport), runtime=None, warnings=tuple(warnings),
    )


def probe_device(
    device: str | DeviceProfile,
    *,
    devices_dir: str | None = None,
    runtime: str | None = None,
    require_runtime: bool = False,
) -> DeviceProbe:
    """Connects to a device, probes it and cleans up (``edgekit devices probe NAME``).

    Example:
        >>> probe = probe_device("local")  # doctest: +SKIP
        >>> probe.runtime.runtime, probe.cpu.model  # doctest: +SKIP
        ('ai_edge_litert', 'Intel(R) Xeon(R) CPU @ 2.20GHz')
    """
    profile = load_profile(device, devices_dir=devices_dir)
    transport = open_transport(profile)
    try:
        if profile.transport == "adb":
            return probe_android(transport)
        with work_dir(transport) as work:
            return probe_linux(transport, work, runtime=runtime, require_runtime=require_runtime)
    finally:
        transport.close()

