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

import hashlib
import os
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset, Preprocessing
from edgekit.core.errors import DataError, InputError
from edgekit.core.fsutil import require_file, sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def parse_number(text: str) -> float:
    """Parses ``0.5``, ``1/255`` or ``1e-3``."""
    try:
        return float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"'{text}' is not a number", hint="write e.g. 0.00392 or 1/255") from None


def parse_preprocessing(scale: str | None, mean: str | None, std: str | None) -> Preprocessing:
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

    return Preprocessing(
        scale=parse_number(scale) if scale is not None else None,
        mean=values(mean, "mean"),
        std=values(std, "std"),
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


def _labels(y: np.ndarray | None, n: int, source: str) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"labels in {source} have shape {y.shape}, expected ({n},) to match the inputs", hint="give one integer class id per sample")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"labels in {source} are not whole numbers", hint="give integer class ids (0..classes-1)")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(f"labels in {source} have dtype {y.dtype}, expected integer class ids", hint="convert them with y.astype(int)")
    if y.size and y.min() < 0:
        raise DataError(f"labels in {source} contain negative class ids ({int(y.min())})", hint="class ids must be 0..classes-1")
    return y.astype(np.int64)


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
    x_key: str = "x",
    y_key: str = "y",
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Loads inputs (and labels when present) and applies preprocessing.

    Args:
        path: ``.npz`` (arrays ``x_key``, ``y_key``, optional ``labels`` of class names),
            ``.npy`` (inputs only) or a folder with one subfolder of images per class.
        input_shape: the model's input shape including the batch dimension; samples are checked
            against it (and images resized to it).
        preprocessing: scale/mean/std applied to the raw values.
        limit: keep at most this many samples, drawn with ``seed`` (sorted, reproducible).

    Raises:
        InputError, DataError: one-line messages naming the file and what to fix.
    """
    p = Path(path)
    pre = preprocessing or Preprocessing()
    if p.is_dir():
        x, y, labels = _load_image_folder(p, input_shape, limit=limit, seed=seed)
        digest = _hash_array(x)
        limit = None  # already applied while listing the files
    else:
        require_file(p, "data file")
        suffix = p.suffix.lower()
        digest = sha256_file(p)
        if suffix == ".npz":
            x, y, labels = _load_npz(p, x_key, y_key)
        elif suffix == ".npy":
            x, y, labels = _load_npy(p), None, None
        else:
            raise DataError(
                f"data {p} has an unsupported type '{suffix or 'no suffix'}'",
                hint="give a .npz (arrays x and y), a .npy (inputs) or a folder with one subfolder per class",
            )
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"data {p} is empty (0 samples)", hint="give at least one sample")
    y_clean = _labels(y, x.shape[0], str(p))
    if limit is not None and limit < x.shape[0]:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(x.shape[0], size=limit, replace=False))
        x = x[idx]
        y_clean = y_clean[idx] if y_clean is not None else None
    x = np.asarray(x)  # materialize a memory-mapped selection
    _check_values(x, str(p))
    x = _fit_shape(x, input_shape, str(p))
    _check_channels(pre, x, str(p))
    xp = pre.apply(x)
    _check_values(xp, str(p))
    return Dataset(x=xp, y=y_clean, source=str(p), sha256=digest, preprocessing=pre, labels=labels)


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


def _load_npz(p: Path, x_key: str, y_key: str):
    try:
        with np.load(p, allow_pickle=False) as npz:
            keys = list(npz.files)
            if x_key not in keys:
                raise DataError(
                    f"data {p} has no array '{x_key}' (it has: {', '.join(keys) or 'none'})",
                    hint="name the input array with --x-key",
                )
            x = _npz_member_memmap(p, x_key)
            if x is None:
                x = npz[x_key]
            y = npz[y_key] if y_key in keys else None
            labels = tuple(str(v) for v in npz["labels"].tolist()) if "labels" in keys and npz["labels"].dtype.kind == "U" else None
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(f"data {p} holds Python objects (pickled arrays)", hint="edgekit never unpickles data; save plain numeric arrays") from None
        raise DataError(f"data {p} cannot be read as .npz: {exc}", hint="save it with numpy.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DataError(f"data {p} cannot be read as .npz ({type(exc).__name__}: truncated or corrupt?)", hint="save it again with numpy.savez") from None
    return x, y, labels


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
    xs, ys = [], []
    for f, label in files:
        try:
            with Image.open(f) as opened:
                arr = np.asarray(fit_image(opened.convert(mode), width, height, resize), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"image {f} cannot be read ({type(exc).__name__})", hint="remove or replace the file") from None
        xs.append(arr.reshape(height, width, -1))
        ys.append(label)
    if not xs:
        raise DataError(f"image folder {p} contains no images ({', '.join(IMAGE_SUFFIXES)})", hint="add images under FOLDER/<class>/")
    return np.stack(xs), np.asarray(ys, dtype=np.int64), tuple(classes)


def calibration_sample(dataset: Dataset, samples: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``samples`` inputs (all of them if fewer), in dataset order."""
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}", hint="use e.g. --samples 100")
    n = len(dataset)
    if samples >= n:
        return dataset.x
    rng = np.random.default_rng(seed)
    return dataset.x[np.sort(rng.choice(n, size=samples, replace=False))]
