"""A real OpenSSH server on 127.0.0.1 for tests and benchmarks (not a test module).

Starts ``sshd -D -f CONFIG -e`` on a free port with a temporary host key and authorized_keys,
and writes device profiles that reach it with a test-local known_hosts. Needs the Debian
package openssh-server and root (sshd's privilege separation needs /run/sshd).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SFTP_SERVER = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server") if os.path.exists(p)), "internal-sftp")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable_reason() -> str | None:
    """Why a loopback sshd cannot run here (None when it can)."""
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt-get install -y openssh-server)"
    if shutil.which("ssh") is None or shutil.which("scp") is None or shutil.which("ssh-keygen") is None:
        return "the OpenSSH client is not installed (apt-get install -y openssh-client)"
    if os.geteuid() != 0 and not os.path.isdir("/run/sshd"):
        return "sshd needs /run/sshd (create it as root) or root"
    return None


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)], check=True)


class LoopbackSshd:
    """sshd on 127.0.0.1:PORT; ``profile_yaml`` writes profiles that reach it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.host_key = self.root / "host_ed25519"
        self.client_key = self.root / "client_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.config = self.root / "sshd_config"
        self.log = self.root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LoopbackSshd:
        self.root.mkdir(parents=True, exist_ok=True)
        _keygen(self.host_key)
        _keygen(self.client_key)
        (self.root / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        host_pub = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the keys live in a pytest tmp dir
            "PermitRootLogin prohibit-password",
            f"Subsystem sftp {SFTP_SERVER}",
            "MaxSessions 50",
            "MaxStartups 50",
            "LogLevel ERROR",
            "",
        ]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("wb"), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on port {self.port}: {self.log.read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def profile_yaml(self, name: str, python: str | list[str], *, port: int | None = None, known_hosts: Path | None = None,
                     strict: str = "yes", extra_runner: str = "", threads: int = 1) -> str:
        """A profile reaching this server as root with the test key."""
        python_yaml = python if isinstance(python, str) else "[" + ", ".join(python) + "]"
        return "\n".join([
            "schema_version: 1",
            f"name: {name}",
            "description: loopback sshd started by the tests",
            "transport: ssh",
            "ssh:",
            "  host: 127.0.0.1",
            "  user: root",
            f"  port: {port or self.port}",
            f"  identity_file: {self.client_key}",
            f"  known_hosts: {known_hosts or self.known_hosts}",
            f"  strict_host_key_checking: '{strict}'",
            "  config_file: /dev/null",  # the machine's ~/.ssh/config must not change the test
            "runner:",
            f"  python: {python_yaml}",
            *([extra_runner] if extra_runner else []),
            f"threads: {threads}",
            "",
        ])

    def __enter__(self) -> LoopbackSshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
