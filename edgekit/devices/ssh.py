"""The SSH transport: the system OpenSSH client (``ssh``, ``scp``), never a password prompt.

- ``BatchMode=yes``: no prompt can hang a run; keys or an agent authenticate.
- Host keys are checked: ``StrictHostKeyChecking=yes`` by default (``accept-new`` trusts a new
  host once, never a changed key), against ``ssh.known_hosts`` or ``~/.ssh/known_hosts``.
- One connection is shared by all commands of a run (``ControlMaster=auto`` with a private
  ``ControlPath`` and ``ControlPersist``); :meth:`SshTransport.close` ends it.
- The remote command is an argument list quoted once with :func:`shlex.join`; its exit status
  comes back through a marker line, so a death by signal on the device reads as ``SIGILL``
  rather than ssh's ambiguous 255.
- Files travel with ``scp`` (SFTP protocol by default in OpenSSH 9: the device needs the
  usual ``sftp-server``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence

from edgekit.core.errors import DeviceError, TimeLimit
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.transport import Completed, check_remote_path, env_argv, split_exit_marker, with_exit_marker


def _quote_option_value(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) else value


def classify_ssh_failure(stderr: str, profile: DeviceProfile) -> DeviceError:
    """Turns OpenSSH's stderr into one actionable line (host key, refused, auth, DNS, timeout)."""
    assert profile.ssh is not None
    settings = profile.ssh
    where = f"{profile.name} ({profile.address})"
    known = settings.known_hosts or "~/.ssh/known_hosts"
    host_spec = settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"
    text = " ".join(stderr.split())
    lowered = text.lower()
    if "remote host identification has changed" in lowered or "host key for" in lowered and "has changed" in lowered:
        return DeviceError(
            f"the SSH host key of {where} differs from the one recorded in {known}: the device was reinstalled or the connection is intercepted",
            hint=f"if the change is expected, check the new fingerprint, then ssh-keygen -R '{host_spec}' -f {known} and add the new key",
        )
    if "host key is known for" in lowered or "host key verification failed" in lowered:
        return DeviceError(
            f"the SSH host key of {where} is not in {known} and host keys are checked",
            hint=f"check the fingerprint on the device, then ssh-keyscan -p {settings.port} {settings.host} >> {known} "
                 "(or set ssh.strict_host_key_checking: accept-new to trust it on first use)",
        )
    if "connection refused" in lowered:
        return DeviceError(f"{where}: connection refused, no SSH server listens on port {settings.port}",
                           hint="check ssh.host and ssh.port and that sshd runs on the device")
    if "could not resolve hostname" in lowered or "name or service not known" in lowered or "nodename nor servname" in lowered:
        return DeviceError(f"{where}: cannot resolve host name '{settings.host}'",
                           hint="check ssh.host (.local names need mDNS) or use the device's IP address")
    if "timed out" in lowered or "no route to host" in lowered or "network is unreachable" in lowered:
        return DeviceError(f"{where}: the device did not answer ({text[-120:]})",
                           hint="check that it is powered, on this network, and that ssh.host is right")
    if "unprotected private key file" in lowered or "bad permissions" in lowered:
        return DeviceError(f"{where}: ssh refuses the identity file {settings.identity_file}: its permissions are too open",
                           hint=f"chmod 600 {settings.identity_file}")
    if "permission denied" in lowered or "too many authentication failures" in lowered:
        return DeviceError(
            f"{where}: the SSH server refused the login of user '{settings.user or os.environ.get('USER', '?')}' ({text[-120:]})",
            hint="check ssh.user and ssh.identity_file; edgekit never types passwords: install a key with ssh-copy-id",
        )
    if "kex_exchange_identification" in lowered or "connection closed" in lowered or "connection reset" in lowered:
        return DeviceError(f"{where}: the connection was closed during the SSH handshake ({text[-160:]})",
                           hint="check that ssh.port is an SSH server and that the device accepts this client")
    return DeviceError(f"{where}: ssh failed: {text[-300:] or 'no message'}", hint="run the same ssh command by hand, or rerun with -v")


class SshTransport:
    """Runs commands on a Linux device over SSH (see the module docstring)."""

    def __init__(self, profile: DeviceProfile, *, ssh: str = "ssh", scp: str = "scp") -> None:
        if profile.ssh is None:
            raise DeviceError(f"device {profile.name} has no ssh: settings", hint="use a profile with transport ssh")
        self.profile = profile
        self.settings = profile.ssh
        self._ssh = ssh
        self._scp = scp
        self._control_dir: str | None = None
        for tool in (ssh, scp):
            if shutil.which(tool) is None:
                raise DeviceError(f"the OpenSSH client '{tool}' is not installed on this machine",
                                  hint="install it (Debian/Ubuntu: apt-get install openssh-client)")

    # -- command lines -------------------------------------------------------------------------
    def _common_options(self) -> list[str]:
        s = self.settings
        opts: list[str] = []
        if s.config_file:
            opts += ["-F", s.config_file]
        opts += [
            "-o", "BatchMode=yes",
            "-o", f"StrictHostKeyChecking={s.strict_host_key_checking}",
            "-o", f"ConnectTimeout={s.connect_timeout_s}",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
        ]
        if s.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={_quote_option_value(s.known_hosts)}"]
        if s.identity_file:
            opts += ["-i", s.identity_file, "-o", "IdentitiesOnly=yes"]
        if s.user:
            opts += ["-o", f"User={s.user}"]
        if s.control_persist_s > 0:
            if self._control_dir is None:
                # short and private: the socket path must stay under ~100 characters
                self._control_dir = tempfile.mkdtemp(prefix="ek-ssh-", dir="/tmp")
            opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/%C",
                     "-o", f"ControlPersist={s.control_persist_s}"]
        else:
            opts += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        return opts

    def ssh_argv(self, remote_command: str) -> list[str]:
        """The full ``ssh`` command line for one remote command string."""
        return [self._ssh, *self._common_options(), "-p", str(self.settings.port), "--", self.settings.host, remote_command]

    def _remote(self, path: str) -> str:
        host = self.settings.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{host}:{check_remote_path(path)}"

    def _scp_argv(self, sources: list[str], target: str) -> list[str]:
        return [self._scp, "-q", *self._common_options(), "-P", str(self.settings.port), "--", *sources, target]

    def _call(self, argv: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise TimeLimit(f"{self.profile.name} ({self.profile.address}): {what} did not finish within {timeout_s:.0f} s",
                              hint="check the connection, or raise runner.timeout_s / use fewer --runs") from None

    # -- Transport -----------------------------------------------------------------------------
    def run(self, argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None) -> Completed:
        command = with_exit_marker(shlex.join([*env_argv(env), *argv]))
        proc = self._call(self.ssh_argv(command), timeout_s, f"'{shlex.join(list(argv)[:2])} ...'")
        stdout, code = split_exit_marker(proc.stdout)
        if code is None:  # the command never ran or the connection was cut
            raise classify_ssh_failure(proc.stderr, self.profile)
        return Completed(code, stdout, proc.stderr)

    def push(self, local_paths: Sequence[str | os.PathLike[str]], remote_dir: str) -> None:
        sources = [os.fspath(p) for p in local_paths]
        proc = self._call(self._scp_argv(sources, self._remote(remote_dir.rstrip("/") + "/")), self.profile.runner_settings.timeout_s, "copying files")
        if proc.returncode != 0:
            raise self._copy_error(proc.stderr, f"copying {', '.join(os.path.basename(s) for s in sources)} to the device")

    def pull(self, remote_path: str, local_path: str | os.PathLike[str]) -> None:
        proc = self._call(self._scp_argv([self._remote(remote_path)], os.fspath(local_path)), self.profile.runner_settings.timeout_s, "copying results")
        if proc.returncode != 0:
            raise self._copy_error(proc.stderr, f"copying {remote_path} back from the device")

    def _copy_error(self, stderr: str, what: str) -> DeviceError:
        lowered = stderr.lower()
        if "no such file" in lowered or "not found" in lowered and "command" not in lowered or "permission denied" in lowered and "publickey" not in lowered:
            tail = " ".join(stderr.split())[-200:]
            return DeviceError(f"{self.profile.name}: {what} failed: {tail}", hint="check work_root in the profile and the space left on the device")
        if "subsystem request failed" in lowered:
            return DeviceError(f"{self.profile.name}: {what} failed: the SSH server has no sftp subsystem",
                               hint="enable 'Subsystem sftp' in the device's sshd_config")
        return classify_ssh_failure(stderr, self.profile)

    def make_work_dir(self) -> str:
        root = (self.profile.runner_settings.work_root or "/tmp").rstrip("/") or ""
        done = self.run(["mktemp", "-d", f"{root}/edgekit.XXXXXXXX"], timeout_s=60)
        path = done.stdout.strip().splitlines()[-1] if done.ok and done.stdout.strip() else ""
        if not done.ok or not path.startswith(f"{root}/edgekit."):
            raise DeviceError(f"{self.profile.name}: cannot create a work folder under {root or '/'} on the device ({done.tail()})",
                              hint="check runner.work_root in the profile exists and is writable")
        return check_remote_path(path)

    def remove_work_dir(self, path: str) -> None:
        root = (self.profile.runner_settings.work_root or "/tmp").rstrip("/")
        if not path.startswith(f"{root}/edgekit."):
            raise DeviceError(f"refusing to remove {path}: not an edgekit work folder")
        done = self.run(["rm", "-rf", "--", check_remote_path(path)], timeout_s=120)
        if not done.ok:
            raise DeviceError(f"{self.profile.name}: could not remove the work folder {path} ({done.tail()})", hint="remove it by hand")

    def close(self) -> None:
        if self._control_dir is None:
            return
        try:
            subprocess.run([self._ssh, "-o", f"ControlPath={self._control_dir}/%C", "-p", str(self.settings.port),
                            *(["-o", f"User={self.settings.user}"] if self.settings.user else []),
                            *(["-F", self.settings.config_file] if self.settings.config_file else []),
                            "-O", "exit", "--", self.settings.host],
                           capture_output=True, timeout=15, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
