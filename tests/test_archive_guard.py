"""Zip bombs in .keras and .npz files are refused from the central directory, before inflating.

The bombs are built here byte by byte: a central directory that declares gigabytes over a few
kilobytes (or megabytes) of real data. Nothing large is ever written or inflated.
"""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest

from conftest import EXAMPLE
from edgekit.core.archive_guard import (
    KERAS_LIMITS,
    ArchiveLimits,
    GiB,
    MiB,
    read_member,
    scan_keras_archive,
    scan_npz,
    scan_zip,
)
from edgekit.core.errors import DataError, InputError, ModelError


def build_zip(members: list[tuple[str, bytes, int, int | None]], *, declared_entries: int | None = None) -> bytes:
    """A zip archive from (name, data as stored, method, declared uncompressed size or None for
    the true one). Sizes of 4 GiB and more get zip64 extra fields, as real tools write them."""
    out, central = bytearray(), bytearray()
    for name, stored, method, declared in members:
        raw_name = name.encode()
        plain = stored if method == zipfile.ZIP_STORED else zlib.decompress(stored, -15)
        usize = declared if declared is not None else len(plain)
        crc = zlib.crc32(plain)
        zip64 = usize >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, usize, len(stored)) if zip64 else b""
        u32, c32 = (0xFFFFFFFF, 0xFFFFFFFF) if zip64 else (usize, len(stored))
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, method, 0, 0x21, crc, c32, u32, len(raw_name), len(extra))
        out += raw_name + extra + stored
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, method, 0, 0x21, crc, c32, u32,
                               len(raw_name), len(extra), 0, 0, 0, 0, offset) + raw_name + extra
    entries = len(members) if declared_entries is None else declared_entries
    out_len = len(out)
    out += central
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, entries, entries, len(central), out_len, 0)
    return bytes(out)


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def keras_like(weights: tuple[bytes, int, int | None]) -> list[tuple[str, bytes, int, int | None]]:
    config = b'{"class_name": "Sequential", "config": {}}'
    return [("metadata.json", b"{}", zipfile.ZIP_STORED, None), ("config.json", config, zipfile.ZIP_STORED, None),
            ("model.weights.h5", *weights)]


def test_builder_writes_archives_zipfile_reads(tmp_path):
    path = tmp_path / "ok.keras"
    path.write_bytes(build_zip(keras_like((deflate(b"\0" * 1000), zipfile.ZIP_DEFLATED, None))))
    with zipfile.ZipFile(path) as zf:
        assert [i.file_size for i in zf.infolist()] == [2, 42, 1000]
    scan = scan_keras_archive(path)
    assert scan.member("model.weights.h5").uncompressed_bytes == 1000 and scan.total_uncompressed_bytes == 1044


def test_12_gib_zip64_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.keras"
    path.write_bytes(build_zip(keras_like((deflate(b"\0" * 4 * MiB), zipfile.ZIP_DEFLATED, 12 * GiB))))
    assert path.stat().st_size < 10_000
    with zipfile.ZipFile(path) as zf:  # a genuine zip64 entry
        assert zf.getinfo("model.weights.h5").file_size == 12 * GiB
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"'model.weights.h5' declares 12.0 GiB uncompressed, more than the 8.0 GiB allowed") as info:
        scan_keras_archive(path)
    assert time.perf_counter() - start < 0.1
    assert info.value.exit_code == 3


def test_4_mb_file_declaring_4_gib_of_weights_is_refused_at_once(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 4 * MiB, dtype=np.uint8).tobytes()
    path = tmp_path / "liar.keras"
    path.write_bytes(build_zip(keras_like((deflate(data), zipfile.ZIP_DEFLATED, 4 * GiB))))
    assert 4 * MiB <= path.stat().st_size < 5 * MiB
    start = time.perf_counter()
    with pytest.raises(ModelError, match=r"declares 4.0 GiB from 4.0 MiB \(x1,024 compression, more than x100\)"):
        scan_keras_archive(path)
    assert time.perf_counter() - start < 0.1


def test_forged_sizes_and_counts(tmp_path):
    stored_liar = tmp_path / "stored.keras"
    stored_liar.write_bytes(build_zip(keras_like((b"x" * 100, zipfile.ZIP_STORED, 10**9))))
    with pytest.raises(ModelError, match="stored uncompressed but declares"):
        scan_keras_archive(stored_liar)
    many = tmp_path / "many.npz"
    many.write_bytes(build_zip([("a.npy", b"x", zipfile.ZIP_STORED, None)], declared_entries=60_000))
    with pytest.raises(DataError, match="declares 60,000 archive members, more than the 1,000 allowed"):
        scan_npz(many)
    short = tmp_path / "short.keras"
    short.write_bytes(build_zip(keras_like((b"x" * 100, zipfile.ZIP_STORED, None)))[:150])
    with pytest.raises(ModelError, match="not a valid zip archive"):
        scan_keras_archive(short)
    no_config = tmp_path / "noconfig.keras"
    no_config.write_bytes(build_zip([("model.weights.h5", b"x", zipfile.ZIP_STORED, None)]))
    with pytest.raises(ModelError, match="has no config.json"):
        scan_keras_archive(no_config)
    total = tmp_path / "total.keras"
    total.write_bytes(build_zip(keras_like((b"x" * 10, zipfile.ZIP_STORED, None))))
    with pytest.raises(ModelError, match="uncompressed in all, more than the 30 bytes allowed"):
        scan_zip(total, what="model", limits=ArchiveLimits(max_total_bytes=30))


def test_config_json_is_read_with_a_cap(tmp_path):
    big_config = b'{"pad": "' + b" " * 2000 + b'"}'
    path = tmp_path / "m.keras"
    path.write_bytes(build_zip([("config.json", deflate(big_config), zipfile.ZIP_DEFLATED, None)]))
    with pytest.raises(ModelError, match="holds more than 1,000 bytes"):
        read_member(path, "config.json", 1000)
    assert read_member(path, "config.json", 4000) == big_config
    with pytest.raises(ModelError, match="declares 2,011 bytes, more than the 1,000 bytes a model config may hold"):
        scan_keras_archive(path, ArchiveLimits(max_config_bytes=1000))
    lying = tmp_path / "lying.keras"  # declares 50 bytes, inflates to 2,011: zipfile stops and the CRC fails
    lying.write_bytes(build_zip([("config.json", deflate(big_config), zipfile.ZIP_DEFLATED, 50)]))
    with pytest.raises(ModelError, match="cannot be read"):
        read_member(lying, "config.json", 4000)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_npy_header_declaring_more_than_the_member_holds(tmp_path):
    raw = _npy(np.arange(3, dtype=np.float32))
    forged = raw.replace(b"(3,),", b"(10000000000,),", 1)
    forged = forged.replace(b" " * 10 + b"\n", b"\n", 1)  # keep the header length: take the spaces from the padding
    assert len(forged) == len(raw)
    path = tmp_path / "forged.npz"
    path.write_bytes(build_zip([("x.npy", deflate(forged), zipfile.ZIP_DEFLATED, None)]))
    with pytest.raises(DataError, match=r"array 'x' declares shape \(10000000000,\) of float32 \(37.3 GiB\) but the archive member holds 12 bytes"):
        scan_npz(path)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="holds Python objects"):
        scan_npz(pickled)


def test_real_archives_pass(tmp_path):
    scan = scan_keras_archive(EXAMPLE / "model.keras")
    assert {m.name for m in scan.members} == {"metadata.json", "config.json", "model.weights.h5"}
    assert scan_npz(EXAMPLE / "val.npz").member("x.npy").uncompressed_bytes == 784128
    compressed = tmp_path / "c.npz"
    np.savez_compressed(compressed, x=np.zeros((64, 28, 28), np.uint8), y=np.arange(64))
    assert len(scan_npz(compressed).members) == 2
    assert scan_keras_archive(EXAMPLE / "model.keras").to_dict()["total_uncompressed_bytes"] > 1_000_000
    assert KERAS_LIMITS.max_ratio == 100


def test_non_regular_and_missing(tmp_path):
    with pytest.raises(InputError, match="character device"):
        scan_npz("/dev/zero")
    with pytest.raises(InputError, match="does not exist"):
        scan_keras_archive(tmp_path / "nope.keras")


# --- through the commands (issue 18 wiring): refused fast, documented exit codes, never 1 ----------


def test_commands_refuse_bombs_before_inflating(tmp_path, tiny):
    import resource
    import subprocess
    import sys

    keras_bomb = tmp_path / "bomb.keras"
    keras_bomb.write_bytes(build_zip(keras_like((deflate(b"\0" * 4 * MiB), zipfile.ZIP_DEFLATED, 12 * GiB))))
    # a small .npz whose x inflates to 2 GiB: a deflate run of zeros (ratio ~1000) behind a true header
    header = b"\x93NUMPY\x01\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (2048, 512, 512), }".ljust(118) + b"\n"
    npz_bomb = tmp_path / "bomb.npz"
    npz_bomb.write_bytes(build_zip([("x.npy", deflate(header + b"\0" * (64 * MiB)), zipfile.ZIP_DEFLATED, len(header) + 2 * GiB)]))
    assert npz_bomb.stat().st_size < 1 * MiB
    out = tmp_path / "out.tflite"
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"  # bounded memory: a bomb that inflated would die here
            "from edgekit.cli import main\nsys.argv = ['edgekit'] + sys.argv[1:]\nmain()\n")
    for args, expected in ((["inspect", str(keras_bomb)], 3),
                           (["quantize", str(keras_bomb), "-o", str(out), "--mode", "float32"], 3),
                           (["quantize", str(tiny["model"]), "-o", str(out), "--data", str(npz_bomb)], 4)):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == expected, (args, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr and not out.exists()
    del resource
