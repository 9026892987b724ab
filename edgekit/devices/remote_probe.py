#!/usr/bin/env python3
"""edgekit's device probe: prints one JSON document describing the machine it runs on.

Copied to a Linux device and run with the device's own Python, next to edgekit's runner. It
imports only the standard library and never imports a TFLite runtime (a runtime that dies with
SIGILL on this CPU would take the probe down): runtime versions come from package metadata.
edgekit decides which runtime to use from this report and a try-run of each candidate.

Usage: ``python3 remote_probe.py`` (Python 3.7 or newer).
"""

import json
import os
import platform
import struct
import sys

PROBE_VERSION = 1
# distribution name -> module it provides
PACKAGES = {
    "numpy": "numpy",
    "ai-edge-litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
    "tensorflow": "tensorflow",
}


def _read(path, limit=65536):
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _package_version(dist, module):
    try:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - no metadata, or Python < 3.8
        return "unknown"


def _os_release():
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def _memory_mb():
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def _cpufreq():
    governors, max_khz = set(), []
    base = "/sys/devices/system/cpu"
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("cpu") and n[3:].isdigit())
    except OSError:
        return None
    for name in names:
        governor = _read(f"{base}/{name}/cpufreq/scaling_governor")
        if governor:
            governors.add(governor)
        freq = _read(f"{base}/{name}/cpufreq/cpuinfo_max_freq")
        if freq and freq.isdigit():
            max_khz.append(int(freq))
    if not governors and not max_khz:
        return None
    return {"governors": sorted(governors), "max_mhz": max(max_khz) // 1000 if max_khz else None}


def probe():
    """Everything edgekit records about the device, as a dict."""
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable_cpus = None
    libc = platform.libc_ver()
    return {
        "probe_version": PROBE_VERSION,
        "machine": platform.machine(),
        "system": platform.system(),
        "kernel": platform.release(),
        "os": _os_release(),
        "device_model": _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model"),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "bits": struct.calcsize("P") * 8,
        },
        "libc": " ".join(v for v in libc if v) or None,
        "packages": {dist: _package_version(dist, module) for dist, module in PACKAGES.items()},
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "cpuinfo": _read("/proc/cpuinfo"),
        "cpufreq": _cpufreq(),
        "memory_mb": _memory_mb(),
    }


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
    sys.stdout.write("\n")
