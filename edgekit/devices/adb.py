"""The ADB transport: the system ``adb`` client, with its quirks handled.

- ``-s SERIAL`` picks the device, ``-P PORT`` a private adb server (tests use their own).
- ``adb connect`` exits 0 even when it fails: its output is parsed (:func:`parse_adb_connect`).
- Old ``adb shell`` (protocol v1) loses the remote exit status and turns ``\\n`` into ``\\r\\n``:
  every remote command ends with an exit marker line that is parsed and removed.
- ``adb`` errors (no device, unknown serial, several devices, unauthorized, offline) become one
  actionable :class:`~edgekit.core.errors.DeviceError` (:func:`classify_adb_error`).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Sequence

from edgekit.core.errors import DeviceError, TimeLimit
from edgekit.devices.profiles import AdbSettings, DeviceProfile
from edgekit.devices.transport import Completed, check_remote_path, env_argv, split_exit_marker, with_exit_marker

_CONNECTED = re.compile(r"^(?:already )?connected to (\S+)", re.MULTILINE)


def parse_adb_connect(output: str) -> tuple[bool, str]:
    """Whether ``adb connect`` worked, from its output (its exit code is 0 either way).

    Example:
        >>> parse_adb_connect("failed to connect to '127.0.0.1:9': Connection refused\\n")
        (False, "failed to connect to '127.0.0.1:9': Connection refused")
        >>> parse_adb_connect("connected to 192.168.1.20:5555\\n")
        (True, 'connected to 192.168.1.20:5555')
    """
    text = " ".join(output.split())
    if "failed to authenticate" in text or "unable to connect" in text or "cannot connect" in text or "failed to connect" in text:
        return False, text
    if _CONNECTED.search(output.replace("\r", "")):
        return True, text
    return False, text or "adb connect printed nothing"


def parse_adb_devices(output: str) -> dict[str, str]:
    """``adb devices`` output -> {serial: state}.

    Example:
        >>> parse_adb_devices("List of devices attached\\nR58M\\tdevice\\nemulator-5554\\toffline\\n")
        {'R58M': 'device', 'emulator-5554': 'offline'}
    """
    found: dict[str, str] = {}
    for line in output.replace("\r", "").splitlines():
        if not line.strip() or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) >= 2:
            found[parts[0]] = parts[1]
    return found


def classify_adb_error(output: str, profile: DeviceProfile, attached: dict[str, str] | None = None) -> DeviceError:
    """Turns adb's error text into one line that says what to do."""
    settings = profile.adb or AdbSettings()
    text = " ".join(output.split())
    lowered = text.lower()
    server = f" (adb server port {settings.server_port})" if settings.server_port else ""
    listed = ", ".join(f"{s} ({st})" for s, st in (attached or {}).items()) or "none"
    if "no devices/emulators found" in lowered or "no devices found" in lowered:
        return DeviceError(f"{profile.name}: no Android device is attached to adb{server}",
                           hint="plug the phone in with USB debugging enabled (adb devices must list it), or set adb.connect for adb over Wi-Fi")
    if re.search(r"device '.*' not found", lowered) or "device not found" in lowered:
        return DeviceError(f"{profile.name}: adb has no device with serial '{settings.serial or settings.connect}'{server}; attached: {listed}",
                           hint="set adb.serial to one of the serials adb devices lists")
    if "more than one device" in lowered:
        return DeviceError(f"{profile.name}: several Android devices are attached{server}: {listed}",
                           hint="set adb.serial in the profile to the one to use")
    if "unauthorized" in lowered:
        return DeviceError(f"{profile.name}: the phone has not authorized this computer for USB debugging",
                           hint="unlock the phone and accept the 'Allow USB debugging?' prompt, then retry")
    if "offline" in lowered:
        return DeviceError(f"{profile.name}: the device is offline for adb", hint="reconnect the cable, or run adb reconnect")
    if "cannot connect to daemon" in lowered or "failed to start daemon" in lowered or "could not install *smartsocket*" in lowered:
        return DeviceError(f"{profile.name}: the adb server{server} could not be started or reached ({text[-160:]})",
                           hint="run adb start-server by hand; another program may hold the port")
    return DeviceError(f"{profile.name}: adb failed: {text[-300:] or 'no message'}", hint="run the same adb command by hand")


class AdbTransport:
    """Runs commands on an Android device with the system ``adb``."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.settings = profile.adb or AdbSettings()
        if shutil.which(self.settings.adb) is None:
            raise DeviceError(f"the adb client '{self.settings.adb}' is not installed on this machine",
                              hint="install Android platform-tools (Debian/Ubuntu: apt-get install adb) or set adb.adb to its path")
        self._ready = False

    @property
    def serial(self) -> str | None:
        return self.settings.serial or self.settings.connect

    def _server_args(self) -> list[str]:
        return ["-P", str(self.settings.server_port)] if self.settings.server_port else []

    def adb_argv(self, *args: str, select: bool = True) -> list[str]:
        """``adb [-P PORT] [-s SERIAL] ARGS``."""
        serial = ["-s", self.serial] if select and self.serial else []
        return [self.settings.adb, *self._server_args(), *serial, *args]

    def _call(self, argv: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise TimeLimit(f"{self.profile.name}: {what} did not finish within {timeout_s:.0f} s",
                              hint="check the cable or the network, or raise benchmark.timeout_s") from None

    def attached(self) -> dict[str, str]:
        """Serials and states the adb server knows (``adb devices``)."""
        proc = self._call(self.adb_argv("devices", select=False), 60, "adb devices")
        return parse_adb_devices(proc.stdout)

    def connect(self) -> None:
        """``adb connect`` (when configured) and a check that exactly the wanted device answers."""
        if self._ready:
            return
        if self.settings.connect:
            proc = self._call(self.adb_argv("connect", self.settings.connect, select=False), 60, "adb connect")
            ok, message = parse_adb_connect(proc.stdout + "\n" + proc.stderr)
            if not ok or proc.returncode != 0:
                raise DeviceError(f"{self.profile.name}: adb connect {self.settings.connect} failed: {message}",
                                  hint="enable wireless debugging on the phone (adb tcpip 5555 over USB first) and check adb.connect")
        proc = self._call(self.adb_argv("get-state"), 60, "adb get-state")
        state = proc.stdout.strip()
        if proc.returncode != 0 or state != "device":
            output = proc.stderr + "\n" + proc.stdout
            raise classify_adb_error(output if proc.returncode != 0 else f"device {state}", self.profile, self.attached())
        self._ready = True

    def run(self, argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None) -> Completed:
        self.connect()
        command = with_exit_marker(shlex.join([*env_argv(env), *argv]))
        proc = self._call(self.adb_argv("shell", command), timeout_s, f"'{shlex.join(list(argv)[:2])} ...'")
        stdout, code = split_exit_marker(proc.stdout)
        if code is None:
            raise classify_adb_error(proc.stderr + "\n" + proc.stdout, self.profile, self.attached())
        return Completed(code, stdout, proc.stderr.replace("\r\n", "\n"))

    def push(self, local_paths: Sequence[str | os.PathLike[str]], remote_dir: str) -> None:
        self.connect()
        sources = [os.fspath(p) for p in local_paths]
        proc = self._call(self.adb_argv("push", *sources, check_remote_path(remote_dir).rstrip("/") + "/"),
                          self.profile.benchmark_settings.timeout_s, "adb push")
        if proc.returncode != 0 or "error:" in proc.stderr.lower():
            raise DeviceError(f"{self.profile.name}: adb push of {', '.join(os.path.basename(s) for s in sources)} failed: "
                              f"{' '.join((proc.stderr or proc.stdout).split())[-200:]}",
                              hint="check the space left on the phone and benchmark.work_root")

    def pull(self, remote_path: str, local_path: str | os.PathLike[str]) -> None:
        self.connect()
        proc = self._call(self.adb_argv("pull", check_remote_path(remote_path), os.fspath(local_path)),
                          self.profile.benchmark_settings.timeout_s, "adb pull")
        if proc.returncode != 0:
            raise DeviceError(f"{self.profile.name}: adb pull of {remote_path} failed: {' '.join((proc.stderr or proc.stdout).split())[-200:]}")

    def make_work_dir(self) -> str:
        root = self.profile.benchmark_settings.work_root.rstrip("/")
        path = check_remote_path(f"{root}/edgekit.{secrets.token_hex(4)}")
        done = self.run(["mkdir", path], timeout_s=60)  # fails if it exists: the folder is ours alone
        if not done.ok:
            raise DeviceError(f"{self.profile.name}: cannot create {path} on the phone ({done.tail()})",
                              hint="check benchmark.work_root (/data/local/tmp is writable over adb)")
        return path

    def remove_work_dir(self, path: str) -> None:
        root = self.profile.benchmark_settings.work_root.rstrip("/")
        if not path.startswith(f"{root}/edgekit."):
            raise DeviceError(f"refusing to remove {path}: not an edgekit work folder")
        done = self.run(["rm", "-rf", check_remote_path(path)], timeout_s=120)
        if not done.ok:
            raise DeviceError(f"{self.profile.name}: could not remove {path} on the phone ({done.tail()})", hint="remove it with adb shell rm -rf")

    def close(self) -> None:
        """Leaves the adb server running: it is shared with the user's other adb sessions."""

    def __enter__(self) -> AdbTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
