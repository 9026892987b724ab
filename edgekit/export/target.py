"""Deployment targets: converter settings per delegate, the metadata edgekit embeds, Flex-op refusals.

=======  ==========================  ==================  ===================================
target   default                     other modes         why
=======  ==========================  ==================  ===================================
cpu      int8 weights+activations,   dynamic, float16,   XNNPACK's int8 kernels; float I/O
         float I/O (needs data)      float32             keeps app code unchanged
gpu      float16 weights, float I/O  float32             GPU delegates compute in fp16/fp32;
                                                         int8 brings no GPU speed-up
nnapi    int8, int8 I/O (data)       float16, float32    NNAPI accelerators are integer
npu      int8, int8 I/O (data)       -                   vendor NPUs run quantized graphs
=======  ==========================  ==================  ===================================

Example:
    >>> resolve_settings("gpu", None, None, has_data=False)
    ('gpu', <QuantMode.FLOAT16: 'float16'>, <IOType.FLOAT: 'float'>)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.data import Calibration
from edgekit.core.datatypes import IOType, QuantMode
from edgekit.core.errors import ConversionError, InputError, ModelError
from edgekit.core.models import LoadedModel
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.export.convert import Conversion, Converted, check_mode_options, convert_model
from edgekit.export.rules import check_target

METADATA_NAME = "edgekit_metadata"
METADATA_SCHEMA = "edgekit-metadata/1"
MODEL_FILE = "model.tflite"
REPORT_FILE = "compatibility.json"
FP16_FILE = "fp16_risk.json"


@dataclass(frozen=True)
class TargetProfile:
    """Converter settings edgekit uses for a target unless the user overrides them."""

    target: str
    default_mode: QuantMode
    modes: tuple[QuantMode, ...]
    int8_io: IOType  # I/O dtype for full-int8 exports
    why: str


TARGET_PROFILES: dict[str, TargetProfile] = {
    "cpu": TargetProfile("cpu", QuantMode.INT8, (QuantMode.INT8, QuantMode.DYNAMIC, QuantMode.FLOAT16, QuantMode.FLOAT32),
                         IOType.FLOAT, "full-int8 for XNNPACK's integer kernels; float I/O keeps app code unchanged"),
    "gpu": TargetProfile("gpu", QuantMode.FLOAT16, (QuantMode.FLOAT16, QuantMode.FLOAT32), IOType.FLOAT,
                         "GPU delegates compute in float16/float32; float16 weights halve the size at no GPU cost"),
    "nnapi": TargetProfile("nnapi", QuantMode.INT8, (QuantMode.INT8, QuantMode.FLOAT16, QuantMode.FLOAT32), IOType.INT8,
                           "NNAPI accelerators (DSP/NPU) are integer engines; float falls back to GPU or CPU drivers"),
    "npu": TargetProfile("npu", QuantMode.INT8, (QuantMode.INT8,), IOType.INT8,
                         "vendor NPUs run integer-quantized graphs end to end"),
}
#: the modes each target takes, its default first (what recipes validate against)
TARGET_MODES: dict[str, tuple[str, ...]] = {name: tuple(m.value for m in p.modes) for name, p in TARGET_PROFILES.items()}
TARGET_MODES["mediapipe"] = ("int8", "float32", "float16", "dynamic")  # the export pass's mediapipe target (float/uint8 I/O)


def resolve_settings(target: str, mode: QuantMode | str | None, io_type: IOType | str | None, has_data: bool) -> tuple[str, QuantMode, IOType]:
    """The (target, mode, I/O type) an export will use; raises InputError before any work.

    Example:
        >>> resolve_settings("gpu", None, None, has_data=False)
        ('gpu', <QuantMode.FLOAT16: 'float16'>, <IOType.FLOAT: 'float'>)
    """
    target = check_target(target)
    profile = TARGET_PROFILES[target]
    try:
        chosen = QuantMode(mode) if mode is not None else profile.default_mode
    except ValueError:
        raise InputError(f"unknown --mode '{mode}'", hint=f"use one of: {', '.join(m.value for m in profile.modes)}") from None
    if chosen not in profile.modes:
        raise InputError(
            f"--mode {chosen.value} does not suit --target {target} (allowed: {', '.join(m.value for m in profile.modes)})",
            hint=profile.why,
        )
    if chosen.needs_data and not has_data:
        others = [m.value for m in profile.modes if not m.needs_data]
        raise InputError(
            f"--target {target} uses full-int8 quantization, which needs calibration data",
            hint="pass --data FILE (.npz, .npy or an image folder) with ~100 typical inputs"
            + (f", or choose --mode {' / '.join(others)}" if others else ""),
        )
    try:
        io = IOType(io_type) if io_type is not None else (profile.int8_io if chosen is QuantMode.INT8 else IOType.FLOAT)
    except ValueError:
        raise InputError(f"unknown --io-type '{io_type}'", hint="use float, int8, uint8 or int16") from None
    check_mode_options(chosen, io, has_data)
    return target, chosen, io


# ----------------------------------------------------------------------------------------------
# TFLite metadata
# ----------------------------------------------------------------------------------------------


def embed_metadata(flatbuffer: bytes, payload: dict[str, Any], name: str = METADATA_NAME) -> bytes:
    """Returns the model with ``payload`` (JSON) added as a metadata entry called ``name``.

    Uses the flatbuffer object API (``ai_edge_litert.tools.flatbuffer_utils``): a new buffer
    holds the UTF-8 JSON and ``Model.metadata`` gets ``{name, buffer}``. An entry with the same
    name is replaced. Graph, weights and signatures are unchanged.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    data = np.frombuffer(json.dumps(payload, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    entries = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name) != name]
    buffer = schema.BufferT()
    buffer.data = data
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_embedded_metadata(info: TfliteInfo, name: str = METADATA_NAME) -> dict[str, Any] | None:
    """The JSON edgekit embedded in a model, or None."""
    raw = info.metadata.get(name)
    if not raw:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------



# ----------------------------------------------------------------------------------------------
# Flex ops
# ----------------------------------------------------------------------------------------------


def flex_ops(info: TfliteInfo) -> list[str]:
    """The TensorFlow ops a model runs through the Flex delegate (SELECT_TF_OPS), by name."""
    return sorted({op.op[5:] for op in info.operators if op.op.startswith("FLEX:")})


def flex_refusal(target: str, ops: list[str]) -> ModelError:
    """The error for a model that needs Flex ops on a target whose delegates cannot run them."""
    what = {"gpu": "the GPU delegate", "npu": "NPU compilers", "nnapi": "NNAPI"}.get(target, "the target")
    return ModelError(
        f"the model needs TensorFlow op(s) {', '.join(ops)} that only run through the Flex delegate (SELECT_TF_OPS), "
        f"which {what} cannot run",
        hint="rewrite the layers that use them with TFLite builtin ops (e.g. gelu(approximate=True) instead of erf), "
        "or export for --target cpu with --allow-select-tf-ops",
    )


def convert_for_target(loaded: LoadedModel, target: str, mode: QuantMode, calibration: Calibration | None, io_type: IOType,
                       allow_select_tf_ops: bool) -> Converted:
    """Converts for ``target``; a model that needs Flex ops gets a refusal naming them (gpu/npu always).

    Int8 weights are scaled as :func:`edgekit.export.convert.choose_weights` decides (``auto``:
    per-tensor for a model clustered per layer, as ``edgekit quantize``).
    """
    select = allow_select_tf_ops and target not in ("gpu", "npu")
    try:
        return convert_model(loaded, Conversion(mode=mode, io_type=io_type, allow_select_tf_ops=select), calibration=calibration)
    except ConversionError as exc:
        if select:
            raise
        try:  # find out which ops have no builtin, to name them
            probe = convert_model(loaded, Conversion(mode=QuantMode.FLOAT32, allow_select_tf_ops=True)).flatbuffer
        except ConversionError:
            raise exc from None
        flex = flex_ops(parse_tflite_bytes(probe, "probe"))
        if not flex:
            raise
        if target in ("gpu", "npu"):
            raise flex_refusal(target, flex) from None
        raise ConversionError(
            f"the model needs TensorFlow op(s) {', '.join(flex)} that have no TFLite builtin",
            hint="rewrite those layers, or pass --allow-select-tf-ops (the Flex delegate then runs them on the CPU)",
        ) from None
