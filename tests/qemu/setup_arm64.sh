#!/usr/bin/env bash
# Build an ARM64 (aarch64) Debian bookworm Python 3.11 sysroot plus per-runtime
# site-packages directories, to run edgekit's TFLite code paths on an x86_64
# host under qemu-user (no binfmt_misc needed: qemu is called explicitly).
#
# Usage: tests/qemu/setup_arm64.sh [TARGET_DIR]
#   TARGET_DIR defaults to ${EDGEKIT_ARM64_ROOT:-$HOME/.cache/edgekit/arm64}
#
# Environment knobs (all optional):
#   EDGEKIT_ARM64_FORCE=1          rebuild everything even if the stamp matches
#   EDGEKIT_ARM64_KEEP_DOWNLOADS=1 keep .debs, wheels and apt lists (default: delete)
#   EDGEKIT_DEBIAN_MIRROR          Debian mirror URI (default: the host's, else deb.debian.org)
#   EDGEKIT_DEBIAN_SECURITY_MIRROR Debian security mirror URI (same logic)
#   EDGEKIT_PIP                    pip command (default: "python3 -m pip")
#
# Needs only: apt-get, dpkg-deb, tar, pip (any host Python), qemu-user-static
# (installed via apt-get when missing). Idempotent: a stamp file makes reruns
# take well under a second; partial builds are done in temp dirs and moved in.
#
# Layout of TARGET_DIR:
#   sysroot/                 merged-/usr arm64 Debian tree with python3.11
#   cpu/<qemu-cpu>/          qemu -L prefix per emulated CPU: symlinks into
#                            sysroot/ plus a proc/cpuinfo describing that CPU
#   site-<runtime>/          unpacked aarch64 wheels, used via PYTHONPATH
#   bin/python-<runtime>     wrappers (CPU from $QEMU_CPU, default cortex-a72)
#
# Why cpu/<qemu-cpu>/proc/cpuinfo: qemu 7.2 (bookworm) passes the host's x86
# /proc/cpuinfo through to aarch64 guests. The pytorch/cpuinfo library inside
# ai-edge-litert then finds no "CPU part" lines and the Interpreter segfaults
# (SIGSEGV at address 0x8). qemu's -L prefix also redirects the guest's
# open("/proc/cpuinfo"), so each prefix carries a Raspberry-Pi-like one.
set -euo pipefail

ROOT="${1:-${EDGEKIT_ARM64_ROOT:-$HOME/.cache/edgekit/arm64}}"
if [ -d "$ROOT" ]; then ROOT="$(cd "$ROOT" && pwd)"; fi
SUITE=bookworm                      # python3.11 lives in bookworm
ARCH=arm64
PYVER=3.11
# Seeds for the sysroot; the closure is resolved by apt (see resolve_closure).
SEEDS=(python3.11-minimal libpython3.11-stdlib libc6 libstdc++6 libgcc-s1
       zlib1g libffi8 libssl3 libexpat1)
# Never unpacked into the sysroot and not traversed for dependencies: packaging
# tools / interpreters pulled in only through maintainer-script needs
# (e.g. readline-common -> dpkg | install-info).
EXCLUDES=(dpkg install-info tar perl-base perl debconf)
# manylinux tags accepted by bookworm's glibc 2.36 (pip does not expand these).
PLATFORMS=(manylinux_2_36_aarch64 manylinux_2_35_aarch64 manylinux_2_34_aarch64
           manylinux_2_31_aarch64 manylinux_2_28_aarch64 manylinux_2_27_aarch64
           manylinux_2_17_aarch64 manylinux2014_aarch64)
# name|pip requirements (space separated)|module providing Interpreter
RUNTIMES=(
  "litert-2.3.0|ai-edge-litert==2.3.0 numpy|ai_edge_litert.interpreter"
  "litert-2.2.0|ai-edge-litert==2.2.0 numpy|ai_edge_litert.interpreter"
  "tflite-2.14|tflite-runtime==2.14.0 numpy<2|tflite_runtime.interpreter"
)
rt_name() { echo "${1%%|*}"; }
rt_reqs() { local r="${1#*|}"; echo "${r%%|*}"; }
rt_mod()  { echo "${1##*|}"; }
# qemu -cpu name|MIDR variant|MIDR part|revision|Features line|board (for /proc/cpuinfo)
CPUS=(
  "cortex-a53|0x0|0xd03|4|fp asimd evtstrm crc32 cpuid|Raspberry Pi 3 Model B Plus Rev 1.3"
  "cortex-a72|0x0|0xd08|3|fp asimd evtstrm crc32 cpuid|Raspberry Pi 4 Model B Rev 1.4"
  "cortex-a76|0x4|0xd0b|1|fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp|Raspberry Pi 5 Model B Rev 1.0"
)
DEFAULT_CPU=cortex-a72               # also what sysroot/proc/cpuinfo describes
STAMP_VERSION=2

log() { printf '[setup_arm64] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root (or sudo) to run: $*"; fi
}

hash_str() { printf '%s' "$1" | sha256sum | cut -c1-16; }

SYSROOT_KEY="v${STAMP_VERSION} suite=${SUITE} arch=${ARCH} seeds=${SEEDS[*]} excludes=${EXCLUDES[*]}"
site_key() { echo "v${STAMP_VERSION} py=${PYVER} platforms=${PLATFORMS[*]} reqs=$1"; }
ALL_KEY="$SYSROOT_KEY cpus=${CPUS[*]}"
for rt in "${RUNTIMES[@]}"; do ALL_KEY+=" | $(site_key "$(rt_reqs "$rt")")"; done
ALL_HASH="$(hash_str "$ALL_KEY")"

SYSROOT="$ROOT/sysroot"
STAMP="$ROOT/.edgekit-arm64.stamp"
QEMU="qemu-aarch64-static"

print_usage() {
  local qemu_path; qemu_path="$(command -v "$QEMU" || echo "/usr/bin/$QEMU")"
  echo
  echo "ARM64 sysroot ready in: $ROOT"
  echo "Run Python for each runtime (-cpu cortex-a72 = Raspberry Pi 4, cortex-a76 = Pi 5,"
  echo "cortex-a53 = Pi 3 / Zero 2 W; keep -cpu X and -L $ROOT/cpu/X in step):"
  local rt name cpu
  for rt in "${RUNTIMES[@]}"; do
    name="$(rt_name "$rt")"
    echo
    echo "  # $name ($(rt_reqs "$rt"))"
    for cpu in cortex-a72 cortex-a76; do
      echo "  env -u PYTHONHOME PYTHONNOUSERSITE=1 PYTHONPATH=$ROOT/site-$name $qemu_path -cpu $cpu -L $ROOT/cpu/$cpu $SYSROOT/usr/bin/python$PYVER -s SCRIPT.py ARGS"
    done
    echo "  # same, shorter: QEMU_CPU=cortex-a76 $ROOT/bin/python-$name SCRIPT.py ARGS   (default CPU: $DEFAULT_CPU)"
  done
  echo
  echo "Note: on cortex-a72 (no LSE atomics) ai-edge-litert 2.2/2.3's CompiledModel API aborts with SIGILL"
  echo "(exit 132) while loading libLiteRtWebGpuAccelerator.so; the Interpreter API works. See tests/qemu/README.md."
  echo
}

# ---------------------------------------------------------------- fast path
tree_complete() {  # everything the stamp vouches for is still on disk
  local rt c
  [ -x "$SYSROOT/usr/bin/python$PYVER" ] || return 1
  for rt in "${RUNTIMES[@]}"; do [ -f "$ROOT/site-$(rt_name "$rt")/.edgekit-stamp" ] || return 1; done
  for c in "${CPUS[@]}"; do [ -f "$ROOT/cpu/${c%%|*}/proc/cpuinfo" ] || return 1; done
  for rt in "${RUNTIMES[@]}"; do [ -x "$ROOT/bin/python-$(rt_name "$rt")" ] || return 1; done
}
if [ "${EDGEKIT_ARM64_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] \
   && [ "$(cat "$STAMP")" = "$ALL_HASH" ] && command -v "$QEMU" >/dev/null 2>&1 \
   && tree_complete; then
  log "up to date (stamp $STAMP); set EDGEKIT_ARM64_FORCE=1 to rebuild"
  print_usage
  exit 0
fi

START=$(date +%s)
mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd)"; SYSROOT="$ROOT/sysroot"; STAMP="$ROOT/.edgekit-arm64.stamp"

# Serialise concurrent runs on the same target.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$ROOT/.lock"
  flock 9
fi

# ------------------------------------------------------------ host tools
need_apt_update=1
host_apt_install() {
  if [ "$need_apt_update" = 1 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    need_apt_update=0
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian/Ubuntu host required)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
if ! command -v "$QEMU" >/dev/null 2>&1; then
  log "installing qemu-user-static via apt-get"
  host_apt_install qemu-user-static
fi
command -v "$QEMU" >/dev/null 2>&1 || die "$QEMU still missing after install"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if [ ! -f "$KEYRING" ]; then
  log "installing debian-archive-keyring via apt-get"
  host_apt_install debian-archive-keyring
fi
read -r -a PIP <<<"${EDGEKIT_PIP:-python3 -m pip}"
if ! "${PIP[@]}" --version >/dev/null 2>&1; then
  log "pip not usable ('${PIP[*]}'); installing python3-pip via apt-get"
  host_apt_install python3-pip
  PIP=(python3 -m pip)
fi
PYHOST="${PIP[0]}"; [ "${PIP[1]:-}" = "-m" ] || PYHOST=python3

# ------------------------------------------------------------ mirrors
# Use the Debian mirror(s) the host already uses; fall back to deb.debian.org.
host_debian_uris() {  # $1 = main|security ; prints URIs, one per line
  local want="$1" f
  {
    if [ -f /etc/apt/sources.list ]; then one_list_file "$want" /etc/apt/sources.list; fi
    for f in /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] && one_list_file "$want" "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] && one_sources_file "$want" "$f"
    done
  } 2>/dev/null | grep -E '^(https?|file)://' | grep -i 'debian' | awk '!seen[$0]++' || true
}
# Suites that identify a Debian release line: "bookworm" (main) or
# "bookworm-security" / "buster/updates" (security). Works with mawk.
AWK_SUITE_FN='
  function emit(uri, suites,   n, i, s, a) {
    n = split(suites, a, /[ \t]+/)
    for (i = 1; i <= n; i++) { s = a[i]
      if (s == "") continue
      if (want == "security" && s ~ /^[a-z]+(-security|\/updates)$/) { print uri; return }
      if (want == "main" && s ~ /^[a-z]+$/ && s !~ /^(sid|experimental)$/) { print uri; return }
    }
  }'
one_list_file() {  # one-line-style sources.list
  awk -v want="$1" "$AWK_SUITE_FN"'
    /^[ \t]*#/ || $1 != "deb" { next }
    { i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
      emit($i, $(i + 1)) }' "$2"
}
one_sources_file() {  # deb822-style .sources
  awk -v want="$1" "$AWK_SUITE_FN"'
    function flush(   n, j, u) {
      if (deb && uris != "") { n = split(uris, u, /[ \t]+/); for (j = 1; j <= n; j++) if (u[j] != "") emit(u[j], suites) }
      uris = ""; suites = ""; deb = 0
    }
    /^[ \t]*#/ { next }
    /^[ \t]*$/ { flush(); next }
    tolower($1) == "types:" { deb = ($0 ~ /[ \t]deb([ \t]|$)/) }
    tolower($1) == "uris:" { $1 = ""; uris = $0 }
    tolower($1) == "suites:" { $1 = ""; suites = $0 }
    END { flush() }' "$2"
}
# shellcheck disable=SC1091
HOST_ID="$(. /etc/os-release 2>/dev/null && echo "${ID:-}")"
MIRROR="${EDGEKIT_DEBIAN_MIRROR:-}"
SEC_MIRROR="${EDGEKIT_DEBIAN_SECURITY_MIRROR:-}"
if [ "$HOST_ID" = debian ]; then
  [ -n "$MIRROR" ] || MIRROR="$(host_debian_uris main | grep -v -- '-security' | head -n1 || true)"
  [ -n "$SEC_MIRROR" ] || SEC_MIRROR="$(host_debian_uris security | head -n1 || true)"
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SEC_MIRROR="${SEC_MIRROR:-http://deb.debian.org/debian-security}"
log "Debian mirrors: $MIRROR , $SEC_MIRROR (suite $SUITE, arch $ARCH)"

# ------------------------------------------------------------ private apt root
APTROOT="$ROOT/apt"
setup_private_apt() {
  mkdir -p "$APTROOT"/etc/apt/{sources.list.d,apt.conf.d,preferences.d,trusted.gpg.d} \
           "$APTROOT"/var/lib/apt/lists/partial "$APTROOT"/var/cache/apt/archives/partial \
           "$APTROOT"/var/lib/dpkg
  : >"$APTROOT/etc/apt/sources.list"
  cat >"$APTROOT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE ${SUITE}-updates
Components: main
Architectures: $ARCH
Signed-By: $KEYRING

Types: deb
URIs: $SEC_MIRROR
Suites: ${SUITE}-security
Components: main
Architectures: $ARCH
Signed-By: $KEYRING
EOF
  local sandbox_user=""
  [ "$(id -u)" -eq 0 ] && sandbox_user='APT::Sandbox::User "root";'
  cat >"$APTROOT/apt.conf" <<EOF
Dir "$APTROOT/";
Dir::State::status "$APTROOT/var/lib/dpkg/status";
Dir::Etc::main "$APTROOT/etc/apt/apt.conf";
Dir::Etc::parts "$APTROOT/etc/apt/apt.conf.d";
Dir::Cache::archives "$APTROOT/var/cache/apt/archives/";
APT::Architecture "$ARCH";
APT::Architectures { "$ARCH"; };
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Debug::NoLocking "true";
$sandbox_user
EOF
  : >"$APTROOT/var/lib/dpkg/status"
}
papt() { APT_CONFIG="$APTROOT/apt.conf" "$@"; }

# Dependency closure of SEEDS, as apt's own resolver computes it (Pre-Depends,
# Depends, alternatives and virtual packages handled; no Recommends). EXCLUDES
# are entered into the private dpkg status as "already installed" at their
# candidate version, so they are neither downloaded nor traversed.
resolve_closure() {
  local status="$APTROOT/var/lib/dpkg/status" p ver
  : >"$status"
  for p in "${EXCLUDES[@]}"; do
    ver="$(papt apt-cache policy "$p" | awk '/Candidate:/ {print $2; exit}')"
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then continue; fi
    printf 'Package: %s\nStatus: install ok installed\nPriority: optional\nArchitecture: %s\nMulti-Arch: foreign\nVersion: %s\nDescription: stub (excluded from edgekit sysroot)\n\n' \
      "$p" "$ARCH" "$ver" >>"$status"
  done
  papt apt-get install -s -qq "${SEEDS[@]}" | awk '$1 == "Inst" { v = $3; gsub(/[()]/, "", v); print $2 "=" v }'
}

build_sysroot() {
  if [ -f "$SYSROOT/.edgekit-stamp" ] && [ "$(cat "$SYSROOT/.edgekit-stamp")" = "$(hash_str "$SYSROOT_KEY")" ] \
     && [ "${EDGEKIT_ARM64_FORCE:-0}" != 1 ]; then
    log "sysroot up to date"
    return
  fi
  setup_private_apt
  log "apt-get update (private $ARCH apt root: $APTROOT)"
  papt apt-get update -qq
  local pkgs
  mapfile -t pkgs < <(resolve_closure)
  [ "${#pkgs[@]}" -gt 0 ] || die "empty dependency closure"
  log "dependency closure (${#pkgs[@]} packages): ${pkgs[*]}"
  local debdir="$ROOT/debs"
  rm -rf "$debdir"; mkdir -p "$debdir"
  ( cd "$debdir" && papt apt-get download -qq "${pkgs[@]}" )
  local tmp="$ROOT/.sysroot.tmp"
  rm -rf "$tmp"
  # Merged-/usr layout, like a real bookworm (Raspberry Pi OS) install.
  mkdir -p "$tmp"/usr/{bin,sbin,lib} "$tmp"/etc
  ln -s usr/bin "$tmp/bin"; ln -s usr/sbin "$tmp/sbin"; ln -s usr/lib "$tmp/lib"
  local p name deb cands f
  for p in "${pkgs[@]}"; do
    name="${p%%=*}"
    cands=("$debdir/${name}"_*_"$ARCH".deb "$debdir/${name}"_*_all.deb)
    deb=""
    for f in "${cands[@]}"; do [ -f "$f" ] && { deb="$f"; break; }; done
    [ -n "$deb" ] || die "downloaded .deb for $name not found in $debdir"
    # dpkg-deb -x would replace the lib -> usr/lib symlink by a directory,
    # so extract its data tarball with --keep-directory-symlink instead.
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --keep-directory-symlink --no-same-owner
  done
  printf '%s\n' "${pkgs[@]}" >"$tmp/.edgekit-packages"
  write_cpuinfo "$tmp/proc/cpuinfo" "$(cpu_entry "$DEFAULT_CPU")"
  # Sanity check: the interpreter and stdlib extension modules load under qemu.
  "$QEMU" -L "$tmp" "$tmp/usr/bin/python$PYVER" -s -S -c \
    'import sys, os, ssl, ctypes, zlib, bz2, lzma, sqlite3, json, hashlib, uuid, decimal; print(sys.version.split()[0], sys.platform, os.uname().machine)' \
    >&2 || die "arm64 python failed to start from $tmp"
  hash_str "$SYSROOT_KEY" >"$tmp/.edgekit-stamp"
  rm -rf "$SYSROOT"
  mv "$tmp" "$SYSROOT"
}

cpu_entry() {  # $1 = qemu cpu name -> its CPUS line
  local c
  for c in "${CPUS[@]}"; do [ "${c%%|*}" = "$1" ] && { echo "$c"; return; }; done
  die "unknown cpu $1"
}

# /proc/cpuinfo as a 64-bit Raspberry Pi OS kernel prints it. At least as many
# "processor" entries as the host has CPUs (qemu shows the guest the host's
# /sys/devices/system/cpu), and at least 4 like a real Pi.
write_cpuinfo() {  # $1 = file, $2 = CPUS line
  local file="$1" variant part rev features board n i
  IFS='|' read -r _ variant part rev features board <<<"$2"
  n="$(getconf _NPROCESSORS_CONF 2>/dev/null || echo 4)"
  [ "$n" -ge 4 ] 2>/dev/null || n=4
  mkdir -p "$(dirname "$file")"
  {
    for ((i = 0; i < n; i++)); do
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
        "$i" "$features" "$variant" "$part" "$rev"
    done
    printf 'Model\t\t: %s\n' "$board"
  } >"$file"
}

# cpu/<name>/: a qemu -L prefix = symlinks to everything in sysroot/ except
# proc/, plus that CPU's own proc/cpuinfo. Cheap; rebuilt on every full run.
build_cpu_prefixes() {
  local c name tmp entry
  for c in "${CPUS[@]}"; do
    name="${c%%|*}"
    tmp="$ROOT/.cpu-$name.tmp"
    rm -rf "$tmp"; mkdir -p "$tmp"
    for entry in "$SYSROOT"/*; do
      [ "$(basename "$entry")" = proc ] && continue
      ln -s "../../sysroot/$(basename "$entry")" "$tmp/$(basename "$entry")"
    done
    write_cpuinfo "$tmp/proc/cpuinfo" "$c"
    mkdir -p "$ROOT/cpu"
    rm -rf "$ROOT/cpu/$name"
    mv "$tmp" "$ROOT/cpu/$name"
  done
}

unpack_wheel() {  # $1 = wheel, $2 = site dir
  local whl="$1" site="$2" d
  "$PYHOST" -m zipfile -e "$whl" "$site"
  # Wheels may carry *.data/{purelib,platlib}: fold them in like an installer would.
  for d in "$site"/*.data; do
    [ -d "$d" ] || continue
    for sub in purelib platlib; do
      if [ -d "$d/$sub" ]; then cp -a "$d/$sub/." "$site/"; fi
    done
    rm -rf "$d"
  done
}

build_site() {  # $1 = name, $2 = requirements, $3 = runtime module
  local name="$1" reqs="$2" mod="$3" site="$ROOT/site-$1" key
  key="$(hash_str "$(site_key "$reqs")")"
  if [ -f "$site/.edgekit-stamp" ] && [ "$(cat "$site/.edgekit-stamp")" = "$key" ] \
     && [ "${EDGEKIT_ARM64_FORCE:-0}" != 1 ]; then
    log "site-$name up to date"
    return
  fi
  local wheels="$ROOT/wheels/$name" tmp="$ROOT/.site-$name.tmp" plat_args=() req_args=() w
  for w in "${PLATFORMS[@]}"; do plat_args+=(--platform "$w"); done
  read -r -a req_args <<<"$reqs"
  rm -rf "$wheels" "$tmp"; mkdir -p "$wheels" "$tmp"
  log "pip download ($name): ${req_args[*]}"
  "${PIP[@]}" download -q --disable-pip-version-check --dest "$wheels" \
    --only-binary=:all: --implementation cp --python-version "$PYVER" \
    --abi "cp${PYVER/./}" "${plat_args[@]}" "${req_args[@]}"
  for w in "$wheels"/*.whl; do unpack_wheel "$w" "$tmp"; done
  for w in "$wheels"/*.whl; do basename "$w"; done >"$tmp/.edgekit-wheels"
  # Sanity check: numpy and the runtime's Interpreter import under qemu
  # (on cortex-a76; see README.md for the cortex-a72 CompiledModel SIGILL).
  env -u PYTHONHOME PYTHONNOUSERSITE=1 PYTHONPATH="$tmp" \
    "$QEMU" -cpu cortex-a76 -L "$ROOT/cpu/cortex-a76" "$SYSROOT/usr/bin/python$PYVER" -s -c \
    "import numpy, $mod as m; print('$name: numpy', numpy.__version__, '+', m.Interpreter.__module__)" >&2 \
    || die "numpy / $mod do not import from $tmp"
  echo "$key" >"$tmp/.edgekit-stamp"
  rm -rf "$site"
  mv "$tmp" "$site"
}

write_wrappers() {
  mkdir -p "$ROOT/bin"
  local rt name
  for rt in "${RUNTIMES[@]}"; do
    name="$(rt_name "$rt")"
    cat >"$ROOT/bin/python-$name" <<EOF
#!/bin/sh
# arm64 Python $PYVER with site-$name ($(rt_reqs "$rt")) under qemu-user.
# CPU: \$QEMU_CPU (cortex-a72 = Raspberry Pi 4 [default], cortex-a76 = Pi 5,
# cortex-a53 = Pi 3 / Zero 2 W, or any qemu model; unknown ones use sysroot/).
cpu="\${QEMU_CPU:-$DEFAULT_CPU}"
prefix="$ROOT/cpu/\$cpu"
[ -d "\$prefix" ] || prefix="$SYSROOT"
unset PYTHONHOME QEMU_CPU
PYTHONNOUSERSITE=1 PYTHONPATH="$ROOT/site-$name" exec $(command -v "$QEMU") -cpu "\$cpu" -L "\$prefix" "$SYSROOT/usr/bin/python$PYVER" -s "\$@"
EOF
    chmod +x "$ROOT/bin/python-$name"
  done
}

build_sysroot
build_cpu_prefixes
for rt in "${RUNTIMES[@]}"; do build_site "$(rt_name "$rt")" "$(rt_reqs "$rt")" "$(rt_mod "$rt")"; done
write_wrappers

if [ "${EDGEKIT_ARM64_KEEP_DOWNLOADS:-0}" != 1 ]; then
  rm -rf "$ROOT/debs" "$ROOT/wheels" "$APTROOT/var/lib/apt/lists" "$APTROOT/var/cache"
fi
echo "$ALL_HASH" >"$STAMP"
log "done in $(( $(date +%s) - START ))s; size: $(du -sh "$ROOT" | cut -f1)"
print_usage
