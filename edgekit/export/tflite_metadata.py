"""Standard TFLite metadata: what MediaPipe Tasks, Android Studio's ML binding and LiteRT's support library read.

A ``.tflite`` file can carry a ``TFLITE_METADATA`` entry: a flatbuffer of the *metadata schema*
(``metadata_schema.fbs``, file identifier ``M001``, published in tflite-support and MediaPipe,
``mediapipe/tasks/metadata/metadata_schema.fbs``, schema 1.5.0) holding the model's name, version
and description, and for each input and output tensor its content (image or feature), its
normalization ``(x - mean) / std`` on raw values, its value range (``Stats``), and associated
files such as a ``labels.txt`` (type ``TENSOR_AXIS_LABELS``). The files themselves are appended to
the model as an **uncompressed zip archive** (readers memory-map them; MediaPipe refuses
compressed entries), which LiteRT ignores because a flatbuffer is addressed from its start.

Why edgekit writes it itself: no maintained writer installs beside TensorFlow 2.21 today.
``tflite-support`` 0.4.4 (its ``metadata_writers``) needs protobuf < 4 while TensorFlow 2.21 needs
protobuf >= 6.31; MediaPipe's bundled writers (``mediapipe.tasks.python.metadata``) fail on import in
0.10.30 to 1.2.x; MediaPipe 0.10.21 works but pins numpy < 2, which TensorFlow 2.21 cannot use.
The schema is small and stable, so this module encodes and decodes the tables edgekit needs
directly with the ``flatbuffers`` runtime package, by field slot as the schema declares them
(a field's slot is its position in its table; new schema versions only append fields). The
encoder writes nothing newer than schema 1.0.0, which every reader accepts.

Conversion of edgekit's preprocessing: edgekit applies ``((x * scale) - mean) / std`` to raw values;
the schema's normalization is ``(x - mean') / std'`` on the same raw values, so
``mean' = mean / scale`` and ``std' = std / scale`` per channel (``mean`` 0 and ``std`` 1 when not
declared, ``scale`` 1 when not declared): see :func:`normalization_for`.

Example:
    >>> meta, files = describe_model(info, name="fashion", version="1", description="...",
    ...                              preprocessing=Preprocessing(scale=1 / 255),
    ...                              labels=["T-shirt/top", ...])  # doctest: +SKIP
    >>> data = write_standard_metadata(flatbuffer, meta, files)  # doctest: +SKIP
    >>> read_standard_metadata(data).labels()  # doctest: +SKIP
    ['T-shirt/top', ...]
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekit.core.datatypes import Preprocessing
from edgekit.core.errors import InputError, ModelError
from edgekit.core.io_order import output_order
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
#: the schema version of every field this encoder writes (ModelMetadata.min_parser_version)
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"

# enums of metadata_schema.fbs
FILE_TYPES = {0: "unknown", 1: "descriptions", 2: "tensor_axis_labels", 3: "tensor_value_labels",
              4: "tensor_axis_score_calibration", 5: "vocabulary", 6: "scann_index_file"}
COLOR_SPACES = {0: "unknown", 1: "rgb", 2: "grayscale"}
CONTENT_TYPES = {0: "none", 1: "feature", 2: "image", 3: "bounding_box", 4: "audio"}
PROCESS_UNIT_TYPES = {0: "none", 1: "normalization", 2: "score_calibration", 3: "score_thresholding",
                      4: "bert_tokenizer", 5: "sentencepiece_tokenizer", 6: "regex_tokenizer"}


class _ToDict:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (tuples become lists)."""
        return _json_ready(asdict(self))  # type: ignore[call-overload]


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _code(table: dict[int, str], name: str) -> int:
    for code, value in table.items():
        if value == name:
            return code
    raise ValueError(f"unknown value {name!r}; expected one of {', '.join(table.values())}")


@dataclass(frozen=True)
class AssociatedFile(_ToDict):
    """An associated file entry (the file's bytes travel in the appended zip)."""

    name: str
    type: str = "unknown"  # a FILE_TYPES value
    description: str = ""
    locale: str | None = None


@dataclass(frozen=True)
class Normalization(_ToDict):
    """``(x - mean) / std`` on raw values, per channel (one value: every channel)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class TensorMetadata(_ToDict):
    """Metadata of one input or output tensor."""

    name: str
    description: str = ""
    content: str = "feature"  # a CONTENT_TYPES value
    color_space: str | None = None  # images: a COLOR_SPACES value
    normalization: Normalization | None = None
    range_min: tuple[float, ...] | None = None  # Stats.min: the values the tensor takes, per channel
    range_max: tuple[float, ...] | None = None
    associated_files: tuple[AssociatedFile, ...] = ()
    process_units: tuple[str, ...] = ()  # read only: every process unit's type, normalization included


@dataclass(frozen=True)
class ModelMetadata(_ToDict):
    """The ``ModelMetadata`` root table (main subgraph only)."""

    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    inputs: tuple[TensorMetadata, ...] = ()
    outputs: tuple[TensorMetadata, ...] = ()
    associated_files: tuple[AssociatedFile, ...] = ()
    min_parser_version: str = MIN_PARSER_VERSION


@dataclass(frozen=True)
class StandardMetadata:
    """Standard metadata read from a model: the table and the associated files' bytes."""

    metadata: ModelMetadata
    files: dict[str, bytes] = field(default_factory=dict)

    def labels(self, output: int = 0) -> list[str] | None:
        """The class names of output ``output`` (its first ``tensor_axis_labels`` file), or None."""
        if output >= len(self.metadata.outputs):
            return None
        for f in self.metadata.outputs[output].associated_files:
            if f.type == "tensor_axis_labels" and f.name in self.files:
                lines = self.files[f.name].decode("utf-8", "replace").split("\n")
                return [line.rstrip("\r") for line in (lines[:-1] if lines and lines[-1] == "" else lines)]
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the table, the associated files (name and size) and the labels of output 0."""
        return {
            **self.metadata.to_dict(),
            "files": {name: len(data) for name, data in sorted(self.files.items())},
            "labels": self.labels(0),
        }


# ----------------------------------------------------------------------------------------------
# Building the metadata edgekit writes
# ----------------------------------------------------------------------------------------------


def normalization_for(preprocessing: Preprocessing, channels: int | None = None) -> Normalization:
    """The schema's ``(x - mean') / std'`` equal to edgekit's ``((x * scale) - mean) / std``.

    ``mean' = mean / scale`` and ``std' = std / scale``, per channel; a one-value mean or std is
    repeated to the length of the other (so MediaPipe, which needs equal lengths, accepts it).

    Example:
        >>> normalization_for(Preprocessing(scale=1 / 255))
        Normalization(mean=(0.0,), std=(255.0,))
        >>> normalization_for(Preprocessing(scale=1 / 255, mean=(0.5,), std=(0.25,)))
        Normalization(mean=(127.5,), std=(63.75,))

    Raises:
        InputError: a zero or non-finite scale or std, or per-channel values that do not match
            ``channels``.
    """
    scale = 1.0 if preprocessing.scale is None else float(preprocessing.scale)
    mean = tuple(float(v) for v in (preprocessing.mean or (0.0,)))
    std = tuple(float(v) for v in (preprocessing.std or (1.0,)))
    if scale == 0 or not math.isfinite(scale) or any(s == 0 or not math.isfinite(s) for s in std):
        raise InputError(f"preprocessing {preprocessing.to_dict()} cannot be written as normalization metadata (zero or non-finite scale/std)",
                         hint="declare a non-zero scale and std", settings=("scale", "std"))
    width = max(len(mean), len(std))
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, width) or (channels and len(values) not in (1, channels)):
            raise InputError(f"preprocessing {name} has {len(values)} values, the input has {channels} channel(s)",
                             hint=f"give one {name} value or one per channel", settings=(name,))
    mean = mean * width if len(mean) == 1 else mean
    std = std * width if len(std) == 1 else std
    return Normalization(mean=tuple(m / scale for m in mean), std=tuple(s / scale for s in std))


def describe_model(
    info: TfliteInfo,
    *,
    name: str,
    version: str = "",
    description: str = "",
    author: str = "",
    license: str = "",
    preprocessing: Preprocessing | None = None,
    labels: list[str] | tuple[str, ...] | None = None,
    raw_range: tuple[float, float] = (0.0, 255.0),
    image: bool | None = None,
) -> tuple[ModelMetadata, dict[str, bytes]]:
    """The standard metadata edgekit writes for a model, and its associated files.

    Input 0 gets the normalization of ``preprocessing`` and its value range (``raw_range`` of the
    raw data, preprocessed; for an integer input, the dtype's range); it is described as an image
    when ``image`` is True, or when None and it is ``[1, H, W, C]`` with C in 1, 3, 4. Output 0 gets
    ``labels`` as ``labels.txt`` when given. Other tensors get a name only.

    Raises:
        InputError: labels that do not fit output 0 or contain line breaks; bad preprocessing.
    """
    pre = preprocessing or Preprocessing()
    files: dict[str, bytes] = {}
    inputs = []
    for index, spec in enumerate(info.inputs):
        if index > 0:
            inputs.append(TensorMetadata(name=spec.name))
            continue
        shape = tuple(spec.shape)
        is_image = image if image is not None else (len(shape) == 4 and shape[-1] in (1, 3, 4) and min(shape[1:3]) > 1)
        channels = shape[-1] if len(shape) >= 2 and shape[-1] > 0 else None
        norm = normalization_for(pre, channels)
        low: tuple[float, ...]
        high: tuple[float, ...]
        if spec.dtype in ("uint8", "int8", "int16"):
            bounds = np.iinfo(np.dtype(spec.dtype))
            low, high = (float(bounds.min),), (float(bounds.max),)
        else:
            low = tuple(float((raw_range[0] - m) / s) for m, s in zip(norm.mean, norm.std))
            high = tuple(float((raw_range[1] - m) / s) for m, s in zip(norm.mean, norm.std))
        inputs.append(TensorMetadata(
            name=spec.name,
            description=f"{'image' if is_image else 'input'} {'x'.join(str(d) for d in shape)}; raw values x in "
                        f"[{raw_range[0]:g}, {raw_range[1]:g}] are normalized as (x - mean) / std",
            content="image" if is_image else "feature",
            color_space=({1: "grayscale", 3: "rgb", 4: "rgb"}.get(channels or 0, "unknown") if is_image else None),
            normalization=norm, range_min=low, range_max=high, process_units=("normalization",),
        ))
    outputs = []
    order = output_order(info)  # labels go with the model's first output (the file may list its outputs in another order)
    fits = [i for i in order if labels and info.outputs[i].shape and info.outputs[i].shape[-1] == len(labels)]
    label_index = fits[0] if fits else (order[0] if order else 0)
    for index, spec in enumerate(info.outputs):
        attached: tuple[AssociatedFile, ...] = ()
        if index == label_index and labels:
            classes = spec.shape[-1] if spec.shape else 0
            if any("\n" in str(label) or "\r" in str(label) for label in labels):
                raise InputError("a label contains a line break; labels.txt holds one label per line", hint="remove line breaks from the class names")
            if classes > 0 and len(labels) != classes:
                raise InputError(f"{len(labels)} labels given but output {spec.name} has {classes} classes",
                                 hint="give one class name per output class", settings=("labels",))
            files[LABELS_FILE] = ("\n".join(str(label) for label in labels) + "\n").encode("utf-8")
            attached = (AssociatedFile(name=LABELS_FILE, type="tensor_axis_labels", description="class names, one per line"),)
        outputs.append(TensorMetadata(name=spec.name, description="class scores" if attached else "", content="feature",
                                      associated_files=attached))
    meta = ModelMetadata(name=name, description=description, version=version, author=author, license=license,
                         inputs=tuple(inputs), outputs=tuple(outputs))
    return meta, files


def add_standard_metadata(flatbuffer: bytes, *, name: str, version: str = "", description: str = "", author: str = "",
                          license: str = "", preprocessing: Preprocessing | None = None,
                          labels: list[str] | tuple[str, ...] | None = None) -> bytes:
    """:func:`describe_model` + :func:`write_standard_metadata` in one call: the model with standard metadata.

    The one call an artifact writer needs; run it **last** (after any other metadata entry).
    """
    meta, files = describe_model(parse_tflite_bytes(flatbuffer), name=name, version=version, description=description, author=author,
                                 license=license, preprocessing=preprocessing, labels=labels)
    return write_standard_metadata(flatbuffer, meta, files)


def preprocessing_from_normalization(norm: Normalization) -> Preprocessing:
    """edgekit's preprocessing equal to a schema normalization ``(x - mean) / std`` (for files without a manifest).

    Example:
        >>> preprocessing_from_normalization(Normalization(mean=(127.5,), std=(127.5,)))
        Preprocessing(scale=None, mean=(127.5,), std=(127.5,))
    """
    return Preprocessing(scale=None, mean=tuple(norm.mean), std=tuple(norm.std))


# ----------------------------------------------------------------------------------------------
# Encoding (slots follow metadata_schema.fbs; a union takes two slots: type, then value)
# ----------------------------------------------------------------------------------------------


def _flatbuffers():
    import flatbuffers  # a dependency of ai-edge-litert and tensorflow; pure Python

    return flatbuffers


def _strings(builder: Any, values: list[str]) -> int:
    offsets = [builder.CreateString(v) for v in values]
    builder.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return builder.EndVector()


def _tables(builder: Any, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return builder.EndVector()


def _floats(builder: Any, values: tuple[float, ...]) -> int:
    return builder.CreateNumpyVector(np.asarray(values, dtype=np.float32))


def _table(builder: Any, fields: list[tuple[int, str, Any]]) -> int:
    """Writes a table from ``(slot, kind, value)``: kind ``off`` (an offset already built), ``u8``, ``i8``, ``u32``, ``i32``."""
    builder.StartObject(1 + max((slot for slot, _, _ in fields), default=-1))
    for slot, kind, value in fields:
        if kind == "off":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind in ("u8", "i8"):
            (builder.PrependUint8Slot if kind == "u8" else builder.PrependInt8Slot)(slot, value, 0)
        elif kind in ("u32", "i32"):
            (builder.PrependUint32Slot if kind == "u32" else builder.PrependInt32Slot)(slot, value, 0)
    return builder.EndObject()


def _encode_file(builder: Any, f: AssociatedFile) -> int:
    name = builder.CreateString(f.name)
    desc = builder.CreateString(f.description) if f.description else None
    locale = builder.CreateString(f.locale) if f.locale else None
    fields = [(0, "off", name), (2, "i8", _code(FILE_TYPES, f.type))]
    fields += [(1, "off", desc)] if desc is not None else []
    fields += [(3, "off", locale)] if locale is not None else []
    return _table(builder, fields)


def _encode_tensor(builder: Any, t: TensorMetadata) -> int:
    name = builder.CreateString(t.name)
    desc = builder.CreateString(t.description) if t.description else None
    # Content { content_properties_type:0, content_properties:1, range:2 }
    if t.content == "image":
        props = _table(builder, [(0, "i8", _code(COLOR_SPACES, t.color_space or "unknown"))])  # ImageProperties.color_space
    else:
        props = _table(builder, [])  # FeatureProperties {}
    content = _table(builder, [(0, "u8", _code(CONTENT_TYPES, t.content)), (1, "off", props)])
    units = []
    if t.normalization is not None:  # NormalizationOptions { mean:0, std:1 }; ProcessUnit { options_type:0, options:1 }
        mean, std = _floats(builder, t.normalization.mean), _floats(builder, t.normalization.std)
        options = _table(builder, [(0, "off", mean), (1, "off", std)])
        units.append(_table(builder, [(0, "u8", 1), (1, "off", options)]))
    stats = None
    if t.range_min is not None or t.range_max is not None:  # Stats { max:0, min:1 }
        fields = [(0, "off", _floats(builder, t.range_max))] if t.range_max is not None else []
        fields += [(1, "off", _floats(builder, t.range_min))] if t.range_min is not None else []
        stats = _table(builder, fields)
    files = _tables(builder, [_encode_file(builder, f) for f in t.associated_files]) if t.associated_files else None
    units_vec = _tables(builder, units) if units else None
    # TensorMetadata { name:0, description:1, dimension_names:2, content:3, process_units:4, stats:5, associated_files:6 }
    fields = [(0, "off", name), (3, "off", content)]
    fields += [(1, "off", desc)] if desc is not None else []
    fields += [(4, "off", units_vec)] if units_vec is not None else []
    fields += [(5, "off", stats)] if stats is not None else []
    fields += [(6, "off", files)] if files is not None else []
    return _table(builder, fields)


def encode_metadata(meta: ModelMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) for the ``TFLITE_METADATA`` buffer."""
    builder = _flatbuffers().Builder(1024)
    inputs = _tables(builder, [_encode_tensor(builder, t) for t in meta.inputs])
    outputs = _tables(builder, [_encode_tensor(builder, t) for t in meta.outputs])
    # SubGraphMetadata { name:0, description:1, input_tensor_metadata:2, output_tensor_metadata:3, ... }
    subgraph = _table(builder, [(2, "off", inputs), (3, "off", outputs)])
    subgraphs = _tables(builder, [subgraph])
    model_files = _tables(builder, [_encode_file(builder, f) for f in meta.associated_files]) if meta.associated_files else None
    strings = {slot: builder.CreateString(value) for slot, value in
               ((0, meta.name), (1, meta.description), (2, meta.version), (4, meta.author), (5, meta.license), (7, meta.min_parser_version))
               if value}
    # ModelMetadata { name:0, description:1, version:2, subgraph_metadata:3, author:4, license:5, associated_files:6, min_parser_version:7 }
    fields = [(slot, "off", off) for slot, off in strings.items()] + [(3, "off", subgraphs)]
    fields += [(6, "off", model_files)] if model_files is not None else []
    builder.Finish(_table(builder, fields), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


# ----------------------------------------------------------------------------------------------
# Decoding (any writer's metadata; unknown fields are skipped, truncation is a ModelError)
# ----------------------------------------------------------------------------------------------


class _Table:
    """Bounds-checked reading of one flatbuffer table by slot."""

    def __init__(self, buf: bytes, pos: int) -> None:
        flatbuffers = _flatbuffers()
        if not 0 <= pos < len(buf):
            raise IndexError("table outside the buffer")
        self.buf = buf
        self.tab = flatbuffers.table.Table(buf, pos)
        self.n = flatbuffers.number_types

    def _offset(self, slot: int) -> int:
        return int(self.tab.Offset(4 + 2 * slot))

    def string(self, slot: int) -> str | None:
        o = self._offset(slot)
        return self.tab.String(o + self.tab.Pos).decode("utf-8", "replace") if o else None

    def scalar(self, slot: int, flags: Any, default: int = 0) -> int:
        o = self._offset(slot)
        return int(self.tab.Get(flags, o + self.tab.Pos)) if o else default

    def table(self, slot: int) -> _Table | None:
        o = self._offset(slot)
        return _Table(self.buf, self.tab.Indirect(o + self.tab.Pos)) if o else None

    def tables(self, slot: int) -> list[_Table]:
        o = self._offset(slot)
        if not o:
            return []
        n, start = self.tab.VectorLen(o), self.tab.Vector(o)
        if n < 0 or start + 4 * n > len(self.buf):
            raise IndexError("vector past the end")
        return [_Table(self.buf, self.tab.Indirect(start + 4 * i)) for i in range(n)]

    def floats(self, slot: int) -> tuple[float, ...] | None:
        o = self._offset(slot)
        if not o:
            return None
        if self.tab.Vector(o) + 4 * self.tab.VectorLen(o) > len(self.buf):
            raise IndexError("vector past the end")
        return tuple(float(v) for v in self.tab.GetVectorAsNumpy(self.n.Float32Flags, o))


def _decode_file(t: _Table) -> AssociatedFile:
    return AssociatedFile(name=t.string(0) or "", description=t.string(1) or "",
                          type=FILE_TYPES.get(t.scalar(2, t.n.Int8Flags), "unknown"), locale=t.string(3))


def _decode_tensor(t: _Table) -> TensorMetadata:
    content, color = "none", None
    c = t.table(3)
    if c is not None:
        content = CONTENT_TYPES.get(c.scalar(0, c.n.Uint8Flags), "unknown")
        props = c.table(1)
        if content == "image" and props is not None:
            color = COLOR_SPACES.get(props.scalar(0, props.n.Int8Flags), "unknown")
    norm, units = None, []
    for unit in t.tables(4):
        kind = PROCESS_UNIT_TYPES.get(unit.scalar(0, unit.n.Uint8Flags), "unknown")
        units.append(kind)
        options = unit.table(1)
        if kind == "normalization" and options is not None and norm is None:
            norm = Normalization(mean=options.floats(0) or (), std=options.floats(1) or ())
    stats = t.table(5)
    return TensorMetadata(
        name=t.string(0) or "", description=t.string(1) or "", content=content, color_space=color,
        normalization=norm, range_max=stats.floats(0) if stats else None, range_min=stats.floats(1) if stats else None,
        associated_files=tuple(_decode_file(f) for f in t.tables(6)), process_units=tuple(units),
    )


def decode_metadata(buf: bytes) -> ModelMetadata:
    """Decodes a ``TFLITE_METADATA`` buffer (main subgraph).

    Raises:
        ModelError: not a metadata flatbuffer (identifier other than ``M001``) or truncated.
    """
    if len(buf) < 8 or buf[4:8] != FILE_IDENTIFIER:
        raise ModelError(f"the {METADATA_NAME} entry is not metadata-schema data (identifier {bytes(buf[4:8])!r}, expected {FILE_IDENTIFIER!r})",
                         hint="the file's metadata was written by an incompatible tool; re-add it with edgekit export")
    try:
        buf = bytes(buf)
        root = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        subgraphs = root.tables(3)
        main = subgraphs[0] if subgraphs else None
        return ModelMetadata(
            name=root.string(0) or "", description=root.string(1) or "", version=root.string(2) or "",
            author=root.string(4) or "", license=root.string(5) or "",
            inputs=tuple(_decode_tensor(t) for t in main.tables(2)) if main else (),
            outputs=tuple(_decode_tensor(t) for t in main.tables(3)) if main else (),
            associated_files=tuple(_decode_file(f) for f in root.tables(6)),
            min_parser_version=root.string(7) or "",
        )
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise ModelError(f"the {METADATA_NAME} entry is truncated or malformed ({type(exc).__name__})",
                         hint="re-add the metadata with edgekit export") from None


# ----------------------------------------------------------------------------------------------
# The model file: the metadata buffer and the appended zip
# ----------------------------------------------------------------------------------------------


def associated_files(data: bytes) -> dict[str, bytes]:
    """The files of a zip archive appended to a model (empty when there is none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, NotImplementedError, struct.error):
        return {}


def write_standard_metadata(flatbuffer: bytes, metadata: ModelMetadata, files: dict[str, bytes] | None = None) -> bytes:
    """Returns the model with ``metadata`` as its ``TFLITE_METADATA`` entry and ``files`` zip-appended.

    Other metadata entries (``min_runtime_version``, ``edgekit_metadata``...) are kept; a previous
    ``TFLITE_METADATA`` and a previously appended zip are replaced. Every associated file the
    metadata names must be in ``files``. Graph, weights and signatures are unchanged, so LiteRT
    runs the result with identical outputs. Call it **last**: rewriting the flatbuffer afterwards
    (for example adding another metadata entry) drops the appended zip.

    Raises:
        InputError: an associated file named in the metadata but not given.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    files = dict(files or {})
    named = [f.name for t in (*metadata.inputs, *metadata.outputs) for f in t.associated_files] + [f.name for f in metadata.associated_files]
    missing = sorted(set(named) - set(files))
    if missing:
        raise InputError(f"the metadata names associated file(s) {', '.join(missing)} that were not given",
                         hint="pass their contents in files")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    entries = [m for m in (model.metadata or []) if _name(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(encode_metadata(metadata), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    out = io.BytesIO()
    out.write(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    if files:
        # mode "w" on a stream positioned after the model: member offsets are absolute in the file,
        # as tflite-support's populator writes them; ZIP_STORED because readers memory-map members
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(files):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
                info.compress_type = zipfile.ZIP_STORED
                zf.writestr(info, files[name])
    return out.getvalue()


def _name(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")


def standard_metadata_of(info: TfliteInfo, data: bytes) -> StandardMetadata | None:
    """The standard metadata of a parsed model (``data``: the whole file), or None when it has none."""
    raw = info.metadata.get(METADATA_NAME)
    if not raw:
        return None
    return StandardMetadata(metadata=decode_metadata(raw), files=associated_files(data))


def read_standard_metadata(source: str | bytes | Any) -> StandardMetadata | None:
    """Reads standard metadata from any ``.tflite`` (a path or the file's bytes); None when absent.

    Raises:
        ModelError: the file is not a valid TFLite model or its metadata is malformed.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    else:
        from pathlib import Path

        data, name = Path(source).read_bytes(), str(source)
    return standard_metadata_of(parse_tflite_bytes(data, name), data)
