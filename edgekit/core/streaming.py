"""Data larger than memory: TFRecord files through ``tf.data``, and disk-backed arrays.

Three pieces, used by :func:`edgekit.core.data.load_dataset` and by training
(:func:`edgekit.passes.distribute.train`):

- :func:`disk_array`: a writable ``np.memmap`` on an unlinked temporary file: it behaves as an
  array, the kernel pages it in and out (so it may be larger than memory), and it disappears with
  the process whatever happens to it;
- :func:`preprocess_to_disk`: applies preprocessing (scale/mean/std, the channel axis) to a large
  memory-mapped ``.npy``/``.npz`` member in chunks, into a disk array, instead of one float32 copy in
  memory. Arrays above ``EDGEKIT_STREAM_MB`` (default 1024 MB as float32) take this path;
- :func:`read_tfrecords`: a TFRecord spec file (YAML: the record files and which features are the
  model's inputs and targets) read with ``tf.data`` (parallel parsing, prefetching) into arrays —
  in memory when small, disk arrays beyond the threshold — with a progress callback that knows the
  count where the spec gives it.

Example spec (``train.tfdata.yaml``, given as ``--data``)::

    tfrecord: [train-*.tfrecord]        # paths or globs, relative to this file
    compression: none                   # none, GZIP or ZLIB
    records: 60000                      # optional: the count, for progress
    inputs:
      image: {dtype: uint8, shape: [28, 28, 1]}       # a model input named 'image'; shape per sample
    targets:
      label: {dtype: int64, shape: []}                # class ids of the (only) output
    labels: [t-shirt, trouser, ...]                   # optional class names
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.core.diskarray import disk_array, stream_threshold_bytes
from edgekit.core.errors import DataError
from edgekit.core.safe_yaml import load_bounded_file
from edgekit.core.tfshim import tensorflow

CHUNK_ROWS = 4096


def preprocess_to_disk(raw: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], check: Callable[[np.ndarray], None]) -> np.ndarray:
    """``fn`` (checks by ``check`` first) applied to ``raw`` in chunks of rows, into a :func:`disk_array`."""
    first = fn(np.asarray(raw[:1]))
    out = disk_array((raw.shape[0], *first.shape[1:]), first.dtype)
    for start in range(0, raw.shape[0], CHUNK_ROWS):
        chunk = np.asarray(raw[start:start + CHUNK_ROWS])
        check(chunk)
        done = fn(chunk)
        check(done)
        out[start:start + len(done)] = done
    out.flush()
    return out


# ----------------------------------------------------------------------------------------------
# TFRecord files
# ----------------------------------------------------------------------------------------------

DTYPES = ("uint8", "int8", "int32", "int64", "float32", "float16", "string")


class FeatureSpec(BaseModel):
    """One feature of the records: its dtype and per-sample shape (``[]`` for a scalar)."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["uint8", "int8", "int32", "int64", "float32", "float16", "string"] = "float32"
    shape: list[int] = Field(default_factory=list)
    encoded: Literal["raw", "tensor", "values"] = Field(
        "values", description="values: a float/int64 list feature; raw: bytes of the dtype (tf.io.decode_raw); "
                              "tensor: a serialized tensor (tf.io.serialize_tensor)")


class TFRecordSpec(BaseModel):
    """The spec file: which TFRecord files, which features are inputs and targets."""

    model_config = ConfigDict(extra="forbid")

    tfrecord: list[str]
    compression: Literal["none", "GZIP", "ZLIB"] = "none"
    records: int | None = Field(None, ge=1)
    inputs: dict[str, FeatureSpec]
    targets: dict[str, FeatureSpec] = Field(default_factory=dict)
    labels: list[str] | None = None


def is_tfrecord_spec(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml") and path.is_file()


def load_spec(path: Path) -> tuple[TFRecordSpec, list[str]]:
    """The spec and its record files (globs expanded, relative to the spec's folder); raises a DataError naming the problem."""
    raw = load_bounded_file(path, "TFRecord spec", error=DataError)
    hint = "a TFRecord spec has tfrecord (files), inputs and targets (feature name: {dtype, shape}); see `edgekit docs data`"
    if not isinstance(raw, dict) or "tfrecord" not in raw:
        raise DataError(f"data {path} is YAML but not a TFRecord spec (no 'tfrecord' key)", hint=hint)
    if isinstance(raw.get("tfrecord"), str):
        raw = {**raw, "tfrecord": [raw["tfrecord"]]}
    try:
        spec = TFRecordSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err.get("loc", ()))
        raise DataError(f"TFRecord spec {path}: {where}: {err['msg']}", hint=hint) from None
    files: list[str] = []
    for pattern in spec.tfrecord:
        full = pattern if os.path.isabs(pattern) else str(path.parent / pattern)
        found = sorted(glob.glob(full)) if any(c in pattern for c in "*?[") else [full]
        for f in found:
            if not Path(f).is_file():
                raise DataError(f"TFRecord spec {path} names {pattern}, which is not a file", hint="paths are relative to the spec file")
        if not found:
            raise DataError(f"TFRecord spec {path}: no file matches {pattern}", hint="paths are relative to the spec file")
        files.extend(found)
    return spec, files


def _parser(spec: TFRecordSpec) -> Callable[[Any], Any]:
    tf = tensorflow()
    features = {**spec.inputs, **spec.targets}
    description = {}
    for name, f in features.items():
        if f.encoded == "values":
            kind = tf.float32 if f.dtype in ("float32", "float16") else tf.int64
            description[name] = tf.io.FixedLenFeature([int(np.prod(f.shape, dtype=np.int64))] if f.shape else [], kind)
        else:
            description[name] = tf.io.FixedLenFeature([], tf.string)

    def parse(record: Any) -> Any:
        parsed = tf.io.parse_single_example(record, description)
        out = {}
        for name, f in features.items():
            value = parsed[name]
            if f.encoded == "raw":
                value = tf.io.decode_raw(value, getattr(tf, f.dtype))
            elif f.encoded == "tensor":
                value = tf.io.parse_tensor(value, getattr(tf, f.dtype))
            out[name] = tf.reshape(tf.cast(value, getattr(tf, f.dtype)), f.shape)
        return out

    return parse


def read_tfrecords(path: Path, *, progress: Callable[[int, int | None], None] | None = None
                   ) -> tuple[dict[str, np.ndarray], TFRecordSpec, list[str]]:
    """Every record of the spec's files, parsed by ``tf.data`` (parallel, prefetched): ``({feature: array}, spec, files)``.

    Features whose float32 size passes :func:`stream_threshold_bytes` go to disk arrays as they are
    read (the count comes from the spec's ``records`` or a first pass over the files).

    Raises:
        DataError: a bad spec, an unreadable or corrupt record, or a feature that does not match the spec.
    """
    tf = tensorflow()
    spec, files = load_spec(path)
    if any(f.dtype == "string" for f in {**spec.inputs, **spec.targets}.values()):
        raise DataError(f"TFRecord spec {path}: string features cannot feed a model", hint="decode them when writing the records")

    def dataset() -> Any:
        # the files one after the other, in the spec's order (the samples' order is part of the result); parsing is parallel
        return tf.data.TFRecordDataset(files, compression_type=None if spec.compression == "none" else spec.compression,
                                       buffer_size=8 * 2**20)

    try:
        count = spec.records or int(dataset().reduce(np.int64(0), lambda n, _: n + 1))
        features = {**spec.inputs, **spec.targets}
        per_row = sum(int(np.prod(f.shape, dtype=np.int64)) * 4 for f in features.values())
        on_disk = count * per_row > stream_threshold_bytes()
        arrays = {name: (disk_array if on_disk else np.empty)((count, *f.shape), np.dtype(f.dtype)) for name, f in features.items()}
        batches = dataset().map(_parser(spec), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(1024).prefetch(2)
        done = 0
        for batch in batches:
            rows = int(next(iter(batch.values())).shape[0])
            if done + rows > count:
                raise DataError(f"TFRecord spec {path} says records: {count}, the files hold more", hint="fix or drop 'records'")
            for name, value in batch.items():
                arrays[name][done:done + rows] = value.numpy()
            done += rows
            if progress is not None:
                progress(done, count)
    except tf.errors.OpError as exc:
        first = str(exc.message).splitlines()[0] if getattr(exc, "message", None) else type(exc).__name__
        raise DataError(f"TFRecord data {path} cannot be read: {first[:300]}",
                        hint="check the files are TFRecords (compression as in the spec) and each feature's dtype and shape") from None
    if done != count:
        raise DataError(f"TFRecord spec {path} says records: {count}, the files hold {done}", hint="fix or drop 'records'")
    if count == 0:
        raise DataError(f"TFRecord data {path} holds no records", hint="give files with at least one record")
    return arrays, spec, files
