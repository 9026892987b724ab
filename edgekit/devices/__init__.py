"""Target devices: profiles, transports (local, SSH, ADB), probes and on-device runs."""
