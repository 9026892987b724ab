"""``edgekit devices list|show|probe``: the device profiles and what a device really is."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from edgekit.cli.options import devices_dir_option, json_option
from edgekit.cli.render import console, err_console, kv_table, print_json


@click.group(short_help="List, show and probe target devices (Raspberry Pi, Android, ...).")
def devices() -> None:
    """Device profiles say where an artifact runs (this machine, a board over SSH, a phone over
    adb) and how edgekit reaches it. Bundled profiles: local, raspberry-pi-4, raspberry-pi-5,
    linux-arm64-ssh, android-arm64, pixel-8. Add your own NAME.yaml in a folder given with
    --devices-dir or EDGEKIT_DEVICES (copy one with: edgekit devices show raspberry-pi-4 > DIR/mypi.yaml).
    """


@devices.command("list", short_help="List the device profiles.")
@devices_dir_option
@json_option
def list_devices(devices_dir, as_json):
    """List bundled and user device profiles (a user profile shadows a bundled one of the same name)."""
    from rich.table import Table

    from edgekit.devices.profiles import list_profiles

    entries = list_profiles(devices_dir)
    if as_json:
        print_json([{"name": e.profile.name, "transport": e.profile.transport, "address": e.profile.address,
                     "description": e.profile.description, "origin": e.origin, "path": e.profile.source} for e in entries])
        return
    table = Table(box=None, pad_edge=False)
    for col in ("name", "transport", "address", "origin", "description"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.profile.name, e.profile.transport, e.profile.address, e.origin, e.profile.description)
    console.print(table)


@devices.command("show", short_help="Print a profile (YAML you can copy and edit).")
@click.argument("name")
@devices_dir_option
@json_option
def show_device(name, devices_dir, as_json):
    """Print profile NAME (a name or a .yaml path), validated, with every default filled in."""
    from edgekit.devices.profiles import TRUSTED_ORIGINS, load_profile, local_programs

    profile = load_profile(name, devices_dir=devices_dir)
    programs = local_programs(profile)
    if as_json:
        print_json({**profile.model_dump(mode="json"), "path": profile.source, "origin": profile.origin, "runs_on_this_machine": programs})
        return
    click.echo(f"# {profile.source} (from {profile.origin})")
    if programs:
        click.echo("# runs on this machine" + ("" if profile.origin in TRUSTED_ORIGINS else " (only with edgekit --trust-profile)") + ":")
        for line in programs:
            click.echo(f"#   {line}")
    click.echo(profile.to_yaml(), nl=False)


@devices.command("probe", short_help="Connect to a device and record what it is.")
@click.argument("name")
@click.option("--runtime", type=click.Choice(["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"]), default=None,
              help="Check this runtime instead of the profile's runner.runtime.")
@devices_dir_option
@json_option
def probe_device(name, runtime, devices_dir, as_json):
    """Connect to device NAME and record its architecture, OS, Python, TFLite runtimes, CPU model
    and features, Android API level and SoC, and thermal state; on Linux devices, pick the runtime
    the runs will use (each candidate is try-run on a tiny model). Exits 7 when no runtime works.
    """
    from edgekit.core.errors import DeviceError
    from edgekit.devices.probe import probe_device as run_probe
    from edgekit.devices.profiles import load_profile

    profile = load_profile(name, devices_dir=devices_dir)
    with err_console.status(f"Probing {profile.name}...", spinner="dots") if not as_json else contextlib.nullcontext():
        probe = run_probe(profile, runtime=runtime, require_runtime=False)
    if as_json:
        print_json(probe.to_dict())
    else:
        render_probe(probe.to_dict())
    if probe.runtime_error:
        raise DeviceError(probe.runtime_error)


def _versions(packages: dict[str, Any]) -> str:
    return ", ".join(f"{name} {version or '-'}" for name, version in packages.items()) or "-"


def render_probe(probe: dict[str, Any]) -> None:
    """Prints a probe (``DeviceProbe.to_dict()``) as tables."""
    cpu = probe["cpu"]
    atomics = {True: "yes", False: "no", None: "-"}[cpu.get("lse_atomics")]
    rows: list[tuple[str, Any]] = [
        ("transport", f"{probe['transport']} ({probe['address']})"),
        ("profile", probe.get("profile") or "-"),
        ("architecture", probe.get("arch") or "-"),
        ("OS", " / ".join(v for v in (probe.get("os"), probe.get("kernel")) if v) or "-"),
        ("model", probe.get("device_model") or "-"),
        ("CPU", f"{cpu.get('model') or '-'}, {cpu.get('cores')} cores, LSE atomics {atomics}"),
    ]
    if probe.get("memory_mb"):
        rows.append(("memory", f"{probe['memory_mb']} MB"))
    if probe.get("cpufreq"):
        freq = probe["cpufreq"]
        rows.append(("cpufreq", f"governor {', '.join(freq.get('governors') or ['-'])}, max {freq.get('max_mhz') or '-'} MHz"))
    if probe.get("python"):
        py = probe["python"]
        rows.append(("Python", f"{py['version']} ({py['executable']}, {py['bits']}-bit)"))
        rows.append(("packages", _versions(probe.get("packages") or {})))
    if probe.get("android"):
        a = probe["android"]
        rows.append(("Android", f"{a.get('release') or '-'} (API {a.get('api_level') or '-'}), ABI {a.get('abi') or '-'}"))
        rows.append(("SoC", a.get("soc") or a.get("board_platform") or "-"))
    thermal = probe.get("thermal")
    if thermal:
        temp = f"{thermal['max_temp_c']:.1f} C hottest of {len(thermal['zones'])} zones" if thermal.get("max_temp_c") is not None else "no thermal zones"
        flags = thermal.get("throttling_now") or []
        extra = f", vcgencmd throttled={thermal['vcgencmd_throttled']}" if thermal.get("vcgencmd_throttled") else ""
        rows.append(("thermal", temp + extra + (f", THROTTLING: {'; '.join(flags)}" if flags else "")))
    runtime = probe.get("runtime")
    if runtime:
        rows.append(("runtime", f"{runtime['runtime']} {runtime['version'] or ''} ({runtime['reason']})"))
        for cand in runtime["candidates"]:
            if cand["status"] != "selected":
                rows.append(("", f"{cand['runtime']} {cand['version'] or ''}: {cand['status']}" + (f" ({cand['reason']})" if cand["reason"] else "")))
    elif probe.get("runtime_error"):
        rows.append(("runtime", f"NONE: {probe['runtime_error']}"))
    console.print(kv_table(f"Device {probe['name']}", rows))
    for warning in probe.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def render_device_run(device: dict[str, Any]) -> None:
    """Prints the device part of a validate/benchmark report (runtime, thermal, where accuracy was measured)."""
    if not device or device.get("transport") is None or "probe" not in device:
        return
    thermal = device.get("thermal") or {}
    rows: list[tuple[str, Any]] = [
        ("device", f"{device['name']} ({device['transport']}, {device['address']})"),
        ("latency by", device.get("latency_measured_by") or "-"),
    ]
    if device.get("accuracy_measured_on"):
        rows.append(("accuracy on", device["accuracy_measured_on"] + (f" ({device['accuracy_note']})" if device.get("accuracy_note") else "")))
    if device.get("target"):
        rows.append(("target", device["target"]))
    native = device.get("native_benchmark") or {}
    if native.get("delegate"):
        rows.append(("delegate", f"{native['delegate']}: {native.get('delegate_coverage') or 'coverage not printed'}"))
    after = thermal.get("after") or {}
    rows.append(("thermal", ("THROTTLED: " + "; ".join(thermal.get("reasons", []))) if thermal.get("throttled")
                 else (f"not throttled (hottest zone {after['max_temp_c']:.1f} C after the run)" if after.get("max_temp_c") is not None
                       else "not throttled as far as the device reports")))
    rows.append(("work folder", f"{device.get('work_dir')} ({'removed' if device.get('work_dir_removed') else 'NOT removed'})"))
    console.print(kv_table("On the device", rows))
    for warning in device.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {warning}")
