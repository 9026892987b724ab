"""The MediaPipe Tasks target: which artifacts MediaPipe's ImageClassifier accepts, and how to make one.

MediaPipe Tasks (``mediapipe.tasks.vision.ImageClassifier``, also on Android/iOS/web) builds its
pre- and post-processing from the model itself: the input tensor and the standard metadata
(:mod:`edgekit.export.tflite_metadata`). It refuses a model, at ``create_from_options`` time, when
(read from MediaPipe's ``image_tensor_specs.cc``, ``classification_postprocessing_graph.cc`` and
``metadata_extractor.cc``):

- the model has more than one subgraph or more than one input;
- the input is not 4-D ``[1, H, W, C]`` with C = 3 or 4 (a grayscale ``C = 1`` model is refused:
  MediaPipe hands every model an RGB image), or its metadata declares a colour space other than RGB;
- the input is neither uint8 nor float32 (an **int8 input is refused**);
- a float32 input has no ``NormalizationOptions`` (MediaPipe would not know how to scale pixels),
  or the normalization has a number of values other than 1 or 3, or mean and std differ in length;
- an output is neither float32, uint8 nor bool (an **int8 output is refused**), or only some are quantized;
- the metadata describes a different number of outputs than the model has;
- a named associated file is missing from the appended zip, or the zip is compressed.

A uint8 input runs without metadata, but MediaPipe then feeds raw pixels 0-255 as the uint8 values:
that is right only when the input's quantization maps raw pixels to what the model expects
(``scale = 1 / std'`` and ``zero_point = mean'`` of the normalization); and without a labels file
MediaPipe returns class indices with empty names. Both are reported.

For ``export --target mediapipe``: :func:`mediapipe_io` chooses uint8 or float32 I/O (never int8),
and :func:`rgb_input_adapter` puts a fixed 1x1 convolution (ITU-R BT.601 luma weights) in front of a
grayscale model, so it takes the RGB image MediaPipe provides; a gray image given as RGB (three equal
channels) reaches the original model unchanged.

Example:
    >>> check = check_mediapipe_file("out/mediapipe/model.tflite")  # doctest: +SKIP
    >>> check.ok, [p.code for p in check.errors]  # doctest: +SKIP
    (True, [])
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.datatypes import IOType, QuantMode
from edgekit.core.errors import InputError, ModelError
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.core.tfshim import keras
from edgekit.export.tflite_metadata import StandardMetadata, standard_metadata_of

MEDIAPIPE_INPUT_TYPES = ("uint8", "float32")
MEDIAPIPE_OUTPUT_TYPES = ("float32", "uint8", "bool")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
#: MediaPipe 0.10.x reads metadata up to this schema version (metadata_version.cc)
PARSER_VERSION = "1.5.0"


@dataclass(frozen=True)
class MediaPipeProblem:
    """One reason MediaPipe would refuse the file (``error``) or misbehave with it (``warning``)."""

    code: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class MediaPipeCheck:
    """What :func:`check_mediapipe` found for one model and MediaPipe task."""

    task: str
    errors: tuple[MediaPipeProblem, ...]
    warnings: tuple[MediaPipeProblem, ...]
    labels: int | None  # number of class names MediaPipe will read, None without a labels file

    @property
    def ok(self) -> bool:
        """True when MediaPipe would load the model and preprocess its input correctly."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "ok": self.ok, "labels": self.labels,
                "errors": [p.to_dict() for p in self.errors], "warnings": [p.to_dict() for p in self.warnings]}


def mediapipe_io(mode: QuantMode | str, requested: IOType | str | None = None) -> IOType:
    """The I/O dtype of an export for MediaPipe: float32 by default, uint8 on request for int8 models.

    Float I/O always works: MediaPipe scales pixels with the normalization metadata. uint8 I/O
    (full-int8 models only) skips the float input but needs an input quantization equal to the
    normalization, which :func:`check_mediapipe` verifies. int8 I/O is refused by MediaPipe.

    Raises:
        InputError: int8 or int16 I/O, or uint8 I/O for a mode without integer I/O.
    """
    mode = QuantMode(mode)
    io_type = IOType(requested) if requested is not None else IOType.FLOAT
    if io_type in (IOType.INT8, IOType.INT16):
        raise InputError(f"MediaPipe Tasks accept uint8 or float32 inputs, not {io_type.value}",
                         hint="use io_type uint8 (with mode int8) or float", settings=("io_type",))
    if io_type is IOType.UINT8 and mode is not QuantMode.INT8:
        raise InputError(f"uint8 I/O needs a full-int8 model, not mode {mode.value}",
                         hint="use mode int8, or io_type float", settings=("io_type", "mode"))
    return io_type


def needs_rgb_adapter(input_shape: tuple[int | None, ...]) -> bool:
    """True for an image input ``[N, H, W, 1]``, which MediaPipe refuses without an RGB front end."""
    return len(input_shape) == 4 and input_shape[-1] == 1


def rgb_input_adapter(keras_model: Any) -> Any:
    """A new Keras model taking ``[H, W, 3]`` RGB and feeding ``keras_model`` its BT.601 luma.

    The front end is one 1x1 convolution with fixed weights (0.299, 0.587, 0.114) and no bias: a
    builtin ``CONV_2D`` every delegate and quantizer handles. ``keras_model`` is not modified.

    Raises:
        ModelError: the model's input is not ``[N, H, W, 1]``.
    """
    k = keras()
    shape = tuple(keras_model.inputs[0].shape)
    if not needs_rgb_adapter(shape):
        raise ModelError(f"the RGB adapter is for grayscale image models [N, H, W, 1]; this model's input is {list(shape)}",
                         hint="MediaPipe takes RGB models as they are")
    rgb = k.Input(batch_shape=(shape[0], *shape[1:3], 3), dtype=keras_model.inputs[0].dtype, name="image")
    to_gray = k.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="rgb_to_luma")
    gray = to_gray(rgb)
    to_gray.set_weights([np.asarray(LUMA_WEIGHTS, dtype=np.float32).reshape(1, 1, 3, 1)])
    return k.Model(rgb, keras_model(gray), name=f"{keras_model.name}_rgb")


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return (0,)


def check_mediapipe(info: TfliteInfo, standard: StandardMetadata | None, *, zip_compressed: bool = False,
                    task: str = "image_classifier") -> MediaPipeCheck:
    """Says whether MediaPipe's ImageClassifier would accept the model, and why not.

    Args:
        info: the parsed model.
        standard: its standard metadata (:func:`~edgekit.export.tflite_metadata.standard_metadata_of`), or None.
        zip_compressed: the appended zip has compressed members (MediaPipe refuses those).
        task: only ``image_classifier`` is checked today.

    Raises:
        InputError: an unknown task.
    """
    if task != "image_classifier":
        raise InputError(f"unknown MediaPipe task {task!r}", hint="use image_classifier")
    errors: list[MediaPipeProblem] = []
    warnings: list[MediaPipeProblem] = []

    def error(code: str, message: str, hint: str) -> None:
        errors.append(MediaPipeProblem(code, message, hint))

    def warn(code: str, message: str, hint: str) -> None:
        warnings.append(MediaPipeProblem(code, message, hint))

    meta = standard.metadata if standard else None
    if info.subgraph_count != 1:
        error("subgraphs", f"the model has {info.subgraph_count} subgraphs; MediaPipe image tasks take one", "export a single-signature model")
    if len(info.inputs) != 1:
        error("inputs", f"the model has {len(info.inputs)} inputs; MediaPipe image tasks take one image input", "export a model with one image input")
    tensor = info.inputs[0]
    shape = tuple(tensor.shape)
    in_meta = meta.inputs[0] if meta and meta.inputs else None
    if len(shape) != 4:
        error("input_rank", f"input {tensor.name} is {len(shape)}-D {list(shape)}; MediaPipe needs [1, height, width, 3]", "give the model an NHWC image input")
    elif shape[0] != 1 or shape[3] not in (3, 4):
        error("input_channels", f"input {tensor.name} is {list(shape)}; MediaPipe needs batch 1 and 3 (RGB) or 4 channels",
              "export --target mediapipe adds an RGB-to-luma front end to grayscale models" if shape[3] == 1 else "use an RGB model")
    if tensor.dtype not in MEDIAPIPE_INPUT_TYPES:
        error("input_type", f"input {tensor.name} is {tensor.dtype}; MediaPipe accepts uint8 or float32 inputs",
              "convert with uint8 or float I/O (io_type), never int8")
    if in_meta is not None:
        if in_meta.content not in ("image", "none"):
            error("input_content", f"the input's metadata describes {in_meta.content} content; MediaPipe expects ImageProperties", "describe the input as an image")
        if in_meta.color_space not in (None, "rgb"):
            error("color_space", f"the input's metadata declares color space {in_meta.color_space}; MediaPipe supports RGB only",
                  "declare RGB (export --target mediapipe does)")
    norm = in_meta.normalization if in_meta else None
    if norm is not None and (len(norm.mean) != len(norm.std) or len(norm.mean) not in (1, 3)):
        error("normalization", f"normalization has {len(norm.mean)} mean and {len(norm.std)} std values; MediaPipe takes 1 or 3 of each",
              "give one value or one per RGB channel")
    if tensor.dtype == "float32" and norm is None:
        error("normalization_missing", "the input is float32 but the model has no normalization metadata; MediaPipe refuses it",
              "add standard metadata with the preprocessing (export --target mediapipe does)")
    if tensor.dtype == "uint8":
        _check_uint8_input(tensor, norm, error, warn)
    out_types = [o.dtype for o in info.outputs]
    for index, dtype in enumerate(out_types):
        if dtype not in MEDIAPIPE_OUTPUT_TYPES:
            error("output_type", f"output {index} is {dtype}; MediaPipe accepts float32, uint8 or bool outputs",
                  "convert with uint8 or float I/O (io_type), never int8")
    quantized = sum(t in ("uint8", "bool") for t in out_types)
    if 0 < quantized < len(out_types):
        error("mixed_outputs", f"{quantized} of {len(out_types)} outputs are quantized; MediaPipe needs all or none", "use one I/O type for every output")
    labels = None
    if meta is not None:
        if meta.outputs and len(meta.outputs) != len(info.outputs):
            error("output_metadata", f"the metadata describes {len(meta.outputs)} outputs, the model has {len(info.outputs)}", "rewrite the metadata")
        if _version_tuple(meta.min_parser_version or "1.0.0") > _version_tuple(PARSER_VERSION):
            error("parser_version", f"the metadata needs parser {meta.min_parser_version}; MediaPipe reads up to {PARSER_VERSION}", "rewrite the metadata")
        for t in (*meta.inputs, *meta.outputs):
            for f in t.associated_files:
                if f.name not in standard.files:  # type: ignore[union-attr]
                    error("associated_file", f"the metadata names {f.name}, which is not in the file's appended zip", "rewrite the metadata with its files")
        names = standard.labels(0) if standard else None  # type: ignore[union-attr]
        labels = len(names) if names is not None else None
    if zip_compressed:
        error("zip_compressed", "the appended associated files are compressed; MediaPipe reads them uncompressed only", "store them (ZIP_STORED)")
    classes = info.outputs[0].shape[-1] if info.outputs and info.outputs[0].shape else None
    if labels is None:
        warn("labels_missing", "no labels file: MediaPipe returns class indices with empty category names",
             "add labels (export with labels, or data carrying class names)")
    elif classes and labels != classes:
        warn("labels_count", f"the labels file has {labels} names for {classes} classes", "give one name per class")
    return MediaPipeCheck(task=task, errors=tuple(errors), warnings=tuple(warnings), labels=labels)


def _check_uint8_input(tensor: Any, norm: Any, error: Any, warn: Any) -> None:
    """A uint8 input receives raw pixels: its quantization must equal the normalization."""
    q = tensor.quantization
    if norm is None:
        warn("uint8_unverified", "the uint8 input gets raw pixels 0-255 and the model has no normalization metadata to check them against",
             "add standard metadata with the preprocessing")
        return
    if q is None or not q.scales:
        error("uint8_unquantized", "the uint8 input has no quantization parameters", "convert with mode int8 and io_type uint8")
        return
    scale, zero_point = float(q.scales[0]), float(q.zero_points[0]) if q.zero_points else 0.0
    for mean, std in zip(norm.mean, norm.std):
        if abs(scale * std - 1.0) > 0.01 or abs(zero_point - mean) > 0.5:
            error("uint8_scale",
                  f"MediaPipe feeds raw pixels to the uint8 input, whose quantization (scale {scale:.6g}, zero point {zero_point:g}) "
                  f"does not match the normalization (mean {mean:g}, std {std:g}): the model would see wrongly scaled pixels",
                  "use io_type float (MediaPipe then normalizes), or calibrate with data spanning the full pixel range")
            return


def zip_is_compressed(data: bytes) -> bool:
    """True when a zip appended to the model has a compressed member."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return any(member.compress_type != zipfile.ZIP_STORED for member in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def check_mediapipe_file(path: str | Path | bytes, task: str = "image_classifier") -> MediaPipeCheck:
    """:func:`check_mediapipe` on a ``.tflite`` file (path or bytes), for ``check --target mediapipe``.

    Raises:
        ModelError: not a valid TFLite file, or malformed metadata.
    """
    data = bytes(path) if isinstance(path, (bytes, bytearray)) else Path(path).read_bytes()
    info = parse_tflite_bytes(data, "<bytes>" if isinstance(path, (bytes, bytearray)) else str(path))
    return check_mediapipe(info, standard_metadata_of(info, data), zip_compressed=zip_is_compressed(data), task=task)
