"""Device profiles: where an artifact runs and how edgekit reaches it.

A profile is a small YAML file (``schema_version: 1``) validated on load by pydantic models that
reject unknown keys, so a typo (``hots:``) is an error, not a silently ignored setting. Profiles
are found by name or by path:

1. a path (``./my-pi.yaml``, anything with a ``/`` or ending in ``.yaml``/``.yml``);
2. ``NAME.yaml`` in ``--devices-dir`` (``devices_dir=``), then in each folder of the
   ``EDGEKIT_DEVICES`` environment variable (``os.pathsep``-separated);
3. the bundled profiles: ``devices/`` at the top of the repository, reached through the
   ``edgekit/devices/profiles`` link (in a built wheel, a real folder of package data).

A user profile with the name of a bundled one overrides it.

Example:
    >>> profile = load_profile("raspberry-pi-4")
    >>> profile.transport, profile.ssh.port, profile.threads
    ('ssh', 22, 4)
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from edgekit.core.datatypes import check_name
from edgekit.core.errors import InputError, RecipeError
from edgekit.core.safe_yaml import load_bounded

SCHEMA_VERSION = 1
ENV_VAR = "EDGEKIT_DEVICES"
BUNDLED_DIR = Path(__file__).with_name("profiles")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HOST = re.compile(r"^[A-Za-z0-9_.:%\[\]-]+$")
_SERIAL = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9_./-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SshSettings(_Strict):
    """How to reach a Linux device with the system OpenSSH client."""

    host: str = Field(description="Host name or address (an alias from ~/.ssh/config works too).")
    user: str | None = Field(None, description="Login name; null: ssh's default.")
    port: int = Field(22, ge=1, le=65535)
    identity_file: str | None = Field(None, description="Private key file; null: ssh's default keys or agent.")
    known_hosts: str | None = Field(None, description="known_hosts file; null: ~/.ssh/known_hosts.")
    strict_host_key_checking: Literal["yes", "accept-new"] = Field(
        "yes", description="yes: the host key must already be known; accept-new: trust a new host once (never a changed key).",
    )
    config_file: str | None = Field(None, description="ssh -F FILE; null: ~/.ssh/config as usual.")
    connect_timeout_s: int = Field(10, ge=1, le=600)
    control_persist_s: int = Field(60, ge=0, le=3600, description="Keep the shared connection this long after the last command.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or value.startswith("-") or not _HOST.match(value):
            raise ValueError(f"'{value}' is not a host name or address")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("-") or not re.match(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$", value)):
            raise ValueError(f"'{value}' is not a user name")
        return value


class AdbSettings(_Strict):
    """How to reach an Android device with the system ``adb``."""

    serial: str | None = Field(None, description="adb -s SERIAL; null: the only attached device.")
    server_port: int | None = Field(None, ge=1, le=65535, description="adb -P PORT: the adb server's port; null: 5037.")
    connect: str | None = Field(None, description="host:port to `adb connect` before use (adb over Wi-Fi).")
    adb: str = Field("adb", description="The adb client to run.")

    @field_validator("serial", "connect")
    @classmethod
    def _serial(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("-") or not _SERIAL.match(value)):
            raise ValueError(f"'{value}' is not an adb serial or host:port")
        return value


class RunnerSettings(_Strict):
    """The Python that runs edgekit's runner on a Linux device (local or SSH)."""

    python: str | list[str] | None = Field(
        "python3", description="Command starting Python on the device: a string (split like a shell) or a list; null: edgekit's own Python (local only).",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables for the runner.")
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"] = "auto"
    work_root: str | None = Field(None, description="Parent of the per-run work folder on the device; null: /tmp (the system temp folder locally).")
    cpuinfo_file: str | None = Field(
        None, description="A file on THIS machine with the device's /proc/cpuinfo, for emulators whose /proc/cpuinfo shows the host CPU.",
    )
    timeout_s: int = Field(1800, ge=1)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"'{key}' is not an environment variable name")
        return value

    @field_validator("work_root")
    @classmethod
    def _work_root(cls, value: str | None) -> str | None:
        if value is not None and not _REMOTE_DIR.match(value):
            raise ValueError(f"'{value}' must be an absolute path of letters, digits and ._-/")
        return value

    def python_argv(self) -> list[str] | None:
        """The Python command as an argument list (None: edgekit's own Python)."""
        if self.python is None:
            return None
        argv = shlex.split(self.python) if isinstance(self.python, str) else list(self.python)
        if not argv:
            raise ValueError("runner.python is empty")
        return argv


class BenchmarkTarget(_Strict):
    """One way to run ``benchmark_model`` (CPU, GPU delegate, NNAPI, an NPU...)."""

    args: list[str] = Field(default_factory=list)
    description: str = ""

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not arg.startswith("--"):
                raise ValueError(f"benchmark arguments look like --flag=value, got '{arg}'")
        return value


class BenchmarkSettings(_Strict):
    """The user's native benchmark binary for an Android device, pinned by sha256."""

    binary: str | None = Field(None, description="Path on this machine to benchmark_model (android_arm64).")
    sha256: str | None = Field(None, description="sha256 of the binary; checked before every push.")
    flavour: Literal["tflite", "litert"] = "tflite"
    extra_args: list[str] = Field(default_factory=list)
    work_root: str = "/data/local/tmp"
    targets: dict[str, BenchmarkTarget] = Field(default_factory=lambda: {"cpu": BenchmarkTarget()})
    default_target: str = "cpu"
    timeout_s: int = Field(900, ge=1)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("sha256 must be 64 hex digits (sha256sum FILE)")
        return value.lower() if value else value

    @field_validator("work_root")
    @classmethod
    def _work_root(cls, value: str) -> str:
        if not _REMOTE_DIR.match(value):
            raise ValueError(f"'{value}' must be an absolute path of letters, digits and ._-/")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BenchmarkSettings:
        if self.binary is not None and self.sha256 is None:
            raise ValueError("benchmark.binary needs benchmark.sha256 (run: sha256sum BINARY)")
        if self.default_target not in self.targets:
            raise ValueError(f"default_target '{self.default_target}' is not one of the targets ({', '.join(self.targets)})")
        for arg in self.extra_args:
            if not arg.startswith("--"):
                raise ValueError(f"benchmark arguments look like --flag=value, got '{arg}'")
        return self


class HardwareInfo(_Strict):
    """What the device is expected to be; the probe warns when it reports something else."""

    arch: str | None = None
    soc: str | None = None
    cpu: str | None = None
    cores: int | None = Field(None, ge=1)


class ThermalSettings(_Strict):
    throttle_temp_c: float | None = Field(None, description="Flag a run whose hottest thermal zone reached this temperature.")


class DeviceProfile(_Strict):
    """A validated device profile (see the module docstring and docs/devices.md)."""

    schema_version: int
    name: str
    description: str = ""
    transport: Literal["local", "ssh", "adb", "mcu"]
    ssh: SshSettings | None = None
    adb: AdbSettings | None = None
    runner: RunnerSettings | None = None
    benchmark: BenchmarkSettings | None = None
    threads: int = Field(1, ge=1, le=256)
    cpu_affinity: list[int] | str | None = Field(None, description="CPUs to pin the run to: [4, 5] or '4-7' (taskset).")
    hardware: HardwareInfo = Field(default_factory=HardwareInfo)
    thermal: ThermalSettings = Field(default_factory=ThermalSettings)
    # microcontroller boards (export --target mcu --device NAME): what the model may use of the board
    max_arena_kb: float | None = Field(None, gt=0, description="Tensor arena limit (KiB of RAM left for the model's activations).")
    max_flash_kb: float | None = Field(None, gt=0, description="Model size limit (KiB of flash left after the firmware).")
    _source: str | None = PrivateAttr(None)
    #: where the profile came from: "bundled", "env" (EDGEKIT_DEVICES), "config" (the user config dir),
    #: "devices-dir" (--devices-dir), "path" (a file named on the command line) or None (built in code)
    _origin: str | None = PrivateAttr(None)

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"this edgekit reads schema_version {SCHEMA_VERSION}, the profile has {value}; upgrade edgekit or fix the profile")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("cpu_affinity")
    @classmethod
    def _affinity(cls, value: list[int] | str | None) -> list[int] | str | None:
        if isinstance(value, str) and not re.match(r"^\d+(-\d+)?(,\d+(-\d+)?)*$", value):
            raise ValueError(f"'{value}' is not a CPU list like 0-3 or 4,5")
        if isinstance(value, list) and (not value or any(c < 0 for c in value)):
            raise ValueError("cpu_affinity lists CPU numbers (0, 1, ...)")
        return value

    @model_validator(mode="after")
    def _sections(self) -> DeviceProfile:
        if self.transport == "ssh" and self.ssh is None:
            raise ValueError("transport ssh needs an ssh: section with at least host")
        if self.transport != "ssh" and self.ssh is not None:
            raise ValueError(f"an ssh: section makes no sense with transport {self.transport}")
        if self.transport != "adb" and self.adb is not None:
            raise ValueError(f"an adb: section makes no sense with transport {self.transport}")
        if self.transport != "adb" and self.benchmark is not None:
            raise ValueError("benchmark: (a native benchmark_model) is for transport adb; Linux devices run edgekit's runner")
        if self.transport == "adb" and self.runner is not None:
            raise ValueError("runner: is for Linux devices (local, ssh); Android runs benchmark: (benchmark_model)")
        if self.transport == "mcu" and (self.runner is not None or self.cpu_affinity is not None):
            raise ValueError("transport mcu describes a microcontroller board (export budgets); it has no runner or CPU affinity")
        if self.runner is not None and self.runner.python is None and self.transport != "local":
            raise ValueError("runner.python: null (edgekit's own Python) only makes sense with transport local")
        return self

    @property
    def source(self) -> str | None:
        """The file the profile was read from (None when built in code)."""
        return self._source

    @property
    def origin(self) -> str | None:
        """Where the profile was found (see ``_origin``)."""
        return self._origin

    @property
    def runner_settings(self) -> RunnerSettings:
        """The runner settings, with defaults when the section is absent (Linux transports)."""
        if self.runner is not None:
            return self.runner
        return RunnerSettings(python=None if self.transport == "local" else "python3")

    @property
    def benchmark_settings(self) -> BenchmarkSettings:
        return self.benchmark if self.benchmark is not None else BenchmarkSettings()

    @property
    def address(self) -> str:
        """Where the device is, for messages: ``pi@raspberrypi.local:22``, ``adb serial X``, ``this machine``."""
        if self.ssh is not None:
            return f"{self.ssh.user + '@' if self.ssh.user else ''}{self.ssh.host}:{self.ssh.port}"
        if self.transport == "adb":
            adb = self.adb or AdbSettings()
            where = f"adb serial {adb.serial}" if adb.serial else (f"adb connect {adb.connect}" if adb.connect else "the only adb device")
            return where + (f" (server port {adb.server_port})" if adb.server_port else "")
        if self.transport == "mcu":
            return "a microcontroller (export budgets only)"
        return "this machine"

    def affinity_list(self) -> str | None:
        """``cpu_affinity`` as taskset's list form (``4,5,6,7``), or None."""
        if self.cpu_affinity is None:
            return None
        if isinstance(self.cpu_affinity, str):
            return self.cpu_affinity
        return ",".join(str(c) for c in self.cpu_affinity)

    def affinity_mask(self) -> str | None:
        """``cpu_affinity`` as a hex mask (Android's toybox taskset takes a mask), or None."""
        listed = self.affinity_list()
        if listed is None:
            return None
        mask = 0
        for part in listed.split(","):
            lo, _, hi = part.partition("-")
            for cpu in range(int(lo), int(hi or lo) + 1):
                mask |= 1 << cpu
        return f"{mask:x}"

    def to_yaml(self) -> str:
        """The profile as YAML that :func:`load_profile` reads back."""
        data = self.model_dump(mode="json")
        data = {k: v for k, v in data.items() if v is not None}
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=76)  # fits 80 columns


@dataclass(frozen=True)
class ProfileEntry:
    """A profile found on disk and where it came from (``bundled`` or ``user``)."""

    profile: DeviceProfile
    origin: str


def bundled_dir() -> Path:
    """The folder of bundled profiles (the repository's ``devices/``)."""
    return BUNDLED_DIR


def user_config_dir() -> Path:
    """The user's own profile folder: ``$XDG_CONFIG_HOME/edgekit/devices`` (``~/.config/edgekit/devices``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "edgekit" / "devices"


def search_dirs(devices_dir: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """Folders searched for ``NAME.yaml``, first match wins: --devices-dir, EDGEKIT_DEVICES, the user config dir, bundled."""
    dirs: list[tuple[Path, str]] = []
    if devices_dir is not None:
        path = Path(devices_dir).expanduser()
        if not path.is_dir():
            raise InputError(f"--devices-dir {path} is not a folder", hint="create it or pass the folder holding your NAME.yaml profiles")
        dirs.append((path, "devices-dir"))
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry.strip():
            dirs.append((Path(entry.strip()).expanduser(), "env"))
    config = user_config_dir()
    if config.is_dir():
        dirs.append((config, "config"))
    dirs.append((bundled_dir(), "bundled"))
    return dirs


# ssh_config keywords that make ssh run a program on this machine (ssh_config(5)); Include may pull in more
_SSH_EXEC_KEYWORDS = ("proxycommand", "localcommand", "permitlocalcommand", "knownhostscommand", "match", "pkcs11provider",
                      "securitykeyprovider", "include", "remotecommand")
TRUSTED_ORIGINS = ("bundled", "env", "config")
TRUST_ENV = "EDGEKIT_TRUST_PROFILE"


def local_programs(profile: DeviceProfile) -> list[str]:
    """What ``profile`` makes edgekit run on this machine beyond the system ssh/adb clients, one line each:
    ssh config directives that execute commands, another adb client, and (transport local) the
    runner's Python and environment."""
    found: list[str] = []
    if profile.ssh is not None and profile.ssh.config_file is not None:
        try:
            lines = Path(profile.ssh.config_file).read_text(encoding="utf-8", errors="replace").splitlines()[:10_000]
        except OSError:
            lines = []
        for line in lines:
            words = line.strip().replace("=", " ").split(None, 1)
            if words and words[0].lower() in _SSH_EXEC_KEYWORDS and not (words[0].lower() == "match" and "exec" not in line.lower()):
                found.append(f"ssh config {profile.ssh.config_file}: {line.strip()[:160]}")
    if profile.adb is not None and profile.adb.adb != "adb":
        found.append(f"adb client: {profile.adb.adb}")
    if profile.transport == "local" and profile.runner is not None:
        if profile.runner.python is not None:
            found.append(f"runner.python: {' '.join(profile.runner.python_argv() or [])}")
        if profile.runner.env:
            found.append("runner.env: " + ", ".join(f"{k}={v}" for k, v in sorted(profile.runner.env.items())))
    return found


def _writable_by_others(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o002) and not bool(mode & 0o1000)  # world-writable, not sticky


def check_trusted(profile: DeviceProfile) -> None:
    """Refuses a profile that would run programs here unless it is trusted configuration.

    Profiles are configuration like an ssh config, and some make edgekit run programs on this
    machine (:func:`local_programs`): those run when the profile is bundled, comes from the user's
    own folders (``EDGEKIT_DEVICES``, :func:`user_config_dir`) or was built in code, or with
    ``edgekit --trust-profile`` (``EDGEKIT_TRUST_PROFILE=1``). A profile from ``--devices-dir`` or a
    path, or from a folder other users can write, needs the explicit trust.

    Raises:
        InputError: naming what would run and how to trust it.
    """
    programs = local_programs(profile)
    if not programs or os.environ.get(TRUST_ENV) == "1":
        return
    folder = Path(profile.source).parent if profile.source else None
    shared = folder is not None and (_writable_by_others(folder) or _writable_by_others(Path(profile.source or "")))
    if profile.origin is None or (profile.origin in TRUSTED_ORIGINS and not shared):
        return
    why = "its folder is writable by other users" if shared else f"it comes from {'--devices-dir' if profile.origin == 'devices-dir' else 'a path'}"
    raise InputError(f"device profile {profile.source} would run programs on this machine ({'; '.join(programs)[:300]}) and {why}",
                     hint="profiles are trusted configuration like an ssh config: check it (edgekit devices show), then pass "
                          "edgekit --trust-profile, or keep it in EDGEKIT_DEVICES or " + str(user_config_dir()))


def _resolve_path(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "profile"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see `edgekit docs devices` for the keys)"
        elif err["type"] == "missing":
            message = "required key is missing"
        parts.append(f"{where}: {message}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return "; ".join(parts) + more


def parse_profile(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> DeviceProfile:
    """Validates profile YAML. Relative file paths in it are resolved against ``base_dir``.

    Raises:
        RecipeError: the YAML is malformed or does not match the schema.
    """
    data = load_bounded(text, f"device profile {source}", error=RecipeError)  # bounded: depth, size, aliases, scalars
    if not isinstance(data, dict):
        raise RecipeError(f"device profile {source} must be a mapping of keys (schema_version, name, transport, ...)", hint="see `edgekit docs devices`")
    if "schema_version" not in data:
        raise RecipeError(f"device profile {source} has no schema_version", hint=f"add 'schema_version: {SCHEMA_VERSION}' at the top")
    try:
        profile = DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"device profile {source} is invalid: {_format_validation_error(exc)}", hint="see `edgekit docs devices` for the schema") from None
    base = base_dir if base_dir is not None else Path.cwd()
    updates: dict[str, Any] = {}
    if profile.ssh is not None:
        updates["ssh"] = profile.ssh.model_copy(update={
            "identity_file": _resolve_path(profile.ssh.identity_file, base),
            "known_hosts": _resolve_path(profile.ssh.known_hosts, base),
            "config_file": _resolve_path(profile.ssh.config_file, base),
        })
    if profile.runner is not None and profile.runner.cpuinfo_file is not None:
        updates["runner"] = profile.runner.model_copy(update={"cpuinfo_file": _resolve_path(profile.runner.cpuinfo_file, base)})
    if profile.benchmark is not None and profile.benchmark.binary is not None:
        updates["benchmark"] = profile.benchmark.model_copy(update={"binary": _resolve_path(profile.benchmark.binary, base)})
    profile = profile.model_copy(update=updates)
    profile._source = source
    return profile


def _read_profile(path: Path) -> DeviceProfile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read device profile {path}: {exc.strerror or exc}", hint="check the path") from None
    return parse_profile(text, source=str(path), base_dir=path.parent)


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith((".yaml", ".yml"))


def load_profile(name_or_path: str | os.PathLike[str] | DeviceProfile, *, devices_dir: str | os.PathLike[str] | None = None) -> DeviceProfile:
    """Loads a profile by name (user folders first, then bundled) or by path.

    Raises:
        InputError: no profile of that name or the file does not exist.
        RecipeError: the profile is invalid.
    """
    if isinstance(name_or_path, DeviceProfile):
        return name_or_path
    name = str(name_or_path)
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise InputError(f"device profile {path} does not exist", hint="give a profile name (edgekit devices list) or an existing .yaml file")
        found = _read_profile(path)
        found._origin = "path"
        return found
    for folder, origin in search_dirs(devices_dir):
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name}{suffix}"
            if path.is_file():
                profile = _read_profile(path)
                if profile.name != name:
                    raise RecipeError(
                        f"device profile {path} says name: {profile.name}, but its file is {path.name}",
                        hint=f"set name: {name} in the file or rename the file to {profile.name}{suffix}",
                    )
                profile._origin = origin
                return profile
    known = ", ".join(sorted({e.profile.name for e in list_profiles(devices_dir, strict=False)}))
    raise InputError(f"unknown device '{name}' (known: {known})", hint="add NAME.yaml to --devices-dir or EDGEKIT_DEVICES, or pass a profile path")


def list_profiles(devices_dir: str | os.PathLike[str] | None = None, *, strict: bool = True) -> list[ProfileEntry]:
    """All profiles, user ones shadowing bundled ones of the same name, sorted by name.

    With ``strict`` an invalid profile raises :class:`RecipeError`; otherwise it is skipped.
    """
    seen: dict[str, ProfileEntry] = {}
    for folder, origin in search_dirs(devices_dir):
        if not folder.is_dir():
            continue
        for path in sorted(_iter_yaml(folder)):
            try:
                profile = _read_profile(path)
            except (RecipeError, InputError):
                if strict:
                    raise
                continue
            seen.setdefault(profile.name, ProfileEntry(profile, origin))
    return [seen[name] for name in sorted(seen)]


def _iter_yaml(folder: Path) -> Iterable[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()]
