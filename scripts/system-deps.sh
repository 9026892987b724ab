#!/usr/bin/env bash
# Installs the Debian packages the test suite uses, if missing: openssh-server (real sshd on
# 127.0.0.1 for the SSH device tests), adb (ADB error paths), qemu-user-static (ARM64 runner),
# dataset-fashion-mnist (benchmarks and the example's training script), chromium (renders the HTML
# report in a test), debian-archive-keyring (the ARM64 sysroot's private apt root), iproute2 and
# util-linux (ip, ss, unshare: the Ray cluster test runs in a private network namespace). Then prepares the ARM64
# sysroot for the qemu test when its setup script exists. Safe to re-run; does nothing when all is there.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v adb >/dev/null 2>&1 || need+=(adb)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
command -v ip >/dev/null 2>&1 && command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system-deps: missing ${need[*]} and not root; install them with apt-get (tests that need them will skip)" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -x tests/qemu/setup_arm64.sh ] || [ -f tests/qemu/setup_arm64.sh ]; then
  bash tests/qemu/setup_arm64.sh || echo "system-deps: ARM64 sysroot setup failed; the qemu test will skip" >&2
fi
