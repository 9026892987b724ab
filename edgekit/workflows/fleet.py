"""A fleet of devices: one command measured on several devices in parallel, one row per device.

``benchmark`` and ``validate`` take ``--device`` more than once (or ``--fleet FILE``). Each device
runs one measurement at a time (its own thread driving its own runner process, SSH session or adb
shell), the devices run side by side, and a device that fails — unreachable, a runtime that
crashes there, a time limit — is a row holding its error, not a failed run: the others' rows are
still there. The command's exit code is then that of the first failed row (7 for an unreachable
device), so scripts see that a device failed.

A fleet file is YAML (read with the same bounded safe loader as profiles)::

    devices: [local, pi4, pixel-8, ./lab/jetson.yaml]
    max_parallel: 4        # optional: at most this many devices at once

Example:
    >>> fleet = benchmark_fleet("model.tflite", ["local", "pi4"], runs=50)  # doctest: +SKIP
    >>> [(row.device, row.ok) for row in fleet.rows]  # doctest: +SKIP
    [('local', True), ('pi4', False)]
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekit.core import errors as error_types
from edgekit.core.errors import DeviceError, EdgekitError, InputError
from edgekit.core.safe_yaml import load_bounded_file
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.workflows.ray_builds import connect_ray, device_resource


@dataclass(frozen=True)
class FleetRow:
    """One device's outcome: ``result`` (the command's own report) or ``error``."""

    device: str
    transport: str
    seconds: float
    result: Any = None
    error: EdgekitError | None = None
    node: str | None = None  # with --ray: the cluster node that offered the device and ran it

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"device": self.device, "transport": self.transport, "ok": self.ok, "seconds": round(self.seconds, 2)}
        if self.node is not None:
            row["node"] = self.node
        if self.error is not None:
            row["error"] = {"code": self.error.exit_code, "kind": type(self.error).__name__, "message": self.error.message,
                            "hint": self.error.hint}
        else:
            row["result"] = self.result.to_dict()
        return row


@dataclass(frozen=True)
class FleetResult:
    """Every device's row, in the order the devices were given."""

    command: str
    rows: tuple[FleetRow, ...]
    max_parallel: int
    where: str = "this machine"

    @property
    def failed(self) -> list[FleetRow]:
        return [r for r in self.rows if not r.ok]

    @property
    def exit_code(self) -> int:
        """0 when every device succeeded, else the first failed row's code (7: a device was unreachable)."""
        return next((r.exit_code for r in self.rows if not r.ok), 0)

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "devices": len(self.rows), "failed": len(self.failed), "max_parallel": self.max_parallel,
                "where": self.where, "rows": [r.to_dict() for r in self.rows]}


def load_fleet(devices: Sequence[str], fleet_file: str | os.PathLike[str] | None = None,
               devices_dir: str | os.PathLike[str] | None = None) -> tuple[list[DeviceProfile], int | None]:
    """The profiles named by ``--device`` (repeated) and a fleet file, checked before anything runs.

    A misspelled or invalid profile is a bad input of the whole command (nothing runs); a device
    named twice is refused (it would run two measurements at once). Returns the profiles and the
    fleet file's ``max_parallel`` (None if not set).

    Raises:
        InputError: a bad fleet file, no devices, or a device named twice.
        ProfileError: a device profile is invalid.
    """
    names = list(devices)
    max_parallel = None
    if fleet_file is not None:
        data = load_bounded_file(Path(fleet_file), "fleet file")
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list) or not data["devices"]:
            raise InputError(f"fleet file {fleet_file} must be a mapping with a non-empty 'devices' list",
                             hint="e.g. devices: [local, pi4]  (names from edgekit devices list, or profile paths)")
        unknown = sorted(set(data) - {"devices", "max_parallel"})
        if unknown:
            raise InputError(f"fleet file {fleet_file}: unknown key '{unknown[0]}'", hint="keys: devices, max_parallel")
        if not all(isinstance(d, str) and d for d in data["devices"]):
            raise InputError(f"fleet file {fleet_file}: every entry of 'devices' must be a profile name or path",
                             hint="e.g. devices: [local, pi4]")
        base = Path(fleet_file).parent
        names += [d if not d.endswith((".yaml", ".yml")) or Path(d).is_absolute() else str(base / d) for d in data["devices"]]
        if "max_parallel" in data:
            max_parallel = check_max_parallel(data["max_parallel"], f"fleet file {fleet_file}: max_parallel")
    if not names:
        raise InputError("no device given", hint="pass --device NAME (repeatable) or --fleet FILE")
    profiles = [load_profile(name, devices_dir=devices_dir) for name in names]
    seen: dict[str, str] = {}
    for name, profile in zip(names, profiles, strict=True):
        if profile.name in seen:
            raise InputError(f"device {profile.name} is named twice ({seen[profile.name]} and {name})",
                             hint="a device runs one measurement at a time: name each device once")
        seen[profile.name] = name
    return profiles, max_parallel


def check_max_parallel(value: Any, what: str = "--max-parallel") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a whole number of at least 1, got {value!r}", hint="e.g. 4")
    return value


def _measure_row(measure: Callable[[DeviceProfile], Any], profile: DeviceProfile, on_ray: bool = False) -> FleetRow:
    """One device's row: ``measure(profile)``'s result, or its edgekit error (sent from a Ray task as kind, message, hint)."""
    started = time.perf_counter()
    node = None
    if on_ray:
        import ray  # in a Ray task: the extra is installed on every node

        node = ray.get_runtime_context().get_node_id()
    try:
        result = measure(profile)
    except EdgekitError as exc:
        error: Any = (type(exc).__name__, exc.message, exc.hint) if on_ray else exc
        return FleetRow(profile.name, profile.transport, time.perf_counter() - started, error=error, node=node)
    return FleetRow(profile.name, profile.transport, time.perf_counter() - started, result=result, node=node)


def _error_back(row: FleetRow) -> FleetRow:
    if not isinstance(row.error, tuple):
        return row
    kind, message, hint = row.error
    cls = getattr(error_types, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, EdgekitError)):
        cls = DeviceError
    return replace(row, error=cls(message, hint=hint))


def _run_on_ray(profiles: Sequence[DeviceProfile], measure: Callable[[DeviceProfile], Any], *, command: str, width: int,
                address: str) -> FleetResult:
    ray = connect_ray(address)
    offered = ray.cluster_resources()
    missing = [p.name for p in profiles if offered.get(device_resource(p.name), 0) < 1]
    if missing:
        example = json.dumps({device_resource(missing[0]): 1})
        raise DeviceError(f"no node of the Ray cluster at {address} offers device {', '.join(missing)}",
                          hint=f"start the node the device is attached to (or reaches it) with: ray start --address HEAD:PORT "
                               f"--resources '{example}'")
    remote = ray.remote(num_cpus=0, max_retries=0)(_measure_row)
    pending = list(profiles)
    running: dict[Any, DeviceProfile] = {}
    rows: dict[str, FleetRow] = {}
    started: dict[str, float] = {}
    while pending or running:
        while pending and len(running) < width:
            profile = pending.pop(0)
            started[profile.name] = time.perf_counter()
            running[remote.options(resources={device_resource(profile.name): 1}).remote(measure, profile, True)] = profile
        ready, _ = ray.wait(list(running), num_returns=1)
        profile = running.pop(ready[0])
        try:
            rows[profile.name] = _error_back(ray.get(ready[0]))
        except Exception as exc:  # noqa: BLE001 - the task or its node died: that device's row
            rows[profile.name] = FleetRow(profile.name, profile.transport, time.perf_counter() - started[profile.name],
                                          error=DeviceError(f"the Ray task measuring on {profile.name} failed: {' '.join(str(exc).split())[:200]}",
                                                            hint="check the node has edgekit installed and the files at the same paths"))
    return FleetResult(command=command, rows=tuple(rows[p.name] for p in profiles), max_parallel=width, where=f"Ray cluster at {address}")


def run_fleet(profiles: Sequence[DeviceProfile], measure: Callable[[DeviceProfile], Any], *, command: str,
              max_parallel: int | None = None, ray_address: str | None = None) -> FleetResult:
    """Runs ``measure(profile)`` for every device, at most ``max_parallel`` at once (default: all).

    Each device gets one thread (its measurement is a child process, an SSH session or an adb
    shell, so the threads only wait); an edgekit error on one device becomes that device's row.
    An unexpected exception is a bug and is raised once every device has finished.

    With ``ray_address``, every device is a Ray custom resource (:func:`device_resource`) offered by
    the node it is attached to: each measurement is a Ray task that asks for its device's resource,
    so it runs on that node and a device never runs two measurements at once, whatever else the
    cluster is doing (builds, fine-tuning). The files a measurement reads must be at the same paths
    on every node.
    """
    width = min(len(profiles), max_parallel or len(profiles))
    if ray_address is not None:
        return _run_on_ray(profiles, measure, command=command, width=width, address=ray_address)

    def one(profile: DeviceProfile) -> FleetRow:
        return _measure_row(measure, profile)

    with concurrent.futures.ThreadPoolExecutor(max_workers=width, thread_name_prefix="edgekit-device") as pool:
        futures = [pool.submit(one, p) for p in profiles]
        rows = tuple(f.result() for f in futures)
    return FleetResult(command=command, rows=rows, max_parallel=width)
