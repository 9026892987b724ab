"""Non-regular inputs and outputs (issue 18): FIFOs, devices and sockets are refused without a
blocking open; "exists without --force" is decided atomically, so exactly one of N racing writers
wins; a device node is never replaced by a report."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
from fuzz_tflite import seed_model

from edgekit.core.errors import InputError
from edgekit.core.fsutil import (
    TMP_PREFIX,
    atomic_path,
    check_output_path,
    read_regular_bytes,
    require_file,
    require_regular,
    require_regular_tree,
    write_bytes_atomic,
    write_json_atomic,
)
from edgekit.core.tflite_verify import read_verified_tflite, verify_tflite


@contextlib.contextmanager
def deadline(seconds: int):
    """Fails the test instead of hanging if the block blocks (a FIFO opened for reading)."""
    def expired(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "model.tflite"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("reader", [
    lambda p: require_regular(p, "model"),
    lambda p: require_file(p, "model"),
    lambda p: require_file(p, "model", allow_dir=True),
    lambda p: read_regular_bytes(p, "model"),
    lambda p: verify_tflite(p),
    lambda p: read_verified_tflite(p),
])
def test_fifo_input_is_refused_at_once(fifo, reader):
    start = time.perf_counter()
    with deadline(5), pytest.raises(InputError, match=r"is a FIFO \(named pipe\), not a regular file") as info:
        reader(fifo)
    assert time.perf_counter() - start < 1.0
    assert info.value.exit_code == 2


def test_devices_sockets_and_directories(tmp_path):
    with pytest.raises(InputError, match="/dev/null is a character device, not a regular file"):
        require_regular("/dev/null", "data")
    with pytest.raises(InputError, match="is a directory, expected a file"):
        require_regular(tmp_path, "data")
    assert require_regular(tmp_path, "image folder", allow_dir=True) == tmp_path
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(InputError, match="is a socket"):
            require_file(sock_path, "recipe")
    with pytest.raises(InputError, match="does not exist"):
        require_regular(tmp_path / "missing", "model")


def test_regular_files_and_links_behave_as_before(tmp_path):
    f = tmp_path / "m.tflite"
    f.write_bytes(seed_model("float"))
    link = tmp_path / "link.tflite"
    link.symlink_to(f)
    assert require_file(link, "model") == link and read_regular_bytes(link, "model") == f.read_bytes()
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        require_file(tmp_path / "empty.npz", "data")
    with pytest.raises(InputError, match="more than the 10 bytes allowed"):
        read_regular_bytes(f, "model", max_bytes=10)


def test_savedmodel_with_a_fifo_inside_is_refused(tmp_path):
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"pb")
    assert require_regular_tree(saved, "model") == saved
    os.mkfifo(saved / "variables" / "variables.index")
    with deadline(5), pytest.raises(InputError, match=r"variables.index, a FIFO"):
        require_regular_tree(saved, "model")
    (saved / "variables" / "variables.index").unlink()
    (saved / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="cannot be read"):
        require_regular_tree(saved, "model")


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------


def test_dev_null_destination_is_refused_and_untouched(tmp_path):
    before = os.stat("/dev/null")
    for force in (False, True):
        with pytest.raises(InputError, match="/dev/null is a character device; edgekit writes and replaces only regular files"):
            check_output_path("/dev/null", force=force)
    with pytest.raises(InputError, match="character device"):
        write_json_atomic("/dev/null", {"report": 1})
    with pytest.raises(InputError, match="character device"):
        check_output_path(tmp_path / "m.tflite", sidecars=[Path("/dev/null")], force=True)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not list(Path("/dev").glob(f"{TMP_PREFIX}*"))


def test_fifo_destination_is_refused(tmp_path, fifo):
    with deadline(5), pytest.raises(InputError, match="FIFO"):
        write_bytes_atomic(fifo, b"x", overwrite=True)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_overwrite_and_no_clobber(tmp_path):
    out = tmp_path / "m.tflite"
    write_bytes_atomic(out, b"first", overwrite=False)
    with pytest.raises(InputError, match="already exists") as info:
        write_bytes_atomic(out, b"second", overwrite=False)
    assert info.value.settings == ("force",)
    assert out.read_bytes() == b"first"
    write_bytes_atomic(out, b"third")  # overwrite=True is the default: the old behaviour
    assert out.read_bytes() == b"third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]
    with pytest.raises(InputError, match="already exists"):
        check_output_path(out)
    assert check_output_path(out, force=True) == out


def test_no_clobber_without_hard_links(tmp_path, monkeypatch):
    """On a file system without link(): the name is claimed with O_EXCL, then replaced."""
    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_link)
    out = tmp_path / "r.json"
    write_json_atomic(out, {"a": 1}, overwrite=False)
    with pytest.raises(InputError, match="already exists"):
        write_json_atomic(out, {"a": 2}, overwrite=False)
    assert out.read_text().strip().startswith("{") and '"a": 1' in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def _racer(path: str, payload: bytes, barrier, results) -> None:
    barrier.wait()
    try:
        with atomic_path(path, overwrite=False) as tmp:
            tmp.write_bytes(payload)
            time.sleep(0.05)  # every writer holds a finished temp file when the first one links
        results.put(("won", payload))
    except InputError as exc:
        results.put(("lost", exc.one_line()))


@pytest.mark.parametrize("round_", range(3))
def test_four_racing_writers_exactly_one_wins(tmp_path, round_):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    out = tmp_path / "out.tflite"
    procs = [ctx.Process(target=_racer, args=(str(out), f"writer {i}".encode() * 100, barrier, results)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in procs]
    winners = [payload for kind, payload in outcomes if kind == "won"]
    losers = [text for kind, text in outcomes if kind == "lost"]
    assert len(winners) == 1 and len(losers) == 3, outcomes
    assert all("already exists" in text for text in losers)
    assert out.read_bytes() == winners[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tflite"]  # no temp files left


def _artifact_racer(path: str, flatbuffer: bytes, tag: str, barrier, results) -> None:
    from edgekit.core.datatypes import Preprocessing
    from edgekit.core.manifest import write_artifact

    barrier.wait()
    try:
        write_artifact(path, flatbuffer, preprocessing=Preprocessing(), source={"writer": tag}, options={}, overwrite=False)
        results.put(("won", tag))
    except InputError as exc:
        results.put(("lost", exc.one_line()))


def test_four_racing_artifact_writers_one_model_one_manifest(tmp_path):
    import json

    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    out = tmp_path / "m.tflite"
    flatbuffer = seed_model("float")
    procs = [ctx.Process(target=_artifact_racer, args=(str(out), flatbuffer, f"w{i}", barrier, results)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = [results.get(timeout=5) for _ in procs]
    winners = [tag for kind, tag in outcomes if kind == "won"]
    assert len(winners) == 1, outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.tflite"]
    assert json.loads((tmp_path / "m.json").read_text())["source"] == {"writer": winners[0]}


def _folder_racer(path: str, tag: str, barrier, results) -> None:
    from pathlib import Path

    from edgekit.workflows.outdir import prepare_out_dir, staged_dir

    try:
        out = prepare_out_dir(path, force=False, inputs=[])
        barrier.wait()  # every run checked the folder before any finished (run/optimize/export race)
        with staged_dir(out, force=False) as tmp:
            (Path(tmp) / "report.json").write_text(tag)
            time.sleep(0.05)
        results.put(("won", tag))
    except InputError as exc:
        results.put(("lost", exc.one_line()))


@pytest.mark.parametrize("pre_made", [False, True])
def test_four_racing_folder_writers_exactly_one_wins(tmp_path, pre_made):
    """``run``/``optimize``/``export -o DIR`` without --force: the final rename decides, one wins."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    out = tmp_path / "out"
    if pre_made:
        out.mkdir()  # an empty folder the user made is fine to fill, once
    procs = [ctx.Process(target=_folder_racer, args=(str(out), f"w{i}", barrier, results)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in procs]
    winners = [tag for kind, tag in outcomes if kind == "won"]
    losers = [text for kind, text in outcomes if kind == "lost"]
    assert len(winners) == 1 and len(losers) == 3, outcomes
    assert all("already exists" in text for text in losers)
    assert (out / "report.json").read_text() == winners[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staged folders left
