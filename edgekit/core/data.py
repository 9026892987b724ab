"""Loads data for calibration and validation: ``.npz``, ``.npy`` and class-per-folder images.

The loaded samples are checked against the model's input (shape, dtype, finite values) before any
conversion or training starts, and labels against the number of classes. Large ``.npy`` inputs are
memory-mapped and only the rows asked for are read.

Example:
    >>> ds = load_dataset("val.npz", input_shape=(None, 28, 28, 1),
    ...                   preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> ds.x.dtype, len(ds)  # doctest: +SKIP
    (dtype('float32'), 1000)
"""

from __future__ import annotations

import difflib
import hashlib
import os
import zipfile
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.archive_guard import scan_npz
from edgekit.core.datatypes import Dataset, InputSpec, Preprocessing, Signature
from edgekit.core.diskarray import disk_array, is_on_disk, stream_threshold_bytes
from edgekit.core.errors import DataError, InputError
from edgekit.core.fsutil import require_file, sha256_file
from edgekit.core.numexpr import eval_number
from edgekit.core.streaming import is_tfrecord_spec, preprocess_to_disk, read_tfrecords

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

MAX_IMAGE_PIXELS = 40_000_000  # per image, checked from the header before decoding (a 6,000 x 6,600 photo); bigger is refused

DEFAULT_CALIBRATION_SAMPLES = 100  # int8 calibration sample size, the same default in every command


def parse_number(text: str) -> float:
    """Parses ``0.5``, ``1/255``, ``1/127.5`` or ``1e-3`` (safely, see :mod:`edgekit.core.numexpr`)."""
    try:
        return eval_number(text)
    except (ValueError, ZeroDivisionError, SyntaxError, OverflowError):
        raise InputError(f"'{text}' is not a number", hint="write e.g. 0.00392 or 1/255") from None


def parse_preprocessing(scale: str | None, mean: str | None, std: str | None, resize: str | None = None) -> Preprocessing:
    """Builds a :class:`Preprocessing` from CLI strings (``--scale 1/255 --mean 0.5 --std 0.5,0.5,0.5``)."""

    def values(text: str | None, what: str) -> tuple[float, ...] | None:
        if text is None:
            return None
        vals = tuple(parse_number(v) for v in text.split(",") if v.strip())
        if not vals:
            raise InputError(f"--{what} is empty", hint=f"give one value or one per channel, e.g. --{what} 0.5")
        if what == "std" and any(v == 0 for v in vals):
            raise InputError("--std contains 0", hint="std values divide the input; use non-zero values")
        return vals

    if resize is not None and resize not in RESIZE_METHODS:
        raise InputError(f"--resize must be one of {', '.join(RESIZE_METHODS)}, got '{resize}'", hint="use --resize crop")
    return Preprocessing(
        scale=parse_number(scale) if scale is not None else None,
        mean=values(mean, "mean"),
        std=values(std, "std"),
        resize=resize,
    )


def _hash_array(x: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(str((x.shape, x.dtype.str)).encode())
    for start in range(0, x.shape[0] if x.ndim else 1, 4096):
        digest.update(np.ascontiguousarray(x[start: start + 4096]).tobytes())
    return digest.hexdigest()


def _fit_shape(x: np.ndarray, input_shape: tuple[int | None, ...] | None, source: str) -> np.ndarray:
    """Checks per-sample shape against the model input; adds a missing trailing channel of 1."""
    if input_shape is None:
        return x
    want = tuple(input_shape[1:])
    got = tuple(x.shape[1:])
    if len(got) + 1 == len(want) and want[-1] == 1:
        x = x[..., None]
        got = tuple(x.shape[1:])
    ok = len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got, strict=True))
    if not ok:
        pretty = "x".join("?" if w is None else str(w) for w in want)
        raise DataError(
            f"data {source} has samples of shape {'x'.join(map(str, got)) or 'scalar'}, but the model expects {pretty}",
            hint="give data shaped (N, " + ", ".join("?" if w is None else str(w) for w in want) + ")",
        )
    return x


def _check_values(x: np.ndarray, source: str) -> None:
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"data {source} has dtype {x.dtype}, expected numbers (float or integer)",
            hint="save the inputs as a numeric numpy array",
        )
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"data {source} contains NaN or Inf in {int(bad.sum())} sample(s), first at index {first}",
                hint="clean the data (np.nan_to_num or drop those rows) before calibrating or validating",
            )


def _targets(y: np.ndarray | None, n: int, source: str, what: str = "labels") -> np.ndarray | None:
    """Targets of one output: one row per sample, finite numbers; integer-valued 1-D floats become class ids.

    What the targets mean (class ids, one-hot rows, real values, masks) is decided with the output's
    task (:func:`edgekit.core.tasks.conform_targets`); here only what holds for every task is checked.
    """
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != n:
        raise DataError(f"{what} in {source} have shape {y.shape}, expected {n} rows to match the inputs",
                        hint="give one target (class id, value or mask) per sample")
    if y.dtype.kind not in "biuf":
        raise DataError(f"{what} in {source} have dtype {y.dtype}, expected numbers", hint="convert them with y.astype(int) or y.astype(float)")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise DataError(f"{what} in {source} contain NaN or Inf", hint="clean the labels before validating or training")
        if y.ndim == 1 and np.all(y == np.round(y)) and y.size and np.abs(y).max() < 2**31:
            return y.astype(np.int64)
        return y.astype(np.float32)
    if y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int32).max:  # uint64 ids would wrap to negative as int64
        raise DataError(f"{what} in {source} go up to {int(y.max())}, beyond any class id (dtype {y.dtype})",
                        hint="class ids must be 0..classes-1; store them as int32 or int64")
    return y.astype(np.int64) if y.dtype.kind in "iub" else y


def _labels(y: np.ndarray | None, n: int, source: str) -> np.ndarray | None:
    """Class ids (one-hot rows become ids): the single-output classifier's labels."""
    y = _targets(y, n, source)
    if y is None:
        return None
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise DataError(f"labels in {source} have shape {y.shape}, expected ({n},) to match the inputs", hint="give one integer class id per sample")
    if y.dtype.kind == "f":
        raise DataError(f"labels in {source} are not whole numbers", hint="give integer class ids (0..classes-1)")
    if y.size and y.min() < 0:
        raise DataError(f"labels in {source} contain negative class ids ({int(y.min())})", hint="class ids must be 0..classes-1")
    return y.astype(np.int64)


def parse_key_map(text: str | None, default: str, what: str) -> tuple[str | None, dict[str, str]]:
    """``"x"`` -> ("x", {}); ``"image=img,meta=m"`` -> (None, {"image": "img", "meta": "m"}).

    ``--x-key``/``--y-key`` take one array name (single-input/output models) or ``name=array``
    pairs naming which array feeds which model input (or holds which output's targets).
    """
    text = default if text is None else text
    if "=" not in text:
        return text.strip() or default, {}
    found: dict[str, str] = {}
    for item in text.split(","):
        name, sep, array = item.partition("=")
        if not sep or not name.strip() or not array.strip():
            raise InputError(f"--{what} '{text}' is not a list of name=array pairs", hint=f"e.g. --{what} image=img,meta=features",
                             settings=(what.replace("-", "_"),))
        found[name.strip()] = array.strip()
    return None, found


def _check_channels(pre: Preprocessing, x: np.ndarray, source: str) -> None:
    """Per-channel mean/std must have one value or one per channel (the last axis)."""
    channels = x.shape[-1] if x.ndim > 1 else 1
    for what, values in (("mean", pre.mean), ("std", pre.std)):
        if values is not None and len(values) not in (1, channels):
            raise InputError(
                f"--{what} has {len(values)} values, but the data {source} has {channels} channel(s)",
                hint=f"give one value, or {channels} comma-separated values (one per channel)",
            )


def load_dataset(
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int | None, ...] | None = None,
    preprocessing: Preprocessing | None = None,
    x_key: str | None = None,
    y_key: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    need_labels: bool = True,
    signature: Signature | None = None,
) -> Dataset:
    """Loads inputs (and targets when present) for a model and applies preprocessing.

    Args:
        path: ``.npz`` (one array per model input, named after the input, or ``x`` for a
            single-input model; targets ``y`` for one output or ``y_<output name>`` for several;
            optional ``labels`` of class names), ``.npy`` (the one input only) or a folder with one
            subfolder of images per class (single image input).
        input_shape: the single input's shape including the batch dimension (shorthand for a
            one-input ``signature``).
        preprocessing: scale/mean/std applied to the model's float inputs; integer inputs (token
            ids) keep their values and dtype.
        x_key, y_key: an array name, or ``name=array`` pairs (``image=img,meta=m``) mapping model
            inputs / outputs to arrays.
        limit: keep at most this many samples, drawn with ``seed`` (sorted, reproducible).
        need_labels: False where targets are not used (calibration): they are then not read.
        signature: the model's inputs and outputs (names, shapes, dtypes) the data is checked against.

    Raises:
        InputError, DataError: one-line messages naming the file and what to fix.
    """
    p = Path(path)
    pre = preprocessing or Preprocessing()
    if signature is None:
        signature = Signature.single(tuple(input_shape)) if input_shape is not None else None
    specs = signature.inputs if signature is not None else ()
    out_names = signature.output_names if signature is not None else ()
    x_default, x_map = parse_key_map(x_key, "x", "x-key")
    y_default, y_map = parse_key_map(y_key, "y", "y-key")
    _check_map(x_map, [s.name for s in specs], "x-key", "input")
    _check_map(y_map, list(out_names), "y-key", "output")
    if p.is_dir():
        if len(specs) > 1:
            raise DataError(f"image folder {p} feeds one image input; the model has {len(specs)} inputs ({', '.join(s.name for s in specs)})",
                            hint="give a .npz with one array per input, named after the inputs")
        method = pre.resize or "crop"
        x, y, labels = _load_image_folder(p, specs[0].shape if specs else None, limit=limit, seed=seed, resize=method)
        pre = replace(pre, resize=method)  # recorded with the preprocessing: validate fits images the same way
        xs, ys = [x], [y]
        digest = _hash_array(x)
        limit = None  # already applied while listing the files
    else:
        require_file(p, "data file")
        suffix = p.suffix.lower()
        digest = sha256_file(p)
        if is_tfrecord_spec(p):
            xs, ys, labels, digest = _load_tfrecords(p, specs, out_names, need_labels)
        elif suffix == ".npz":
            xs, ys, labels = _load_npz(p, specs, out_names, x_default, x_map, y_default, y_map, need_labels)
        elif suffix == ".npy":
            if len(specs) > 1:
                raise DataError(f"data {p} is one array; the model has {len(specs)} inputs ({', '.join(s.name for s in specs)})",
                                hint="give a .npz with one array per input, named after the inputs")
            xs, ys, labels = [_load_npy(p)], [None] * max(1, len(out_names)), None
        else:
            raise DataError(
                f"data {p} has an unsupported type '{suffix or 'no suffix'}'",
                hint="give a .npz (arrays x and y), a .npy (inputs), a TFRecord spec (.yaml) or a folder with one subfolder per class",
            )
    n = xs[0].shape[0] if xs[0].ndim else 0
    if n == 0:
        raise DataError(f"data {p} is empty (0 samples)", hint="give at least one sample")
    names = [s.name for s in specs] or ["x"]
    for name, arr in zip(names[1:], xs[1:], strict=True):
        if arr.ndim == 0 or arr.shape[0] != n:
            raise DataError(f"data {p}: input '{name}' has {arr.shape[0] if arr.ndim else 0} samples, input '{names[0]}' has {n}",
                            hint="give every input the same number of rows")
    if not need_labels:
        ys = [None] * len(ys)
    several = len(ys) > 1
    clean = [(_targets(t, n, str(p), f"targets of output '{out_names[k]}'" if several else "labels") if several else
              (_targets(t, n, str(p)))) for k, t in enumerate(ys)]
    if limit is not None and limit < n:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, size=limit, replace=False))
        xs = [a[idx] for a in xs]
        clean = [t[idx] if t is not None else None for t in clean]
    out_x: list[np.ndarray] = []
    for k, raw in enumerate(xs):
        spec = specs[k] if specs else None
        source = str(p) if len(xs) == 1 else f"{p} (input '{names[k]}')"
        if is_on_disk(raw) and raw.size * 4 > stream_threshold_bytes():  # larger than memory may hold: preprocessed on disk
            _check_channels(pre, _fit_shape(np.asarray(raw[:1]), spec.shape if spec is not None else None, source), source)
            out_x.append(preprocess_to_disk(raw, partial(_prepared, spec=spec, source=source, pre=pre),
                                            partial(_check_values, source=source)))
            continue
        a = np.asarray(raw)  # materialize a memory-mapped selection
        _check_values(a, source)
        a = _fit_shape(a, spec.shape if spec is not None else None, source)
        if spec is None or not spec.integer:
            _check_channels(pre, a, source)
        a = _prepared(a, spec, source, pre)
        _check_values(a, source)
        out_x.append(a)
    if specs and all(s.integer for s in specs) and not pre.is_identity:
        raise InputError("--scale/--mean/--std apply to float inputs, but every input of the model is an integer (token ids)",
                         hint="drop --scale/--mean/--std for this model")
    return Dataset(x=out_x[0], y=clean[0] if clean else None, source=str(p), sha256=digest, preprocessing=pre, labels=labels,
                   more_x=tuple(out_x[1:]), more_y=tuple(clean[1:]), input_names=tuple(names) if specs else (),
                   output_names=tuple(out_names))


def _prepared(a: np.ndarray, spec: InputSpec | None, source: str, pre: Preprocessing) -> np.ndarray:
    """Samples shaped for the input, integer inputs kept whole, float inputs preprocessed (float32)."""
    a = _fit_shape(a, spec.shape if spec is not None else None, source)
    return _as_integer(a, spec, source, pre) if spec is not None and spec.integer else pre.apply(a)


def _load_tfrecords(p: Path, specs, out_names, need_labels: bool):
    """Inputs, targets, class names and a digest (spec + record files) from a TFRecord spec file."""
    arrays, spec, files = read_tfrecords(p)
    names = [s.name for s in specs] if specs else [None]
    inputs = list(spec.inputs)
    if len(names) == 1:
        if len(inputs) != 1:
            raise DataError(f"TFRecord spec {p} lists {len(inputs)} inputs ({', '.join(inputs)}); the model has one",
                            hint="list the one feature that feeds the model under inputs")
        xs = [arrays[inputs[0]]]
    else:
        missing = [n for n in names if n not in spec.inputs]
        if missing:
            raise DataError(f"TFRecord spec {p} has no input feature for the model input(s) {', '.join(map(str, missing))} "
                            f"(it lists: {', '.join(inputs)})", hint="name each input feature after the model input it feeds")
        xs = [arrays[str(n)] for n in names]
    outs = list(out_names) or [None]
    targets = list(spec.targets)
    if not need_labels or not targets:
        ys: list[np.ndarray | None] = [None] * len(outs)
    elif len(outs) == 1:
        if len(targets) != 1:
            raise DataError(f"TFRecord spec {p} lists {len(targets)} targets ({', '.join(targets)}); the model has one output",
                            hint="list the one target feature under targets")
        ys = [arrays[targets[0]]]
    else:
        ys = [arrays.get(str(o), arrays.get(f"y_{o}")) for o in outs]
    digest = hashlib.sha256(sha256_file(p).encode() + b"".join(sha256_file(f).encode() for f in files)).hexdigest()
    return xs, ys, tuple(spec.labels) if spec.labels else None, digest


def _as_integer(a: np.ndarray, spec: InputSpec, source: str, pre: Preprocessing) -> np.ndarray:
    """Integer inputs (token ids, class indices) keep their values: whole numbers in the input's dtype."""
    dtype = np.dtype(spec.dtype)
    if a.dtype.kind == "f" and not np.all(a == np.round(a)):
        raise DataError(f"data {source} has fractional values, but the model input '{spec.name}' is {dtype.name}",
                        hint="give integer ids for integer inputs (and no --scale/--mean/--std for them)")
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    if info is not None and a.size and (a.min() < info.min or a.max() > info.max):
        raise DataError(f"data {source} has values {a.min()}..{a.max()}, beyond the model input '{spec.name}' ({dtype.name})",
                        hint=f"give values within {info.min}..{info.max}")
    return a.astype(dtype)


def _check_map(mapping: dict[str, str], names: list[str], option: str, what: str) -> None:
    """Every name in a ``name=array`` mapping must be one of the model's inputs/outputs."""
    if not names:
        return
    for name in mapping:
        if name not in names:
            raise InputError(f"--{option} names '{name}', which is no {what} of the model ({what}s: {', '.join(names)})"
                             + _did_you_mean(name, names, cutoff=0.5), hint=f"use the {what} names edgekit inspect shows",
                             settings=(option.replace("-", "_"),))


def _npz_member_memmap(p: Path, key: str) -> np.ndarray | None:
    """A read-only memory map of an uncompressed (``np.savez``) member, or None if compressed.

    Lets a data file far larger than memory be sampled without reading it whole.
    """
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(p, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if local[:4] != b"PK\x03\x04":
                return None
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            fh.seek(start)
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject:
                return None
            offset = fh.tell()
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _pick(keys: list[str], candidates: list[str]) -> str | None:
    return next((c for c in candidates if c in keys), None)


def _did_you_mean(name: str, keys: list[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(name, keys, n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""


def _load_npz(p: Path, specs, out_names, x_default: str | None, x_map: dict[str, str], y_default: str | None,
              y_map: dict[str, str], need_labels: bool):
    """Arrays of an .npz matched to the model's inputs and outputs by name.

    One input: ``x`` (or ``--x-key``), or the input's name. Several: each input's name (or its
    ``--x-key name=array``). Targets: ``y`` (or ``--y-key``) or ``y_<output>`` for one output;
    ``y_<output>`` (or ``--y-key output=array``) each for several. Returns (inputs, targets, labels).
    """
    scan_npz(p)  # declared sizes and array headers before numpy allocates anything (an .npz bomb is refused)
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = list(npz.files)
            have = ", ".join(keys) or "none"
            names = [s.name for s in specs] if specs else [None]
            x_arrays: list[str] = []
            for name in names:
                if len(names) == 1:
                    cands = [x_map[name]] if name is not None and name in x_map else [c for c in (x_default, name) if c]
                else:
                    cands = [x_map.get(str(name), str(name))]
                found = _pick(keys, cands)
                if found is None:
                    if len(names) == 1:
                        raise DataError(f"data {p} has no array '{cands[0]}' (it has: {have}){_did_you_mean(cands[0], keys)}",
                                        hint="name the input array with --x-key" + (f" (or name it '{name}')" if name else ""))
                    raise DataError(f"data {p} has no array for the model input '{name}' (it has: {have}); the model's inputs are "
                                    f"{', '.join(str(n) for n in names)}",
                                    hint=f"name one array per input after the input, or map them with --x-key {name}=ARRAY")
                x_arrays.append(found)
            outs = list(out_names) or [None]
            y_arrays: list[str | None] = []
            for name in outs:
                if len(outs) == 1:
                    cands = [y_map[name]] if name in y_map else [c for c in (y_default, f"y_{name}" if name else None) if c]
                else:
                    cands = [y_map.get(name, f"y_{name}")]
                found_y = _pick(keys, cands) if need_labels else None
                asked = y_map.get(name) if name is not None and name in y_map else (y_default if len(outs) == 1 and y_default != "y" else None)
                if need_labels and found_y is None and asked is not None:  # a target array the user named is missing: never silent
                    raise DataError(f"data {p} has no target array '{asked}' (it has: {have}){_did_you_mean(asked, keys)}",
                                    hint="name the targets with --y-key (or leave it out to validate without labels)")
                y_arrays.append(found_y)
            if need_labels and len(outs) > 1 and all(a is None for a in y_arrays) and (y_default or "y") in keys:
                raise DataError(f"data {p} has one target array '{y_default or 'y'}', but the model has {len(outs)} outputs "
                                f"({', '.join(str(o) for o in outs)})",
                                hint="name each output's targets y_<output name>, or map them with --y-key OUTPUT=ARRAY")
            xs = []
            for key in x_arrays:
                arr = _npz_member_memmap(p, key)
                xs.append(arr if arr is not None else npz[key])
            ys = [npz[key] if key is not None else None for key in y_arrays]
            labels = tuple(str(v) for v in npz["labels"].tolist()) if "labels" in keys and npz["labels"].dtype.kind == "U" else None
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"data {p} holds Python objects (pickled arrays)", hint="edgekit never unpickles data; save plain numeric arrays") from None
        raise DataError(f"data {p} cannot be read as .npz: {exc}", hint="save it with numpy.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DataError(f"data {p} cannot be read as .npz ({type(exc).__name__}: truncated or corrupt?)", hint="save it again with numpy.savez") from None
    return xs, ys, labels


def _load_npy(p: Path) -> np.ndarray:
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"data {p} holds Python objects (pickled array)", hint="edgekit never unpickles data; save a plain numeric array") from None
        raise DataError(f"data {p} cannot be read as .npy: {exc}", hint="save it with numpy.save") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"data {p} cannot be read as .npy ({type(exc).__name__}: truncated or corrupt?)", hint="save it again with numpy.save") from None


#: how an image folder's images are fitted to the model's input: ``crop`` (to the input's aspect
#: ratio, centred, then resize; what most training pipelines do), ``stretch`` (resize ignoring the
#: aspect ratio) or ``pad`` (resize to fit inside, pad with black, centred)
RESIZE_METHODS = ("crop", "stretch", "pad")
#: the interpolation used to resize (recorded in manifests so validate re-applies it)
IMAGE_INTERPOLATION = "bilinear"


def fit_image(image: Any, width: int, height: int, method: str = "crop") -> Any:
    """``image`` (a PIL image) fitted to ``width`` x ``height`` with ``method`` (see :data:`RESIZE_METHODS`)."""
    from PIL import Image

    if method not in RESIZE_METHODS:
        raise InputError(f"resize must be one of {', '.join(RESIZE_METHODS)}, got '{method}'", hint="use --resize crop",
                         settings=("resize",))
    bilinear = Image.Resampling.BILINEAR
    w, h = image.size
    if method == "stretch" or w * height == h * width:
        return image.resize((width, height), bilinear)
    if method == "crop":
        if w * height > h * width:  # too wide: keep the centre columns
            keep = h * width / height
            box = ((w - keep) / 2, 0.0, (w + keep) / 2, float(h))
        else:
            keep = w * height / width
            box = (0.0, (h - keep) / 2, float(w), (h + keep) / 2)
        return image.resize((width, height), bilinear, box=box)
    ratio = min(width / w, height / h)  # pad
    inner = image.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), bilinear)
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(inner, ((width - inner.size[0]) // 2, (height - inner.size[1]) // 2))
    return canvas


def _load_image_folder(p: Path, input_shape: tuple[int | None, ...] | None, *, limit: int | None = None, seed: int = 0,
                       resize: str = "crop"):
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {p} has no class subfolders", hint="arrange images as FOLDER/<class name>/<image>.png")
    if input_shape is None or len(input_shape) != 4:
        raise DataError(f"image folder {p} needs a model with an image input (N, H, W, C)", hint="use a .npz file for other inputs")
    _, height, width, channels = input_shape
    if height is None or width is None:
        raise DataError("the model's input has no fixed height/width to resize images to", hint="give a .npz with the images already sized")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels or 3)
    if mode is None:
        raise DataError(f"the model expects {channels} channels; images can be read as 1, 3 or 4", hint="give a .npz instead")
    files = [
        (f, label) for label, cls in enumerate(classes)
        for f in sorted((p / cls).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if limit is not None and limit < len(files):  # decode only the sampled images
        rng = np.random.default_rng(seed)
        files = [files[i] for i in np.sort(rng.choice(len(files), size=limit, replace=False))]
    if not files:
        raise DataError(f"image folder {p} contains no images ({', '.join(IMAGE_SUFFIXES)})", hint="add images under FOLDER/<class>/")
    depth = channels or 3
    # decoded into memory, or (more than EDGEKIT_STREAM_MB as float32) into a disk-backed memory map
    make = disk_array if len(files) * height * width * depth * 4 > stream_threshold_bytes() else np.empty
    xs = make((len(files), height, width, depth), np.uint8)
    ys = np.empty(len(files), np.int64)
    for row, (f, label) in enumerate(files):
        try:
            with Image.open(f) as opened:
                w, h = opened.size  # from the header: nothing is decoded yet
                if w * h > MAX_IMAGE_PIXELS:
                    raise DataError(f"image {f} is {w}x{h} pixels ({w * h / 1e6:.0f} MP), over edgekit's limit of "
                                    f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP per image (decoding it could take minutes and gigabytes)",
                                    hint="resize the images to about the model's input size first")
                arr = np.asarray(fit_image(opened.convert(mode), width, height, resize), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"image {f} cannot be read ({type(exc).__name__})", hint="remove or replace the file") from None
        xs[row] = arr.reshape(height, width, depth)
        ys[row] = label
    return xs, ys, tuple(classes)


Calibration = np.ndarray | tuple[np.ndarray, ...]  # one array per model input (a bare array for one input)


def rows_of(x: Calibration) -> int:
    """The number of samples of one input array or of a tuple of them."""
    return int(len(x[0]) if isinstance(x, tuple) else len(x))


def take_rows(x: Calibration, idx: np.ndarray) -> Calibration:
    """The rows ``idx`` of one input array or of every array of a tuple."""
    return tuple(a[idx] for a in x) if isinstance(x, tuple) else x[idx]


def sample_rows(x: Calibration, samples: int, seed: int = 0) -> Calibration:
    """A seeded sample of ``samples`` rows of ``x`` (all of them if fewer), in their order.

    The one draw every int8 path calibrates with (quantize, export, a recipe's steps, qat's PTQ
    column, optimize's candidates): the same data, sample size and seed give the same rows, so the
    same model converts to the same bytes whichever command asks. ``load_dataset(limit=, seed=)``
    draws the same rows.
    """
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}", hint="e.g. samples 100", settings=("samples",))
    n = rows_of(x)
    if samples >= n:
        return x
    rng = np.random.default_rng(seed)
    return take_rows(x, np.sort(rng.choice(n, size=samples, replace=False)))


def calibration_sample(dataset: Dataset, samples: int = DEFAULT_CALIBRATION_SAMPLES, seed: int = 0) -> Calibration:
    """A seeded sample of ``samples`` inputs of ``dataset`` (all of them if fewer), in dataset order (:func:`sample_rows`).

    One array for a single-input model, a tuple (model input order) for several.
    """
    return sample_rows(calibration_inputs(dataset), samples, seed)


def calibration_inputs(dataset: Dataset) -> Calibration:
    """The dataset's inputs as calibration takes them: the array for one input, a tuple for several."""
    return dataset.x if not dataset.more_x else dataset.inputs
