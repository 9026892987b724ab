"""Opens the transport a device profile names: this machine, SSH or ADB.

Kept apart from :mod:`edgekit.devices.transport` (the interface and the local implementation),
so the SSH and ADB transports can build on that module without importing each other in a circle.

Example::

    transport = open_transport(load_profile("raspberry-pi-4"))
    try:
        done = transport.run(["uname", "-m"], timeout_s=30)
    finally:
        transport.close()
"""

from __future__ import annotations

from edgekit.devices.adb import AdbTransport
from edgekit.devices.profiles import DeviceProfile, check_trusted
from edgekit.devices.ssh import SshTransport
from edgekit.devices.transport import LocalTransport, Transport


def open_transport(profile: DeviceProfile) -> Transport:
    """The transport ``profile`` names (not yet connected; connections open on first use).

    Raises:
        InputError: the profile would run programs here and is not trusted (:func:`check_trusted`).
    """
    check_trusted(profile)
    if profile.transport == "local":
        return LocalTransport(profile)
    if profile.transport == "ssh":
        return SshTransport(profile)
    return AdbTransport(profile)
