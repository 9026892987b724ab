"""``edgekit benchmark``: the latency of one artifact on one device, with the conditions it was taken under.

Example:
    >>> report = benchmark("model_int8.tflite", device="raspberry-pi-5", runs=100)  # doctest: +SKIP
    >>> report.latency.p50_ms, report.throttled  # doctest: +SKIP
    (3.2, False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from edgekit.core.datatypes import LatencyStats, SizeInfo
from edgekit.core.fsutil import require_file, sha256_file, size_info
from edgekit.core.manifest import versions
from edgekit.core.tflite_file import read_tflite
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.devices.run import run_model
from edgekit.runtime.local import check_run_options


@dataclass(frozen=True)
class BenchmarkReport:
    """What ``edgekit benchmark`` measured: latency of one artifact on one device."""

    artifact: str
    sha256: str
    size: SizeInfo
    latency: LatencyStats
    device: dict[str, Any]
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def throttled(self) -> bool:
        return bool(self.device.get("thermal", {}).get("throttled"))

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "sha256": self.sha256, "size": self.size.to_dict(),
                "latency": self.latency.to_dict(), "device": self.device, "versions": self.versions}


def benchmark(
    artifact: str | os.PathLike[str],
    *,
    device: str | DeviceProfile = "local",
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    runtime: str | None = None,
    target: str | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
) -> BenchmarkReport:
    """Measures the latency of ``artifact`` on ``device`` (synthetic input, no accuracy).

    The run always goes through the device path (probe, runtime choice, thermal state before and
    after, a fresh work folder), this machine included, so the report says what it ran under.

    Args:
        artifact: the .tflite file.
        device: a profile name, a profile path, or a :class:`DeviceProfile` (default: this machine).
        runs, warmup: timed and untimed inference runs.
        threads: interpreter threads; None: the profile's ``threads``.
        runtime: ``auto`` or a runtime name; None: the profile's ``runner.runtime``.
        target: Android only: a key of the profile's ``benchmark.targets``.
        devices_dir: a folder of the user's own device profiles.

    Raises:
        InputError: a bad option or an unknown device (before anything runs).
        DeviceError, RuntimeFailure: the device or the runtime failed.
    """
    profile = load_profile(device, devices_dir=devices_dir)
    check_run_options(runs, warmup, threads if threads is not None else 1)
    path = require_file(artifact, "artifact")
    read_tflite(path)  # parse and bounds-check before any runtime sees the file
    result = run_model(profile, path, None, threads=threads, runs=runs, warmup=warmup, runtime=runtime, target=target, with_probe=True)
    return BenchmarkReport(artifact=str(path), sha256=sha256_file(path), size=size_info(path), latency=result.latency,
                           device=result.report, versions=versions())
